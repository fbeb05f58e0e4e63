"""Collapse monitor of the DINO objectives: teacher-output entropies and warnings.

DINO fails in two ways: the teacher's targets go uniform (every image says nothing; the DINO
loss sits at ln K) or one-hot on a single prototype for every image. Both are visible in the
teacher's target distributions, which the pretraining loop logs at every progress line
(docs/learning.md).
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger("channel_ssl.pretrain")


@torch.no_grad()
def teacher_entropy(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropies (nats) of teacher target distributions ``(N, P)``.

    Returns ``(per_image, batch)``: the mean over rows of each row's entropy, and the entropy
    of the batch's mean distribution. ``per_image`` near ln P: the teacher says nothing
    (uniform collapse); ``batch`` near 0: every image gets the same prototype (one-hot
    collapse). A learning run has sharp rows (low ``per_image``) spread over many prototypes
    (high ``batch``).
    """
    p = targets.float()
    per_image = -(p * torch.log(p.clamp(min=1e-12))).sum(dim=-1).mean()
    mean = p.mean(dim=0)
    batch = -(mean * torch.log(mean.clamp(min=1e-12))).sum()
    return per_image, batch


class CollapseMonitor:
    """Warns when the teacher output stays near uniform or near one-hot.

    ``update(per_image, batch, iteration)`` is called at each log line with the two teacher
    entropies of :func:`teacher_entropy`; after ``patience`` consecutive lines with
    ``per_image / ln P >= uniform_ratio`` (uniform) or ``batch <= onehot_nats`` (one
    prototype for the whole batch) it logs one WARNING line (again only after the state
    changed).
    """

    def __init__(
        self,
        n_prototypes: int,
        *,
        patience: int = 3,
        uniform_ratio: float = 0.97,
        onehot_nats: float = 0.1,
        logger: logging.Logger | None = None,
    ) -> None:
        self.log_k = math.log(n_prototypes)
        self.patience = patience
        self.uniform_ratio = uniform_ratio
        self.onehot_nats = onehot_nats
        self.log = logger or log
        self.state = "ok"
        self.count = 0
        self.warned: str | None = None

    def ratio(self, per_image: float) -> float:
        """Per-image entropy as a fraction of ln P (1 = uniform)."""
        return per_image / self.log_k

    def update(self, per_image: float, batch: float, iteration: int) -> None:
        ratio = self.ratio(per_image)
        if ratio >= self.uniform_ratio:
            state = "uniform"
        elif batch <= self.onehot_nats:
            state = "one-hot"
        else:
            state = "ok"
        self.count = self.count + 1 if state == self.state else 1
        self.state = state
        if state == "ok":
            self.warned = None
        elif self.count >= self.patience and self.warned != state:
            self.warned = state
            self.log.warning(
                "COLLAPSE WARNING at iteration %d: teacher output near %s for %d log lines in a "
                "row (per-image entropy %.3f = %.3f x ln K, batch entropy %.3f, ln K = %.3f); "
                "the features are not learning. See docs/learning.md.",
                iteration,
                state,
                self.count,
                per_image,
                ratio,
                batch,
                self.log_k,
            )
