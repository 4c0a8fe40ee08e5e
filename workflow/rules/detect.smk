# Seeds: peaks and Hough circles on the significance maps of every dataset and radius.


rule detect:
    input:
        significance=significance_files("significance"),
        bands=significance_files("bands"),
        datasets=stacked_datasets(),
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
