# Release: `snakemake --cores 2 release` bundles the catalog products, the exact config, the
# input observations with checksums, software versions and the Snakemake report.


rule release:
    input:
        products=release_products(),
        **store_index_files(),
    output:
        archive=release_archive(),
        report="results/release/report.zip",
    log:
        "logs/release/release.log",
    benchmark:
        "benchmarks/release/release.tsv"
    params:
        cfg=stage_params(config, "release"),
        obs_ids=" ".join(str(i) for i in OBS_IDS),
        config_files=" ".join(workflow_config_files()),
        snakemake_args=report_command_args(),
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m snakemake {params.snakemake_args} --report {output.report} 2> {log} && "
        "gpscat release --params {params.cfg} --output {output.archive} --products {input.products} "
        "--obs-ids {params.obs_ids} --config-files {params.config_files} --report {output.report} 2>> {log}"
