"""iBOT masked-patch loss: the student predicts the teacher's prototype distribution of
patches it only sees as mask tokens.

Only masked positions count. Every image weighs the same whatever its number of masked
patches (per-token weight 1 / masked patches of its image), and the sum is divided by the
number of images, masked or not (the DINOv2 normalisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from channel_ssl.losses.dino_clstoken import DINOLoss, sinkhorn_knopp


class IBOTPatchLoss(nn.Module):
    """iBOT patch loss with its own EMA centre (buffer ``center`` ``(1, P)``).

    Args:
        n_prototypes: P.
        student_temp: student temperature (0.1).
        center_momentum: EMA momentum of the patch centre (0.9).
        centering: ``"centering"`` or ``"sinkhorn_knopp"``.
    """

    def __init__(
        self,
        n_prototypes: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "centering",
    ) -> None:
        super().__init__()
        # the centring logic is the DINO one; keep a private instance for the patch centre
        self._targets = DINOLoss(n_prototypes, student_temp, center_momentum, centering)
        self.student_temp = student_temp

    @property
    def center(self) -> torch.Tensor:
        return self._targets.center

    @torch.no_grad()
    def teacher_targets(
        self, teacher_logits: torch.Tensor, teacher_temp: float, update_center: bool = True
    ) -> torch.Tensor:
        """Targets ``(n_masked, P)`` from the teacher's logits at the masked positions
        (``update_center`` as in :meth:`DINOLoss.teacher_targets`)."""
        if self._targets.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_logits, teacher_temp)
        return self._targets.teacher_targets(teacher_logits, teacher_temp, update_center)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA update of the patch centre from ``teacher_logits (n_masked, P)``."""
        self._targets.update_center(teacher_logits)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_targets: torch.Tensor,
        masks: torch.Tensor,
    ) -> torch.Tensor:
        """Args:
            student_logits: ``(n_masked, P)`` student logits at the masked positions, in the
                order of ``masks.nonzero()`` (row-major over ``(B, M)``).
            teacher_targets: ``(n_masked, P)`` teacher targets at the same positions.
            masks: bool ``(B, M)``, True where the student saw the mask token.

        Returns:
            scalar loss (0 if nothing is masked).
        """
        n_images = masks.shape[0]
        if student_logits.shape[0] == 0:
            return student_logits.sum() * 0.0
        log_probs = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        per_token = -(teacher_targets * log_probs).sum(dim=-1)  # (n_masked,)
        per_image_count = masks.sum(dim=-1).clamp(min=1).float()  # (B,)
        weights = (1.0 / per_image_count).unsqueeze(-1).expand_as(masks)[masks]
        return (per_token * weights).sum() / n_images
