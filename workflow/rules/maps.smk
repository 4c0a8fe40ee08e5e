# DL3 → per-observation datasets → survey maps → exclusion → background → significance.
# With survey tiles (config tiles.size) the map rules run per (dataset, tile) on the tile's
# full region (map_path, job_file: results/maps/<dataset>/tiles/<tile>/…); merge rules give
# the survey-wide exclusion mask and PSF.


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
        stacked=map_path("stacked.fits"),
        provenance=map_path("stack_provenance.json"),
    log:
        job_file("logs", "stack", ".log"),
    benchmark:
        job_file("benchmarks", "stack", ".tsv")
    params:
        cfg=stage_params(config, "stack"),
        tile=tile_arg,
    conda:
        CONDA_ENV
    resources:
        **resources_for(config, "stack"),
    shell:
        "gpscat stack --params {params.cfg} --dataset {wildcards.dataset} {params.tile} "
        "--output {output.stacked} --provenance {output.provenance} {input} 2> {log}"


rule exclusion:
    input:
        stacked=map_path("stacked.fits"),
    output:
        map_path("exclusion.fits"),
    log:
        job_file("logs", "exclusion", ".log"),
    benchmark:
        job_file("benchmarks", "exclusion", ".tsv")
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
        stacked=map_path("stacked.fits"),
        # with tiles the survey's merged mask: an observation's FoV norm is fitted on its whole
        # cutout, the same in every tile
        exclusion="results/maps/{dataset}/exclusion.fits",
        observations=reduced_files,
    output:
        **background_outputs(),
    log:
        job_file("logs", "background", ".log"),
    benchmark:
        job_file("benchmarks", "background", ".tsv")
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
        significance_outputs(config, "{dataset}", "{tile}" if TILES else None),
    log:
        job_file("logs", "significance", ".log"),
    benchmark:
        job_file("benchmarks", "significance", ".tsv")
    params:
        cfg=stage_params(config, "significance"),
        folder=map_folder,
    conda:
        CONDA_ENV
    resources:
        **resources_for(config, "significance"),
    shell:
        "gpscat significance --params {params.cfg} --dataset {wildcards.dataset} "
        "--input {input} --output-dir {params.folder} 2> {log}"


if TILES:

    # The survey exclusion mask of a dataset (the aperture stage's), pasted from the tiles' cores.
    rule exclusion_merge:
        input:
            tile_inputs("exclusion.fits"),
        output:
            "results/maps/{dataset}/exclusion.fits",
        log:
            "logs/exclusion/{dataset}_merge.log",
        benchmark:
            "benchmarks/exclusion/{dataset}_merge.tsv"
        params:
            cfg=stage_params(config, "tiles"),
            tiles=" ".join(TILES),
        conda:
            CONDA_ENV
        resources:
            **resources_for(config, "merge"),
        shell:
            "gpscat merge-exclusion --params {params.cfg} --dataset {wildcards.dataset} --tiles {params.tiles} "
            "--output {output} {input} 2> {log}"

    # The survey's stacked PSF of a dataset (what detect, associate and group read), from the tiles.
    rule psf_merge:
        input:
            tile_inputs("stacked.fits"),
        output:
            "results/maps/{dataset}/psf.fits",
        log:
            "logs/stack/{dataset}_psf.log",
        benchmark:
            "benchmarks/stack/{dataset}_psf.tsv"
        params:
            cfg=stage_params(config, "tiles"),
            tiles=" ".join(TILES),
        conda:
            CONDA_ENV
        resources:
            **resources_for(config, "merge"),
        shell:
            "gpscat merge-psf --params {params.cfg} --dataset {wildcards.dataset} --tiles {params.tiles} "
            "--output {output} {input} 2> {log}"
