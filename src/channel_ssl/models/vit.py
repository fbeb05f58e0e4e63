"""Vision Transformer trunk shared by every backbone family.

The trunk is built from timm's pre-norm ``Block`` with the DINOv2 choices the paper inherits:
LayerScale (``layerscale_init``, 1e-5 at paper scale), stochastic depth with the *same* rate in
every block, biases on qkv / attention projection / MLP, a final LayerNorm, no register tokens.

Pieces:

- ``ARCHS``: architecture sizes by name (``nano`` and ``micro`` for CPU demos, ``vit_small``,
  ``vit_large``).
- ``MemoryEfficientAttention``: timm ``Attention`` that uses xformers' memory-efficient kernel when
  xformers is importable *and* the input is on CUDA; otherwise timm's own path (torch SDPA).
- ``ViTTrunk``: CLS token, iBOT mask token, patch position embeddings (bicubic-interpolated to the
  input's patch grid), the blocks and the final norm. It has no patch projection: each family
  puts its own front end on it.
- ``VisionTransformer``: ordinary ViT, ``in_chans`` channels projected jointly per patch. The
  bag-of-channels (``in_chans=1``) and fixed-channel backbones are thin subclasses.

Token outputs follow docs/architecture.md ("Backbone interface"): every returned token is passed
through the final LayerNorm, including the CLS tokens of intermediate blocks (as DINOv2 does
for linear evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import timm
import torch
import torch.nn.functional as F
from torch import nn

# The oldest timm these models run on (pyproject.toml says the same; a test keeps them equal):
# Block(attn_layer=, proj_bias=) and Attention.forward(is_causal=). Measured: 1.0.16-1.0.20
# lack Block's attn_layer, 1.0.24-1.0.25 Attention's is_causal; 1.0.26 runs every family.
TIMM_MIN = "1.0.26"


def check_timm_version(version: str) -> None:
    """ImportError naming the installed and the needed timm when ``version`` is too old."""

    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("+")[0].split(".")[:3] if p.isdigit())

    if parts(version) < parts(TIMM_MIN):
        raise ImportError(
            f"timm {version} is too old for channel-ssl's models: they need timm>={TIMM_MIN} "
            "(Block(attn_layer=...), Attention.forward(is_causal=...)); "
            f"pip install 'timm>={TIMM_MIN}'"
        )


check_timm_version(timm.__version__)

from timm.layers import Attention, trunc_normal_  # noqa: E402
from timm.models.vision_transformer import Block  # noqa: E402

try:  # optional: only used on CUDA; the CPU path never needs it
    from xformers.ops import memory_efficient_attention as _xformers_attention
except ImportError:  # pragma: no cover - depends on the environment
    _xformers_attention = None


@dataclass(frozen=True)
class ViTArch:
    """Size of a ViT: width ``embed_dim``, ``depth`` blocks, ``num_heads``, default patch size."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    mlp_ratio: float = 4.0


ARCHS: dict[str, ViTArch] = {
    # CPU demos: "nano" stands in for ViT-S and "micro" for ViT-L (the size ablation of table 1)
    "nano": ViTArch(embed_dim=32, depth=4, num_heads=2, patch_size=8),
    "micro": ViTArch(embed_dim=64, depth=4, num_heads=4, patch_size=8),
    "vit_small": ViTArch(embed_dim=384, depth=12, num_heads=6, patch_size=16),
    "vit_large": ViTArch(embed_dim=1024, depth=24, num_heads=16, patch_size=16),
}


def get_arch(name: str) -> ViTArch:
    """Return the ``ViTArch`` called ``name``; ValueError listing the valid names otherwise."""
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(sorted(ARCHS))}")
    return ARCHS[name]


class MemoryEfficientAttention(Attention):
    """timm multi-head self-attention with an optional xformers kernel.

    xformers is used only when it is importable, the input lives on CUDA, and no attention
    mask / causal flag / gate is involved; everything else goes through timm's implementation
    (``torch.nn.functional.scaled_dot_product_attention``), which is numerically the same
    operation. Input and output: ``(B, T, D)``.
    """

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        use_xformers = (
            _xformers_attention is not None
            and x.is_cuda
            and attn_mask is None
            and not is_causal
            and self.gate is None
        )
        if not use_xformers:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        batch, n_tokens, _ = x.shape
        # xformers wants (B, T, heads, head_dim): no permute needed after the qkv projection.
        qkv = self.qkv(x).reshape(batch, n_tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)
        dropout = self.attn_drop.p if self.training else 0.0
        out = _xformers_attention(q, k, v, p=dropout).reshape(batch, n_tokens, self.attn_dim)
        out = self.norm(out)
        return self.proj_drop(self.proj(out))


def make_blocks(
    arch: ViTArch,
    *,
    drop_path_rate: float,
    layerscale_init: float | None,
) -> nn.ModuleList:
    """``arch.depth`` timm Blocks; stochastic depth ``drop_path_rate`` in every block (uniform)."""
    return nn.ModuleList(
        Block(
            dim=arch.embed_dim,
            num_heads=arch.num_heads,
            mlp_ratio=arch.mlp_ratio,
            qkv_bias=True,
            proj_bias=True,  # attention projection and both MLP layers
            init_values=layerscale_init,
            drop_path=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            attn_layer=MemoryEfficientAttention,
        )
        for _ in range(arch.depth)
    )


def _init_linear_and_norm(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ViTTrunk(nn.Module):
    """Transformer trunk without a patch projection.

    Parameters: ``cls_token`` (1, 1, D), ``mask_token`` (1, 1, D), ``pos_embed`` (1, G*G, D) for
    the G x G patch grid of an ``img_size`` input, ``blocks``, ``norm``. The CLS token carries no
    position embedding: adding a constant to a learned token would be a redundant parameter.

    Attributes: ``embed_dim`` (D), ``patch_size``, ``n_blocks``, ``num_heads``, ``img_size``,
    ``grid_size`` (G).
    """

    family = "trunk"

    def __init__(
        self,
        arch: ViTArch | str,
        *,
        img_size: int,
        patch_size: int | None = None,
        drop_path_rate: float = 0.0,
        layerscale_init: float | None = 1e-5,
    ) -> None:
        super().__init__()
        arch = get_arch(arch) if isinstance(arch, str) else arch
        patch_size = arch.patch_size if patch_size is None else int(patch_size)
        if patch_size <= 0 or img_size % patch_size != 0:
            raise ValueError(
                f"img_size={img_size} must be a positive multiple of patch_size={patch_size}"
            )
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={drop_path_rate} must be in [0, 1)")
        self.arch = arch
        self.embed_dim = arch.embed_dim
        self.num_heads = arch.num_heads
        self.n_blocks = arch.depth
        self.patch_size = patch_size
        self.img_size = img_size
        self.grid_size = img_size // patch_size

        dim = arch.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2, dim))
        self.blocks = make_blocks(
            arch, drop_path_rate=drop_path_rate, layerscale_init=layerscale_init
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        # mask token stays zero at init (DINOv2); Linear/LayerNorm get the usual ViT init while
        # LayerScale gammas keep their ``layerscale_init`` value.
        self.blocks.apply(_init_linear_and_norm)

    # ----------------------------------------------------------------------------- helpers
    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid ``(gh, gw)`` of an ``height x width`` input; ValueError if not divisible."""
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"input size {height}x{width} is not a multiple of patch_size={p}")
        return height // p, width // p

    def patch_pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Patch position embeddings for a ``grid_h x grid_w`` grid, shape ``(1, grid_h*grid_w, D)``.

        Bicubic interpolation of the built ``G x G`` table when the grid differs (e.g. the smaller
        multi-crop local crops); the table itself when it matches.
        """
        g = self.grid_size
        if (grid_h, grid_w) == (g, g):
            return self.pos_embed
        table = self.pos_embed.float().reshape(1, g, g, self.embed_dim).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        table = table.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, self.embed_dim)
        return table.to(self.pos_embed.dtype)

    def replace_masked(self, tokens: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """Put the mask token where ``masks`` is True.

        tokens: ``(B, M, D)`` patch embeddings (before position embeddings); masks: bool
        ``(B, M)`` or None. Returns ``(B, M, D)``.
        """
        if masks is None:
            return tokens
        if masks.shape != tokens.shape[:2]:
            raise ValueError(
                f"masks has shape {tuple(masks.shape)} but there are "
                f"{tuple(tokens.shape[:2])} (batch, patch tokens)"
            )
        masks = masks.to(device=tokens.device, dtype=torch.bool).unsqueeze(-1)
        return torch.where(masks, self.mask_token.to(tokens.dtype), tokens)

    def check_n_last_blocks(self, n_last_blocks: int) -> None:
        if not 1 <= n_last_blocks <= self.n_blocks:
            raise ValueError(
                f"n_last_blocks={n_last_blocks} must be between 1 and the number of blocks "
                f"({self.n_blocks})"
            )

    def run_blocks(
        self, tokens: torch.Tensor, n_last_blocks: int = 0
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run all blocks on ``tokens (B, T, D)``.

        Returns the un-normed output of the last block ``(B, T, D)`` and the un-normed outputs of
        the last ``n_last_blocks`` blocks (oldest first; may be empty).
        """
        kept = []
        first_kept = self.n_blocks - n_last_blocks
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if n_last_blocks and index >= first_kept:
                kept.append(tokens)
        return tokens, kept


def check_images(x: torch.Tensor, who: str) -> None:
    """ValueError unless ``x`` is a floating ``(B, K, H, W)`` tensor."""
    if x.ndim != 4:
        raise ValueError(f"{who} expects images of shape (B, K, H, W); got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{who} expects a floating-point image tensor; got {x.dtype}")


class VisionTransformer(ViTTrunk):
    """Ordinary ViT: a Conv2d patch projection over all ``in_chans`` channels jointly.

    ``forward(x (B, in_chans, H, W), masks=None)`` -> ``{"cls": (B, D), "patch": (B, N, D)}``;
    ``embed(x, n_last_blocks=4)`` -> ``{"cls_layers": (B, L, 1, D), "patch": (B, 1, N, D)}``.
    N = (H / patch) * (W / patch).
    """

    family = "vit"

    def __init__(
        self,
        arch: ViTArch | str,
        *,
        img_size: int,
        in_chans: int,
        patch_size: int | None = None,
        drop_path_rate: float = 0.0,
        layerscale_init: float | None = 1e-5,
    ) -> None:
        super().__init__(
            arch,
            img_size=img_size,
            patch_size=patch_size,
            drop_path_rate=drop_path_rate,
            layerscale_init=layerscale_init,
        )
        if in_chans < 1:
            raise ValueError(f"in_chans={in_chans} must be >= 1")
        self.in_chans = in_chans
        self.patch_embed = nn.Conv2d(
            in_chans, self.embed_dim, kernel_size=self.patch_size, stride=self.patch_size
        )

    def _check_channels(self, x: torch.Tensor) -> None:
        check_images(x, type(self).__name__)
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} was built for in_chans={self.in_chans} channels "
                f"but got K={x.shape[1]} channels"
            )

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> token sequence ``(B, 1 + N, D)`` = [CLS, patches + pos]."""
        self._check_channels(x)
        grid_h, grid_w = self.patch_grid(x.shape[-2], x.shape[-1])
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        patches = self.replace_masked(patches, masks)
        patches = patches + self.patch_pos_embed(grid_h, grid_w)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1)

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict:
        """x: ``(B, in_chans, H, W)``; masks: bool ``(B, N)`` or None.

        Returns ``{"cls": (B, D), "patch": (B, N, D)}``, last block, normed.
        """
        tokens, _ = self.run_blocks(self.prepare_tokens(x, masks))
        tokens = self.norm(tokens)
        return {"cls": tokens[:, 0], "patch": tokens[:, 1:]}

    def embed(self, x: torch.Tensor, n_last_blocks: int = 4) -> dict:
        """x: ``(B, in_chans, H, W)``.

        Returns ``{"cls_layers": (B, L, 1, D), "patch": (B, 1, N, D)}``: normed CLS of the last
        ``L = n_last_blocks`` blocks (oldest first) and the normed last-block patch tokens.
        """
        self.check_n_last_blocks(n_last_blocks)
        last, kept = self.run_blocks(self.prepare_tokens(x, None), n_last_blocks)
        cls_layers = torch.stack([self.norm(t[:, 0]) for t in kept], dim=1).unsqueeze(2)
        patch = self.norm(last[:, 1:]).unsqueeze(1)
        return {"cls_layers": cls_layers, "patch": patch}
