"""``channel-ssl plan``: what the pretraining runs of a configuration will cost, before any job
is submitted.

Per run of the registry: nodes and GPUs, iterations (after BoC's pixel budget), effective
batch, images seen, estimated GPU-hours, the size of one checkpoint and the disk its kept
checkpoints take; then the totals. It warns about sources whose ``sources.raw_dirs`` entry is
unset (their jobs would stop at ``locate-source``).

The estimate, stated so it can be checked:

- training FLOPs per step = 3 x (student forward of 2 global + N local crops) + teacher forward
  of the 2 global crops, per image, times the effective batch; a ViT forward of T tokens costs
  ``depth x (24 T D^2 + 4 T^2 D)`` (matrix multiplications of attention and MLP, ratio 4);
- tokens per crop: (crop / patch)^2 per channel for Channel-ViT and HA (joint encoding of all
  channels, plus HA's channel tokens), per single-channel image for BoC, per image for the
  fixed-channel ViT; channels: the mean over the corpus's sources (sampled in balance);
- GPU-hours = FLOPs / (``plan.sustained_tflops`` x 3600); the default, 125 TFLOP/s, is 40 % of
  an A100's bf16 dense peak. docs/paper.md section 5 gives the paper's own figure for
  calibration: 16 nodes of 8 GPUs (4 nodes for BoC) for about 2 days.

Nodes per run: the fewest (a power of two dividing the per-GPU batch, at most the group's
``resources.<group>.nodes``) that finish within ``plan.target_hours``; the job's runtime is
the estimate plus 20 %, capped at the group's ``runtime`` (a run that needs longer is stopped
with a checkpoint and resubmitted, see ``train/preemption.py``).
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import asdict, dataclass
from functools import cache

from channel_ssl import registry

log = logging.getLogger("channel_ssl.plan")

BYTES_PER_GB = 1e9


@cache
def source_channels(source: str) -> float:
    """Channels per image of a source (CHAMMI: the mean over its three datasets)."""
    from channel_ssl.data.readers import (
        cellpainting,
        chammi,
        cyclops,
        hpa,
        jumpcp,
        meterml,
        opencell,
        wtc,
    )

    fixed = {
        "hpa_fov": len(hpa.CHANNELS),
        "hpa_single_cell": len(hpa.CHANNELS),
        "wtc": len(wtc.CHANNELS),
        "opencell": len(opencell.CHANNELS),
        "cellpainting": len(cellpainting.CHANNELS),
        "cyclops": len(cyclops.CHANNELS),
    }
    if source in fixed:
        return float(fixed[source])
    if source in jumpcp.SOURCE_CHANNELS:
        return float(len(jumpcp.SOURCE_CHANNELS[source]))
    if source.startswith("meterml"):
        return float(len(meterml.channels_of(source)))
    if source == "chammi":
        return sum(len(c) for c in chammi.CHANNELS.values()) / len(chammi.CHANNELS)
    if source in registry.USER_SOURCES:  # config user_datasets
        return float(len(registry.USER_SOURCES[source]))
    raise KeyError(f"no channel count known for source {source!r}")


def corpus_sources(name: str) -> tuple[str, ...]:
    corpus = registry.corpus(name)
    return tuple(
        s for s in corpus.sources if not any(s.startswith(left) for left in corpus.leave_out)
    )


def mean_channels(corpus: str) -> float:
    """Mean channels per sampled image: sources are sampled in balance."""
    sources = corpus_sources(corpus)
    return sum(source_channels(s) for s in sources) / len(sources)


def vit_forward_flops(depth: int, dim: int, tokens: float, mlp_ratio: float = 4.0) -> float:
    """Multiply-adds x 2 of one ViT forward over ``tokens`` tokens (matrix products only)."""
    per_block = (8 + 4 * mlp_ratio) * tokens * dim**2 + 4 * tokens**2 * dim
    return depth * per_block


@dataclass
class RunPlan:
    run: str
    family: str
    arch: str
    corpus: str
    nodes: int
    gpus: int
    iterations: int
    batch: int
    images_millions: float
    gpu_hours: float
    wall_hours: float
    runtime_minutes: int
    checkpoint_gb: float
    disk_gb: float
    probe_gpu_hours: float = 0.0


def _crop_tokens(family: str, crop: int, patch: int, channels: float) -> float:
    per_channel = (crop // patch) ** 2
    if family in ("cvit", "ha"):
        return channels * per_channel + 1 + (channels if family == "ha" else 0)
    return per_channel + 1  # one single-channel image (BoC) or one fixed-channel image


def step_flops(cfg, channels: float) -> float:
    """Training FLOPs of one optimiser step over the effective batch (see module docstring)."""
    from channel_ssl.models.vit import get_arch

    arch = get_arch(cfg.model.arch)
    patch = cfg.model.patch_size or arch.patch_size
    per_image_channels = 1.0 if cfg.model.family == "boc" else channels

    def forward(crop: int) -> float:
        tokens = _crop_tokens(cfg.model.family, crop, patch, per_image_channels)
        return vit_forward_flops(arch.depth, arch.embed_dim, tokens, arch.mlp_ratio)

    crops = cfg.crops
    global_fwd = crops.global_crops_number * forward(crops.global_crops_size)
    local_fwd = 0.0
    if cfg.objective != "mae":
        local_fwd = crops.local_crops_number * forward(crops.local_crops_size)
    else:  # MAE: the encoder sees 1 - mask_ratio of one view's tokens; no teacher
        return 3 * forward(crops.global_crops_size) * (1 - cfg.mae.mask_ratio) * cfg.batch_size
    return (3 * (global_fwd + local_fwd) + global_fwd) * cfg.batch_size


@cache
def checkpoint_bytes(run_config_json: str) -> tuple[int, int]:
    """(bytes of one checkpoint, trainable parameters): the networks in fp32 (student and
    teacher; for MAE the encoder twice and the decoder) plus AdamW's two moments of every
    trainable parameter; counted on the meta device, without allocating them."""
    import json

    import torch

    from channel_ssl.train.run_config import load_run_config
    from channel_ssl.train.ssl_meta_arch import build_network

    cfg = load_run_config(json.loads(run_config_json))
    with torch.device("meta"):
        if cfg.objective == "mae":
            from channel_ssl.train.ssl_meta_arch import MAETraining  # builds its own network

            network = MAETraining(cfg, torch.device("meta")).student
        else:
            network = build_network(cfg, drop_path=0.0)
    n_params = sum(p.numel() for p in network.parameters())
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    # DINO: a teacher copy of the whole network; MAE: the encoder stored a second time
    teacher = (
        sum(p.numel() for p in network.backbone.parameters())
        if cfg.objective == "mae"
        else n_params
    )
    return 4 * (n_params + teacher) + 8 * trainable, trainable


def resource_group(run: str) -> str:
    return "pretrain_boc" if registry.run(run).family == "boc" else "pretrain"


@dataclass(frozen=True)
class Sizing:
    """What a pretraining job asks for: from the registry run and the config, no torch."""

    iterations: int
    batch: int
    gpu_hours: float
    nodes: int
    gpus: int
    wall_hours: float
    runtime_minutes: int


@cache
def _sizing(name: str, config_json: str) -> Sizing:
    import json

    from channel_ssl.train.run_config import load_run_config

    config = json.loads(config_json)
    run = registry.run(name)
    cfg = load_run_config(registry.run_config(name, config))
    channels = mean_channels(run.corpus)
    multiplier = channels if (cfg.boc_pixel_budget and run.family == "boc") else 1.0
    iterations = max(1, round(cfg.iterations * multiplier))
    flops = step_flops(cfg, channels) * iterations
    settings = config.get("plan", {})
    gpu_hours = flops / (float(settings.get("sustained_tflops", 125.0)) * 1e12 * 3600)
    group = config["resources"][resource_group(name)]
    gpus_per_node = max(1, int(group["gpus_per_node"]))
    target = float(settings.get("target_hours", 48.0))
    nodes = 1
    while (
        nodes * 2 <= int(group["nodes"])
        and gpu_hours / (nodes * gpus_per_node) > target
        and cfg.batch_size % (2 * nodes * gpus_per_node) == 0
    ):
        nodes *= 2
    gpus = nodes * int(group["gpus_per_node"])
    wall = gpu_hours / max(1, gpus)
    runtime = min(int(group["runtime"]), max(10, math.ceil(wall * 60 * 1.2)))
    return Sizing(iterations, cfg.batch_size, gpu_hours, nodes, gpus, wall, runtime)


def probe_gpu_hours(name: str, config: dict) -> float:
    """GPU-hours of run ``name``'s probes under the augmented protocol (0 under the features
    protocol): per task, iterations x batch frozen forwards at the source's crop (no backward
    through the backbone; the linear heads are negligible)."""
    probe = config["linear_probe"]
    if probe["protocol"] != "augmented":
        return 0.0
    from channel_ssl.models.vit import get_arch
    from channel_ssl.train.run_config import load_run_config

    cfg = load_run_config(registry.run_config(name, config))
    arch = get_arch(cfg.model.arch)
    patch = cfg.model.patch_size or arch.patch_size
    aug = probe["augmented"]
    flops = 0.0
    for source, tasks in registry.probe_plan(name):
        crop = aug["crop_size"].get(source, aug["default_crop_size"])
        batch = aug["batch_size"].get(source, aug["default_batch_size"])
        channels = source_channels(source)
        if cfg.model.family in ("boc",):
            tokens, passes = _crop_tokens("boc", crop, patch, 1.0), channels
        else:
            tokens, passes = _crop_tokens(cfg.model.family, crop, patch, channels), 1.0
        per_image = passes * vit_forward_flops(arch.depth, arch.embed_dim, tokens, arch.mlp_ratio)
        flops += len(tasks) * aug["iterations"] * batch * per_image
    return flops / (float(config.get("plan", {}).get("sustained_tflops", 125.0)) * 1e12 * 3600)


def probe_runtime_minutes(name: str, config: dict) -> int:
    """Runtime of run ``name``'s evaluate-run job: the configured one, or the augmented
    probes' estimate plus 50 % (one GPU) when that is longer."""
    base = int(config["resources"]["extract"]["runtime"])
    return max(base, math.ceil(probe_gpu_hours(name, config) * 60 * 1.5))


def sizing(name: str, config: dict) -> Sizing:
    """Nodes, GPUs, runtime and the estimate behind them, for pretraining run ``name``."""
    import json

    return _sizing(name, json.dumps(config, sort_keys=True, default=str))


def plan_run(name: str, config: dict) -> RunPlan:
    import json

    from channel_ssl.train.run_config import load_run_config

    run = registry.run(name)
    run_config = registry.run_config(name, config)
    cfg = load_run_config(run_config)
    size = sizing(name, config)
    one, _ = checkpoint_bytes(json.dumps(run_config, sort_keys=True))
    kept = min(cfg.keep_checkpoints, max(1, size.iterations // cfg.checkpoint_every)) + 1
    return RunPlan(
        run=name,
        family=run.family,
        arch=cfg.model.arch,
        corpus=run.corpus,
        nodes=size.nodes,
        gpus=size.gpus,
        iterations=size.iterations,
        batch=size.batch,
        images_millions=size.iterations * size.batch / 1e6,
        gpu_hours=size.gpu_hours,
        wall_hours=size.wall_hours,
        runtime_minutes=size.runtime_minutes,
        checkpoint_gb=one / BYTES_PER_GB,
        disk_gb=kept * one / BYTES_PER_GB,
        probe_gpu_hours=probe_gpu_hours(name, config),
    )


def plan(config: dict, runs: list[str] | None = None) -> list[RunPlan]:
    names = runs or [r for r in registry.runs_for_targets(config["targets"]) if r in registry.RUNS]
    return [plan_run(n, config) for n in names]


def unset_raw_dirs(config: dict) -> list[str]:
    """Raw directories the configuration's runs need but ``sources.raw_dirs`` leaves unset."""
    if config.get("scale") != "paper":
        return []
    needed = set()
    for name in registry.runs_for_targets(config["targets"]):
        run = registry.run(name)
        if run.random_init:
            continue
        for source in corpus_sources(run.corpus):
            if source != "chammi":
                needed.add(registry.source(source).raw)
    raw_dirs = config.get("sources", {}).get("raw_dirs", {}) or {}
    return sorted(r for r in needed if not raw_dirs.get(r))


def render(plans: list[RunPlan], config: dict) -> str:
    cols = [
        ("run", "run", "{}"),
        ("family", "family", "{}"),
        ("arch", "arch", "{}"),
        ("corpus", "corpus", "{}"),
        ("nodes", "nodes", "{}"),
        ("GPUs", "gpus", "{}"),
        ("iterations", "iterations", "{:,}"),
        ("batch", "batch", "{:,}"),
        ("images (M)", "images_millions", "{:,.1f}"),
        ("GPU-hours (est.)", "gpu_hours", "{:,.0f}"),
        ("wall h", "wall_hours", "{:,.1f}"),
        ("job runtime (min)", "runtime_minutes", "{:,}"),
        ("checkpoint (GB)", "checkpoint_gb", "{:,.2f}"),
        ("kept on disk (GB)", "disk_gb", "{:,.1f}"),
        ("probe GPU-hours", "probe_gpu_hours", "{:,.0f}"),
    ]
    lines = [
        "| " + " | ".join(c[0] for c in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for p in plans:
        row = asdict(p)
        lines.append("| " + " | ".join(fmt.format(row[key]) for _, key, fmt in cols) + " |")
    total_gpu_h = sum(p.gpu_hours for p in plans)
    total_probe_h = sum(p.probe_gpu_hours for p in plans)
    total_disk = sum(p.disk_gb for p in plans)
    tflops = float(config.get("plan", {}).get("sustained_tflops", 125.0))
    lines += [
        "",
        f"Totals: {len(plans)} runs, {sum(p.iterations for p in plans):,} iterations, "
        f"{total_gpu_h:,.0f} GPU-hours (estimated at {tflops:g} TFLOP/s sustained per GPU), "
        f"{total_disk:,.1f} GB of checkpoints kept; probes "
        f"({config['linear_probe']['protocol']} protocol) {total_probe_h:,.0f} GPU-hours.",
    ]
    cvit = next((p for p in plans if p.run == "P-CViT-L"), None)
    if cvit is not None:
        lines += [
            "",
            f"Calibration: the paper reports about 2 days on 16 nodes of 8 GPUs for its large "
            f"models (~6,100 GPU-hours per Channel-ViT-L run); this estimate gives "
            f"{cvit.gpu_hours:,.0f} for P-CViT-L. Set plan.sustained_tflops to what your GPUs "
            "sustain; a job that outlives its runtime is stopped with a checkpoint and resumed.",
        ]
    missing = unset_raw_dirs(config)
    if missing:
        lines += [
            "",
            "WARNING: sources.raw_dirs is unset for: "
            + ", ".join(missing)
            + ". Their jobs stop at locate-source; docs/datasets.md says where to get each.",
        ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config/paper.yaml", help="workflow config to plan")
    parser.add_argument("--run", action="append", help="plan only this run (repeatable)")


def run(args: argparse.Namespace) -> int:
    from channel_ssl.config import load_config

    config = load_config(args.config)
    plans = plan(config, args.run)
    print(render(plans, config))
    if unset_raw_dirs(config):
        log.warning("raw_dirs unset for: %s", ", ".join(unset_raw_dirs(config)))
    return 0
