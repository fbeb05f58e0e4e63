# Evaluation: embeddings of the CHAMMI images per run, then 1-NN and linear probes.
# Short jobs share the "evaluate" group so a cluster runs them together. Input functions,
# the extraction resources and the probe options live in common.smk.


rule extract_chammi:
    input:
        checkpoint=res("pretrain/{run}/checkpoint.pt"),
        manifests=[manifest_path("chammi", d) for d in CHAMMI_DATASETS],
        meta=chammi_metadata(),
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
    threads: EXTRACT_THREADS
    resources:
        **extract_resources(),
    params:
        views=chammi_extract_views,
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
        meta=chammi_metadata(),
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
        root=chammi_root_of_input,
        features_dir=chammi_features_dir,
    shell:
        "channel-ssl eval-chammi --root {params.root} --features-dir {params.features_dir}"
        " --feature-file {wildcards.recipe}.npy --out {output} --log {log}"


rule linear_probe:
    input:
        unpack(chammi_features),
        meta=chammi_metadata(),
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
        root=chammi_root_of_input,
        features_dir=chammi_features_dir,
        probe=probe_args("batch-size"),
    shell:
        "channel-ssl linear-probe --root {params.root} --features-dir {params.features_dir}"
        " --feature-file {wildcards.recipe}.npy --out {output}"
        " {params.probe} --threads {threads} --log {log}"


rule evaluate_run:
    input:
        checkpoint=res("pretrain/{run}/checkpoint.pt"),
        manifests=probe_manifests,
    output:
        scores=res("scores/probe/{run}.csv"),
        # one feature file per probed source (which sources depends on the run)
        features=directory(probe_features_dir("{run}")),
    log:
        res("logs/evaluate/{run}.log"),
    conda:
        "../../envs/evaluate.yaml"
    threads: EXTRACT_THREADS
    resources:
        # the paper's augmented probes run the backbone at every step: sized by the plan
        **extract_resources(runtime=lambda w: probe_runtime_minutes(w.run, config)),
    params:
        plan=probe_plan_json,
        recipe=registry.PROBE_RECIPE,
        crop_size=config["extract"]["crop_size"],
        batch_size=config["extract"]["batch_size"],
        probe=probe_args("probe-batch-size"),
    shell:
        "channel-ssl evaluate-run --checkpoint {input.checkpoint} --plan '{params.plan}'"
        " --recipe {params.recipe} --scores-out {output.scores}"
        " --crop-size {params.crop_size} --batch-size {params.batch_size}"
        " {params.probe} --threads {threads} --log {log}"


rule extract_figure_view:
    input:
        checkpoint=res("pretrain/{run}/checkpoint.pt"),
        manifest=figure_view_manifest,
    output:
        res(f"features/{{run}}/{{view}}/{registry.FIGURE_RECIPE}.npy"),
    log:
        res("logs/extract/{run}/{view}.log"),
    conda:
        "../../envs/train.yaml"
    threads: EXTRACT_THREADS
    resources:
        **extract_resources(),
    params:
        out_dir=lambda w, output: os.path.dirname(output[0]),
        channels=figure_view_channels,
        recipe=registry.FIGURE_RECIPE,
        crop_size=config["extract"]["crop_size"],
        batch_size=config["extract"]["batch_size"],
    shell:
        "channel-ssl extract --checkpoint {input.checkpoint} --manifest {input.manifest}"
        " --out-dir {params.out_dir} --recipes {params.recipe} {params.channels}"
        " --crop-size {params.crop_size} --batch-size {params.batch_size}"
        " --threads {threads} --log {log}"
