# Evaluation: embeddings of the CHAMMI images per run, then 1-NN and linear probes.
# Short jobs share the "evaluate" group so a cluster runs them together.


rule extract_chammi:
    input:
        checkpoint=res("pretrain/{run}/checkpoint.pt"),
        manifests=expand(
            res("shards/chammi/{dataset}/manifest.parquet"), dataset=CHAMMI_DATASETS
        ),
        meta=expand(
            "{root}/{dataset}/enriched_meta.csv",
            root=chammi_root(),
            dataset=CHAMMI_DATASETS,
        ),
    output:
        expand(
            res("features/{{run}}/{dataset}/{recipe}.npy"),
            dataset=CHAMMI_DATASETS,
            recipe=registry.CHAMMI_RECIPES,
        ),
    log:
        res("logs/extract/{run}/chammi.log"),
    conda:
        "../../envs/train.yaml"
    threads: config["resources"]["extract"]["threads"]
    resources:
        gpu=config["resources"]["extract"]["gpus_per_node"],
        mem_mb=config["resources"]["extract"]["mem_mb"],
        runtime=config["resources"]["extract"]["runtime"],
        cpus_per_task=config["resources"]["extract"]["threads"],
    params:
        views=lambda w, input, output: " ".join(
            f"--manifest {m} --metadata {meta} --out-dir {os.path.dirname(out)}"
            for m, meta, out in zip(
                input.manifests, input.meta, output[:: len(registry.CHAMMI_RECIPES)]
            )
        ),
        recipes=",".join(registry.CHAMMI_RECIPES),
        crop_size=config["extract"]["crop_size"],
        batch_size=config["extract"]["batch_size"],
    shell:
        "channel-ssl extract --checkpoint {input.checkpoint} {params.views}"
        " --recipes {params.recipes}"
        " --crop-size {params.crop_size} --batch-size {params.batch_size}"
        " --threads {threads} --log {log}"


rule eval_chammi:
    input:
        unpack(chammi_features),
        meta=expand(
            "{root}/{dataset}/enriched_meta.csv",
            root=chammi_root(),
            dataset=CHAMMI_DATASETS,
        ),
    output:
        res("scores/knn/{run}/{recipe}.csv"),
    log:
        res("logs/scores/knn/{run}/{recipe}.log"),
    group:
        "evaluate"
    conda:
        "../../envs/evaluate.yaml"
    resources:
        mem_mb=config["resources"]["evaluate"]["mem_mb"],
        runtime=config["resources"]["evaluate"]["runtime"],
    params:
        root=lambda w, input: dataset_root(input.meta[0]),
        features_dir=lambda w, input: dataset_root(input.Allen),
    shell:
        "channel-ssl eval-chammi --root {params.root} --features-dir {params.features_dir}"
        " --feature-file {wildcards.recipe}.npy --out {output} --log {log}"


rule linear_probe:
    input:
        unpack(chammi_features),
        meta=expand(
            "{root}/{dataset}/enriched_meta.csv",
            root=chammi_root(),
            dataset=CHAMMI_DATASETS,
        ),
    output:
        res("scores/linear/{run}/{recipe}.csv"),
    log:
        res("logs/scores/linear/{run}/{recipe}.log"),
    group:
        "evaluate"
    conda:
        "../../envs/evaluate.yaml"
    threads: config["resources"]["evaluate"]["threads"]
    resources:
        mem_mb=config["resources"]["evaluate"]["mem_mb"],
        runtime=config["resources"]["evaluate"]["runtime"],
        cpus_per_task=config["resources"]["evaluate"]["threads"],
    params:
        root=lambda w, input: dataset_root(input.meta[0]),
        features_dir=lambda w, input: dataset_root(input.Allen),
        n_classifiers=config["linear_probe"]["n_classifiers"],
        lr_min=config["linear_probe"]["lr_min"],
        lr_max=config["linear_probe"]["lr_max"],
        epochs=config["linear_probe"]["epochs"],
        batch_size=config["linear_probe"]["batch_size"],
        val_fraction=config["linear_probe"]["val_fraction"],
        weight_decay=config["linear_probe"]["weight_decay"],
        seed=config["seed"],
    shell:
        "channel-ssl linear-probe --root {params.root} --features-dir {params.features_dir}"
        " --feature-file {wildcards.recipe}.npy --out {output}"
        " --n-classifiers {params.n_classifiers} --lr-min {params.lr_min} --lr-max {params.lr_max}"
        " --epochs {params.epochs} --batch-size {params.batch_size}"
        " --val-fraction {params.val_fraction} --weight-decay {params.weight_decay}"
        " --seed {params.seed} --threads {threads} --log {log}"


rule evaluate_run:
    input:
        checkpoint=res("pretrain/{run}/checkpoint.pt"),
        manifests=probe_manifests,
    output:
        res("scores/probe/{run}.csv"),
    log:
        res("logs/evaluate/{run}.log"),
    conda:
        "../../envs/evaluate.yaml"
    threads: config["resources"]["extract"]["threads"]
    resources:
        gpu=config["resources"]["extract"]["gpus_per_node"],
        mem_mb=config["resources"]["extract"]["mem_mb"],
        # the paper's augmented probes run the backbone at every step: sized by the plan
        runtime=lambda w: probe_runtime_minutes(w.run, config),
        cpus_per_task=config["resources"]["extract"]["threads"],
    params:
        plan=probe_plan_json,
        recipe=registry.PROBE_RECIPE,
        crop_size=config["extract"]["crop_size"],
        batch_size=config["extract"]["batch_size"],
        n_classifiers=config["linear_probe"]["n_classifiers"],
        lr_min=config["linear_probe"]["lr_min"],
        lr_max=config["linear_probe"]["lr_max"],
        epochs=config["linear_probe"]["epochs"],
        probe_batch_size=config["linear_probe"]["batch_size"],
        weight_decay=config["linear_probe"]["weight_decay"],
        val_fraction=config["linear_probe"]["val_fraction"],
        seed=config["seed"],
    shell:
        "channel-ssl evaluate-run --checkpoint {input.checkpoint} --plan '{params.plan}'"
        " --recipe {params.recipe} --scores-out {output}"
        " --crop-size {params.crop_size} --batch-size {params.batch_size}"
        " --n-classifiers {params.n_classifiers} --lr-min {params.lr_min} --lr-max {params.lr_max}"
        " --epochs {params.epochs} --probe-batch-size {params.probe_batch_size}"
        " --weight-decay {params.weight_decay} --val-fraction {params.val_fraction}"
        " --seed {params.seed} --threads {threads} --log {log}"


rule extract_figure_view:
    input:
        checkpoint=res("pretrain/{run}/checkpoint.pt"),
        manifest=lambda w: manifest_path(w.view.split("-ch")[0]),
    output:
        res(f"features/{{run}}/{{view}}/{registry.FIGURE_RECIPE}.npy"),
    log:
        res("logs/extract/{run}/{view}.log"),
    conda:
        "../../envs/train.yaml"
    threads: config["resources"]["extract"]["threads"]
    resources:
        gpu=config["resources"]["extract"]["gpus_per_node"],
        mem_mb=config["resources"]["extract"]["mem_mb"],
        runtime=config["resources"]["extract"]["runtime"],
        cpus_per_task=config["resources"]["extract"]["threads"],
    params:
        out_dir=lambda w, output: os.path.dirname(output[0]),
        channels=lambda w: (
            "--channels " + ",".join(w.view.split("-ch")[1]) if "-ch" in w.view else ""
        ),
        recipe=registry.FIGURE_RECIPE,
        crop_size=config["extract"]["crop_size"],
        batch_size=config["extract"]["batch_size"],
    shell:
        "channel-ssl extract --checkpoint {input.checkpoint} --manifest {input.manifest}"
        " --out-dir {params.out_dir} --recipes {params.recipe} {params.channels}"
        " --crop-size {params.crop_size} --batch-size {params.batch_size}"
        " --threads {threads} --log {log}"
