"""Model measures: HA vs BoC forward; one DINO BoC training step vs a bare timm step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.harness import Row, interleaved


@dataclass(frozen=True)
class StepSize:
    """One training-step size: architecture, crops, head, batch (single-channel images)."""

    name: str
    arch: str
    patch_size: int
    global_size: int
    local_size: int
    n_local: int
    n_prototypes: int
    hidden_dim: int
    bottleneck_dim: int
    batch: int


# untimed runs of each before the timed ones (the allocator reuses a run's blocks from then on)
WARMUP_STEPS = 4
# ViT-S/16 with the paper's crops (2 x 224 + 8 x 96) and head (65,536 prototypes, 2048 -> 256)
VIT_S = StepSize("ViT-S/16", "vit_small", 16, 224, 96, 8, 65536, 2048, 256, 2)
# the demo's micro size (config/demo.yaml: 32 + 4 x 16 px crops, 256 prototypes, BoC batch 16)
MICRO = StepSize("demo micro", "micro", 8, 32, 16, 4, 256, 128, 32, 16)


def ha_vs_boc_forward(repeats: int, batch: int = 2, n_channels: int = 5) -> Row:
    """Forward (no grad) of HA and BoC, ViT-S/16 at 224 px, K channels."""
    from channel_ssl.host_memory import freed_host_memory_kept
    from channel_ssl.models import build_backbone

    torch.manual_seed(0)
    ha = build_backbone("ha", "vit_small", img_size=224, k_max=n_channels).eval()
    boc = build_backbone("boc", "vit_small", img_size=224).eval()
    x = torch.randn(batch, n_channels, 224, 224)

    def run(model):
        def call():
            with torch.inference_mode():
                return model(x)["cls"].shape

        return call

    # as extraction runs a forward on CPU: under the host-memory setting, after untimed
    # forwards that bring the heap to its steady state
    with freed_host_memory_kept():
        for _ in range(WARMUP_STEPS):
            run(ha)(), run(boc)()
        timing, _, _ = interleaved(run(ha), run(boc), repeats, warmup=False)
    return Row(
        f"HA forward vs BoC forward, ViT-S/16, 224 px, K={n_channels}, batch {batch}",
        timing,
        "slowdown",
        1.10,
        notes="reference: BoC forward of the same images (K single-channel images each); "
        "both with CPU extraction's host-memory setting",
    )


def _run_config(size: StepSize) -> dict:
    return {
        "run": f"bench-{size.arch}",
        "seed": 0,
        "model": {
            "family": "boc",
            "arch": size.arch,
            "patch_size": size.patch_size,
            "drop_path": 0.0,
        },
        "iterations": 100,
        "batch_size": size.batch,
        "boc_pixel_budget": False,
        "dino": {
            "n_prototypes": size.n_prototypes,
            "hidden_dim": size.hidden_dim,
            "bottleneck_dim": size.bottleneck_dim,
        },
        "crops": {
            "global_crops_size": size.global_size,
            "local_crops_number": size.n_local,
            "local_crops_size": size.local_size,
        },
    }


def _batch(size: StepSize, cfg, n_channels: int | None = None) -> dict:
    """A batch as ``PretrainBatches`` makes one: single-channel crops (BoC), or with
    ``n_channels`` Channel-ViT crops of that many channels with their channel ids."""
    from channel_ssl.data.augment import MaskGenerator

    gen = torch.Generator().manual_seed(1)
    grid = size.global_size // size.patch_size
    masks = MaskGenerator(
        (grid, grid), tuple(cfg.ibot.mask_ratio_min_max), cfg.ibot.mask_sample_probability
    )
    rng = np.random.default_rng(2)
    b, c, n_global = size.batch, n_channels or 1, cfg.crops.global_crops_number
    return {
        "global": torch.randn(n_global * b, c, size.global_size, size.global_size, generator=gen),
        "local": torch.randn(size.n_local * b, c, size.local_size, size.local_size, generator=gen),
        "masks": torch.cat([masks.generate(b, rng, c) for _ in range(n_global)]),
        "channel_ids": None if n_channels is None else torch.arange(c).repeat(b, 1),
        "n_images": b,
    }


def step_function(training, cfg, batch: dict, device: torch.device, bf16: bool = False):
    """One training step as ``train`` runs it at a fixed point of its schedules: loss terms
    (under bf16 autocast when ``bf16``), backward, per-part clipping, AdamW, EMA; returns the
    loss terms."""
    from channel_ssl.train.param_groups import build_optimizer, clip_gradients

    student = training.student
    optimizer = build_optimizer(student, cfg, lr=1e-4)
    values = {"teacher_temp": 0.04, "teacher_momentum": 0.996}
    student.train()

    def step() -> dict:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            terms = training.loss_terms(student, batch, values)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        clip_gradients(student, cfg.clip_grad)
        optimizer.step()
        training.after_optimizer_step(values)
        return terms

    return step


def dino_step_vs_timm(size: StepSize, repeats: int, target: float) -> Row:
    """One DINOv2 BoC step as ``train`` runs it (student + teacher, DINO/iBOT heads, losses,
    backward, clipping, AdamW, EMA) vs a bare timm ViT forward + backward of the same crops
    plus the teacher's forward of the global crops."""
    import timm

    from channel_ssl.host_memory import freed_host_memory_kept
    from channel_ssl.train.run_config import load_run_config
    from channel_ssl.train.ssl_meta_arch import build_training

    cfg = load_run_config(_run_config(size))
    training = build_training(cfg, torch.device("cpu"))
    student = training.student
    batch = _batch(size, cfg)
    step = step_function(training, cfg, batch, torch.device("cpu"))

    def ours():
        return float(step()["total"].detach())

    arch = student.backbone
    depth = len(arch.blocks)
    timm_kwargs = {
        "img_size": size.global_size,
        "patch_size": size.patch_size,
        "embed_dim": arch.embed_dim,
        "depth": depth,
        "num_heads": arch.blocks[0].attn.num_heads,
        "in_chans": 1,
        "num_classes": 0,
        "dynamic_img_size": True,
        "init_values": 1e-5,
    }
    bare_student = timm.models.VisionTransformer(**timm_kwargs).train()
    bare_teacher = timm.models.VisionTransformer(**timm_kwargs).eval()

    def reference():
        with torch.no_grad():
            bare_teacher(batch["global"])
        out = bare_student(batch["global"]).sum() + bare_student(batch["local"]).sum()
        bare_student.zero_grad(set_to_none=True)
        out.backward()
        return float(out.detach())

    # both timed with the host-memory setting CPU training runs under (host_memory.py),
    # after untimed steps that bring the heap to the steady state of a training run's steps
    with freed_host_memory_kept():
        for _ in range(WARMUP_STEPS):
            ours(), reference()
        timing, _, _ = interleaved(ours, reference, repeats, warmup=False)
    return Row(
        f"one DINO BoC training step vs bare timm fwd+bwd + teacher fwd, {size.name}, "
        f"{size.n_prototypes:,} prototypes, 2 x {size.global_size} + {size.n_local} x "
        f"{size.local_size} px crops, batch {size.batch}",
        timing,
        "slowdown",
        target,
        notes="ours: heads, losses, clipping, AdamW and EMA included; both with CPU training's "
        "host-memory setting",
    )
