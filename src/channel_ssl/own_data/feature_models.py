"""The networks of ``evaluate-features``: a checkpoint or a random-init backbone, its random-init
reference, Channel-ViT's channel matching, and the features of every image of a dataset."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from channel_ssl.errors import UserError
from channel_ssl.eval.extract import iter_batches, prepare_batch
from channel_ssl.eval.features import canonical_family, make_features, n_last_blocks_needed
from channel_ssl.own_data.dataset import Dataset

log = logging.getLogger("channel_ssl.own_data.evaluate")

RANDOM = "random"


@dataclass
class Model:
    name: str
    backbone: torch.nn.Module
    family: str
    run_config: dict
    random: bool


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
