"""The SSL networks and objectives (in the spirit of DINOv2's ``ssl_meta_arch.py``): student
and EMA teacher with DINO/iBOT heads and the DINOv2 loss terms, or MAE's encoder + decoder;
what happens around the optimiser step; the checkpoint entries.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from channel_ssl.losses import DINOLoss, IBOTPatchLoss, koleo_loss
from channel_ssl.losses.mae import mae_loss, patchify
from channel_ssl.models import build_backbone
from channel_ssl.models.heads import DINOHead
from channel_ssl.models.mae_decoder import MAEDecoder, MAENetwork, default_decoder_size
from channel_ssl.train.collapse import teacher_entropy
from channel_ssl.train.run_config import (
    RunConfig,
)

log = logging.getLogger("channel_ssl.pretrain")


# ----------------------------------------------------------------------------------- model
class SSLNetwork(nn.Module):
    """Backbone + DINO head (+ iBOT head). One ``forward`` for all crops (one DDP call).

    ``forward(global_crops, local_crops=None, masks=None, channel_ids=None,
    with_channel_tokens=False, mask_input=True)``: ``masks`` (bool ``(n_global * B, M)``) marks
    the patches replaced by the mask token (if ``mask_input``) and where patch logits are read
    (always; the teacher reads them on its unmasked view). Returns a dict:
        cls: ``(n_global * B, D)`` backbone CLS of the global crops (for KoLeo)
        cls_logits: ``(n_crops * B, P)`` head output of every crop's CLS (global crops first)
        patch_logits: ``(n_masked, P)`` head output at ``masks`` (only if masks is given)
        channel_cls: ``(n_global * B, K, D)`` and channel_logits ``(n_crops * B, K, P)`` (HA)
    """

    def __init__(self, backbone: nn.Module, dino_head: DINOHead, ibot_head: DINOHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        self.ibot_head = ibot_head

    def _backbone(self, x, masks, channel_ids):
        if channel_ids is None:
            return self.backbone(x, masks=masks)
        repeats = x.shape[0] // channel_ids.shape[0]
        return self.backbone(x, masks=masks, channel_ids=channel_ids.repeat(repeats, 1))

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        channel_ids: torch.Tensor | None = None,
        with_channel_tokens: bool = False,
        mask_input: bool = True,
    ) -> dict:
        outputs = [self._backbone(global_crops, masks if mask_input else None, channel_ids)]
        if local_crops is not None:
            outputs.append(self._backbone(local_crops, None, channel_ids))
        cls = torch.cat([o["cls"] for o in outputs])
        patch = None if masks is None else outputs[0]["patch"][masks]
        channel_cls = None
        if with_channel_tokens:
            channel_cls = torch.cat([o["channel_cls"] for o in outputs])
        result = {"cls": outputs[0]["cls"], **self._head_logits(cls, patch, channel_cls)}
        if with_channel_tokens:
            result["channel_cls"] = outputs[0]["channel_cls"]
        return result

    def _head_logits(
        self, cls: torch.Tensor, patch: torch.Tensor | None, channel_cls: torch.Tensor | None
    ) -> dict:
        """``cls_logits``, ``patch_logits`` (if ``patch``) and ``channel_logits`` (if
        ``channel_cls``, ``(N, K, D)``) from one call of each head: the DINO head runs once on
        the CLS, channel CLS and (shared iBOT head) masked patch tokens concatenated."""
        tokens = {"cls_logits": cls}
        if channel_cls is not None:
            tokens["channel_logits"] = channel_cls.flatten(0, 1)
        if patch is not None and self.ibot_head is None:
            tokens["patch_logits"] = patch
        logits = dict(zip(tokens, self.dino_head.forward_parts(list(tokens.values())), strict=True))
        if patch is not None and self.ibot_head is not None:
            logits["patch_logits"] = self.ibot_head(patch)
        if channel_cls is not None:
            logits["channel_logits"] = logits["channel_logits"].unflatten(0, channel_cls.shape[:2])
        return logits


def build_run_backbone(cfg: RunConfig, *, drop_path: float) -> nn.Module:
    """The backbone a run trains (position embeddings built for ``global_crops_size``)."""
    model = cfg.model
    return build_backbone(
        model.family,
        model.arch,
        img_size=cfg.crops.global_crops_size,
        patch_size=model.patch_size,
        drop_path_rate=drop_path,
        layerscale_init=model.layerscale,
        k_max=model.k_max,
        in_chans=model.in_chans,
    )


def build_network(cfg: RunConfig, *, drop_path: float) -> SSLNetwork:
    """Backbone + heads of a run (student: drop_path from config; teacher: 0)."""
    backbone = build_run_backbone(cfg, drop_path=drop_path)
    d = cfg.dino

    def head():
        return DINOHead(
            backbone.embed_dim,
            d.n_prototypes,
            d.hidden_dim,
            d.bottleneck_dim,
            d.nlayers,
            init=d.head_init,
        )

    return SSLNetwork(backbone, head(), head() if cfg.ibot.separate_head else None)


class DINOv2Objective(nn.Module):
    """Loss modules (with their EMA centres) and the assembly of the total loss.

    With ``cfg.objective == "dinov1"`` only the DINO CLS terms are computed (no iBOT, no KoLeo).
    """

    def __init__(self, cfg: RunConfig, with_channel_tokens: bool):
        super().__init__()
        d = cfg.dino
        self.cfg = cfg
        self.dinov1 = cfg.objective == "dinov1"
        self.n_global = cfg.crops.global_crops_number
        self.n_crops = self.n_global + cfg.crops.local_crops_number
        self.with_channel_tokens = with_channel_tokens
        self.dino = DINOLoss(d.n_prototypes, d.student_temp, d.center_momentum, d.centering)
        self.ibot = IBOTPatchLoss(d.n_prototypes, d.student_temp, d.center_momentum, d.centering)
        # channel CLS tokens get their own centre: their statistics differ from the global CLS
        self.dino_channel = DINOLoss(d.n_prototypes, d.student_temp, d.center_momentum, d.centering)

    def forward(
        self,
        student: dict,
        teacher: dict,
        masks: torch.Tensor,
        teacher_temp: float,
        update_centers: bool = True,
    ) -> dict:
        """Loss terms of one (sub-)batch. The EMA centres are updated from this batch's teacher
        outputs after its targets are made, unless ``update_centers`` is False (then
        :meth:`update_centers` does it once for several sub-batches)."""
        cfg = self.cfg
        update = update_centers
        terms: dict[str, torch.Tensor] = {}
        all_targets = self.dino.teacher_targets(teacher["cls_logits"], teacher_temp, update)
        targets = all_targets.chunk(self.n_global)
        terms["dino"] = self.dino(list(student["cls_logits"].chunk(self.n_crops)), list(targets))
        if not self.dinov1:
            terms["koleo"] = sum(koleo_loss(c) for c in student["cls"].chunk(self.n_global))
        if cfg.ibot.loss_weight > 0 and not self.dinov1:
            patch_targets = self.ibot.teacher_targets(teacher["patch_logits"], teacher_temp, update)
            terms["ibot"] = self.ibot(student["patch_logits"], patch_targets, masks)
        if self.with_channel_tokens:
            t_logits = teacher["channel_logits"]  # (n_global * B, K, P)
            n_channels = t_logits.shape[1]
            t_targets = self.dino_channel.teacher_targets(
                t_logits.flatten(0, 1), teacher_temp, update
            )
            t_targets = t_targets.reshape(t_logits.shape)
            s_logits = student["channel_logits"]
            terms["dino_channel"] = sum(
                self.dino_channel(
                    list(s_logits[:, k].chunk(self.n_crops)),
                    list(t_targets[:, k].chunk(self.n_global)),
                )
                for k in range(n_channels)
            )
            if not self.dinov1:
                # KoLeo over all channel CLS tokens of a crop's batch
                terms["koleo_channel"] = sum(
                    koleo_loss(c.flatten(0, 1)) for c in student["channel_cls"].chunk(self.n_global)
                )
        total = cfg.dino.loss_weight * terms["dino"]
        if "koleo" in terms:
            total = total + cfg.dino.koleo_loss_weight * terms["koleo"]
        if "ibot" in terms:
            total = total + cfg.ibot.loss_weight * terms["ibot"]
        if self.with_channel_tokens:
            total = total + cfg.dino.loss_weight * terms["dino_channel"]
        if "koleo_channel" in terms:
            total = total + cfg.dino.koleo_loss_weight * terms["koleo_channel"]
        terms["total"] = total
        # collapse monitor (not a loss term): mean entropy of the teacher's CLS targets
        terms["teacher_entropy"], terms["teacher_batch_entropy"] = teacher_entropy(all_targets)
        return terms

    @torch.no_grad()
    def update_centers(self, teachers: list[dict]) -> None:
        """One EMA update of each centre from the teacher outputs of several sub-batches
        (their concatenation: the mean DDP's all-reduce would give over as many ranks)."""
        if self.dino.centering != "centering":
            return  # Sinkhorn-Knopp keeps no centre
        self.dino.update_center(torch.cat([t["cls_logits"] for t in teachers]))
        if self.cfg.ibot.loss_weight > 0 and not self.dinov1:
            self.ibot.update_center(torch.cat([t["patch_logits"] for t in teachers]))
        if self.with_channel_tokens:
            self.dino_channel.update_center(
                torch.cat([t["channel_logits"].flatten(0, 1) for t in teachers])
            )


def mean_terms(parts: list[dict]) -> dict:
    """Loss terms averaged over sub-batches (DDP averages the gradients over ranks)."""
    return {key: sum(p[key] for p in parts) / len(parts) for key in parts[0]}


class DINOTraining:
    """The DINO objectives (``dino``, ``dinov1``): student and EMA teacher networks with DINO
    heads, the loss modules, the last-layer freeze and the teacher update.

    ``student`` is what the optimiser trains (and DDP wraps).
    """

    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg = cfg
        self.student = build_network(cfg, drop_path=cfg.model.drop_path).to(device)
        self.teacher = build_network(cfg, drop_path=0.0).to(device)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.with_channel_tokens = cfg.model.family == "ha" and cfg.ha_channel_losses
        self.objective = DINOv2Objective(cfg, self.with_channel_tokens).to(device)

    def loss_terms(self, model: nn.Module, batch: dict, values: dict) -> dict:
        """Named loss terms of one batch, ``total`` included; ``model`` is the (wrapped) student.

        A batch of sub-batches (``parts``, virtual ranks) gives the mean of their terms, every
        part's targets made with the step's centres, and then one update of each centre.
        """
        if "parts" in batch:
            temp = values["teacher_temp"]
            terms, teachers = [], []
            for part in batch["parts"]:
                student_out, teacher_out = self._forward(model, part)
                terms.append(self.objective(student_out, teacher_out, part["masks"], temp, False))
                teachers.append(teacher_out)
            self.objective.update_centers(teachers)
            return mean_terms(terms)
        student_out, teacher_out = self._forward(model, batch)
        return self.objective(student_out, teacher_out, batch["masks"], values["teacher_temp"])

    def _forward(self, model: nn.Module, batch: dict) -> tuple[dict, dict]:
        """Student and teacher outputs of one batch."""
        with torch.no_grad():
            # the teacher sees the unmasked global crops; its patch logits are read at the
            # positions the student sees masked
            teacher_out = self.teacher(
                batch["global"],
                masks=batch["masks"],
                mask_input=False,
                channel_ids=batch["channel_ids"],
                with_channel_tokens=self.with_channel_tokens,
            )
        student_out = model(
            batch["global"],
            batch["local"],
            masks=batch["masks"],
            channel_ids=batch["channel_ids"],
            with_channel_tokens=self.with_channel_tokens,
        )
        return student_out, teacher_out

    def before_optimizer_step(self, values: dict) -> None:
        """Nothing: the last-layer freeze is the prototypes' lr of 0 (see :func:`train`)."""

    @torch.no_grad()
    def after_optimizer_step(self, values: dict) -> None:
        # teacher <- m teacher + (1 - m) student, as one pass: teacher + (1 - m)(student - teacher)
        momentum = values["teacher_momentum"]
        torch._foreach_lerp_(
            list(self.teacher.parameters()),
            [p.detach() for p in self.student.parameters()],
            1 - momentum,
        )

    def state_dict(self) -> dict:
        """Checkpoint entries of the networks and losses (schema: ``train/checkpoint.py``)."""
        state = {
            "student": self.student.backbone.state_dict(),
            "teacher": self.teacher.backbone.state_dict(),
            "student_dino_head": self.student.dino_head.state_dict(),
            "teacher_dino_head": self.teacher.dino_head.state_dict(),
            "losses": self.objective.state_dict(),
        }
        if self.cfg.ibot.separate_head:
            state["student_ibot_head"] = self.student.ibot_head.state_dict()
            state["teacher_ibot_head"] = self.teacher.ibot_head.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.student.backbone.load_state_dict(state["student"])
        self.teacher.backbone.load_state_dict(state["teacher"])
        self.student.dino_head.load_state_dict(state["student_dino_head"])
        self.teacher.dino_head.load_state_dict(state["teacher_dino_head"])
        if self.cfg.ibot.separate_head:
            self.student.ibot_head.load_state_dict(state["student_ibot_head"])
            self.teacher.ibot_head.load_state_dict(state["teacher_ibot_head"])
        self.objective.load_state_dict(state["losses"])


class MAETraining:
    """The ``mae`` objective: encoder (the run's backbone) + light decoder, no teacher.

    Checkpoint entries: ``student`` and ``teacher`` both hold the encoder (what
    ``load_backbone`` reads), ``decoder`` the decoder.
    """

    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg = cfg
        backbone = build_run_backbone(cfg, drop_path=cfg.model.drop_path)
        dim, depth, heads = default_decoder_size(backbone.embed_dim)
        m = cfg.mae
        decoder = MAEDecoder(
            backbone.embed_dim,
            patch_size=backbone.patch_size,
            in_chans=backbone.in_chans,
            grid_size=backbone.grid_size,
            decoder_dim=int(m.decoder_dim or dim),
            depth=int(m.decoder_depth or depth),
            num_heads=int(m.decoder_heads or heads),
        )
        self.student = MAENetwork(backbone, decoder).to(device)

    def loss_terms(self, model: nn.Module, batch: dict, values: dict) -> dict:
        if "parts" in batch:
            return mean_terms([self.loss_terms(model, part, values) for part in batch["parts"]])
        images, masks = batch["global"], batch["masks"]
        pred = model(images, masks)
        target = patchify(images, self.student.backbone.patch_size)
        loss = mae_loss(pred, target, masks, norm_pix=self.cfg.mae.norm_pix_loss)
        return {"mae": loss, "total": loss}

    def before_optimizer_step(self, values: dict) -> None:
        pass  # no prototypes to freeze

    def after_optimizer_step(self, values: dict) -> None:
        pass  # no teacher to update

    def state_dict(self) -> dict:
        encoder = self.student.backbone.state_dict()
        return {
            "student": encoder,
            "teacher": encoder,
            "decoder": self.student.decoder.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.student.backbone.load_state_dict(state["student"])
        self.student.decoder.load_state_dict(state["decoder"])


def build_training(cfg: RunConfig, device: torch.device) -> DINOTraining | MAETraining:
    """The objective-specific part of a run (seeds the global generator with ``cfg.seed`` first,
    so every rank builds identical networks)."""
    torch.manual_seed(cfg.seed)
    if cfg.objective == "mae":
        return MAETraining(cfg, device)
    return DINOTraining(cfg, device)
