"""Checkpoints of pretraining runs: atomic save, load, newest-checkpoint lookup, backbone loading.

A checkpoint (``torch.save`` of a dict) holds::

    student, teacher             backbone state dicts
    student_dino_head, teacher_dino_head   (and *_ibot_head when iBOT has its own head)
    losses                       {name: state dict} (EMA centres)
    optimizer                    AdamW state dict
    iteration                    number of completed iterations
    total_iterations             planned iterations of the run (after the BoC pixel budget)
    boc_iterations_multiplier    1.0 unless the BoC pixel budget scaled the iterations
    run_config                   the full run config (defaults filled in), a plain dict
    rng                          {"torch", "numpy", "python"[, "cuda"]} generator states
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from channel_ssl.atomic import atomic_path

CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d+)\.pt$")
# the temporary name channel_ssl.atomic gives a checkpoint while it is written
TEMPORARY_PATTERN = re.compile(r"^\.(?:ckpt-\d+|checkpoint)\.pt\..+\.tmp\.pt$")
log = logging.getLogger("channel_ssl.pretrain")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save(state)`` to ``path`` atomically (a crash never leaves a partial file)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict; FileNotFoundError naming the path if it does not exist."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # our own files: they hold numpy RNG states and plain dicts, not only tensors
    return torch.load(path, map_location=map_location, weights_only=False)


def periodic_checkpoint_path(directory: str | os.PathLike, iteration: int) -> Path:
    """``<directory>/ckpt-<iteration>.pt``."""
    return Path(directory) / f"ckpt-{iteration}.pt"


def periodic_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every ``ckpt-<iteration>.pt`` of ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = CHECKPOINT_PATTERN.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The ``ckpt-<iteration>.pt`` of ``directory`` with the highest iteration, or None."""
    found = periodic_checkpoints(directory)
    return found[-1][1] if found else None


def newest_readable_checkpoint(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Path | None, dict | None]:
    """The newest periodic checkpoint that loads, and its state; ``(None, None)`` if none.

    A newest checkpoint that cannot be read (truncated by a crash outside the atomic write,
    a damaged disk) is skipped with a warning naming it and left in place for inspection; the
    run resumes from the next older one.
    """
    for _, path in reversed(periodic_checkpoints(directory)):
        try:
            state = load_checkpoint(path, map_location=map_location)
        except Exception as exc:  # any unreadable file: torch/pickle/zip raise many kinds
            log.warning(
                "checkpoint %s is unreadable (%s: %s); resuming from an older one",
                path,
                type(exc).__name__,
                str(exc)[:200],
            )
            continue
        if not isinstance(state, dict) or "iteration" not in state:
            log.warning("checkpoint %s is not a pretraining checkpoint; skipped", path)
            continue
        return path, state
    return None, None


def remove_stale_temporaries(*directories: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of checkpoint writes that never finished (the process was
    killed mid-write): ``.<name>.<random>.tmp.pt`` beside the checkpoints. Returns them."""
    removed = []
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            if TEMPORARY_PATTERN.match(entry.name):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def prune_checkpoints(directory: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest periodic checkpoints (a ViT-L one with optimiser
    state is ~5 GB; the final ``checkpoint.pt`` is never touched). Returns what was deleted."""
    found = periodic_checkpoints(directory)
    doomed = [path for _, path in found[: max(0, len(found) - keep)]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def backbone_from_run_config(run_config: dict) -> nn.Module:
    """Build the (untrained) backbone a run config describes, without stochastic depth."""
    from channel_ssl.models import build_backbone

    model = run_config["model"]
    return build_backbone(
        model["family"],
        model["arch"],
        img_size=int(run_config["crops"]["global_crops_size"]),
        patch_size=model.get("patch_size"),
        drop_path_rate=0.0,
        layerscale_init=model.get("layerscale", 1e-5),
        k_max=int(model.get("k_max", 8)),
        in_chans=int(model.get("in_chans", 1)),
    )


def load_backbone(path: str | os.PathLike, which: str = "teacher") -> tuple[nn.Module, dict]:
    """Backbone of a pretraining checkpoint, in eval mode, on CPU.

    Args:
        path: a ``checkpoint.pt`` / ``ckpt-<it>.pt`` written by ``pretrain``.
        which: ``"teacher"`` (the EMA weights, used for evaluation, as DINOv2 does) or
            ``"student"``.

    Returns:
        ``(backbone, run_config)``; ``run_config`` is the run's config dict (defaults filled in).
    """
    if which not in ("teacher", "student"):
        raise ValueError(f"which={which!r}; valid: teacher, student")
    state = load_checkpoint(path)
    for key in (which, "run_config"):
        if key not in state:
            raise ValueError(
                f"checkpoint {path} has no {key!r} entry; is it a pretrain checkpoint?"
            )
    run_config = state["run_config"]
    backbone = backbone_from_run_config(run_config)
    backbone.load_state_dict(state[which])
    backbone.eval()
    return backbone, run_config
