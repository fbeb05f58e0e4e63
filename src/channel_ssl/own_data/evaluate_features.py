"""``channel-ssl evaluate-features``: features of an imported dataset and honest scores of them.

::

    channel-ssl evaluate-features --dataset DIR --checkpoint CKPT --out DIR
        [--family boc --arch micro]          # with --checkpoint random
        [--knn 1,5,10,20] [--knn-leave-group-out] [--recipe cls1] [--crop-size S]
        [--normalisation self|none] [--label COLUMN ...] [--batch-size 64] [--device auto]
        [--n-classifiers 14 --lr-min 1e-4 --lr-max 1 --epochs 10 --probe-batch-size 256
         --val-fraction 0.1 --weight-decay 0 --seed 0 --threads N]

``--dataset`` is an output of ``import-images`` (any directory with ``manifest.parquet`` and its
shards works; without ``dataset.json`` the manifest's ``label`` is the only label and there is
no group). ``--checkpoint`` is a checkpoint of this workflow (``checkpoint.pt``), or ``random``:
a network at random initialisation built from ``--family`` and ``--arch`` (run config defaults,
seed ``--seed``, position embeddings for the crop size).

Three feature sets, each scored with the same protocols (:mod:`channel_ssl.own_data.protocols`:
cosine k-NN for every ``--knn`` k, and the linear-probe sweep chosen on ``val``):

1. the model: recipe ``--recipe`` (:mod:`channel_ssl.eval.features`) of the checkpoint's
   teacher;
2. reference ``random init``: the same network at initialisation, built from the checkpoint's
   run config with its seed, exactly as ``pretrain --random-init`` builds it — what the
   architecture and the input pipeline give without any training;
3. reference ``intensity statistics``: per channel mean, std and 5/25/50/75/95th percentiles
   of the stored uint8 image (:mod:`channel_ssl.own_data.intensity`), z-scored with the
   reference images' statistics before the k-NN (the probe standardises every feature set).

Input pipeline of the networks, as ``channel-ssl extract``: uint8 -> float, centre crop of
``--crop-size`` (default the dataset's image size; resized first when smaller), then
``--normalisation self`` (default: per-image, per-channel mean/std, as the models were trained)
or ``none`` (the uint8 values divided by 255, no per-image statistics). A crop size or a dataset
image size other than the model's training crop (run config ``crops.global_crops_size``) is
logged as a WARNING. Channel-ViT: channels are matched to the model's channel embeddings by
name when the checkpoint's run config lists them (``channel_names``; a name it does not list is
an error naming it), otherwise by position (logged).

Output ``--out``:

- ``scores.csv``: ``model, protocol, k, label, metric, value`` — protocol ``knn``
  (train -> test), ``knn_leave_group_out`` or ``linear`` (k empty); metric ``macro_f1`` or
  ``accuracy``; value in percent (0-100), on the test images (leave-one-group-out: all
  labelled images);
- ``report.md``: the scores as tables model x protocol, what the rows and numbers mean, the
  splits, the chance level, the chosen learning rates;
- ``umap.png`` (+ ``umap.csv``, the coordinates): UMAP of the model's features coloured by
  each label (skipped, with a log line, below :data:`MIN_UMAP_IMAGES` images);
- ``features.npy``, ``random_init_features.npy``, ``intensity_features.npy``: float32
  ``(N, F)``, row i = the image whose manifest ``row`` is i.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from channel_ssl.atomic import save_npy, write_table, write_text
from channel_ssl.errors import UserError
from channel_ssl.eval.extract import resolve_device
from channel_ssl.eval.features import RECIPES
from channel_ssl.eval.linear_probe import add_probe_arguments, probe_config_from_args
from channel_ssl.own_data.dataset import Dataset, load_dataset
from channel_ssl.own_data.feature_models import (
    RANDOM,
    Model,
    channel_ids,
    embed_dataset,
    load_model,
    random_init_backbone,
    random_run_config,
)
from channel_ssl.own_data.intensity import dataset_statistics
from channel_ssl.own_data.report import render_report, render_umap
from channel_ssl.own_data.scoring import (
    REFERENCE_INTENSITY,
    REFERENCE_RANDOM,
    SCORE_COLUMNS,
    Results,
    score_all,
    warn,
)
from channel_ssl.provenance import StepIO

# the pieces of the command, importable from here as before the split
__all__ = [
    "RANDOM",
    "REFERENCE_INTENSITY",
    "REFERENCE_RANDOM",
    "SCORE_COLUMNS",
    "Dataset",
    "Model",
    "Results",
    "add_arguments",
    "channel_ids",
    "evaluate_features",
    "load_dataset",
    "output_files",
    "random_init_backbone",
    "random_run_config",
    "render_umap",
    "run",
]

log = logging.getLogger("channel_ssl.own_data.evaluate")

MIN_UMAP_IMAGES = 15
FEATURE_FILES = {
    "model": "features.npy",
    REFERENCE_RANDOM: "random_init_features.npy",
    REFERENCE_INTENSITY: "intensity_features.npy",
}
OUTPUT_FILES = ("scores.csv", "report.md")


# ----------------------------------------------------------------------------------- run
def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise UserError(
            f"--knn {text!r}: expected comma-separated integers, e.g. 1,5,10,20"
        ) from exc
    if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
        raise UserError(f"--knn {text!r}: give distinct k >= 1")
    return ks


def evaluate_features(args: argparse.Namespace) -> pd.DataFrame:
    """The command (module docstring); returns the score table written."""
    ks = parse_ks(args.knn)
    if args.recipe not in RECIPES:
        raise UserError(f"--recipe {args.recipe!r}; known: {', '.join(RECIPES)}")
    config = probe_config_from_args(args, args.device)
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, args.label)
    crop_size = int(args.crop_size or dataset.image_size)
    results = Results()
    model = load_model(
        args.checkpoint,
        args.family,
        args.arch,
        args.which,
        args.seed,
        crop_size,
        len(dataset.channels),
    )
    patch = int(model.backbone.patch_size)
    if crop_size % patch:
        raise UserError(
            f"crop size {crop_size} is not a multiple of the model's patch size {patch}; give "
            f"--crop-size {max(patch, crop_size // patch * patch)} (or import with that --image-size)"
        )
    trained_at = int(model.run_config["crops"]["global_crops_size"])
    if crop_size != trained_at:
        warn(
            results,
            f"crop size {crop_size} px differs from the model's training crop {trained_at} px "
            f"(crops.global_crops_size); for inputs like the model's, import with --image-size "
            f"{trained_at} and evaluate with --crop-size {trained_at}",
        )
    if dataset.image_size != trained_at:
        warn(
            results,
            f"the dataset's images are {dataset.image_size} px, the model was trained on "
            f"{trained_at} px crops",
        )
    ids = channel_ids(model, dataset.channels)
    if model.random:
        results.notes.append(
            "--checkpoint random: the model row is a network at random initialisation; it and the "
            "random-init reference are the same network and score the same."
        )
    reference = Model(
        REFERENCE_RANDOM,
        random_init_backbone(model.run_config),
        model.family,
        model.run_config,
        True,
    )
    log.info(
        "embedding %d images with %s and its random init (recipe %s, crop %d, normalisation %s)",
        len(dataset.manifest),
        model.name,
        args.recipe,
        crop_size,
        args.normalisation,
    )
    features = {
        m.name: embed_dataset(
            m, dataset, args.recipe, crop_size, args.normalisation, ids, args.batch_size, device
        )
        for m in (model, reference)
    }
    features[REFERENCE_INTENSITY] = dataset_statistics(dataset.manifest, dataset.store)
    score_all(features, dataset, ks, args.knn_leave_group_out, config, results)
    scores = pd.DataFrame(results.rows, columns=SCORE_COLUMNS)
    scores["k"] = scores["k"].astype("Int64")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    umap_file = None
    if len(dataset.manifest) < MIN_UMAP_IMAGES:
        message = f"UMAP skipped: {len(dataset.manifest)} images, fewer than {MIN_UMAP_IMAGES}"
        log.info("%s", message)
        results.notes.append(message)
    else:
        render_umap(features[model.name], dataset, model.name, args.seed, out / "umap.png")
        umap_file = "umap.png"
    files = dict(FEATURE_FILES)
    for name, array in features.items():
        key = "model" if name == model.name else name
        save_npy(out / files[key], array)
    settings = {
        "recipe": args.recipe,
        "crop_size": crop_size,
        "normalisation": args.normalisation,
        "n_classifiers": config.n_classifiers,
        "epochs": config.epochs,
        "probe_batch_size": config.batch_size,
        "arch": args.arch,
    }
    report = render_report(scores, results, dataset, model, args.checkpoint, settings, umap_file)
    write_table(out / "scores.csv", scores)
    write_text(out / "report.md", report)
    summary = scores[scores["metric"] == "macro_f1"].groupby(
        ["model", "protocol", "k"], dropna=False
    )
    log.info("macro-F1 x 100:\n%s", summary["value"].mean().round(1).to_string())
    log.info("wrote %s/scores.csv, report.md%s", out, ", umap.png" if umap_file else "")
    return scores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="output folder of import-images")
    parser.add_argument(
        "--checkpoint", required=True, help="a checkpoint.pt of this workflow, or 'random'"
    )
    parser.add_argument("--out", required=True, help="output folder (scores.csv, report.md, ...)")
    parser.add_argument("--family", help="with --checkpoint random: boc, cvit, ha or fixed")
    parser.add_argument(
        "--arch", help="with --checkpoint random: nano, micro, vit_small, vit_large"
    )
    parser.add_argument(
        "--knn", default="1,5,10,20", help="k of the k-NN protocol, comma-separated"
    )
    parser.add_argument(
        "--knn-leave-group-out",
        action="store_true",
        help="k-NN leave-one-group-out over the dataset's group column instead of train -> test",
    )
    parser.add_argument(
        "--label", action="append", help="label column(s) to score (default: all of the dataset's)"
    )
    parser.add_argument("--recipe", default="cls1", help=f"feature recipe: {', '.join(RECIPES)}")
    parser.add_argument("--crop-size", type=int, help="centre crop (default: the image size)")
    parser.add_argument(
        "--normalisation",
        choices=["self", "none"],
        default="self",
        help="self: per-image per-channel mean/std, as in training; none: pixels / 255",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument(
        "--which", default="teacher", choices=["teacher", "student"], help="checkpoint weights"
    )
    add_probe_arguments(parser, batch_flag="--probe-batch-size")


def run(args: argparse.Namespace) -> int:
    evaluate_features(args)
    return 0


def output_files(args: argparse.Namespace) -> dict[str, list[str]]:
    """What a finished run wrote (for its provenance record)."""
    out = Path(args.out)
    members = [str(out / name) for name in FEATURE_FILES.values()]
    members += [str(out / name) for name in ("umap.png", "umap.csv") if (out / name).exists()]
    inputs = [] if args.checkpoint == RANDOM else [args.checkpoint]
    inputs.append(str(Path(args.dataset) / "manifest.parquet"))
    description = Path(args.dataset) / "dataset.json"
    if description.exists():
        inputs.append(str(description))
    plumbing = {"dataset", "out", "log", "threads", "device", "command"}
    if args.checkpoint != RANDOM:
        plumbing.add("checkpoint")
    config = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in plumbing}
    return {
        "inputs": inputs,
        "outputs": [str(out / name) for name in OUTPUT_FILES],
        "members": members,
        "config": config,
    }


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    return StepIO(**output_files(args))
