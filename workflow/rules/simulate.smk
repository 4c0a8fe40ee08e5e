# Simulated survey (simulation.enabled, the embedded demo): IRF file → one event file per
# pointing (fan-out) → obs-index/hdu-index; the truth (injected models, truth table) beside.
# Everything is written into data.store; the reduction then reads it as any DL3 store.
# Needs from common.smk: OBS_IDS, CONDA_ENV, store_index_files(), stage_params.

if config["simulation"]["enabled"]:
    SIM_STORE = config["data"]["store"]

    rule simulate_irf:
        output:
            os.path.join(SIM_STORE, "irf.fits"),
        log:
            "logs/simulate/irf.log",
        benchmark:
            "benchmarks/simulate/irf.tsv"
        conda:
            CONDA_ENV
        resources:
            mem_mb=500,
            runtime=5,
        params:
            cfg=stage_params(config, "simulate"),
        shell:
            "gpscat simulate-irf --params {params.cfg} --output {output} 2> {log}"

    rule simulate_obs:
        input:
            irf=os.path.join(SIM_STORE, "irf.fits"),
        output:
            os.path.join(SIM_STORE, "events", "events_{obs_id}.fits"),
        log:
            "logs/simulate/obs_{obs_id}.log",
        benchmark:
            "benchmarks/simulate/obs_{obs_id}.tsv"
        conda:
            CONDA_ENV
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            cfg=stage_params(config, "simulate"),
        shell:
            "gpscat simulate-obs --params {params.cfg} --obs-id {wildcards.obs_id} "
            "--irf {input.irf} --output {output} 2> {log}"

    rule simulate_index:
        input:
            irf=os.path.join(SIM_STORE, "irf.fits"),
            events=expand(
                os.path.join(SIM_STORE, "events", "events_{obs_id}.fits"),
                obs_id=OBS_IDS,
            ),
        output:
            **store_index_files(),
        log:
            "logs/simulate/index.log",
        benchmark:
            "benchmarks/simulate/index.tsv"
        conda:
            CONDA_ENV
        resources:
            mem_mb=500,
            runtime=5,
        params:
            cfg=stage_params(config, "simulate"),
        shell:
            "gpscat simulate-index --params {params.cfg} --irf {input.irf} "
            "--obs-index {output.obs_index} --hdu-index {output.hdu_index} {input.events} 2> {log}"

    rule simulate_truth:
        input:
            irf=os.path.join(SIM_STORE, "irf.fits"),
        output:
            truth=os.path.join(SIM_STORE, "truth", "truth.fits"),
            models=os.path.join(SIM_STORE, "truth", "models.yaml"),
        log:
            "logs/simulate/truth.log",
        benchmark:
            "benchmarks/simulate/truth.tsv"
        conda:
            CONDA_ENV
        resources:
            mem_mb=1000,
            runtime=10,
        params:
            cfg=stage_params(config, "simulate"),
        shell:
            "gpscat simulate-truth --params {params.cfg} --irf {input.irf} "
            "--truth {output.truth} --models {output.models} 2> {log}"
