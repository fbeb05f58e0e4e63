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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from channel_ssl.atomic import save_npy, write_table, write_text
from channel_ssl.data.shards import ShardStore, factors_of, load_manifest
from channel_ssl.errors import UserError
from channel_ssl.eval.extract import check_rows, iter_batches, prepare_batch, resolve_device
from channel_ssl.eval.features import (
    RECIPES,
    canonical_family,
    make_features,
    n_last_blocks_needed,
)
from channel_ssl.eval.linear_probe import ProbeConfig, add_probe_arguments, probe_config_from_args
from channel_ssl.own_data.import_images import read_dataset_description
from channel_ssl.own_data.intensity import dataset_statistics
from channel_ssl.own_data.protocols import (
    Folds,
    ProbeScore,
    knn_folds,
    knn_scores,
    linear_probe_score,
    probe_rows,
)

log = logging.getLogger("channel_ssl.own_data.evaluate")

RANDOM = "random"
REFERENCE_RANDOM = "reference: random init"
REFERENCE_INTENSITY = "reference: intensity statistics"
SCORE_COLUMNS = ["model", "protocol", "k", "label", "metric", "value"]
METRICS = ("macro_f1", "accuracy")
MIN_UMAP_IMAGES = 15
MIN_PROBE_STEPS = 100  # fewer: a WARNING suggests more epochs / smaller batches
FEATURE_FILES = {
    "model": "features.npy",
    REFERENCE_RANDOM: "random_init_features.npy",
    REFERENCE_INTENSITY: "intensity_features.npy",
}
OUTPUT_FILES = ("scores.csv", "report.md")


@dataclass
class Dataset:
    """An imported dataset, rows ordered by manifest ``row``."""

    path: Path
    manifest: pd.DataFrame
    store: ShardStore
    channels: list[str]
    image_size: int
    labels: dict[str, np.ndarray]  # label column -> (N,) str ('' = unlabelled)
    groups: np.ndarray | None  # (N,) str
    group_column: str | None
    split: np.ndarray  # (N,) str


@dataclass
class Model:
    name: str
    backbone: torch.nn.Module
    family: str
    run_config: dict
    random: bool


@dataclass
class Results:
    rows: list[dict] = field(default_factory=list)
    probes: dict[tuple[str, str], ProbeScore] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _warn(results: Results, message: str) -> None:
    log.warning("%s", message)
    results.warnings.append(message)


# -------------------------------------------------------------------------------- dataset
def load_dataset(path: str | os.PathLike, wanted_labels: list[str] | None = None) -> Dataset:
    """The manifest, shards and labels of ``path`` (module docstring); UserError if unusable."""
    path = Path(path)
    manifest = load_manifest(path).sort_values("row", kind="stable").reset_index(drop=True)
    check_rows(manifest, len(manifest), str(path / "manifest.parquet"))
    channel_sets = manifest["channels"].unique()
    sizes = manifest[["height", "width"]].drop_duplicates()
    if len(channel_sets) != 1 or len(sizes) != 1:
        raise UserError(
            f"dataset {path}: images differ in channels {list(channel_sets)[:3]} or size "
            f"({len(sizes)} sizes); evaluate-features needs one channel set and one size"
        )
    description = read_dataset_description(path) or {}
    columns = description.get("labels") or ["label"]
    group_column = description.get("group")
    factors = [factors_of(row) for _, row in manifest.iterrows()]
    if wanted_labels:
        unknown = [c for c in wanted_labels if c not in columns]
        if unknown:
            raise UserError(f"--label {unknown}: dataset {path} has label column(s) {columns}")
        columns = wanted_labels
    labels = {}
    for column in columns:
        if column == "label" and column not in factors[0]:
            labels[column] = manifest["label"].astype(str).to_numpy()
        else:
            labels[column] = np.array([str(f.get(column, "")) for f in factors])
    groups = None
    if group_column:
        groups = np.array([str(f.get(group_column, "")) for f in factors])
    return Dataset(
        path=path,
        manifest=manifest,
        store=ShardStore(path),
        channels=str(channel_sets[0]).split("|"),
        image_size=int(sizes.iloc[0]["height"]),
        labels=labels,
        groups=groups,
        group_column=group_column,
        split=manifest["split"].astype(str).to_numpy(),
    )


# --------------------------------------------------------------------------------- models
def random_init_backbone(run_config: dict) -> torch.nn.Module:
    """The run's backbone at initialisation: the global generator seeded with the run's seed,
    then the backbone built first, as :func:`channel_ssl.train.ssl_meta_arch.build_training`
    does (so equal to the teacher of ``pretrain --random-init``). The caller's RNG is kept."""
    from channel_ssl.train.checkpoint import backbone_from_run_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(run_config.get("seed", 0)))
        backbone = backbone_from_run_config(run_config)
    return backbone.eval()


def random_run_config(family: str, arch: str, seed: int, crop_size: int, n_channels: int) -> dict:
    """The run config of ``--checkpoint random``: defaults, the given network, seed and crop."""
    from channel_ssl.train.run_config import RunConfig

    cfg = RunConfig(run=f"random-init {family} {arch}", seed=seed)
    cfg.model.family = family
    cfg.model.arch = arch
    cfg.model.k_max = max(cfg.model.k_max, n_channels)
    cfg.model.in_chans = n_channels
    cfg.crops.global_crops_size = crop_size
    return cfg.to_dict()


def load_model(
    checkpoint: str,
    family: str | None,
    arch: str | None,
    which: str,
    seed: int,
    crop_size: int,
    n_channels: int,
) -> Model:
    from channel_ssl.models import ARCHS, FAMILIES
    from channel_ssl.train.checkpoint import load_backbone

    if checkpoint == RANDOM:
        if not family or not arch:
            raise UserError("--checkpoint random needs --family and --arch")
        if family not in FAMILIES:
            raise UserError(f"--family {family!r}; known: {', '.join(FAMILIES)}")
        if arch not in ARCHS:
            raise UserError(f"--arch {arch!r}; known: {', '.join(ARCHS)}")
        patch = ARCHS[arch].patch_size
        if crop_size % patch:
            raise UserError(
                f"crop size {crop_size} is not a multiple of {arch}'s patch size {patch}; give "
                f"--crop-size {max(patch, crop_size // patch * patch)}"
            )
        run_config = random_run_config(family, arch, seed, crop_size, n_channels)
        return Model(run_config["run"], random_init_backbone(run_config), family, run_config, True)
    if family or arch:
        raise UserError("--family and --arch are for --checkpoint random; a checkpoint has its own")
    backbone, run_config = load_backbone(checkpoint, which=which)
    name = run_config.get("run") or Path(checkpoint).parent.name
    return Model(name, backbone, run_config["model"]["family"], run_config, False)


def channel_ids(model: Model, channels: list[str]) -> list[int] | None:
    """Channel-ViT: the embedding index of every channel (module docstring); others: None."""
    family = canonical_family(model.family)
    rc = model.run_config
    if family == "fixed":
        in_chans = int(rc["model"].get("in_chans", 1))
        if in_chans != len(channels):
            raise UserError(
                f"the fixed-channel model {model.name} takes exactly {in_chans} channel(s); the "
                f"dataset has {len(channels)} ({','.join(channels)})"
            )
        return None
    if family != "cvit":
        return None
    known = rc.get("channel_names") or rc["model"].get("channel_names")
    k_max = int(rc["model"].get("k_max", 8))
    if known:
        known = [str(n) for n in known]
        unknown = [c for c in channels if c not in known]
        if unknown:
            raise UserError(
                f"channel {unknown[0]!r} of the dataset is not one the Channel-ViT "
                f"{model.name} was trained on (it knows {', '.join(known)}); rename it with "
                "import-images --channels, or leave it out"
            )
        ids = [known.index(c) for c in channels]
        log.info("Channel-ViT channels by name: %s", dict(zip(channels, ids, strict=True)))
        return ids
    if len(channels) > k_max:
        raise UserError(
            f"the Channel-ViT {model.name} has {k_max} channel embeddings; the dataset has "
            f"{len(channels)} channels"
        )
    log.info(
        "Channel-ViT %s: its run config names no channels, so channels are matched by position "
        "(%s -> embeddings 0..%d)",
        model.name,
        ",".join(channels),
        len(channels) - 1,
    )
    return list(range(len(channels)))


# ----------------------------------------------------------------------------- features
def centre_crop(images: np.ndarray, crop_size: int) -> torch.Tensor:
    """uint8 ``(B, K, H, W)`` -> float ``(B, K, S, S)`` in 0..1: the crop of
    :func:`channel_ssl.eval.extract.prepare_batch` without its self-normalisation."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    height, width = x.shape[-2:]
    short = min(height, width)
    if short < crop_size:
        scale = crop_size / short
        size = (max(crop_size, round(height * scale)), max(crop_size, round(width * scale)))
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        height, width = size
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    return x[..., top : top + crop_size, left : left + crop_size]


def embed_dataset(
    model: Model,
    dataset: Dataset,
    recipe: str,
    crop_size: int,
    normalisation: str,
    ids: list[int] | None,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """float32 ``(N, F)`` features of every image (row i = manifest row i)."""
    family = canonical_family(model.family)
    n_blocks = n_last_blocks_needed([recipe])
    backbone = model.backbone.to(device).eval()
    out: np.ndarray | None = None
    with torch.no_grad():
        for rows, images in iter_batches(dataset.manifest, dataset.store, batch_size):
            if normalisation == "self":
                x = prepare_batch(images, crop_size)
            else:
                x = centre_crop(images, crop_size)
            x = x.to(device)
            if ids is not None:
                index = torch.tensor(ids, dtype=torch.long, device=device).expand(len(x), len(ids))
                emb = backbone.embed(x, n_last_blocks=n_blocks, channel_ids=index)
            else:
                emb = backbone.embed(x, n_last_blocks=n_blocks)
            f = make_features(emb, recipe, family).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(dataset.manifest), f.shape[1]), dtype=np.float32)
            out[rows] = f
    if out is None:
        raise UserError(f"dataset {dataset.path} lists no images")
    return out


# ------------------------------------------------------------------------------- scoring
def encode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labelled rows, int labels (N,) with -1 for unlabelled, class names)."""
    classes = sorted(set(values.tolist()) - {""})
    lookup = {c: i for i, c in enumerate(classes)}
    encoded = np.array([lookup.get(v, -1) for v in values], dtype=np.int64)
    return np.flatnonzero(encoded >= 0), encoded, classes


def score_all(
    features: dict[str, np.ndarray],
    dataset: Dataset,
    ks: list[int],
    leave_group_out: bool,
    config: ProbeConfig,
    results: Results,
) -> None:
    """Every model x label x protocol -> ``results.rows`` (fractions turned into percent)."""
    for column, values in dataset.labels.items():
        labelled, encoded, classes = encode(values)
        if len(classes) < 2:
            raise UserError(
                f"label column {column!r} has {len(classes)} class(es) {classes}; need at least 2"
            )
        folds: Folds = knn_folds(labelled, dataset.split, dataset.groups, leave_group_out)
        rows = probe_rows(labelled, dataset.split, encoded, config)
        n_train = len(rows[0])
        steps = config.epochs * math.ceil(n_train / min(config.batch_size, n_train))
        if steps < MIN_PROBE_STEPS:
            _warn(
                results,
                f"label {column}: the linear probe makes only {steps} optimiser steps "
                f"({config.epochs} epochs of {n_train} train images in batches of "
                f"{config.batch_size}); on a dataset this small, more (e.g. --epochs 100 "
                "--probe-batch-size 64) usually scores higher",
            )
        for name, x in features.items():
            z_score = name == REFERENCE_INTENSITY
            log.info("%s, label %s: k-NN (%s) and linear probe", name, column, folds.protocol)
            for k, (f1, acc) in knn_scores(x, encoded, folds, ks, len(classes), z_score).items():
                for metric, value in zip(METRICS, (f1, acc), strict=True):
                    results.rows.append(
                        {
                            "model": name,
                            "protocol": folds.protocol,
                            "k": k,
                            "label": column,
                            "metric": metric,
                            "value": 100.0 * value,
                        }
                    )
            probe = linear_probe_score(x, encoded, rows, len(classes), config)
            results.probes[(name, column)] = probe
            for metric, value in zip(METRICS, (probe.f1, probe.accuracy), strict=True):
                results.rows.append(
                    {
                        "model": name,
                        "protocol": "linear",
                        "k": None,
                        "label": column,
                        "metric": metric,
                        "value": 100.0 * value,
                    }
                )


# -------------------------------------------------------------------------------- report
def _chance(dataset: Dataset, column: str) -> str:
    """Majority-class baseline on the test split, in words."""
    from channel_ssl.eval.metrics import accuracy, macro_f1

    values = dataset.labels[column]
    train = values[(dataset.split == "train") & (values != "")]
    test = values[(dataset.split == "test") & (values != "")]
    if len(train) == 0 or len(test) == 0:
        return ""
    names, counts = np.unique(train, return_counts=True)
    majority = str(names[np.argmax(counts)])
    guess = np.full(len(test), majority)
    return (
        f"Always answering the most frequent training label ({majority!r}) would score "
        f"macro-F1 {100 * macro_f1(test, guess):.1f} and accuracy {100 * accuracy(test, guess):.1f} "
        f"on the test images; guessing uniformly at random, about {100 / len(names):.1f} for both."
    )


def _table(scores: pd.DataFrame, column: str, metric: str, order: list[str]) -> str:
    part = scores[(scores["label"] == column) & (scores["metric"] == metric)].copy()
    part["protocol_k"] = [
        "linear probe" if p == "linear" else f"{'k-NN LOGO' if p != 'knn' else 'k-NN'} k={int(k)}"
        for p, k in zip(part["protocol"], part["k"], strict=True)
    ]
    columns = list(dict.fromkeys(part["protocol_k"]))
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name in order:
        cells = []
        for col in columns:
            hit = part[(part["model"] == name) & (part["protocol_k"] == col)]["value"]
            cells.append(f"{hit.iloc[0]:.1f}" if len(hit) else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_report(
    scores: pd.DataFrame,
    results: Results,
    dataset: Dataset,
    model: Model,
    checkpoint: str,
    settings: dict,
    umap_file: str | None,
) -> str:
    order = [model.name, REFERENCE_RANDOM, REFERENCE_INTENSITY]
    counts = {s: int((dataset.split == s).sum()) for s in ("train", "val", "test")}
    what = (
        f"a network at random initialisation ({model.family} {settings['arch']}, seed "
        f"{model.run_config.get('seed', 0)}): **nothing was trained**, so its row and the "
        "random-init reference are the same network"
        if model.random
        else f"checkpoint `{checkpoint}` (run `{model.name}`, family {model.family}, "
        f"arch {model.run_config['model']['arch']}, trained at "
        f"{model.run_config['crops']['global_crops_size']} px)"
    )
    lines = [
        f"# Feature evaluation of `{dataset.path}`",
        "",
        f"Model: {what}. Features: recipe `{settings['recipe']}`, centre crop "
        f"{settings['crop_size']} px, normalisation `{settings['normalisation']}`.",
        "",
        f"Dataset: {len(dataset.manifest)} images, {len(dataset.channels)} channels "
        f"({', '.join(dataset.channels)}), {dataset.image_size} px; splits: train "
        f"{counts['train']}, val {counts['val']}, test {counts['test']}"
        + (f"; groups from column `{dataset.group_column}`" if dataset.group_column else "")
        + ".",
        "",
        "## What the rows and numbers are",
        "",
        f"- **{model.name}**: the model's features.",
        f"- **{REFERENCE_RANDOM}**: the same network at random initialisation, built "
        "from the checkpoint's run config with its seed, with the same inputs. What the "
        "architecture and the input pipeline give without training; a trained model should beat it.",
        f"- **{REFERENCE_INTENSITY}**: per channel mean, standard deviation and the "
        "5/25/50/75/95th percentiles of the stored uint8 pixels (7 numbers per channel). A model "
        "that does not beat it has not shown that it sees more than brightness and contrast.",
        "",
        "Every number is a percentage (0-100) on images the classifier did not learn from: the "
        "**test** split, or with k-NN LOGO (leave one group out) every labelled image, scored with "
        "the images of the other groups as reference.",
        "",
        "- **k-NN k=n**: cosine similarity, the n most similar reference (train) images vote "
        "(majority; ties go to the label of the most similar image). No training; the raw "
        "features, except the intensity statistics, which are z-scored with the reference "
        "images' mean and std first.",
        "- **linear probe**: "
        f"{settings['n_classifiers']} linear (softmax) classifiers with log-spaced learning "
        "rates, on the features standardised with the train split's statistics, trained "
        f"together on the train split ({settings['epochs']} epochs, batches of "
        f"{settings['probe_batch_size']}); the one with the best macro-F1 on the "
        "**val** split is kept and scores the test split once (test labels never choose "
        "anything).",
        "- **macro-F1**: the F1 score of every label present in the scored truth, averaged with "
        "equal weight per label (a rare label counts as much as a common one). **Accuracy**: "
        "the share of correct answers.",
        "",
    ]
    for column in dataset.labels:
        chance = _chance(dataset, column)
        lines += [f"## Label `{column}`", ""]
        if chance:
            lines += [chance, ""]
        for metric, title in (("macro_f1", "Macro-F1 x 100"), ("accuracy", "Accuracy x 100")):
            lines += [f"{title}:", "", _table(scores, column, metric, order), ""]
        lines += ["Linear probe: chosen learning rate (val macro-F1 x 100):", ""]
        for name in order:
            probe = results.probes.get((name, column))
            if probe is not None:
                carved = " (val carved from train)" if probe.carved_val else ""
                lines.append(
                    f"- {name}: lr {probe.lr:.3g} ({100 * probe.val_f1:.1f}); train "
                    f"{probe.n_train}, val {probe.n_val}{carved}, test {probe.n_test}"
                )
        lines.append("")
    if umap_file:
        lines += ["## UMAP", "", f"![UMAP of the model's features]({umap_file})", ""]
    if results.warnings or results.notes:
        lines += ["## Notes", ""]
        lines += [f"- WARNING: {w}" for w in results.warnings]
        lines += [f"- {n}" for n in results.notes]
        lines.append("")
    return "\n".join(lines)


def render_umap(features: np.ndarray, dataset: Dataset, model_name: str, seed: int, out: Path):
    """UMAP of the model's features, one panel per label column (at most 3); PNG + CSV."""
    from matplotlib.figure import Figure

    from channel_ssl.figures import _scatter, category_colours, save_figure, umap_embedding

    coords = umap_embedding(features, seed)
    columns = list(dataset.labels)[:3]
    fig = Figure(figsize=(6.5 * len(columns), 5.2), dpi=100, layout="constrained")
    fig.suptitle(f"UMAP of the features of {model_name} ({len(features)} images)", fontsize=11)
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    table = pd.DataFrame(
        {
            "row": dataset.manifest["row"],
            "image_id": dataset.manifest["image_id"],
            "umap_x": coords[:, 0],
            "umap_y": coords[:, 1],
        }
    )
    for ax, column in zip(axes, columns, strict=True):
        labels = [v if v else "(no label)" for v in dataset.labels[column]]
        _scatter(ax, coords, labels, category_colours(list(set(labels))), f"coloured by {column}")
        table[column] = dataset.labels[column]
    save_figure(fig, table, out)


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
        _warn(
            results,
            f"crop size {crop_size} px differs from the model's training crop {trained_at} px "
            f"(crops.global_crops_size); for inputs like the model's, import with --image-size "
            f"{trained_at} and evaluate with --crop-size {trained_at}",
        )
    if dataset.image_size != trained_at:
        _warn(
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
