"""``report.md`` and ``umap.png`` of ``evaluate-features``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.own_data.dataset import Dataset
from channel_ssl.own_data.feature_models import Model
from channel_ssl.own_data.scoring import REFERENCE_INTENSITY, REFERENCE_RANDOM, Results


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
