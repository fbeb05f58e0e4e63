# channel-ssl: regenerate the tables and figures of "Scaling channel-invariant
# self-supervised learning for microscopy images" (DINO Bag-of-Channels).
# Table of contents only; logic lives in the channel_ssl package.
from snakemake.utils import min_version

min_version("9.0")


# The demo is the default; a --configfile replaces it (rather than being merged over it).
if not workflow.config_settings.configfiles:

    configfile: "config/demo.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/user_data.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
