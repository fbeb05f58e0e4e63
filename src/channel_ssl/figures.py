"""The paper's UMAP figures (``channel-ssl render-figure``).

Usage::

    channel-ssl render-figure --figure figure3 --features F.npy --manifest M.parquet \
        --out fig.png [--seed 0] [--note TEXT]
    channel-ssl render-figure --figure figure4 --features F_all.npy \
        --features-subset F_2ch.npy (--subset-rows rows.npy | --subset-fraction 0.5) \
        --manifest M.parquet --out fig.png [--seed 0] [--note TEXT]

Inputs: feature arrays written by ``extract`` (float ``(N, F)``; row i is the image whose
manifest ``row`` is i) and the HPA-FOV manifest, whose ``factors`` JSON holds ``cell_type``
(str) and ``protein_location`` (list of lower-case localisation names).

- figure3 (paper figure 3): UMAP of the features of a bag-of-channels model trained on HPA-FOV;
  panel (a) coloured by cell type, panel (b) only the images with a single protein localisation,
  coloured by it.
- figure4 (paper figure 4, appendix G): Channel-ViT trained on HPA-FOV. A random half of the
  images (``--subset-fraction``, seeded by ``--seed``; or the manifest rows listed in
  ``--subset-rows``) is represented by its features computed from two channels only
  (``--features-subset``, extracted with ``--channels``), the other images by their features
  from all channels; all are embedded in one UMAP. Panel (a) colours by channel set (blue: all
  channels, orange: two), panel (b) shows the same embedding restricted to single-localisation
  images, coloured by localisation. Both arrays need the same width (e.g. recipe ``cls1``,
  whose Channel-ViT feature is D wide for any K).

UMAP (umap-learn): 2 components, cosine metric (as the 1-NN evaluation), ``random_state`` =
``--seed``, ``n_neighbors`` = min(15, N - 1). Outputs, written atomically: the PNG (matplotlib
Agg, no software/date stamp, so a rerun is byte-identical) and ``<out>.csv`` beside it with the
2-D coordinates (columns ``row, image_id, umap_x, umap_y`` and the colouring factors).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import atomic_path, write_table
from channel_ssl.data.shards import load_manifest
from channel_ssl.errors import UserError
from channel_ssl.npy import load_npy
from channel_ssl.provenance import StepIO

FIGURES = ("figure3", "figure4")
ALL_CHANNELS_COLOUR = "tab:blue"
SUBSET_COLOUR = "tab:orange"

log = logging.getLogger("channel_ssl.figures")


# ------------------------------------------------------------------------------------ inputs
def load_features(path: str | Path, n_rows: int, what: str = "features") -> np.ndarray:
    """Float ``(n_rows, F)`` array from ``path``; UserError naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    array = load_npy(path, what)
    if array.ndim != 2 or array.shape[0] != n_rows:
        raise UserError(
            f"{what} {path} has shape {array.shape}; expected ({n_rows}, F): one row per "
            "manifest row"
        )
    if not np.isfinite(array).all():
        raise UserError(f"{what} {path} contains non-finite values")
    return array.astype(np.float32, copy=False)


def load_hpa_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest sorted by ``row`` (= feature row), with columns ``cell_type`` and
    ``localisation`` (the single protein localisation, or None for 0 or several).

    UserError if the rows are not 0..N-1 or a row lacks ``cell_type`` / ``protein_location``.
    """
    manifest = load_manifest(path).sort_values("row", kind="stable").reset_index(drop=True)
    rows = manifest["row"].to_numpy(dtype=np.int64)
    if not np.array_equal(rows, np.arange(len(manifest))):
        raise UserError(
            f"manifest {path}: feature rows follow the manifest's 'row' values, which must be "
            f"0..{len(manifest) - 1} exactly once"
        )
    cell_types, localisations = [], []
    for row, text in zip(manifest["row"], manifest["factors"], strict=True):
        factors = json.loads(text) if text else {}
        for key in ("cell_type", "protein_location"):
            if key not in factors:
                raise UserError(f"manifest {path}: row {row} has no factor {key!r}")
        locations = factors["protein_location"]
        if isinstance(locations, str):
            locations = [locations]
        cell_types.append(str(factors["cell_type"]))
        localisations.append(str(locations[0]) if len(locations) == 1 else None)
    manifest["cell_type"] = cell_types
    manifest["localisation"] = localisations
    return manifest


def choose_subset(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted ``round(fraction * n_rows)`` distinct rows drawn with ``default_rng(seed)``."""
    if not 0 < fraction < 1:
        raise UserError(f"--subset-fraction {fraction} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    size = int(round(fraction * n_rows))
    return np.sort(rng.choice(n_rows, size=size, replace=False))


def load_subset_rows(path: str | Path, n_rows: int) -> np.ndarray:
    """Sorted distinct manifest rows from an integer ``.npy``; UserError when out of range."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"subset rows {path} does not exist")
    rows = load_npy(path, "subset rows")
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise UserError(
            f"subset rows {path} must be a 1-D integer array; got {rows.dtype} {rows.shape}"
        )
    if len(np.unique(rows)) != len(rows) or (
        len(rows) and (rows.min() < 0 or rows.max() >= n_rows)
    ):
        raise UserError(f"subset rows {path} must be distinct rows in 0..{n_rows - 1}")
    return np.sort(rows.astype(np.int64))


# -------------------------------------------------------------------------------------- UMAP
def numba_cache_dir() -> Path:
    """Where UMAP's compiled numba kernels are kept between processes: ``NUMBA_CACHE_DIR`` if
    set, else ``$XDG_CACHE_HOME/channel-ssl/numba`` (``~/.cache/channel-ssl/numba``)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "channel-ssl" / "numba"


def import_umap_cached():
    """``import umap`` with every numba kernel of umap and pynndescent compiled once per machine.

    umap marks few of its kernels ``cache=True``, so each figure job used to compile them
    again (seconds of a job's time); here every kernel of the two packages gets numba's
    on-disk cache in :func:`numba_cache_dir` before its first call. A kernel numba cannot cache
    (no source file) is left to compile as before.
    """
    cache_dir = numba_cache_dir()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir))
    import numba
    from numba.core.dispatcher import Dispatcher

    numba.config.CACHE_DIR = str(cache_dir)
    import umap

    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("umap", "pynndescent")):
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and type(obj._cache).__name__ == "NullCache":
                try:
                    obj.enable_caching()
                except RuntimeError:  # numba: no locator for the function's source
                    continue
    return umap


def umap_embedding(features: np.ndarray, seed: int) -> np.ndarray:
    """``(N, F)`` -> ``(N, 2)`` float64 UMAP coordinates (deterministic for a given seed)."""
    umap = import_umap_cached()

    n = features.shape[0]
    if n < 4:
        raise UserError(f"UMAP needs at least 4 images; got {n}")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(15, n - 1),
        metric="cosine",
        random_state=int(seed),
        n_jobs=1,
    )
    return np.asarray(reducer.fit_transform(features), dtype=np.float64)


# ------------------------------------------------------------------------------------ drawing
def category_colours(categories: list[str]) -> dict[str, tuple]:
    """A fixed colour per category, in sorted order: tab10, then the light tab20 shades, then
    tab20b and tab20c (60 colours, then repeating)."""
    from matplotlib import colormaps

    palette = [colormaps["tab10"](i) for i in range(10)]
    palette += [colormaps["tab20"](i) for i in range(1, 20, 2)]
    palette += [colormaps[name](i) for name in ("tab20b", "tab20c") for i in range(20)]
    return {c: palette[i % len(palette)] for i, c in enumerate(sorted(categories))}


def _scatter(ax, coords: np.ndarray, labels: list[str], colours: dict, title: str) -> None:
    for label in colours:  # legend in the colour table's order
        picked = np.array([lab == label for lab in labels], dtype=bool)
        if picked.any():
            ax.scatter(
                coords[picked, 0],
                coords[picked, 1],
                s=8,
                color=colours[label],
                label=f"{label} ({int(picked.sum())})",
                linewidths=0,
            )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _figure(title: str, note: str | None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5.2), dpi=100, layout="constrained")
    fig.suptitle(title if not note else f"{title}\n{note}", fontsize=11)
    return fig, fig.subplots(1, 2)


def render_figure3(
    features: np.ndarray, manifest: pd.DataFrame, seed: int, note: str | None = None
):
    """Figure 3. ``features`` ``(N, F)`` aligned with ``manifest`` (from ``load_hpa_manifest``).

    Returns ``(figure, coordinates DataFrame)``.
    """
    coords = umap_embedding(features, seed)
    fig, (ax_a, ax_b) = _figure(
        "Figure 3: UMAP of HPA-FOV features (bag-of-channels model trained on HPA-FOV; "
        "per-channel features concatenated)",
        note,
    )
    cell_types = manifest["cell_type"].tolist()
    _scatter(
        ax_a,
        coords,
        cell_types,
        category_colours(sorted(set(cell_types))),
        f"(a) coloured by cell type, all {len(manifest)} images",
    )
    single = manifest["localisation"].notna().to_numpy()
    locations = manifest.loc[single, "localisation"].tolist()
    _scatter(
        ax_b,
        coords[single],
        locations,
        category_colours(sorted(set(locations))),
        f"(b) coloured by protein localisation, {int(single.sum())} images with a single "
        "localisation",
    )
    table = pd.DataFrame(
        {
            "row": manifest["row"].to_numpy(),
            "image_id": manifest["image_id"].to_numpy(),
            "umap_x": coords[:, 0],
            "umap_y": coords[:, 1],
            "cell_type": cell_types,
            "protein_location": manifest["localisation"].fillna("").to_numpy(),
        }
    )
    return fig, table


def render_figure4(
    features_all: np.ndarray,
    features_subset: np.ndarray,
    manifest: pd.DataFrame,
    subset_rows: np.ndarray,
    seed: int,
    note: str | None = None,
    subset_label: str = "2 channels (microtubules + protein)",
):
    """Figure 4. Rows in ``subset_rows`` use ``features_subset``, the others ``features_all``
    (both ``(N, F)``, aligned with ``manifest``); one joint UMAP.

    Returns ``(figure, coordinates DataFrame)``.
    """
    if features_all.shape[1] != features_subset.shape[1]:
        raise UserError(
            f"figure4 embeds both feature sets jointly, so they need the same width; got "
            f"{features_all.shape[1]} (all channels) and {features_subset.shape[1]} (subset). "
            "Use a recipe whose width does not depend on K (Channel-ViT 'cls1')"
        )
    in_subset = np.zeros(len(manifest), dtype=bool)
    in_subset[subset_rows] = True
    features = np.where(in_subset[:, None], features_subset, features_all)
    coords = umap_embedding(features, seed)
    n_channels = sorted(set(manifest["n_channels"].tolist()))
    all_label = f"all {n_channels[0]} channels" if len(n_channels) == 1 else "all channels"
    labels = [subset_label if s else all_label for s in in_subset]
    fig, (ax_a, ax_b) = _figure(
        "Figure 4: joint UMAP of HPA-FOV features (Channel-ViT trained on HPA-FOV), "
        f"{int(in_subset.sum())} of {len(manifest)} images seen with {subset_label}, "
        f"the others with {all_label}",
        note,
    )
    _scatter(
        ax_a,
        coords,
        labels,
        {all_label: ALL_CHANNELS_COLOUR, subset_label: SUBSET_COLOUR},
        "(a) coloured by the channels the model saw",
    )
    single = manifest["localisation"].notna().to_numpy()
    locations = manifest.loc[single, "localisation"].tolist()
    _scatter(
        ax_b,
        coords[single],
        locations,
        category_colours(sorted(set(locations))),
        f"(b) same embedding, {int(single.sum())} images with a single protein localisation",
    )
    table = pd.DataFrame(
        {
            "row": manifest["row"].to_numpy(),
            "image_id": manifest["image_id"].to_numpy(),
            "umap_x": coords[:, 0],
            "umap_y": coords[:, 1],
            "channel_set": np.where(in_subset, "subset", "all"),
            "protein_location": manifest["localisation"].fillna("").to_numpy(),
        }
    )
    return fig, table


def save_figure(fig, table: pd.DataFrame, out: str | Path) -> tuple[Path, Path]:
    """PNG at ``out`` and coordinates at ``out`` with suffix ``.csv``, both atomic.

    The PNG carries no software/date metadata, so identical inputs give identical bytes.
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} must end in .png")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    csv = out.with_suffix(".csv")
    write_table(csv, table.round({"umap_x": 6, "umap_y": 6}))
    return out, csv


# --------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--figure", required=True, choices=FIGURES)
    parser.add_argument(
        "--features",
        required=True,
        help="features (.npy, rows = manifest rows; figure4: all channels)",
    )
    parser.add_argument("--manifest", required=True, help="HPA-FOV manifest.parquet")
    parser.add_argument("--out", required=True, help="output PNG; the coordinates go to <out>.csv")
    parser.add_argument("--seed", type=int, default=0, help="UMAP random_state and subset draw")
    parser.add_argument("--note", default=None, help="extra header line, e.g. 'DEMO numbers'")
    parser.add_argument(
        "--features-subset", help="figure4: features computed from the channel subset (.npy)"
    )
    subset = parser.add_mutually_exclusive_group()
    subset.add_argument("--subset-rows", help="figure4: .npy of manifest rows seen with the subset")
    subset.add_argument(
        "--subset-fraction",
        type=float,
        help="figure4: fraction of rows drawn (seeded) for the subset",
    )
    parser.add_argument(
        "--subset-label",
        default="2 channels (microtubules + protein)",
        help="figure4: legend name of the channel subset",
    )


def run(args: argparse.Namespace) -> int:
    manifest = load_hpa_manifest(args.manifest)
    n = len(manifest)
    features = load_features(args.features, n)
    if args.figure == "figure3":
        fig, table = render_figure3(features, manifest, args.seed, args.note)
    else:
        if args.features_subset is None:
            raise UserError("figure4 needs --features-subset")
        if args.subset_rows is None and args.subset_fraction is None:
            raise UserError("figure4 needs --subset-rows or --subset-fraction")
        subset_features = load_features(args.features_subset, n, "subset features")
        rows = (
            load_subset_rows(args.subset_rows, n)
            if args.subset_rows is not None
            else choose_subset(n, args.subset_fraction, args.seed)
        )
        fig, table = render_figure4(
            features, subset_features, manifest, rows, args.seed, args.note, args.subset_label
        )
    png, csv = save_figure(fig, table, args.out)
    log.info("wrote %s and %s (%d images)", png, csv, n)
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    inputs = [args.features, args.manifest]
    if args.features_subset:
        inputs.append(args.features_subset)
    out = Path(args.out)
    return StepIO(inputs=inputs, outputs=[str(out)], members=[str(out.with_suffix(".csv"))])
