# Data stage: the CHAMMI benchmark (demo, Zenodo or local copy), the other sources in their
# native layouts (demo copies, or the real data at paper scale), preprocessing into shards +
# manifests, and pretraining corpora.


if config["chammi"]["source"] == "demo":

    rule demo_chammi:
        output:
            chammi_metadata(res("data/chammi")),
        log:
            res("logs/data/demo_chammi.log"),
        conda:
            "../../envs/data.yaml"
        params:
            root=lambda w, output: dataset_root(output[0]),
            seed=config["seed"],
            scale=config["chammi"]["demo_scale"],
        shell:
            "channel-ssl make-demo-chammi --out {params.root} --seed {params.seed}"
            " --scale {params.scale} --variant benchmark --log {log}"

elif config["chammi"]["source"] == "zenodo":

    rule download_chammi:
        output:
            chammi_metadata(res("data/chammi")),
        log:
            res("logs/data/download_chammi.log"),
        conda:
            "../../envs/data.yaml"
        resources:
            runtime=24 * 60,
        params:
            root=lambda w, output: dataset_root(output[0]),
            url=config["chammi"]["record_url"],
        shell:
            "channel-ssl download-chammi --out {params.root} --record-url {params.url} --log {log}"


if DEMO:

    rule demo_source:
        input:
            chammi=chammi_metadata(),
        output:
            res("data/{raw}/DEMO_SOURCE.json"),
        log:
            res("logs/data/demo_{raw}.log"),
        conda:
            "../../envs/data.yaml"
        params:
            out=lambda w, output: os.path.dirname(output[0]),
            chammi=lambda w, input: dataset_root(input.chammi[0]),
            seed=config["seed"],
            scale=config["sources"]["demo_scale"],
        shell:
            "channel-ssl make-demo-source --source {wildcards.raw} --out {params.out}"
            " --seed {params.seed} --scale {params.scale} --chammi-root {params.chammi}"
            " --log {log}"

else:

    rule locate_source:
        output:
            res("data/{raw}/SOURCE_LOCATION.json"),
        log:
            res("logs/data/locate_{raw}.log"),
        conda:
            "../../envs/data.yaml"
        params:
            raw_dir=lambda w: raw_dir(w.raw),
        shell:
            "channel-ssl locate-source --source {wildcards.raw} --raw-dir '{params.raw_dir}'"
            " --out {output} --log {log}"


rule preprocess_chammi:
    input:
        meta=f"{chammi_root()}/{{dataset}}/enriched_meta.csv",
    output:
        res("shards/chammi/{dataset}/manifest.parquet"),
    log:
        res("logs/preprocess/chammi/{dataset}.log"),
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=config["resources"]["data"]["mem_mb"],
        runtime=config["resources"]["data"]["runtime"],
    params:
        root=lambda w, input: dataset_root(input.meta),
        out_dir=lambda w, output: os.path.dirname(output[0]),
        image_size=config["preprocess"]["image_size"],
        shard_size=config["preprocess"]["shard_size"],
    shell:
        "channel-ssl preprocess --chammi-root {params.root} --dataset {wildcards.dataset}"
        " --out-dir {params.out_dir} --image-size {params.image_size}"
        " --shard-size {params.shard_size} --log {log}"


rule prepare_source:
    input:
        raw=lambda w: raw_marker(registry.source(w.source).raw),
    output:
        res("shards/{source}/manifest.parquet"),
    log:
        res("logs/preprocess/{source}.log"),
    wildcard_constraints:
        source="|".join(registry.SOURCES),
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=config["resources"]["data"]["mem_mb"],
        runtime=config["resources"]["data"]["runtime"],
    params:
        raw_dir=lambda w: raw_dir(registry.source(w.source).raw),
        out_dir=lambda w, output: os.path.dirname(output[0]),
        image_size=config["preprocess"]["image_size"],
        shard_size=config["preprocess"]["shard_size"],
    shell:
        "channel-ssl prepare-source --source {wildcards.source} --raw-dir {params.raw_dir}"
        " --out-dir {params.out_dir} --image-size {params.image_size}"
        " --shard-size {params.shard_size} --log {log}"


rule assemble_corpus:
    input:
        manifests=corpus_manifests,
        # ExtendedCHAMMI's exclusion rules read CHAMMI's metadata; other corpora do not
        chammi=lambda w: chammi_metadata() if registry.corpus(w.corpus).extended else [],
    output:
        res("corpora/{corpus}/corpus.parquet"),
    log:
        res("logs/corpora/{corpus}.log"),
    conda:
        "../../envs/data.yaml"
    params:
        args=corpus_args,
    shell:
        "channel-ssl assemble-corpus {params.args} --out {output} --log {log}"
