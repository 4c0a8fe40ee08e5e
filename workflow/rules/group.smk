# Grouping: seeds whose PSF-broadened extents overlap are fitted together. The checkpoint:
# the number of groups (one fit job each) is known only once it has run.


checkpoint group:
    input:
        seeds=grouping_seeds(),
        datasets=psf_datasets(),
    output:
        directory("results/groups"),
    log:
        "logs/group/group.log",
    benchmark:
        "benchmarks/group/group.tsv"
    params:
        cfg=stage_params(config, "group"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "gpscat group --params {params.cfg} --seeds {input.seeds} --output-dir {output} "
        "--datasets {input.datasets} 2> {log}"
