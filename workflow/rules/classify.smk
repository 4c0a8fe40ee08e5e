# Seed classification: a classifier trained on simulated skies made with the survey's own
# IRFs and the run's map/detect settings, then applied to the associated seeds.


rule classify_train:
    input:
        **store_index_files(),
    output:
        model="results/classify/model.joblib",
        report="results/classify/training_report.json",
        confusion=report(
            "results/classify/confusion_matrix.png",
            caption="../report/confusion.rst",
            category="Classification",
        ),
        table="results/classify/training_seeds.fits",
    log:
        "logs/classify/train.log",
    benchmark:
        "benchmarks/classify/train.tsv"
    params:
        cfg=stage_params(config, "classify"),
    threads: workflow.cores
    conda:
        CONDA_ENV
    resources:
        mem_mb=lambda wildcards, threads: 1500 * max(threads, 1),
        runtime=60,
    shell:
        "gpscat classify-train --params {params.cfg} --output {output.model} --report {output.report} "
        "--confusion {output.confusion} --training-table {output.table} --threads {threads} "
        "--workdir results/classify/training 2> {log}"


rule classify:
    input:
        seeds="results/seeds/seeds_associated.fits",
        model="results/classify/model.joblib",
    output:
        seeds="results/seeds/seeds.fits",
        regions="results/seeds/seeds.reg",
    log:
        "logs/classify/apply.log",
    benchmark:
        "benchmarks/classify/apply.tsv"
    params:
        cfg=stage_params(config, "classify"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "gpscat classify --params {params.cfg} --seeds {input.seeds} --model {input.model} "
        "--output {output.seeds} --regions {output.regions} 2> {log}"
