import json
import os
import sys

from snakemake.utils import validate

from channel_ssl import registry
from channel_ssl.audit import changed_outputs
from channel_ssl.environment import put_interpreter_on_path
from channel_ssl.config import check_unknown_keys
from channel_ssl.plan import probe_runtime_minutes, sizing
from channel_ssl.paper_tables import load_paper_tables
from channel_ssl.user_data import register as register_user_data

# one line per unknown key, before validate would print the whole schema
check_unknown_keys(config)
validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results_dir"]
# config 'user_datasets' and 'user_runs', checked and added to the registry (before anything
# reads it); rules in user_data.smk
USER_DATASETS = register_user_data(config)
# runs whose weights are given (config 'pretrained'), not trained here
PRETRAINED = dict(config["pretrained"])
for _run in PRETRAINED:
    if _run not in registry.RUNS:
        raise ValueError(
            f"config pretrained: {_run!r} is not a pretraining run; runs: {', '.join(registry.RUNS)}"
        )


# The rules find `channel-ssl` whether or not its environment is activated or on PATH.
put_interpreter_on_path()


def report_changed_outputs():
    """Read-only: name the outputs that no longer match their provenance records and say how
    to set them aside. Nothing is moved here; `channel-ssl repair` does that, when run.
    """
    changed = changed_outputs(RESULTS)
    if changed:
        logger.warning(
            "provenance: these outputs changed after they were made, and what was computed "
            "from them still uses them:\n  "
            + "\n  ".join(changed)
            + f"\nSet them aside (nothing is deleted) and re-make them with:\n  "
            f"channel-ssl repair --results-dir {RESULTS} && snakemake ..."
        )


onstart:
    report_changed_outputs()


def res(path):
    """``path`` inside the configured results directory."""
    return os.path.join(RESULTS, path)


CHAMMI_DATASETS = list(registry.CHAMMI_DATASETS)


wildcard_constraints:
    dataset="|".join(CHAMMI_DATASETS),
    source="[a-z0-9_]+",
    run="|".join([*registry.RUNS, *registry.REFERENCE_RUNS]),
    protocol="knn|linear",
    recipe="[a-z0-9_]+",
    corpus="|".join(registry.CORPORA),
    raw="|".join(sorted({s.raw for s in registry.SOURCES.values()})),
    view="[a-z0-9_]+(-ch[0-9]+)?",
    figure="|".join(registry.FIGURES),


DEMO = config["scale"] != "paper"


def get_final_output():
    """Every table and figure the config's 'targets' lists, and the claims table (rule
    render_claims) when every table its claims rest on is among them."""
    outputs = [out for t in config["targets"] for out in target_outputs(t)]
    if set(claim_tables()) <= set(config["targets"]):
        outputs += [table_output("claims"), table_output("claims", "md")]
    return outputs


def target_outputs(name):
    if name in registry.FIGURES:
        return [res(f"figures/{name}.png")]
    return [table_output(name), table_output(name, "md")]


def table_output(table, ext="csv"):
    return res(f"tables/{table}.{ext}")


def chammi_root():
    """Root of the CHAMMI benchmark in its own layout."""
    if config["chammi"]["source"] == "local":
        return config["chammi"]["root"]
    return res("data/chammi")


def chammi_metadata(root=None):
    """CHAMMI's three ``enriched_meta.csv`` under ``root`` (default: the configured root)."""
    return [
        os.path.join(root or chammi_root(), d, "enriched_meta.csv")
        for d in CHAMMI_DATASETS
    ]


def dataset_root(path):
    """The root above ``<root>/<dataset>/<file>`` (CHAMMI and MorphEm layouts)."""
    return os.path.dirname(os.path.dirname(path))


def raw_marker(raw):
    """The file that says a source's native-layout copy is complete."""
    if DEMO:
        return res(f"data/{raw}/DEMO_SOURCE.json")
    return res(f"data/{raw}/SOURCE_LOCATION.json")


def raw_dir(raw):
    if DEMO:
        return res(f"data/{raw}")
    return config["sources"]["raw_dirs"].get(raw, "")


def manifest_path(source, dataset=None):
    if source == "chammi":
        return res(f"shards/chammi/{dataset}/manifest.parquet")
    return res(f"shards/{source}/manifest.parquet")


def corpus_manifests(wildcards):
    corpus = registry.corpus(wildcards.corpus)
    if corpus.sources == ("chammi",):
        return [manifest_path("chammi", d) for d in CHAMMI_DATASETS]
    return [manifest_path(s) for s in corpus.sources]


def corpus_args(wildcards, input):
    corpus = registry.corpus(wildcards.corpus)
    manifests = " ".join(f"--manifest {m}" for m in input.manifests)
    if corpus.extended:
        leave = f" --leave-out {','.join(corpus.leave_out)}" if corpus.leave_out else ""
        return f"{manifests} --extended-chammi --chammi-root {chammi_root()}{leave}"
    return f"{manifests} --splits {' '.join(corpus.splits)} --balance source"


def corpus_of_run(wildcards):
    return res(f"corpora/{registry.run(wildcards.run).corpus}/corpus.parquet")


def run_config_json(wildcards):
    return json.dumps(registry.run_config(wildcards.run, config), sort_keys=True)


def resources_of(group):
    return config["resources"][group]


def pretrain_group(wildcards):
    return "pretrain_boc" if registry.run(wildcards.run).family == "boc" else "pretrain"


def pretrain_resource(key):
    """A pretraining job's resource: nodes and runtime sized per run by the plan
    (channel_ssl.plan, within the group's maxima), the rest from the config's group."""

    def get(wildcards):
        if key == "nodes":
            return sizing(wildcards.run, config).nodes
        if key == "runtime":
            return sizing(wildcards.run, config).runtime_minutes
        return resources_of(pretrain_group(wildcards))[key]

    return get


def pretrain_gpus(wildcards):
    return sizing(wildcards.run, config).gpus


def pretrain_launcher(wildcards):
    """Multi-GPU runs start one process per GPU with srun inside the SLURM allocation."""
    if resources_of(pretrain_group(wildcards))["launcher"] == "srun":
        return "srun --kill-on-bad-exit=1"
    return ""


def chammi_features(wildcards):
    return {
        d: res(f"features/{wildcards.run}/{d}/{wildcards.recipe}.npy")
        for d in CHAMMI_DATASETS
    }


def chammi_root_of_input(wildcards, input):
    """The CHAMMI root of a scoring job's metadata input."""
    return dataset_root(input.meta[0])


def chammi_features_dir(wildcards, input):
    """The root of a scoring job's CHAMMI feature files (``<dir>/<dataset>/<recipe>.npy``)."""
    return dataset_root(input.Allen)


def chammi_extract_views(wildcards, input, output):
    """One ``--manifest --metadata --out-dir`` triple per CHAMMI dataset, for extract."""
    return " ".join(
        f"--manifest {m} --metadata {meta} --out-dir {os.path.dirname(out)}"
        for m, meta, out in zip(
            input.manifests, input.meta, output[:: len(registry.CHAMMI_RECIPES)]
        )
    )


# The resources of a job that runs a backbone over whole datasets (extract, evaluate-run)
EXTRACT_THREADS = config["resources"]["extract"]["threads"]


def extract_resources(**overrides):
    extract = config["resources"]["extract"]
    return {
        "gpu": extract["gpus_per_node"],
        "mem_mb": extract["mem_mb"],
        "runtime": extract["runtime"],
        "cpus_per_task": extract["threads"],
        **overrides,
    }


# The linear-probe sweep's options (config linear_probe, seed): one object for every rule
# that trains probes; the batch-size flag is named per command.
PROBE_OPTIONS = {
    "n-classifiers": config["linear_probe"]["n_classifiers"],
    "lr-min": config["linear_probe"]["lr_min"],
    "lr-max": config["linear_probe"]["lr_max"],
    "epochs": config["linear_probe"]["epochs"],
    "batch-size": config["linear_probe"]["batch_size"],
    "val-fraction": config["linear_probe"]["val_fraction"],
    "weight-decay": config["linear_probe"]["weight_decay"],
    "seed": config["seed"],
}


def probe_args(batch_flag):
    return " ".join(
        f"--{batch_flag if flag == 'batch-size' else flag} {value}"
        for flag, value in PROBE_OPTIONS.items()
    )


def probe_manifests(wildcards):
    return [manifest_path(src) for src, _ in registry.probe_plan(wildcards.run)]


def probe_protocol(source):
    """The augmented protocol's settings for ``source``; None under the features protocol."""
    probe = config["linear_probe"]
    if probe["protocol"] != "augmented":
        return None
    aug = probe["augmented"]
    return {
        "iterations": aug["iterations"],
        "batch_size": aug["batch_size"].get(source, aug["default_batch_size"]),
        "crop_size": aug["crop_size"].get(source, aug["default_crop_size"]),
        "normalisation": aug["normalisation"].get(source, "self"),
    }


def probe_features_dir(run):
    """Where evaluate-run writes ``<source>/<recipe>.npy`` of every source it probes."""
    return res(f"features/{run}/probe")


def probe_plan_json(wildcards):
    """The evaluate-run plan: each source's manifest, feature file, probes and protocol."""
    plan = []
    for src, probes in registry.probe_plan(wildcards.run):
        item = {
            "manifest": manifest_path(src),
            "features": os.path.join(
                probe_features_dir(wildcards.run), src, f"{registry.PROBE_RECIPE}.npy"
            ),
            "probes": probes,
        }
        if probe_protocol(src) is not None:
            item["protocol"] = probe_protocol(src)
        plan.append(item)
    return json.dumps(plan)


def split_view(view):
    """A figure view ``<source>[-ch<digits>]`` -> (source, channel digits or None)."""
    source, _, channels = view.partition("-ch")
    return source, channels or None


def figure_view_manifest(wildcards):
    return manifest_path(split_view(wildcards.view)[0])


def figure_view_channels(wildcards):
    channels = split_view(wildcards.view)[1]
    return "--channels " + ",".join(channels) if channels else ""


def row_score_files(row, select=False):
    """A row's score files; ``select`` adds ``@SOURCE`` to keep the rows of each probed source."""
    if row.protocol == "probe":
        path = res(f"scores/probe/{row.run}.csv")
        if not select:
            return [path]
        return [f"{path}@{src}" for src in registry.row_sources(row)]
    return [res(f"scores/{row.protocol}/{row.run}/{row.recipe}.csv")]


def table_inputs(wildcards):
    t = registry.table(wildcards.table)
    if t.corpus_summary:
        return [res(f"corpora/{t.corpus_summary}/corpus.parquet")]
    return [f for row in t.all_rows for f in row_score_files(row)]


def table_args(wildcards):
    t = registry.table(wildcards.table)
    if t.corpus_summary:
        return f"--summary {res(f'corpora/{t.corpus_summary}/corpus.summary.json')}"
    args = []
    for row in t.rows:
        args += [f"--row '{row.label}={f}'" for f in row_score_files(row, select=True)]
        args += [f"--na '{row.label}={column}'" for column in row.na]
    if t.reference:
        args += [f"--reference '{t.reference.label}={row_score_files(t.reference)[0]}'"]
    return " ".join(args)


def figure_inputs(wildcards):
    f = registry.figure(wildcards.figure)
    inputs = {
        "features": res(f"features/{f.run}/{f.source}/{registry.FIGURE_RECIPE}.npy"),
        "manifest": manifest_path(f.source),
    }
    if f.subset_channels:
        inputs["subset"] = res(
            f"features/{f.run}/{f.source}-ch{channels_tag(f.subset_channels)}/{registry.FIGURE_RECIPE}.npy"
        )
    return inputs


def channels_tag(channels):
    return "".join(str(c) for c in channels)


def table_how(name):
    """How a table's numbers are made, for the report caption."""
    t = registry.table(name)
    if t.corpus_summary:
        return "Counted from the assembled ExtendedCHAMMI corpus (kept / total per source)."
    parts = []
    for row in t.all_rows:
        if row.protocol == "probe":
            how = (
                "linear probes ("
                + ", ".join(row.probes)
                + f") on {row.recipe} features"
            )
        else:
            proto = (
                "CHAMMI 1-NN (cosine)"
                if row.protocol == "knn"
                else "CHAMMI linear probe"
            )
            how = f"{proto} on {row.recipe} features"
        parts.append(f"{row.label}: run {row.run}, {how}")
    return "Rows: " + "; ".join(parts) + "."


PROBE_PROTOCOLS = {
    "features": "linear probes on features extracted once (centre crop, self-normalisation)",
    "augmented": (
        "linear probes by the paper's protocol: random crops and flips through the frozen "
        "backbone, per-dataset crop, batch and normalisation"
    ),
}


def table_note(name):
    """The table's header note: the scale, which probe protocol made its numbers, and where
    given (not trained) weights came from."""
    rows = registry.table(name).all_rows
    given = sorted({r.run for r in rows if r.run in PRETRAINED})
    weights = "".join(
        f" Weights of {run}: {PRETRAINED[run]} (given in config 'pretrained', not trained "
        "by this workflow)."
        for run in given
    )
    return _protocol_note(rows) + weights


def _protocol_note(rows):
    protocols = []
    if any(r.protocol == "probe" for r in rows):
        protocols.append(PROBE_PROTOCOLS[config["linear_probe"]["protocol"]])
    if any(r.protocol == "linear" for r in rows):
        protocols.append("CHAMMI linear probe on features extracted once")
    if not protocols:
        return scale_note()
    return scale_note() + " Made with " + "; ".join(protocols) + "."


def scale_note():
    if config["scale"] == "paper":
        return "Paper scale: the paper's recipe on the paper's data."
    return (
        f"DEMO numbers ({config['scale']} configuration): generated demo copies of every "
        "dataset and tiny models trained briefly on CPU; they do not reproduce the paper."
    )
