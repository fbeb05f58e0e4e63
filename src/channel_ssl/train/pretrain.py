"""Self-supervised pretraining of one run (``channel-ssl pretrain``): DINOv2, DINOv1 or MAE.

Usage::

    channel-ssl pretrain --corpus corpus.parquet --run-config run.json --out-dir runs/P-BoC-L \
        [--device auto|cpu|cuda] [--threads N]

``--run-config`` is a JSON file or a JSON string (:class:`RunConfig` lists the keys and their
paper defaults). Outputs: ``<out-dir>/checkpoints/ckpt-<iteration>.pt`` every
``checkpoint_every`` iterations and ``<out-dir>/checkpoint.pt`` at the end (schema in
``train/checkpoint.py``). A run restarts from its newest ``ckpt-*.pt`` automatically.

Objectives (run config ``objective``):

- ``dino`` (DINOv2): DINO loss on CLS tokens over (teacher global view, student view) pairs of
  different crops, iBOT loss on the masked patches of the student's global crops against the
  teacher's unmasked view, KoLeo on the student's global-crop CLS tokens; EMA teacher.
  Hierarchical attention adds DINO and KoLeo terms on every channel CLS token with the weight
  of the global CLS terms (paper appendix C), unless ``ha_channel_losses`` is false.
- ``dinov1`` (the CellDINOv1 baseline): the same multi-crop DINO CLS loss and EMA teacher,
  without iBOT (no masking) and without KoLeo, whatever their weights say; heads unchanged.
- ``mae`` (MAE-BoC, the Microsnoop proxy): one random-resized crop of ``global_crops_size``
  (``global_crops_scale``) per sample; the encoder sees only the visible patches (``mae.
  mask_ratio`` hidden uniformly at random per sample), a light decoder reconstructs the pixels
  of the hidden ones; loss = MSE on (per-patch normalised) pixels of the hidden patches. No
  teacher, no heads: the checkpoint's ``student`` and ``teacher`` entries both hold the encoder,
  so ``load_backbone`` and extraction work unchanged. Bag-of-channels and fixed families only.

Where each part lives (in the spirit of DINOv2's ``train/``): this module is the loop, its
resolved schedules, resumption and the CLI; ``train/run_config.py`` the run config and its
validation; ``train/ssl_meta_arch.py`` the networks and objectives (:class:`DINOTraining`,
:class:`MAETraining`: losses, what happens around the optimiser step, checkpoint entries);
``train/param_groups.py`` the optimiser's parameter groups and gradient clipping;
``train/distributed.py`` the process group; ``data/pretrain_batches.py`` the corpus, the
sampler and the multi-crop batches; ``train/checkpoint.py``, ``train/preemption.py``,
``train/collapse.py`` and ``train/schedules.py`` what their names say.

Reproducibility: every random draw of iteration ``it`` (samples, crops, masks, channel subsets,
stochastic depth) comes from generators seeded with ``(seed, it, rank)``, so a resumed run
computes exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from channel_ssl.data.pretrain_batches import (
    PretrainBatches,
    iteration_seed,
    load_corpus,
    mean_channels,
)
from channel_ssl.errors import UserError
from channel_ssl.host_memory import freed_host_memory_kept
from channel_ssl.progress import IntervalMeans, ProgressLogger
from channel_ssl.provenance import StepIO
from channel_ssl.train.checkpoint import (
    newest_readable_checkpoint,
    periodic_checkpoint_path,
    prune_checkpoints,
    remove_stale_temporaries,
    save_checkpoint,
)
from channel_ssl.train.collapse import CollapseMonitor
from channel_ssl.train.distributed import DistInfo, init_distributed
from channel_ssl.train.param_groups import build_optimizer, clip_gradients
from channel_ssl.train.preemption import REQUEUE_EXIT, GracefulStop, StopRequested
from channel_ssl.train.run_config import (
    PAPER_EPOCHS,
    WARMUP_EPOCHS,
    RunConfig,
    load_run_config,
)
from channel_ssl.train.schedules import TrainingSchedules, build_schedules
from channel_ssl.train.ssl_meta_arch import build_training

log = logging.getLogger("channel_ssl.pretrain")


# ------------------------------------------------------------------------------- training
@dataclass
class ResolvedRun:
    """Values derived from the config and the corpus."""

    total_iterations: int
    boc_iterations_multiplier: float
    lr: float
    warmup_iterations: int
    warmup_teacher_temp_iterations: int
    freeze_last_layer_iterations: int


def resolve_run(cfg: RunConfig, corpus: pd.DataFrame) -> ResolvedRun:
    multiplier = 1.0
    if cfg.boc_pixel_budget and cfg.model.family == "boc":
        multiplier = mean_channels(corpus)
    total = max(1, int(round(cfg.iterations * multiplier)))
    # An epoch is a fixed number of iterations (DINOv2: 1,250), the run's un-stretched length
    # / 36: BoC trains "a proportionally larger number of epochs", so its pixel budget makes
    # the run longer but leaves the warm-ups and the last-layer freeze as long as the others'.
    epoch = cfg.iterations / PAPER_EPOCHS

    def derived(value, epochs):
        return int(value) if value is not None else int(round(epoch * epochs))

    return ResolvedRun(
        total_iterations=total,
        boc_iterations_multiplier=multiplier,
        lr=cfg.lr
        * (
            cfg.batch_size / cfg.lr_ref_batch
            if cfg.lr_scaling == "linear"
            else math.sqrt(cfg.batch_size / cfg.lr_ref_batch)
        ),
        warmup_iterations=derived(cfg.warmup_iterations, WARMUP_EPOCHS),
        warmup_teacher_temp_iterations=derived(
            cfg.dino.warmup_teacher_temp_iterations, WARMUP_EPOCHS
        ),
        freeze_last_layer_iterations=derived(cfg.freeze_last_layer_iterations, 1),
    )


def make_schedules(cfg: RunConfig, resolved: ResolvedRun) -> TrainingSchedules:
    return build_schedules(
        iterations=resolved.total_iterations,
        lr=resolved.lr,
        min_lr=cfg.min_lr,
        warmup_iterations=resolved.warmup_iterations,
        weight_decay=cfg.weight_decay,
        weight_decay_end=cfg.weight_decay_end,
        momentum=cfg.teacher.momentum,
        final_momentum=cfg.teacher.final_momentum,
        teacher_temp=cfg.dino.teacher_temp,
        warmup_teacher_temp=cfg.dino.warmup_teacher_temp,
        warmup_teacher_temp_iterations=resolved.warmup_teacher_temp_iterations,
        freeze_last_layer_iterations=resolved.freeze_last_layer_iterations,
    )


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (saved for third-party code that uses it)
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# run-config keys that may change between a run and its resumption
_RESUMABLE_CHANGES = {"checkpoint_every", "log_every", "num_workers"}


def _check_same_run(saved: dict, current: dict, path: Path) -> None:
    # a key added to RunConfig after the checkpoint was written counts as its default value
    defaults = RunConfig().to_dict()
    differing = [
        k
        for k in current
        if k not in _RESUMABLE_CHANGES and saved.get(k, defaults[k]) != current[k]
    ]
    if differing:
        raise UserError(
            f"cannot resume from {path}: its run config differs in {', '.join(differing)}; "
            "use a new --out-dir or restore the original config"
        )


def describe_run(
    cfg: RunConfig,
    corpus: pd.DataFrame,
    student: nn.Module,
    resolved: ResolvedRun,
    info: DistInfo,
    device_kind: str,
    use_bf16: bool,
) -> str:
    """The start-up line of a run: what it trains, on what, for how long."""
    channels = corpus["n_channels"].value_counts().sort_index()
    channel_text = ", ".join(f"{int(k)}ch x {int(n)}" for k, n in channels.items())
    n_backbone = sum(p.numel() for p in student.backbone.parameters())
    n_total = sum(p.numel() for p in student.parameters())
    unit = "channel images" if cfg.model.family == "boc" else "images"
    return (
        f"run {cfg.run or '(unnamed)'}: objective={cfg.objective} family={cfg.model.family} "
        f"arch={cfg.model.arch}; corpus {len(corpus)} rows ({channel_text}); "
        f"parameters {n_total / 1e6:.3f} M ({n_backbone / 1e6:.3f} M backbone); "
        f"device={device_kind} x {info.world_size} process(es), "
        f"precision={'bf16' if use_bf16 else 'fp32'}; iterations={resolved.total_iterations}; "
        f"effective batch={cfg.batch_size} {unit} ({cfg.batch_size // info.world_size} per process"
        + (f", {cfg.groups_per_step} sub-batches each" if cfg.groups_per_step > 1 else "")
        + f"); lr={resolved.lr:.3g}, warm-up {resolved.warmup_iterations} it; logged losses "
        f"and entropies are means over each {cfg.log_every}-iteration log interval"
    )


def _to_device(batch: dict, device: torch.device) -> dict:
    moved = {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }
    if "parts" in batch:
        moved["parts"] = [_to_device(part, device) for part in batch["parts"]]
    return moved


def train(
    corpus_path: str | os.PathLike,
    run_config: RunConfig | dict | str,
    out_dir: str | os.PathLike,
    device: str = "auto",
) -> Path:
    """Run (or resume) one pretraining run; returns the path of the final checkpoint."""
    cfg = run_config if isinstance(run_config, RunConfig) else load_run_config(run_config)
    out_dir = Path(out_dir)
    device_kind = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available")
    info = init_distributed(device_kind)
    torch_device = torch.device(f"cuda:{info.local_rank}" if device_kind == "cuda" else "cpu")
    if cfg.batch_size % info.world_size:
        raise UserError(
            f"run config: 'batch_size' {cfg.batch_size} is not divisible by {info.world_size} processes"
        )
    local_batch = cfg.batch_size // info.world_size

    corpus = load_corpus(corpus_path)
    resolved = resolve_run(cfg, corpus)
    if resolved.boc_iterations_multiplier != 1.0:
        log.info(
            "BoC pixel budget: %d iterations x %.4g mean channels per image = %d iterations",
            cfg.iterations,
            resolved.boc_iterations_multiplier,
            resolved.total_iterations,
        )
    schedules = make_schedules(cfg, resolved)

    # same seed on every rank: identical initial networks everywhere
    training = build_training(cfg, torch_device)
    student = training.student
    patch_size = student.backbone.patch_size
    uses_local_crops = cfg.objective != "mae" and cfg.crops.local_crops_number
    for key in ("global_crops_size", "local_crops_size"):
        size = getattr(cfg.crops, key)
        if size % patch_size and (key == "global_crops_size" or uses_local_crops):
            raise UserError(
                f"run config: 'crops.{key}' {size} is not a multiple of the patch size {patch_size}"
            )
    optimizer = build_optimizer(student, cfg, resolved.lr)

    checkpoint_dir = out_dir / "checkpoints"
    start = 0
    if info.is_main:
        for stale in remove_stale_temporaries(out_dir, checkpoint_dir):
            log.warning("removed %s, a checkpoint write that never finished", stale)
    resume_path, state = newest_readable_checkpoint(checkpoint_dir, torch_device)
    if resume_path is not None:
        _check_same_run(state["run_config"], cfg.to_dict(), resume_path)
        training.load_state_dict(state)
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        start = int(state["iteration"])
        log.info(
            "resumed from %s at iteration %d/%d", resume_path, start, resolved.total_iterations
        )

    def checkpoint_state(iteration: int) -> dict:
        return {
            **training.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
            "total_iterations": resolved.total_iterations,
            "boc_iterations_multiplier": resolved.boc_iterations_multiplier,
            "resolved": dataclasses.asdict(resolved),
            "run_config": cfg.to_dict(),
            "rng": _rng_state(),
        }

    model = student
    if info.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            student,
            device_ids=[info.local_rank] if device_kind == "cuda" else None,
            find_unused_parameters=True,  # e.g. the mask token when no sample is masked
        )
    batches = PretrainBatches(
        corpus,
        cfg,
        local_batch=local_batch,
        total_iterations=resolved.total_iterations,
        patch_size=patch_size,
        rank=info.rank,
    )
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=range(start, resolved.total_iterations),
        num_workers=cfg.num_workers,
        pin_memory=device_kind == "cuda",
        persistent_workers=False,
    )
    use_bf16 = cfg.precision == "bf16" and device_kind == "cuda"
    progress = ProgressLogger(
        resolved.total_iterations, every=cfg.log_every, unit="img", logger=log, start=start
    )
    monitor = CollapseMonitor(cfg.dino.n_prototypes) if cfg.objective != "mae" else None
    # logged losses and entropies are means over the log interval
    interval = IntervalMeans()
    if info.is_main:
        log.info("%s", describe_run(cfg, corpus, student, resolved, info, device_kind, use_bf16))
    student.train()
    iteration = start
    # on CPU each step's large temporaries are reused, not faulted in from the kernel again
    with GracefulStop() as stop, freed_host_memory_kept(device_kind == "cpu"):
        for iteration, batch in zip(range(start, resolved.total_iterations), loader, strict=True):
            values = schedules.at(iteration)
            for group in optimizer.param_groups:
                # the last-layer freeze sets the prototypes' lr to 0, as DINOv2 does
                frozen = group["is_last_layer"] and values.get("freeze_last_layer", False)
                group["lr"] = 0.0 if frozen else values["lr"] * group["lr_mult"]
                group["weight_decay"] = values["weight_decay"] * group["wd_mult"]
            batch = _to_device(batch, torch_device)
            # stochastic depth draws from the global generator: reseed it per iteration
            torch.manual_seed(iteration_seed(cfg.seed, iteration, info.rank, 2))
            with torch.autocast(device_type=device_kind, dtype=torch.bfloat16, enabled=use_bf16):
                terms = training.loss_terms(model, batch, values)
            loss = terms["total"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {float(loss)} at iteration {iteration}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            training.before_optimizer_step(values)
            if cfg.clip_grad > 0:
                clip_gradients(student, cfg.clip_grad)
            optimizer.step()
            training.after_optimizer_step(values)
            done = iteration + 1
            if info.is_main:
                interval.add(terms)
                logged_values = interval.pop() if progress.due(iteration) else {}
                if monitor is not None and logged_values:
                    logged_values["entropy_ratio"] = monitor.ratio(logged_values["teacher_entropy"])
                wrote = progress.step(
                    iteration,
                    items=batch["n_images"] * info.world_size,
                    **logged_values,
                    lr=values["lr"],
                )
                if wrote and monitor is not None:
                    monitor.update(
                        logged_values["teacher_entropy"],
                        logged_values["teacher_batch_entropy"],
                        done,
                    )
            stopping = stop.requested(torch_device) and done < resolved.total_iterations
            if info.is_main and (done % cfg.checkpoint_every == 0 or stopping):
                save_checkpoint(
                    periodic_checkpoint_path(checkpoint_dir, done), checkpoint_state(done)
                )
                prune_checkpoints(checkpoint_dir, cfg.keep_checkpoints)
            iteration = done
            if stopping:
                if info.world_size > 1:
                    dist.barrier()
                log.warning(
                    "stopped at iteration %d/%d on %s; wrote %s; exiting with status %d so the job "
                    "is resubmitted and resumes there",
                    done,
                    resolved.total_iterations,
                    signal.Signals(stop.signum).name,
                    periodic_checkpoint_path(checkpoint_dir, done),
                    REQUEUE_EXIT,
                )
                raise StopRequested(done, stop.signum)
    final = out_dir / "checkpoint.pt"
    if info.is_main:
        save_checkpoint(final, checkpoint_state(iteration))
        log.info("wrote %s (%d iterations)", final, iteration)
    if info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final


def save_random_init(run_config: RunConfig | dict | str, out_dir: str | os.PathLike) -> Path:
    """The checkpoint of a run at initialisation, before any training step (a reference:
    what pretraining adds is the difference to it). Same format as a trained checkpoint, built
    exactly as :func:`train` builds its networks, with ``iteration`` 0 and ``random_init``."""
    cfg = run_config if isinstance(run_config, RunConfig) else load_run_config(run_config)
    training = build_training(cfg, torch.device("cpu"))
    final = Path(out_dir) / "checkpoint.pt"
    state = {
        **training.state_dict(),
        "iteration": 0,
        "total_iterations": 0,
        "random_init": True,
        "run_config": cfg.to_dict(),
    }
    save_checkpoint(final, state)
    log.info(
        "wrote %s: %s %s at random initialisation (seed %d), not trained",
        final,
        cfg.model.family,
        cfg.model.arch,
        cfg.seed,
    )
    return final


# -------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", help="corpus table (parquet) from assemble-corpus")
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="write the run's checkpoint at random initialisation, without training "
        "(a reference row; needs no corpus)",
    )
    parser.add_argument(
        "--run-config", required=True, help="run config: a JSON file or a JSON string"
    )
    parser.add_argument(
        "--out-dir", required=True, help="run directory (checkpoints, checkpoint.pt)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_init:
        if args.corpus:
            raise UserError("--random-init trains nothing: give no --corpus")
        save_random_init(args.run_config, args.out_dir)
        return 0
    if not args.corpus:
        raise UserError("--corpus is required (unless --random-init)")
    train(args.corpus, args.run_config, args.out_dir, device=args.device)
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    text = args.run_config
    if not text.lstrip().startswith("{"):
        text = Path(text).read_text()
    return StepIO(
        inputs=[args.corpus] if args.corpus else [],
        outputs=[os.path.join(args.out_dir, "checkpoint.pt")],
        config=json.loads(text),
    )
