"""AdamW parameter groups (layer-wise lr decay, patch-embedding multiplier, DINOv2's weight-
decay exemptions, the last-layer flag), the fused AdamW over them, and per-part gradient
clipping.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

log = logging.getLogger("channel_ssl.pretrain")


_BLOCK_INDEX = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def no_weight_decay(name: str) -> bool:
    """DINOv2's rule (``get_params_groups_with_decay``): biases, norms and LayerScale gammas
    only; position and channel embeddings, CLS/mask/channel tokens and prototypes decay."""
    return name.endswith(".bias") or "norm" in name or "gamma" in name


def parameter_groups(
    network: nn.Module, layerwise_decay: float, patch_embed_lr_mult: float
) -> list[dict]:
    """AdamW parameter groups with ``lr_mult``, ``wd_mult`` and ``is_last_layer`` entries.

    Layer-wise lr decay over the backbone: embeddings and tokens are layer 0, block i is layer
    i + 1, the final norm is layer n_blocks + 1; lr_mult = decay ** (n_blocks + 1 - layer).
    Patch-embedding weights get ``patch_embed_lr_mult`` on top. Heads: lr_mult 1. No weight
    decay on biases, norms and LayerScale gammas only (:func:`no_weight_decay`). The groups
    holding the prototypes are marked ``is_last_layer``: their lr is 0 while the last layer
    is frozen.
    ``network`` is an :class:`SSLNetwork` or an ``MAENetwork`` (its decoder counts as a head).
    """
    n_blocks = network.backbone.n_blocks
    groups: dict[tuple, dict] = {}
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        lr_mult, is_last_layer = 1.0, False
        if name.startswith("backbone."):
            inner = name[len("backbone.") :]
            match = _BLOCK_INDEX.search(inner)
            if match:
                layer = int(match.group(1)) + 1
            elif re.search(r"(?:^|\.)norm\.", inner):
                layer = n_blocks + 1
            else:
                layer = 0
            lr_mult = layerwise_decay ** (n_blocks + 1 - layer)
            if "patch_embed" in inner:
                lr_mult *= patch_embed_lr_mult
        elif name.endswith("prototypes"):
            is_last_layer = True
        wd_mult = 0.0 if no_weight_decay(name) else 1.0
        key = (lr_mult, wd_mult, is_last_layer)
        group = groups.setdefault(
            key,
            {"params": [], "lr_mult": lr_mult, "wd_mult": wd_mult, "is_last_layer": is_last_layer},
        )
        group["params"].append(param)
    return list(groups.values())


def clip_gradients(network: nn.Module, max_norm: float) -> list[float]:
    """Clip the gradient norm of each part of ``network`` separately (backbone, DINO head,
    iBOT head; backbone and decoder for MAE), as DINOv2 clips each student submodule; returns
    the norms before clipping."""
    norms = []
    for part in network.children():
        params = [p for p in part.parameters() if p.grad is not None]
        if params:
            norms.append(float(nn.utils.clip_grad_norm_(params, max_norm)))
    return norms


def build_optimizer(network: nn.Module, cfg, lr: float) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups` of ``network`` with the run's betas, as one fused
    kernel per parameter group (torch's ``fused=True``, on CPU and CUDA: ~4x faster than the
    per-parameter loop at ViT-S, and most of the micro ViT's optimiser time). It computes
    torch's AdamW update; the order of its float operations differs from the loop's, so
    weights differ from the loop's at float rounding."""
    return torch.optim.AdamW(
        parameter_groups(network, cfg.layerwise_decay, cfg.patch_embed_lr_mult),
        lr=lr,
        betas=tuple(cfg.betas),
        fused=True,
    )
