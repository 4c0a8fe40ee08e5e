# Grouped fits: one job per group and pass. Pass 1 starts from the seeds' models with the
# other groups frozen at theirs; pass p >= 2 from the group's pass p-1 fit with its
# neighbours frozen at their pass p-1 fits (a group whose neighbours did not move keeps
# its result). fit.passes bounds the passes.


wildcard_constraints:
    fit_pass=r"\d+",
    gid=r"\d+",


rule fit_group:
    input:
        unpack(fit_group_inputs),
    output:
        fits="results/fit/pass{fit_pass}/group_{gid}.fits",
        models="results/fit/pass{fit_pass}/group_{gid}.yaml",
        covariance="results/fit/pass{fit_pass}/group_{gid}_covariance.dat",
    log:
        "logs/fit/pass{fit_pass}/group_{gid}.log",
    benchmark:
        "benchmarks/fit/pass{fit_pass}/group_{gid}.tsv"
    params:
        cfg=stage_params(config, "fit"),
        extra=fit_group_args,
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "gpscat fit-group --params {params.cfg} --group-id {wildcards.gid} --pass {wildcards.fit_pass} "
        "--groups {input.groups} --models {input.models} --neighbours {input.neighbours} "
        "--datasets {input.datasets} --output {output.fits} --output-models {output.models}{params.extra} 2> {log}"
