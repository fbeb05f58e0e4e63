"""``channel-ssl import-weights``: a DINOv2-format checkpoint (the paper's released DINO BoC
weights, or any DINOv2 ViT) as a checkpoint of this project, which ``extract``,
``evaluate-features`` and the workflow read like their own.

``channel-ssl import-weights --format dinov2 --family boc --arch vit_large --checkpoint FILE
--out checkpoint.pt [--which teacher|student]``

What is read: a ``torch.save`` file holding the backbone's tensors, either at the top level or
under ``teacher`` / ``student`` / ``model`` / ``state_dict``, with the key prefixes DINOv2's
training code writes (``teacher.backbone.``, ``backbone.``, ``module.``) and plain or
chunked block keys (``blocks.<chunk>.<i>.`` when the model was built with ``block_chunks``).
Head tensors (``dino_head``, ``ibot_head``) are ignored; any other key that is not part of the
backbone, and any backbone tensor that is missing, is an error listing them.

The mapping onto this project's ViT (``models/vit.py``): DINOv2 adds a position embedding to
the CLS token; here the CLS token carries none, so the imported CLS token is DINOv2's CLS token
plus its position embedding (the same sum enters the first block) and the position table keeps
the patch entries. ``patch_embed.proj`` becomes ``patch_embed``; ``mask_token`` (1, D) becomes
(1, 1, D) (zero if the file has none). The grid of the position table fixes the native input
size: (its side) x (patch size). ``tests/test_own_data_weights.py`` checks that a ViT built by
timm in DINOv2's layout gives the same features as the imported model (max abs diff < 1e-5).
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from pathlib import Path

import torch

from channel_ssl.errors import UserError
from channel_ssl.provenance import StepIO

log = logging.getLogger("channel_ssl.import_weights")

FAMILIES = ("boc", "fixed")  # a DINOv2 ViT has one patch projection: BoC (1 channel) or fixed
PREFIXES = (
    "module.",
    "teacher.backbone.",
    "student.backbone.",
    "teacher.",
    "student.",
    "backbone.",
)
HEAD_PARTS = ("dino_head", "ibot_head", "head.")
_CHUNKED = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.*)$")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def backbone_tensors(raw: dict, which: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors of a DINOv2-format checkpoint, with DINOv2's own key names."""
    state = raw
    for key in (which, "model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError("the checkpoint holds no tensor dictionary (expected a DINOv2 state dict)")
    out = {}
    for key, value in state.items():
        if key.startswith(f"{'student' if which == 'teacher' else 'teacher'}."):
            continue  # the other network of a full training checkpoint
        name = _strip(key)
        if any(part in name for part in HEAD_PARTS):
            continue
        chunked = _CHUNKED.match(name)  # blocks.<chunk>.<i>.<rest> -> blocks.<i>.<rest>
        if chunked:
            name = f"blocks.{chunked.group(2)}.{chunked.group(3)}"
        out[name] = value
    return out


def to_project_layout(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """DINOv2 names -> this project's ViT state dict, and what it implies about the shape:
    ``{embed_dim, depth, patch_size, in_chans, grid}``."""
    for needed in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight"):
        if needed not in tensors:
            raise UserError(f"DINOv2 checkpoint lacks {needed!r}; keys: {sorted(tensors)[:12]} ...")
    cls, pos = tensors["cls_token"], tensors["pos_embed"]
    dim = cls.shape[-1]
    n_patches = pos.shape[1] - 1
    grid = math.isqrt(n_patches)
    if grid * grid != n_patches:
        raise UserError(f"pos_embed holds {pos.shape[1]} entries: not 1 + a square patch grid")
    proj = tensors["patch_embed.proj.weight"]
    out = {
        "cls_token": (cls.reshape(1, 1, dim) + pos[:, :1]).clone(),
        "pos_embed": pos[:, 1:].clone(),
        "mask_token": tensors.get("mask_token", torch.zeros(1, dim)).reshape(1, 1, dim).clone(),
        "patch_embed.weight": proj,
        "norm.weight": tensors["norm.weight"],
        "norm.bias": tensors["norm.bias"],
    }
    if "patch_embed.proj.bias" in tensors:
        out["patch_embed.bias"] = tensors["patch_embed.proj.bias"]
    depth = 0
    used = {
        "cls_token",
        "pos_embed",
        "mask_token",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
    }
    used |= {"norm.weight", "norm.bias"}
    for name, value in tensors.items():
        if name.startswith("blocks."):
            out[name] = value
            used.add(name)
            depth = max(depth, int(name.split(".")[1]) + 1)
    unknown = sorted(set(tensors) - used)
    if unknown:
        raise UserError(f"DINOv2 checkpoint has key(s) this backbone does not know: {unknown}")
    shape = {
        "embed_dim": int(dim),
        "depth": depth,
        "patch_size": int(proj.shape[-1]),
        "in_chans": int(proj.shape[1]),
        "grid": grid,
    }
    return out, shape


def import_dinov2(
    checkpoint: str | Path, family: str, arch: str, out: str | Path, which: str = "teacher"
) -> Path:
    from channel_ssl.models.vit import get_arch
    from channel_ssl.train.checkpoint import backbone_from_run_config, save_checkpoint
    from channel_ssl.train.run_config import load_run_config

    if family not in FAMILIES:
        raise UserError(f"--family {family!r}: a DINOv2 ViT imports as {', '.join(FAMILIES)}")
    raw = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state, shape = to_project_layout(backbone_tensors(raw, which))
    spec = get_arch(arch)
    if (spec.embed_dim, spec.depth) != (shape["embed_dim"], shape["depth"]):
        raise UserError(
            f"--arch {arch} is {spec.depth} blocks of width {spec.embed_dim}, but {checkpoint} "
            f"holds {shape['depth']} blocks of width {shape['embed_dim']}"
        )
    if family == "boc" and shape["in_chans"] != 1:
        raise UserError(
            f"{checkpoint}: a BoC backbone takes 1 channel; its patch projection takes "
            f"{shape['in_chans']} (use --family fixed)"
        )
    run_config = load_run_config(
        {
            "run": f"imported:{Path(checkpoint).name}",
            "model": {
                "family": family,
                "arch": arch,
                "patch_size": shape["patch_size"],
                "in_chans": shape["in_chans"],
            },
            "crops": {"global_crops_size": shape["grid"] * shape["patch_size"]},
        }
    ).to_dict()
    backbone = backbone_from_run_config(run_config)
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise UserError(
            f"{checkpoint} does not fit a {family} {arch}: missing {missing}, unknown {extra}"
        )
    wrong = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if wrong:
        raise UserError(f"{checkpoint}: tensor shapes differ for {wrong[:8]}")
    backbone.load_state_dict(state)
    weights = backbone.state_dict()
    save_checkpoint(
        out,
        {
            "student": weights,
            "teacher": weights,
            "iteration": 0,
            "run_config": run_config,
            "imported_from": {"path": str(checkpoint), "format": "dinov2", "which": which},
        },
    )
    log.info(
        "imported %s (%s, %d blocks, width %d, patch %d, native input %d px) -> %s",
        checkpoint,
        which,
        shape["depth"],
        shape["embed_dim"],
        shape["patch_size"],
        shape["grid"] * shape["patch_size"],
        out,
    )
    return Path(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["dinov2"], default="dinov2")
    parser.add_argument("--family", choices=FAMILIES, default="boc")
    parser.add_argument("--arch", required=True, help="vit_small, vit_large, ... (models/vit.py)")
    parser.add_argument("--checkpoint", required=True, help="the DINOv2-format file")
    parser.add_argument("--which", choices=["teacher", "student"], default="teacher")
    parser.add_argument("--out", required=True, help="checkpoint.pt to write")


def run(args: argparse.Namespace) -> int:
    if not Path(args.checkpoint).exists():
        raise UserError(f"--checkpoint {args.checkpoint} does not exist")
    import_dinov2(args.checkpoint, args.family, args.arch, args.out, args.which)
    return 0


# ------------------------------------------------ channel-ssl use-checkpoint (config pretrained)
def use_checkpoint(source: str | Path, run_config: dict, out: str | Path) -> Path:
    """Copy a checkpoint of this project in as the checkpoint of a registry run, after
    checking that it is the run's family and architecture. The backbone keeps the source's
    own run config (its crop, patch, channels); ``used_as`` records the run it stands for."""
    from channel_ssl.train.checkpoint import load_backbone, load_checkpoint, save_checkpoint

    state = load_checkpoint(source)
    if "run_config" not in state or "teacher" not in state:
        raise UserError(
            f"{source} is not a checkpoint of this project (no run_config/teacher); "
            "bring released weights in with channel-ssl import-weights first"
        )
    have, want = state["run_config"]["model"], run_config["model"]
    for key in ("family", "arch"):
        if have[key] != want[key]:
            raise UserError(
                f"{source} is a {have['family']} {have['arch']} model, but run "
                f"{run_config['run']} is a {want['family']} {want['arch']}; config 'pretrained' "
                "must give each run a checkpoint of its own family and architecture"
            )
    load_backbone(source)  # the weights load into the backbone they describe
    state["used_as"] = {"run": run_config["run"], "source": str(source)}
    save_checkpoint(out, state)
    log.info(
        "%s stands for run %s (%s %s)", source, run_config["run"], have["family"], have["arch"]
    )
    return Path(out)


def add_use_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of this project")
    parser.add_argument("--run-config", required=True, help="the registry run's config (JSON)")
    parser.add_argument("--out", required=True, help="checkpoint.pt of the run")


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    return StepIO(inputs=[args.checkpoint], outputs=[args.out])
