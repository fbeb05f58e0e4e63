# Pretraining: one job per run of the registry. Multi-GPU runs start one process per
# GPU with srun inside the allocation; every run resumes from its last checkpoint.


rule pretrain:
    input:
        corpus=corpus_of_run,
    output:
        res("pretrain/{run}/checkpoint.pt"),
    log:
        res("logs/pretrain/{run}.log"),
    wildcard_constraints:
        run="|".join(r for r in registry.RUNS if r not in PRETRAINED) or "(?!)",
    conda:
        "../../envs/train.yaml"
    threads: config["resources"]["pretrain"]["threads"]
    resources:
        nodes=pretrain_resource("nodes"),
        gpu=pretrain_gpus,
        tasks_per_node=pretrain_resource("gpus_per_node"),
        mem_mb=pretrain_resource("mem_mb"),
        runtime=pretrain_resource("runtime"),
        cpus_per_task=pretrain_resource("threads"),
    params:
        run_config=run_config_json,
        out_dir=lambda w, output: os.path.dirname(output[0]),
        launcher=pretrain_launcher,
    shell:
        "{params.launcher} channel-ssl pretrain --corpus {input.corpus}"
        " --run-config '{params.run_config}' --out-dir {params.out_dir}"
        " --threads {threads} --log {log}"


# A reference run (registry.REFERENCE_RUNS): the network at initialisation, never trained.
rule random_init:
    output:
        res("pretrain/{run}/checkpoint.pt"),
    log:
        res("logs/pretrain/{run}.log"),
    wildcard_constraints:
        run="|".join(registry.REFERENCE_RUNS),
    conda:
        "../../envs/train.yaml"
    params:
        run_config=run_config_json,
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "channel-ssl pretrain --random-init --run-config '{params.run_config}'"
        " --out-dir {params.out_dir} --log {log}"


# A run whose weights are given in config 'pretrained' (e.g. released weights imported with
# channel-ssl import-weights): checked against the registry run and copied in, not trained.
rule use_pretrained:
    input:
        lambda w: PRETRAINED[w.run],
    output:
        res("pretrain/{run}/checkpoint.pt"),
    log:
        res("logs/pretrain/{run}.log"),
    wildcard_constraints:
        run="|".join(PRETRAINED) or "(?!)",
    conda:
        "../../envs/train.yaml"
    params:
        run_config=run_config_json,
    shell:
        "channel-ssl use-checkpoint --checkpoint {input} --run-config '{params.run_config}'"
        " --out {output} --log {log}"
