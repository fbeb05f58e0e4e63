"""DINO projection head: MLP -> L2-normalised bottleneck -> weight-normalised prototypes.

Layout (DINOv2 defaults): ``nlayers`` Linear layers (GELU between them) from the backbone
width D to ``bottleneck_dim`` through ``hidden_dim``; the bottleneck is L2-normalised and
scored against ``n_prototypes`` prototypes whose weight rows are unit-norm (weight
normalisation with the gain fixed to 1, as in DINO). iBOT shares this head by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

HEAD_INITS = ("dinov2", "width_matched")
# the widths DINOv2's fixed std 0.02 was set for: the paper's ViT-L/16 (1024) into the
# 2048-wide MLP
_REFERENCE_FAN_IN = (1024, 2048)


def init_std(init: str, layer: int, fan_in: int) -> float:
    """Init std of MLP layer ``layer`` (0-based) with ``fan_in`` inputs.

    ``dinov2``: 0.02 for every layer, whatever its width (DINOv2's choice).
    ``width_matched``: 0.02 x sqrt(reference fan-in / fan_in), the reference being the
    paper's ViT-L head (1024 inputs to the first layer, 2048 to the others): every layer then
    has the gain it has at paper scale, whatever the width. At the paper's widths the two are
    identical. With a narrow head (the CPU-scale micro ViTs: 64 -> 128 -> 32) the fixed 0.02
    makes the head's output ~1e-3, which Adam's first steps on the output bias (~lr each)
    outgrow: every image then maps to one bottleneck direction and the teacher output is
    uniform (docs/learning.md).
    """
    if init == "dinov2":
        return 0.02
    reference = _REFERENCE_FAN_IN[0] if layer == 0 else _REFERENCE_FAN_IN[1]
    return 0.02 * (reference / fan_in) ** 0.5


class _PrototypeScores(torch.autograd.Function):
    """``z @ F.normalize(v, dim=-1, eps).t()`` computed as ``(z @ v.t()) / max(||v_j||, eps)``:
    the (N, P) scores are scaled per column instead of normalising the (P, D) prototype matrix
    and back-propagating through the division (at paper scale P x D = 65,536 x 256 is larger
    than the scores of a step's ~260 tokens; this is ~40 % of the head's time). Backward in
    closed form: with gs = g / n, dz = gs v and dv = gs^T z - v (sum_i gs_ij y_ij) / n_j, the
    second term 0 where the norm was clamped at eps. Equal to the normalising form within
    float tolerance (the product sums the same terms, scaled once at the end)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
        norm = torch.linalg.vector_norm(v, dim=-1)
        inv = 1.0 / norm.clamp(min=eps)
        scores = (z @ v.t()).mul_(inv)
        ctx.save_for_backward(z, v, inv, scores, norm > eps)
        return scores

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, v, inv, scores, unclamped = ctx.saved_tensors
        grad_scaled = grad * inv
        grad_z = grad_scaled @ v if ctx.needs_input_grad[0] else None
        grad_v = None
        if ctx.needs_input_grad[1]:
            radial = (grad_scaled * scores).sum(dim=0).mul_(inv).mul_(unclamped)
            # in place: a (P, D) temporary for v * radial cost as much as the product here
            grad_v = (grad_scaled.t() @ z).addcmul_(v, radial[:, None], value=-1.0)
        return grad_z, grad_v, None


def prototype_scores(z: torch.Tensor, prototypes: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(..., P) scores of ``z (..., D)`` against the rows of ``prototypes (P, D)`` normalised
    to unit length (norms clamped at ``eps``, as ``F.normalize``)."""
    flat = z.reshape(-1, z.shape[-1])
    if not torch.is_grad_enabled() or not (z.requires_grad or prototypes.requires_grad):
        inv = 1.0 / torch.linalg.vector_norm(prototypes, dim=-1).clamp(min=eps)
        scores = (flat @ prototypes.t()).mul_(inv)
    else:
        scores = _PrototypeScores.apply(flat, prototypes, eps)
    return scores.reshape(*z.shape[:-1], prototypes.shape[0])


class DINOHead(nn.Module):
    """Args:
        in_dim: backbone width D.
        n_prototypes: P, number of prototypes (65,536 at paper scale).
        hidden_dim: MLP width (2048).
        bottleneck_dim: bottleneck width (256).
        nlayers: number of MLP Linear layers (3), >= 1.
        init: ``dinov2`` (std 0.02) or ``width_matched`` (see :func:`init_std`).

    ``forward(x (N, D)) -> (N, P)`` logits (cosine similarities with the prototypes).
    The prototype matrix is the parameter ``prototypes`` ``(P, bottleneck_dim)``; its gradient
    is what the last-layer freeze cancels.
    """

    def __init__(
        self,
        in_dim: int,
        n_prototypes: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        init: str = "dinov2",
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers={nlayers} must be >= 1")
        if init not in HEAD_INITS:
            raise ValueError(f"head init={init!r}; valid: {', '.join(HEAD_INITS)}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index in range(nlayers):
            layers.append(nn.Linear(dims[index], dims[index + 1]))
            if index < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(n_prototypes, bottleneck_dim))
        self.n_prototypes = n_prototypes
        linears = [m for m in self.mlp if isinstance(m, nn.Linear)]
        for index, module in enumerate(linears):
            trunc_normal_(module.weight, std=init_std(init, index, module.in_features))
            nn.init.zeros_(module.bias)
        trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1, eps=1e-6)
        return prototype_scores(z, self.prototypes, eps=1e-6)

    def forward_parts(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """The head on several token sets at once, ``(N_i, D) -> (N_i, P)`` each: one MLP pass
        over their concatenation and one normalisation of the prototypes (what separate
        calls repeat per set), as DINOv2 runs its head once on all tokens of a step."""
        if len(parts) == 1:
            return [self(parts[0])]
        logits = self(torch.cat(parts))
        return list(logits.split([len(p) for p in parts]))
