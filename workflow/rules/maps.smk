# DL3 → per-observation datasets → survey maps → exclusion → background → significance.


rule reduce:
    input:
        **store_index_files(),
    output:
        "results/reduce/{dataset}/{obs_id}.fits",
    log:
        "logs/reduce/{dataset}/{obs_id}.log",
    benchmark:
        "benchmarks/reduce/{dataset}/{obs_id}.tsv"
    params:
        cfg=stage_params(config, "reduce"),
    conda:
        CONDA_ENV
    resources:
        **resources_for(config, "reduce"),
    shell:
        "gpscat reduce --params {params.cfg} --dataset {wildcards.dataset} "
        "--obs-id {wildcards.obs_id} --output {output} 2> {log}"


rule stack:
    input:
        reduced_files,
    output:
        stacked="results/maps/{dataset}/stacked.fits",
        provenance="results/maps/{dataset}/stack_provenance.json",
    log:
        "logs/stack/{dataset}.log",
    benchmark:
        "benchmarks/stack/{dataset}.tsv"
    params:
        cfg=stage_params(config, "stack"),
    conda:
        CONDA_ENV
    resources:
        **resources_for(config, "stack"),
    shell:
        "gpscat stack --params {params.cfg} --dataset {wildcards.dataset} "
        "--output {output.stacked} --provenance {output.provenance} {input} 2> {log}"


rule exclusion:
    input:
        stacked="results/maps/{dataset}/stacked.fits",
    output:
        "results/maps/{dataset}/exclusion.fits",
    log:
        "logs/exclusion/{dataset}.log",
    benchmark:
        "benchmarks/exclusion/{dataset}.tsv"
    params:
        cfg=stage_params(config, "exclusion"),
    conda:
        CONDA_ENV
    resources:
        **resources_for(config, "exclusion"),
    shell:
        "gpscat exclusion --params {params.cfg} --dataset {wildcards.dataset} "
        "--stacked {input.stacked} --output {output} 2> {log}"


rule background:
    input:
        stacked="results/maps/{dataset}/stacked.fits",
        exclusion="results/maps/{dataset}/exclusion.fits",
        observations=reduced_files,
    output:
        **background_outputs(),
    log:
        "logs/background/{dataset}.log",
    benchmark:
        "benchmarks/background/{dataset}.tsv"
    params:
        cfg=stage_params(config, "background"),
    conda:
        CONDA_ENV
    resources:
        **resources_for(config, "background"),
    shell:
        "gpscat background --params {params.cfg} --dataset {wildcards.dataset} "
        "--stacked {input.stacked} --exclusion {input.exclusion} --output {output.output} "
        "--norms {output.norms} {input.observations} 2> {log}"


rule significance:
    input:
        significance_input,
    output:
        significance_outputs(config, "{dataset}"),
    log:
        "logs/significance/{dataset}.log",
    benchmark:
        "benchmarks/significance/{dataset}.tsv"
    params:
        cfg=stage_params(config, "significance"),
    conda:
        CONDA_ENV
    resources:
        **resources_for(config, "significance"),
    shell:
        "gpscat significance --params {params.cfg} --dataset {wildcards.dataset} "
        "--input {input} --output-dir results/maps/{wildcards.dataset} 2> {log}"
