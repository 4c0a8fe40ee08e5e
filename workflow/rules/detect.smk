# Seeds: peaks and Hough circles on the significance maps of every dataset and radius.


if not TILES:

    rule detect:
        input:
            significance=significance_files("significance"),
            bands=significance_files("bands"),
            datasets=psf_datasets(),
        output:
            seeds="results/seeds/seeds_detected.fits",
            regions="results/seeds/seeds_detected.reg",
            index_map="results/maps/index_map.fits",
            exclusion="results/maps/detection_exclusion.fits",
            plot=report("results/seeds/seeds_detected.png", caption="../report/seeds.rst", category="Seeds"),
        log:
            "logs/detect/detect.log",
        benchmark:
            "benchmarks/detect/detect.tsv"
        params:
            cfg=stage_params(config, "detect"),
        conda:
            CONDA_ENV
        resources:
            **resources_for(config, "detect"),
        shell:
            "gpscat detect --params {params.cfg} --seeds {output.seeds} --regions {output.regions} "
            "--index-map {output.index_map} --exclusion {output.exclusion} --plot {output.plot} "
            "--significance {input.significance} --bands {input.bands} --datasets {input.datasets} 2> {log}"

else:

    # Survey tiles: detection per tile on its full region (all datasets and radii), with the
    # survey's PSF; then the merge keeps each seed in the one tile whose core holds it.
    rule detect:
        input:
            significance=tile_significance_files("significance"),
            bands=tile_significance_files("bands"),
            datasets=psf_datasets(),
        output:
            seeds="results/seeds/tiles/{tile}/seeds_detected.fits",
            regions="results/seeds/tiles/{tile}/seeds_detected.reg",
            index_map="results/seeds/tiles/{tile}/index_map.fits",
            exclusion="results/seeds/tiles/{tile}/detection_exclusion.fits",
        log:
            "logs/detect/{tile}.log",
        benchmark:
            "benchmarks/detect/{tile}.tsv"
        params:
            cfg=stage_params(config, "detect"),
        conda:
            CONDA_ENV
        resources:
            **resources_for(config, "detect"),
        shell:
            "gpscat detect --params {params.cfg} --seeds {output.seeds} --regions {output.regions} "
            "--index-map {output.index_map} --exclusion {output.exclusion} "
            "--significance {input.significance} --bands {input.bands} --datasets {input.datasets} 2> {log}"

    rule detect_merge:
        input:
            seeds=expand("results/seeds/tiles/{tile}/seeds_detected.fits", tile=TILES),
            index_maps=expand("results/seeds/tiles/{tile}/index_map.fits", tile=TILES),
            exclusions=expand("results/seeds/tiles/{tile}/detection_exclusion.fits", tile=TILES),
            plot_maps=plot_significance_files(),
        output:
            seeds="results/seeds/seeds_detected.fits",
            regions="results/seeds/seeds_detected.reg",
            index_map="results/maps/index_map.fits",
            exclusion="results/maps/detection_exclusion.fits",
            plot=report("results/seeds/seeds_detected.png", caption="../report/seeds.rst", category="Seeds"),
        log:
            "logs/detect/merge.log",
        benchmark:
            "benchmarks/detect/merge.tsv"
        params:
            cfg=stage_params(config, "tiles"),
            tiles=" ".join(TILES),
        conda:
            CONDA_ENV
        resources:
            **resources_for(config, "merge"),
        shell:
            "gpscat merge-seeds --params {params.cfg} --tiles {params.tiles} --tile-seeds {input.seeds} "
            "--tile-index-maps {input.index_maps} --tile-exclusions {input.exclusions} "
            "--tile-plot-maps {input.plot_maps} --seeds {output.seeds} --regions {output.regions} "
            "--index-map {output.index_map} --exclusion {output.exclusion} --plot {output.plot} 2> {log}"
