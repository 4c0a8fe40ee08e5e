# Catalog: the last fit pass of every group merged into the release products.


rule catalog:
    input:
        fits=final_fits,
        models=final_models,
        groups="results/groups",
        seeds=grouping_seeds(),
        datasets=stacked_datasets(),
    output:
        **catalog_outputs(),
        overview=report("results/catalog/overview.png", caption="../report/catalog_overview.rst", category="Catalog"),
        residual_png=report(
            "results/catalog/residual_significance.png", caption="../report/catalog_residual.rst", category="Catalog"
        ),
    log:
        "logs/catalog/catalog.log",
    benchmark:
        "benchmarks/catalog/catalog.tsv"
    params:
        cfg=stage_params(config, "catalog"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "gpscat catalog --params {params.cfg} --fits {input.fits} --models {input.models} "
        "--groups {input.groups}/groups.fits --seeds {input.seeds} --datasets {input.datasets} "
        "--output-dir $(dirname {output.catalog}) 2> {log}"


# Aperture spectra (HGPS style) of every catalog source: ON circle, reflected-region OFF
# circles per observation avoiding the first dataset's exclusion mask, WStat fit, flux points.
rule aperture:
    input:
        catalog="results/catalog/catalog.fits",
        exclusion=f"results/maps/{DATASETS[0]}/exclusion.fits",
        **store_index_files(),
    output:
        "results/catalog/aperture_spectra.fits",
    log:
        "logs/catalog/aperture.log",
    benchmark:
        "benchmarks/catalog/aperture.tsv"
    params:
        cfg=stage_params(config, "aperture"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "gpscat aperture --params {params.cfg} --sources {input.catalog} --exclusion {input.exclusion} "
        "--output {output} 2> {log}"
