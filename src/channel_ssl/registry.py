"""The experiment registry: sources, corpora, pretraining runs, evaluations, tables, figures.

Targets, tables and the whole DAG are derived from here; nothing else lists runs. Run names
follow ``P-<model>-<size>[-<dataset>]`` (docs/paper.md section 1).

One concept, kept in one module although it is over 500 lines: most of it is the declarations
themselves (every source, corpus, run, table and figure), and the lookups and
derivations below them (``run_config``, ``probe_plan``, ...) read only these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The CHAMMI datasets, as the workflow names them (Allen = WTC, HPA, CP).
from channel_ssl.data.readers.chammi import DATASETS as CHAMMI_DATASETS  # noqa: F401

FAMILIES = ("boc", "cvit", "ha", "fixed")
OBJECTIVES = ("dino", "dinov1", "mae")
# Feature recipes extracted for CHAMMI (eval/features.py): last-layer CLS, its channel
# mean (table 12, BoC D) and CLS + channel-pooled patches (table 12, Channel-ViT D+KD).
CHAMMI_RECIPES = ("cls1", "cls1_chmean", "cls1_pool")
# Every other evaluation: CLS of the last 4 blocks + channel-wise pooled patches (docs/paper.md section 4).
PROBE_RECIPE = "cls4_pool"
# UMAP figures: the concatenated per-channel CLS (paper figure 3 caption).
FIGURE_RECIPE = "cls1"


@dataclass(frozen=True)
class Source:
    """A data source as the workflow prepares it.

    ``raw`` names the native-layout directory (several sources may read one raw copy, e.g.
    the 5- and 8-channel views of JUMP-CP); ``obtain`` says how to get the real data.
    """

    name: str
    raw: str
    description: str
    obtain: str = ""
    # "module:function" of its reader of the native layout (data/sources.py) and of the
    # generator of its demo copy in that layout (data/demo/sources.py); imported on use
    reader: str = ""
    demo: str = ""


@dataclass(frozen=True)
class Corpus:
    """A pretraining corpus: sources, the splits kept, and how it is assembled.

    ``extended`` applies the ExtendedCHAMMI exclusion rules (data/extended_chammi.py);
    ``leave_out`` drops source groups from it (table 9).
    """

    name: str
    sources: tuple[str, ...]
    splits: tuple[str, ...] = ("Train",)
    extended: bool = False
    leave_out: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Run:
    """One pretraining run."""

    name: str
    family: str
    size: str  # registry size letter, mapped to an architecture by config 'architectures'
    corpus: str
    objective: str = "dino"
    channel_sampling: str = "none"  # "none" | "hcs"
    # Paper appendix C (docs/paper.md): HA runs on CHAMMI train alone drop the channel-token DINO/KoLeo terms.
    ha_channel_losses: bool = True
    k_max: int | None = None  # Channel-ViT channel embeddings; None = config's pretrain.k_max
    in_chans: int = 1  # fixed-channel models only
    description: str = ""
    # a reference, not a paper run: the network at initialisation, never trained (no corpus)
    random_init: bool = False

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"run {self.name}: unknown family {self.family!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"run {self.name}: unknown objective {self.objective!r}")
        if bool(self.corpus) == self.random_init:
            raise ValueError(f"run {self.name}: a trained run needs a corpus, a random-init none")


@dataclass(frozen=True)
class Probe:
    """A linear-probe evaluation of one task on one source (``channel-ssl probe-dataset``)."""

    name: str
    source: str
    task: str
    column: str | None  # table column it fills; None = the task's own column names


@dataclass(frozen=True)
class Row:
    """A reproduced table row: its label in the paper table and how its numbers are made.

    CHAMMI tables: ``protocol`` is ``knn`` or ``linear`` with a feature ``recipe``. Other
    tables: ``probes`` lists the probe evaluations giving the row's columns; ``na`` lists
    columns that cannot be computed for this model (rendered "x").
    """

    label: str
    run: str
    protocol: str = "probe"  # "knn" | "linear" | "probe"
    recipe: str = PROBE_RECIPE
    probes: tuple[str, ...] = ()
    na: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """A paper table: its reproduced rows. Its title and printed values are in
    ``resources/paper_tables.yaml`` (``paper_tables.load_paper_tables``), declared once."""

    name: str
    rows: tuple[Row, ...] = field(default_factory=tuple)
    corpus_summary: str | None = None  # table 7: rendered from this corpus's summary
    # a row scored by this project that is not in the paper (the random-init reference)
    reference: Row | None = None

    @property
    def all_rows(self) -> tuple[Row, ...]:
        """The paper's reproduced rows, then the reference row (if any)."""
        return self.rows + ((self.reference,) if self.reference else ())


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    run: str
    source: str
    subset_channels: tuple[int, ...] | None = None  # figure 4: the 2-channel view


_KAGGLE = "needs a Kaggle account and the competition's rules accepted; see docs/datasets.md"
SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "hpa_fov",
            "hpa_fov",
            "HPA field-of-view images",
            "EBI BioImage Archive S-BIAD2443",
            reader="channel_ssl.data.readers.hpa:prepare_fov",
            demo="channel_ssl.data.demo.hpa:make_demo_fov",
        ),
        Source(
            "hpa_single_cell",
            "hpa_single_cell",
            "HPA single cells",
            "S-BIAD2443 masked single-cell folders and CSVs",
            reader="channel_ssl.data.readers.hpa:prepare_single_cell",
            demo="channel_ssl.data.demo.hpa:make_demo_single_cell",
        ),
        Source(
            "wtc",
            "wtc",
            "WTC-11 hiPSC single cells",
            "allencell quilt package (HTTPS)",
            reader="channel_ssl.data.readers.wtc:prepare",
            demo="channel_ssl.data.demo.wtc:make_demo",
        ),
        Source(
            "opencell",
            "opencell",
            "OpenCell crops",
            "cytoself Google Drive files",
            reader="channel_ssl.data.readers.opencell:prepare",
            demo="channel_ssl.data.demo.opencell:make_demo",
        ),
        Source(
            "cellpainting",
            "cellpainting",
            "Cell Painting single cells",
            "cpg0019 (S3, CC0)",
            reader="channel_ssl.data.readers.cellpainting:prepare",
            demo="channel_ssl.data.demo.cellpainting:make_demo",
        ),
        Source(
            "jumpcp",
            "jumpcp",
            "JUMP-CP, 8 channels",
            "insitro-research-2023-context-vit S3",
            reader="channel_ssl.data.readers.jumpcp:prepare",
            demo="channel_ssl.data.demo.jumpcp:make_demo",
        ),
        Source(
            "jumpcp_5ch",
            "jumpcp",
            "JUMP-CP, 5 fluorescence channels",
            "as jumpcp",
            reader="channel_ssl.data.readers.jumpcp:prepare_5ch",
            demo="channel_ssl.data.demo.jumpcp:make_demo",
        ),
        Source(
            "cyclops",
            "cyclops",
            "Cyclops yeast (2 channels, 16 classes)",
            _KAGGLE,
            reader="channel_ssl.data.readers.cyclops:prepare",
            demo="channel_ssl.data.demo.cyclops:make_demo",
        ),
        Source(
            "meterml_naip",
            "meterml",
            "Meter-ML, NAIP bands",
            "Meter-ML project page",
            reader="channel_ssl.data.readers.meterml:prepare_naip",
            demo="channel_ssl.data.demo.meterml:make_demo",
        ),
        Source(
            "meterml_naip_s2",
            "meterml",
            "Meter-ML, NAIP + Sentinel-2 10 m",
            "as meterml_naip",
            reader="channel_ssl.data.readers.meterml:prepare_naip_s2",
            demo="channel_ssl.data.demo.meterml:make_demo",
        ),
        Source(
            "meterml_all",
            "meterml",
            "Meter-ML, NAIP + Sentinel-2 + Sentinel-1",
            "as meterml_naip",
            reader="channel_ssl.data.readers.meterml:prepare_all",
            demo="channel_ssl.data.demo.meterml:make_demo",
        ),
    ]
}
EXTENDED_SOURCES = ("hpa_single_cell", "wtc", "opencell", "cellpainting", "hpa_fov")

# the corpus of the JUMP-CP runs of table 3 (declared once)
JUMP_PRETRAIN_CORPUS = "jumpcp_5ch"
CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        Corpus("chammi_train", ("chammi",), ("Train",), description="CHAMMI Train split"),
        Corpus("extended", EXTENDED_SOURCES, extended=True, description="ExtendedCHAMMI"),
        Corpus("extended_minus_wtc", EXTENDED_SOURCES, extended=True, leave_out=("wtc",)),
        Corpus("extended_minus_cp", EXTENDED_SOURCES, extended=True, leave_out=("cellpainting",)),
        Corpus("extended_minus_hpa", EXTENDED_SOURCES, extended=True, leave_out=("hpa",)),
        Corpus("extended_minus_opencell", EXTENDED_SOURCES, extended=True, leave_out=("opencell",)),
        Corpus("hpa_fov", ("hpa_fov",), ("train",), description="HPA-FOV train split"),
        Corpus("jumpcp", ("jumpcp",), ("train",), description="JUMP-CP train split, 8 channels"),
        Corpus("jumpcp_5ch", ("jumpcp_5ch",), ("train",), description="JUMP-CP train, 5 channels"),
        Corpus("wtc", ("wtc",), ("train",), description="WTC-11 train split"),
        Corpus("meterml_naip", ("meterml_naip",), ("train",)),
        Corpus("meterml_naip_s2", ("meterml_naip_s2",), ("train",)),
        Corpus("meterml_all", ("meterml_all",), ("train",)),
    ]
}

RUNS: dict[str, Run] = {
    r.name: r
    for r in [
        # ExtendedCHAMMI (tables 1, 2, 5, 6, 8, 10, 12)
        Run("P-BoC-L", "boc", "L", "extended", description="DINO BoC"),
        Run("P-BoC-S", "boc", "S", "extended", description="DINO BoC, ViT-S"),
        Run("P-MAE-BoC-L", "boc", "L", "extended", objective="mae", description="MAE BoC"),
        Run("P-CViT-L", "cvit", "L", "extended", description="DINO Channel-ViT"),
        Run("P-HA-L", "ha", "L", "extended", description="DINO hierarchical attention"),
        Run(
            "P-CViT-HCS-L",
            "cvit",
            "L",
            "extended",
            channel_sampling="hcs",
            description="Channel-ViT + HCS",
        ),
        # CHAMMI train only (table 4)
        Run("P-BoC-L-CHAMMI", "boc", "L", "chammi_train"),
        Run("P-CViT-L-CHAMMI", "cvit", "L", "chammi_train"),
        # fixed-channel CellDINO baselines (table 1)
        Run(
            "P-Fixed-HPAFOV", "fixed", "L", "hpa_fov", in_chans=4, description="CellDINOv2 HPA-FOV"
        ),
        Run(
            "P-Fixed-JUMP", "fixed", "L", "jumpcp_5ch", in_chans=5, description="CellDINOv2 JUMP-CP"
        ),
        Run(
            "P-Fixed-WTC",
            "fixed",
            "L",
            "wtc",
            objective="dinov1",
            in_chans=3,
            description="CellDINOv1 WTC",
        ),
        # per-dataset pretraining (table 3, figures 3 and 4)
        # Five channel embeddings although HPA-FOV has four: table 3 reports this model on
        # 5-channel JUMP-CP, which needs an embedding for a fifth channel (left untrained).
        Run("P-CViT-L-HPAFOV", "cvit", "L", "hpa_fov", k_max=5),
        Run("P-HA-L-HPAFOV", "ha", "L", "hpa_fov"),
        Run("P-BoC-L-HPAFOV", "boc", "L", "hpa_fov"),
        # JUMP-CP pretraining on the five fluorescence channels only, as the paper says
        # ("We used only the five fluorescence channels"), like its evaluation and baseline
        Run("P-CViT-L-JUMP", "cvit", "L", JUMP_PRETRAIN_CORPUS, k_max=5),
        Run("P-HA-L-JUMP", "ha", "L", JUMP_PRETRAIN_CORPUS),
        Run("P-BoC-L-JUMP", "boc", "L", JUMP_PRETRAIN_CORPUS),
        # leave one source out of ExtendedCHAMMI (table 9)
        Run("P-BoC-L-minusWTC", "boc", "L", "extended_minus_wtc"),
        Run("P-BoC-L-minusCP", "boc", "L", "extended_minus_cp"),
        Run("P-BoC-L-minusHPA", "boc", "L", "extended_minus_hpa"),
        Run("P-BoC-L-minusOpenCell", "boc", "L", "extended_minus_opencell"),
        # Meter-ML aerial imagery (table 11)
        Run("P-BoC-L-NAIP", "boc", "L", "meterml_naip"),
        Run("P-BoC-L-NAIP-S2", "boc", "L", "meterml_naip_s2"),
        Run("P-BoC-L-NAIP-S1-S2", "boc", "L", "meterml_all"),
    ]
}

# Reference runs: scored like the paper's runs, shown in the tables as rows that are not the
# paper's. The random-init ViT is the BoC ViT-L of P-BoC-L at initialisation (same builder,
# same seed), so a reader sees what pretraining added.
REFERENCE_RUNS: dict[str, Run] = {
    r.name: r
    for r in [
        Run(
            "R-RandomInit-BoC-L",
            "boc",
            "L",
            "",
            random_init=True,
            description="random-init ViT (BoC ViT-L, never trained)",
        ),
    ]
}
RANDOM_INIT_LABEL = "random-init ViT (reference, not in the paper)"


def _random_init_reference(protocol: str) -> Row:
    """The random-init reference row of a CHAMMI table (tables 4, 5, 6, 8, 12)."""
    return Row(RANDOM_INIT_LABEL, "R-RandomInit-BoC-L", protocol, "cls1")


HPA_PROTEIN, HPA_CELL, JUMP_ACC, WTC_CC = (
    "HPA-FOV F1 Protein loc.",
    "HPA-FOV F1 Cell type",
    "JUMP-CP Accuracy",
    "WTC F1 Cell cycle st.",
)
PROBES: dict[str, Probe] = {
    p.name: p
    for p in [
        Probe("hpa_protein", "hpa_fov", "hpa_fov_protein", HPA_PROTEIN),
        Probe("hpa_cell_type", "hpa_fov", "hpa_fov_cell_type", HPA_CELL),
        Probe("jump", "jumpcp_5ch", "jumpcp_compound", JUMP_ACC),
        Probe("wtc_cell_cycle", "wtc", "wtc_cell_cycle", WTC_CC),
        Probe("jump_5ch", "jumpcp_5ch", "jumpcp_compound", "JUMP-CP 5 channels"),
        Probe("jump_8ch", "jumpcp", "jumpcp_compound", "JUMP-CP 8 channels"),
        Probe("cyclops", "cyclops", "cyclops_localization", None),
        Probe("meterml_all", "meterml_all", "meterml_methane", "mAP"),
        Probe("meterml_naip", "meterml_naip", "meterml_methane", "mAP"),
    ]
}
ALL_FOUR = ("hpa_protein", "hpa_cell_type", "jump", "wtc_cell_cycle")


def _chammi(label, run, protocol, recipe="cls1"):
    return Row(label, run, protocol, recipe)


TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        Table(
            "table1",
            (
                Row(
                    "CellDINOv2 (HPA-FOV)",
                    "P-Fixed-HPAFOV",
                    probes=("hpa_protein", "hpa_cell_type"),
                ),
                Row("CellDINOv2 (JUMP-CP)", "P-Fixed-JUMP", probes=("jump",)),
                Row("CellDINOv1 (WTC)", "P-Fixed-WTC", probes=("wtc_cell_cycle",)),
                Row("Channel-ViT", "P-CViT-L", probes=ALL_FOUR),
                Row("BoC MAE ViT-L", "P-MAE-BoC-L", probes=ALL_FOUR),
                Row("BoC DINOv2 ViT-S", "P-BoC-S", probes=ALL_FOUR),
                Row("BoC DINOv2 ViT-L", "P-BoC-L", probes=ALL_FOUR),
            ),
        ),
        Table(
            "table2",
            (Row("DINO BoC", "P-BoC-L", probes=("cyclops",)),),
        ),
        Table(
            "table3",
            tuple(
                Row(f"DINO {model} ({data})", f"P-{tag}-L-{suffix}", probes=ALL_FOUR)
                for data, suffix in (("HPA-FOV", "HPAFOV"), ("JUMP-CP", "JUMP"))
                for model, tag in (("Channel-ViT", "CViT"), ("HA", "HA"), ("BoC", "BoC"))
            ),
        ),
        Table(
            "table4",
            (
                _chammi("DINO Channel-ViT", "P-CViT-L-CHAMMI", "knn"),
                _chammi("DINO BoC (Ours)", "P-BoC-L-CHAMMI", "knn"),
            ),
            reference=_random_init_reference("knn"),
        ),
        Table(
            "table5",
            (
                _chammi("DINO Channel-ViT", "P-CViT-L", "knn"),
                _chammi("DINO BoC (Ours)", "P-BoC-L", "knn"),
            ),
            reference=_random_init_reference("knn"),
        ),
        Table(
            "table6",
            (
                _chammi("DINO Channel-ViT", "P-CViT-L", "linear"),
                _chammi("DINO HA (Ours)", "P-HA-L", "linear"),
                _chammi("DINO BoC (Ours)", "P-BoC-L", "linear"),
            ),
            reference=_random_init_reference("linear"),
        ),
        Table("table7", (), corpus_summary="extended"),
        Table(
            "table8",
            (
                _chammi("DINO Channel-ViT (no HCS)", "P-CViT-L", "knn"),
                _chammi("DINO Channel-ViT (HCS)", "P-CViT-HCS-L", "knn"),
            ),
            reference=_random_init_reference("knn"),
        ),
        Table(
            "table9",
            (
                Row("ExtendedCHAMMI", "P-BoC-L", probes=ALL_FOUR),
                Row("minus WTC", "P-BoC-L-minusWTC", probes=ALL_FOUR),
                Row("minus Cell painting", "P-BoC-L-minusCP", probes=ALL_FOUR),
                Row("minus HPA (FOV, single cell)", "P-BoC-L-minusHPA", probes=ALL_FOUR),
                Row("minus OpenCell", "P-BoC-L-minusOpenCell", probes=ALL_FOUR),
            ),
        ),
        Table(
            "table10",
            (
                # Channel-ViT has channel embeddings for the 5 channels seen in pretraining only.
                Row("Channel ViT", "P-CViT-L", probes=("jump_5ch",), na=("JUMP-CP 8 channels",)),
                Row("DINO HA", "P-HA-L", probes=("jump_5ch", "jump_8ch")),
                Row("DINO BoC", "P-BoC-L", probes=("jump_5ch", "jump_8ch")),
            ),
        ),
        Table(
            "table11",
            (
                Row(
                    "DINO BoC (NAIP+S1+S2 test, NAIP+S1+S2 pretraining)",
                    "P-BoC-L-NAIP-S1-S2",
                    probes=("meterml_all",),
                ),
                Row(
                    "DINO BoC (NAIP test, NAIP+S1+S2 pretraining)",
                    "P-BoC-L-NAIP-S1-S2",
                    probes=("meterml_naip",),
                ),
                Row(
                    "DINO BoC (NAIP test, NAIP+S2 pretraining)",
                    "P-BoC-L-NAIP-S2",
                    probes=("meterml_naip",),
                ),
                Row(
                    "DINO BoC (NAIP test, NAIP pretraining)",
                    "P-BoC-L-NAIP",
                    probes=("meterml_naip",),
                ),
            ),
        ),
        Table(
            "table12",
            (
                _chammi("DINO Channel-ViT (D)", "P-CViT-L", "linear"),
                _chammi("DINO BoC (D)", "P-BoC-L", "linear", "cls1_chmean"),
                _chammi("DINO Channel-ViT (KD)", "P-CViT-L", "linear", "cls1_pool"),
                _chammi("DINO BoC (KD)", "P-BoC-L", "linear"),
            ),
            reference=_random_init_reference("linear"),
        ),
    ]
}

FIGURES: dict[str, Figure] = {
    f.name: f
    for f in [
        Figure(
            "figure3",
            "UMAP of HPA-FOV features, DINO BoC trained on HPA-FOV",
            "P-BoC-L-HPAFOV",
            "hpa_fov",
        ),
        # Microtubules + protein: positions 2 and 1 of the HPA-FOV channel order
        # (nucleus, protein, microtubules, ER), kept in channel order.
        Figure(
            "figure4",
            "UMAP of HPA-FOV features, Channel-ViT with 4 vs 2 channels",
            "P-CViT-L-HPAFOV",
            "hpa_fov",
            subset_channels=(1, 2),
        ),
    ]
}
TARGETS = tuple(TABLES) + tuple(FIGURES)


def _lookup(table: dict, name: str, what: str):
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r}; known: {sorted(table)}") from None


def table(name: str) -> Table:
    return _lookup(TABLES, name, "table")


def figure(name: str) -> Figure:
    return _lookup(FIGURES, name, "figure")


def run(name: str) -> Run:
    """A paper run or a reference run."""
    return _lookup({**RUNS, **REFERENCE_RUNS}, name, "run")


def corpus(name: str) -> Corpus:
    return _lookup(CORPORA, name, "corpus")


def source(name: str) -> Source:
    return _lookup(SOURCES, name, "source")


def probe(name: str) -> Probe:
    return _lookup(PROBES, name, "probe")


def runs_for_targets(names) -> list[str]:
    """Pretraining runs the given tables/figures need, in registry order, each once."""
    needed = set()
    for n in names:
        if n in FIGURES:
            needed.add(figure(n).run)
        else:
            needed.update(row.run for row in table(n).all_rows)
    return [r for r in {**RUNS, **REFERENCE_RUNS} if r in needed]


def run_config(name: str, config: dict) -> dict:
    """The pretraining run configuration of ``name`` under the workflow ``config``.

    Combines the registry entry (family, size, objective, channel sampling) with the recipe
    of ``config['pretrain']``; the result is what ``channel-ssl pretrain`` reads.
    """
    r = run(name)
    p = config["pretrain"]
    batch = p["boc_batch_size"] if r.family == "boc" and p["boc_batch_size"] else p["batch_size"]
    out = {
        "run": r.name,
        "seed": int(config["seed"]),
        "model": {
            "family": r.family,
            "arch": config["architectures"][r.size],
            "patch_size": p["patch_size"],
            "drop_path": p["drop_path"],
            "layerscale": p["layerscale"],
            "k_max": r.k_max or p["k_max"],
            "in_chans": r.in_chans,
        },
        "objective": r.objective,
        "channel_sampling": r.channel_sampling,
        "ha_channel_losses": r.ha_channel_losses,
        "iterations": p["iterations"],
        "batch_size": batch,
        "lr": p["lr"],
        "lr_ref_batch": p["lr_ref_batch"],
        "min_lr": p["min_lr"],
        "warmup_iterations": p["warmup_iterations"],
        "weight_decay": p["weight_decay"],
        "weight_decay_end": p["weight_decay_end"],
        "clip_grad": p["clip_grad"],
        "layerwise_decay": p["layerwise_decay"],
        "patch_embed_lr_mult": p["patch_embed_lr_mult"],
        "boc_pixel_budget": p["boc_pixel_budget"],
        "groups_per_step": p["groups_per_step"],
        "dino": {
            "n_prototypes": p["n_prototypes"],
            "hidden_dim": p["head_hidden_dim"],
            "bottleneck_dim": p["head_bottleneck_dim"],
            "head_init": p["head_init"],
            "koleo_loss_weight": p["koleo_loss_weight"],
            "teacher_temp": p["teacher_temp"],
            "warmup_teacher_temp": p["warmup_teacher_temp"],
            "warmup_teacher_temp_iterations": p["warmup_teacher_temp_iterations"],
        },
        "ibot": {"loss_weight": p["ibot_loss_weight"]},
        "teacher": {"momentum": p["teacher_momentum"]},
        "crops": {
            "global_crops_size": p["global_crops_size"],
            "global_crops_scale": list(p["global_crops_scale"]),
            "local_crops_number": p["local_crops_number"],
            "local_crops_size": p["local_crops_size"],
            "local_crops_scale": list(p["local_crops_scale"]),
        },
        "checkpoint_every": p["checkpoint_every"],
        "keep_checkpoints": p["keep_checkpoints"],
        "log_every": p["log_every"],
        "num_workers": p["num_workers"],
        "precision": p["precision"],
    }
    if r.objective == "mae":
        mae = dict(config["pretrain"]["mae"])
        # MAE trains with its own optimiser recipe (schema: pretrain.mae.optimizer)
        recipe = dict(mae.pop("optimizer", {}))
        out.update(
            lr=recipe["lr"],
            lr_ref_batch=recipe["lr_ref_batch"],
            lr_scaling=recipe["lr_scaling"],
            weight_decay=recipe["weight_decay"],
            weight_decay_end=recipe["weight_decay"],
            betas=list(recipe["betas"]),
            layerwise_decay=recipe["layerwise_decay"],
            patch_embed_lr_mult=recipe["patch_embed_lr_mult"],
            clip_grad=recipe["clip_grad"],
        )
        out["model"]["drop_path"] = recipe["drop_path"]
        out["mae"] = mae
    return out


def row_sources(row: Row) -> list[str]:
    """The sources whose probes give a probe row its columns, in probe order."""
    return list(dict.fromkeys(probe(p).source for p in row.probes))


def probe_plan(run_name: str) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """Every (source, [(task, columns)]) any table probes with ``run_name``, in table order.

    A task that fills several columns (JUMP-CP accuracy in tables 1 and 10) appears once with
    all its column names, so it is trained once.
    """
    plan: dict[str, dict[str, list[str]]] = {}
    for t in TABLES.values():
        for row in t.rows:
            if row.run != run_name or row.protocol != "probe":
                continue
            for name in row.probes:
                p = probe(name)
                cols = plan.setdefault(p.source, {}).setdefault(p.task, [])
                if p.column and p.column not in cols:
                    cols.append(p.column)
    return [(src, list(tasks.items())) for src, tasks in plan.items()]


# Config-declared data and runs (config 'user_datasets' and 'user_runs', channel_ssl.user_data):
# added by add_user_data when the workflow reads its config, beside the paper's declarations.
USER_SOURCES: dict[str, tuple[str, ...]] = {}  # imported dataset -> its channel names


def add_user_data(
    sources: dict[str, tuple[str, ...]], corpora: dict[str, Corpus], runs: dict[str, Run]
) -> None:
    """Add user datasets (as corpus sources), their corpora and the runs pretraining on them.

    A name already declared differently (a paper run, source or corpus) is a ValueError;
    adding the same declarations again changes nothing.
    """
    for what, new, known in (
        ("source", sources, {**{s: None for s in SOURCES}, **USER_SOURCES}),
        ("corpus", corpora, CORPORA),
        ("run", runs, {**RUNS, **REFERENCE_RUNS}),
    ):
        for name, value in new.items():
            if name in known and known[name] != value:
                raise ValueError(f"user {what} {name!r} clashes with the registry's {name!r}")
    USER_SOURCES.update(sources)
    CORPORA.update(corpora)
    RUNS.update(runs)
