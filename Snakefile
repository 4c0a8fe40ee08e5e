# gpscat: GADF DL3 survey → source catalog.  The DAG only; the science is in src/gpscat.
from snakemake.utils import min_version

min_version("9.0")


# The embedded default (the simulated demo survey) is used only when no --configfile is
# given: a user's config then starts from the schema defaults, not from the demo.
if not workflow.config_settings.configfiles:

    configfile: os.path.join(workflow.basedir, "config/config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/maps.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/associate.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/group.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/catalog.smk"
include: "workflow/rules/release.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
