"""DINO loss on CLS tokens: cross-entropy between teacher and student prototype distributions.

The teacher's logits are turned into targets either by *centring* (subtract an EMA centre,
sharpen with the teacher temperature, softmax; the DINOv2 default) or by *Sinkhorn-Knopp*
(equipartition of the batch over the prototypes; the alternative). The student's logits are
softened with ``student_temp``. Multi-crop: every teacher global view is a target for every
student view except the student's view of the same crop.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

CENTERING_MODES = ("centering", "sinkhorn_knopp")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3
) -> torch.Tensor:
    """Sinkhorn-Knopp targets: rows sum to 1, prototypes get equal mass over the (global) batch.

    Args:
        teacher_logits: ``(B, P)`` logits of this process's samples.
        teacher_temp: temperature applied before exponentiation.
        n_iterations: alternating normalisations.

    Returns:
        ``(B, P)`` probabilities (each row sums to 1). Under DDP the prototype marginals are
        computed over the batch of all processes.
    """
    logits = teacher_logits.float() / teacher_temp
    # subtracting the global max keeps exp() finite and cancels in the normalisations
    shift = logits.max()
    if _distributed():
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp(logits - shift).t()  # (P, B)
    n_prototypes = q.shape[0]
    n_samples = torch.tensor(q.shape[1], device=q.device, dtype=q.dtype)
    if _distributed():
        dist.all_reduce(n_samples)
    total = q.sum()
    if _distributed():
        dist.all_reduce(total)
    q = q / total
    for _ in range(n_iterations):
        per_prototype = q.sum(dim=1, keepdim=True)
        if _distributed():
            dist.all_reduce(per_prototype)
        q = q / per_prototype / n_prototypes
        q = q / q.sum(dim=0, keepdim=True) / n_samples
    q = q * n_samples  # columns (samples) now sum to 1
    return q.t()


class DINOLoss(nn.Module):
    """DINO cross-entropy with an EMA teacher centre (buffer ``center`` of shape ``(1, P)``).

    Args:
        n_prototypes: P, output size of the DINO head.
        student_temp: student softmax temperature (0.1).
        center_momentum: EMA momentum of the centre (0.9).
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
        if centering not in CENTERING_MODES:
            raise ValueError(f"centering={centering!r}; valid: {', '.join(CENTERING_MODES)}")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.centering = centering
        self.register_buffer("center", torch.zeros(1, n_prototypes))

    @torch.no_grad()
    def teacher_targets(
        self, teacher_logits: torch.Tensor, teacher_temp: float, update_center: bool = True
    ) -> torch.Tensor:
        """Targets ``(N, P)`` from teacher logits ``(N, P)``.

        With ``centering`` this also updates the EMA centre from this batch, *after* computing
        the targets with the previous centre (as DINO does); ``update_center=False`` leaves the
        update to the caller (several sub-batches of one step share one update).
        """
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_logits, teacher_temp)
        targets = F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)
        if update_center:
            self.update_center(teacher_logits)
        return targets

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean of ``teacher_logits (N, P)`` over all processes
        (unchanged when N is 0 on every process)."""
        batch_sum = teacher_logits.float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_logits.shape[0]), device=batch_sum.device)
        if _distributed():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        if float(count) == 0:
            return  # nothing to average (an iBOT batch that masks no patch): keep the centre
        batch_center = batch_sum / count
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)

    def log_probs(self, student_logits: torch.Tensor) -> torch.Tensor:
        """``log softmax(student_logits / student_temp)`` of ``(N, P)`` logits."""
        return F.log_softmax(student_logits.float() / self.student_temp, dim=-1)

    def forward(
        self, student_logits: list[torch.Tensor], teacher_targets: list[torch.Tensor]
    ) -> torch.Tensor:
        """Multi-crop DINO loss.

        Args:
            student_logits: one ``(N, P)`` tensor per student view; the first
                ``len(teacher_targets)`` views are the global crops, in the teacher's order.
            teacher_targets: one ``(N, P)`` target tensor per teacher (global) view.

        Returns:
            scalar: mean over the (teacher view, student view) pairs with different crops of
            the per-sample cross-entropy averaged over the N samples.
        """
        total = student_logits[0].new_zeros((), dtype=torch.float32)
        n_pairs = 0
        # each student view's log-probabilities once, whatever the number of its targets
        log_probs = [self.log_probs(logits) for logits in student_logits]
        for t_index, targets in enumerate(teacher_targets):
            for s_index, student in enumerate(log_probs):
                if s_index == t_index:
                    continue  # same crop: no self-distillation
                total = total - (targets * student).sum(dim=-1).mean()
                n_pairs += 1
        if n_pairs == 0:
            raise ValueError("DINO loss needs at least two views (e.g. 2 global crops)")
        return total / n_pairs
