# Association of the detected seeds with known-source catalogs by surface overlap.


rule associate:
    input:
        seeds="results/seeds/seeds_detected.fits",
        datasets=psf_datasets(),
        catalogs=known_catalogs(),
    output:
        "results/seeds/seeds_associated.fits",
    log:
        "logs/associate/associate.log",
    benchmark:
        "benchmarks/associate/associate.tsv"
    params:
        cfg=stage_params(config, "associate"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "gpscat associate --params {params.cfg} --seeds {input.seeds} --output {output} "
        "--datasets {input.datasets} 2> {log}"
