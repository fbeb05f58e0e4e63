# Your own datasets (config 'user_datasets'): imported into the results tree beside the
# paper's sources (a corpus of config 'user_runs' reads them like theirs), and scored by
# evaluate-features for the runs each lists: target evaluate_<name>. Checked, and the user
# runs added to the registry, in common.smk (channel_ssl.user_data).

# an alternation of the user datasets' names; '(?!)' matches nothing
USER_NAMES = "|".join(USER_DATASETS) or "(?!)"


rule import_user_dataset:
    input:
        table=lambda w: USER_DATASETS[w.user].table,
        images=lambda w: USER_DATASETS[w.user].directory,
    output:
        res("shards/{user}/manifest.parquet"),
    log:
        res("logs/user/{user}/import.log"),
    wildcard_constraints:
        user=USER_NAMES,
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=config["resources"]["data"]["mem_mb"],
        runtime=config["resources"]["data"]["runtime"],
    params:
        out_dir=lambda w, output: os.path.dirname(output[0]),
        args=lambda w: USER_DATASETS[w.user].import_args(),
        shard_size=config["preprocess"]["shard_size"],
    shell:
        "channel-ssl import-images --images '{input.images}' --table '{input.table}'"
        " --out {params.out_dir} --name {wildcards.user} {params.args}"
        " --shard-size {params.shard_size} --log {log}"


rule evaluate_user_dataset:
    input:
        checkpoint=res("pretrain/{run}/checkpoint.pt"),
        manifest=res("shards/{user}/manifest.parquet"),
    output:
        scores=res("user/{user}/{run}/scores.csv"),
        report=res("user/{user}/{run}/report.md"),
    log:
        res("logs/user/{user}/{run}.log"),
    wildcard_constraints:
        user=USER_NAMES,
    conda:
        "../../envs/evaluate.yaml"
    threads: config["resources"]["extract"]["threads"]
    resources:
        gpu=config["resources"]["extract"]["gpus_per_node"],
        mem_mb=config["resources"]["extract"]["mem_mb"],
        runtime=config["resources"]["extract"]["runtime"],
        cpus_per_task=config["resources"]["extract"]["threads"],
    params:
        dataset=lambda w, input: os.path.dirname(input.manifest),
        out_dir=lambda w, output: os.path.dirname(output.scores),
        args=lambda w: USER_DATASETS[w.user].evaluate_args(),
        batch_size=config["extract"]["batch_size"],
        n_classifiers=config["linear_probe"]["n_classifiers"],
        lr_min=config["linear_probe"]["lr_min"],
        lr_max=config["linear_probe"]["lr_max"],
        epochs=config["linear_probe"]["epochs"],
        probe_batch_size=config["linear_probe"]["batch_size"],
        val_fraction=config["linear_probe"]["val_fraction"],
        weight_decay=config["linear_probe"]["weight_decay"],
        seed=config["seed"],
    shell:
        "channel-ssl evaluate-features --dataset {params.dataset}"
        " --checkpoint {input.checkpoint} --out {params.out_dir} {params.args}"
        " --batch-size {params.batch_size} --n-classifiers {params.n_classifiers}"
        " --lr-min {params.lr_min} --lr-max {params.lr_max} --epochs {params.epochs}"
        " --probe-batch-size {params.probe_batch_size} --val-fraction {params.val_fraction}"
        " --weight-decay {params.weight_decay} --seed {params.seed} --threads {threads}"
        " --log {log}"


# target evaluate_<name> of each user dataset with runs to score
for _name in USER_DATASETS:
    if USER_DATASETS[_name].runs:

        rule:
            name:
                f"evaluate_{_name}"
            input:
                USER_DATASETS[_name].evaluation_files(RESULTS),
