"""What each ``channel-ssl`` step reads and writes, for its provenance record.

One function per command, from its parsed arguments to a :class:`StepIO`. Kept in one
place so the lineage of every output can be read off a single page. A command without an
entry here (``check-config``) writes nothing and gets no record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from channel_ssl.data.readers.chammi import DATASETS as CHAMMI_DATASETS
from channel_ssl.provenance import StepIO

_META = "enriched_meta.csv"


def _chammi_metadata(root: str) -> list[str]:
    return [os.path.join(root, d, _META) for d in CHAMMI_DATASETS]


def _chammi_images(root: str) -> list[str]:
    files = []
    for meta in _chammi_metadata(root):
        if os.path.exists(meta):
            paths = pd.read_csv(meta, usecols=["file_path"])["file_path"]
            files.extend(os.path.join(root, p) for p in paths)
    return files


def _manifest_file(path: str) -> str:
    return os.path.join(path, "manifest.parquet") if os.path.isdir(path) else path


def _shards_of(manifest: str) -> list[str]:
    if not os.path.exists(manifest):
        return []
    shards = pd.read_parquet(manifest, columns=["shard"])["shard"].unique()
    return [os.path.join(os.path.dirname(manifest), s) for s in sorted(shards)]


def make_demo_chammi(args) -> StepIO:
    return StepIO(outputs=_chammi_metadata(args.out), members=_chammi_images(args.out))


def download_chammi(args) -> StepIO:
    # The archives' md5 were checked against Zenodo's listing; the completion file holds them,
    # so the images are not hashed a second time.
    complete = os.path.join(args.out, ".download-complete.json")
    return StepIO(
        inputs=[],
        outputs=_chammi_metadata(args.out),
        members=[complete] if os.path.exists(complete) else [],
        config={"record_url": args.record_url, "files": args.files},
    )


def preprocess(args) -> StepIO:
    manifest = os.path.join(args.out_dir, "manifest.parquet")
    return StepIO(
        inputs=[os.path.join(args.chammi_root, args.dataset, _META)],
        outputs=[manifest],
        members=_shards_of(manifest),
    )


def assemble_corpus(args) -> StepIO:
    out = Path(args.out)
    summary = out.with_name(out.stem + ".summary.json")
    return StepIO(
        inputs=[_manifest_file(m) for m in args.manifest],
        outputs=[str(out)],
        members=[str(summary)] if summary.exists() else [],
    )


def pretrain(args) -> StepIO:
    text = args.run_config
    if not text.lstrip().startswith("{"):
        text = Path(text).read_text()
    return StepIO(
        inputs=[args.corpus] if args.corpus else [],
        outputs=[os.path.join(args.out_dir, "checkpoint.pt")],
        config=json.loads(text),
    )


def extract(args) -> StepIO:
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    inputs = [args.checkpoint] + [_manifest_file(m) for m in args.manifest]
    inputs += list(args.metadata or [])
    return StepIO(
        inputs=inputs,
        outputs=[os.path.join(d, f"{r}.npy") for d in args.out_dir for r in recipes],
    )


def chammi_scores(args) -> StepIO:
    features = [os.path.join(args.features_dir, d, args.feature_file) for d in CHAMMI_DATASETS]
    return StepIO(inputs=features + _chammi_metadata(args.root), outputs=[args.out])


def render_table(args) -> StepIO:
    from channel_ssl.render_tables import split_selector

    rows = list(args.row) + list(getattr(args, "reference", None) or [])
    files = (split_selector(row.split("=", 1)[1])[0] for row in rows if "=" in row)
    inputs = list(dict.fromkeys(files))
    if getattr(args, "summary", None):
        inputs.append(args.summary)
    return StepIO(inputs=inputs, outputs=[args.out_csv, args.out_md])


def render_claims(args) -> StepIO:
    from channel_ssl.claims import default_claims_path
    from channel_ssl.render_tables import default_tables_path

    inputs = list(dict.fromkeys(args.table_csv))
    inputs += [str(args.claims or default_claims_path()), str(args.tables or default_tables_path())]
    return StepIO(inputs=inputs, outputs=[args.out_csv, args.out_md])


def _files_under(root: str, exclude: set[str]) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            if path not in exclude and not name.endswith(".prov.json"):
                out.append(path)
    return sorted(out)


def make_demo_source(args) -> StepIO:
    marker = os.path.join(args.out, "DEMO_SOURCE.json")
    inputs = _chammi_metadata(args.chammi_root) if args.chammi_root else []
    return StepIO(inputs=inputs, outputs=[marker], members=_files_under(args.out, {marker}))


def locate_source(args) -> StepIO:
    # The real data is the user's: its location is recorded, its files are not hashed here.
    return StepIO(outputs=[args.out], config={"source": args.source, "raw_dir": args.raw_dir})


def prepare_source(args) -> StepIO:
    manifest = os.path.join(args.out_dir, "manifest.parquet")
    marker = [
        os.path.join(args.raw_dir, name)
        for name in ("DEMO_SOURCE.json", "SOURCE_LOCATION.json")
        if os.path.exists(os.path.join(args.raw_dir, name))
    ]
    return StepIO(inputs=marker, outputs=[manifest], members=_shards_of(manifest))


def probe_dataset(args) -> StepIO:
    return StepIO(inputs=[args.features, _manifest_file(args.manifest)], outputs=[args.out])


def render_figure(args) -> StepIO:
    inputs = [args.features, args.manifest]
    if args.features_subset:
        inputs.append(args.features_subset)
    out = Path(args.out)
    return StepIO(inputs=inputs, outputs=[str(out)], members=[str(out.with_suffix(".csv"))])


def import_images(args) -> StepIO:
    from dataclasses import asdict

    from channel_ssl.own_data.import_images import options_from_args

    # Inputs: the table and every image file the manifest was made from.
    manifest = os.path.join(args.out, "manifest.parquet")
    images = []
    if os.path.exists(manifest):
        for image_id in pd.read_parquet(manifest, columns=["image_id"])["image_id"]:
            images.extend(os.path.join(args.images, p) for p in image_id.split("|"))
    members = _shards_of(manifest)
    members += [
        os.path.join(args.out, name)
        for name in ("dataset.json", "skipped.csv")
        if os.path.exists(os.path.join(args.out, name))
    ]
    return StepIO(
        inputs=[args.table, *images],
        outputs=[manifest],
        members=members,
        config=asdict(options_from_args(args)),
    )


def evaluate_features(args) -> StepIO:
    from channel_ssl.own_data.evaluate_features import output_files

    return StepIO(**output_files(args))


def import_weights(args) -> StepIO:
    return StepIO(inputs=[args.checkpoint], outputs=[args.out])


def use_checkpoint(args) -> StepIO:
    return StepIO(inputs=[args.checkpoint], outputs=[args.out], config=json.loads(args.run_config))


STEP_IO: dict[str, Callable[..., StepIO]] = {
    "make-demo-chammi": make_demo_chammi,
    "download-chammi": download_chammi,
    "preprocess": preprocess,
    "assemble-corpus": assemble_corpus,
    "pretrain": pretrain,
    "extract": extract,
    "eval-chammi": chammi_scores,
    "linear-probe": chammi_scores,
    "render-table": render_table,
    "render-claims": render_claims,
    "make-demo-source": make_demo_source,
    "locate-source": locate_source,
    "prepare-source": prepare_source,
    "probe-dataset": probe_dataset,
    "render-figure": render_figure,
    "import-images": import_images,
    "evaluate-features": evaluate_features,
    "import-weights": import_weights,
    "use-checkpoint": use_checkpoint,
}
