"""Bag-of-Channels (BoC) backbone: one single-channel ViT applied to every channel independently.

Training feeds single-channel images ``(B, 1, H, W)``: every channel of every image is its own
sample. At inference an image's K channels go through the same ViT as a batch of K
single-channel images and per-channel features are kept in channel order (docs/paper.md section 1).
"""

from __future__ import annotations

import torch

from channel_ssl.models.vit import VisionTransformer, ViTArch, check_images


class BagOfChannelsViT(VisionTransformer):
    """ViT with ``in_chans=1``; K-channel inputs are folded into the batch.

    Channel k of sample b becomes image ``b * K + k`` of a batch of ``B * K`` single-channel
    images, so no token ever sees another channel.
    """

    family = "boc"

    def __init__(
        self,
        arch: ViTArch | str,
        *,
        img_size: int,
        patch_size: int | None = None,
        drop_path_rate: float = 0.0,
        layerscale_init: float | None = 1e-5,
    ) -> None:
        super().__init__(
            arch,
            img_size=img_size,
            in_chans=1,
            patch_size=patch_size,
            drop_path_rate=drop_path_rate,
            layerscale_init=layerscale_init,
        )

    @staticmethod
    def fold_channels(x: torch.Tensor) -> torch.Tensor:
        """``(B, K, H, W)`` -> ``(B*K, 1, H, W)``; row ``b*K + k`` is channel k of sample b."""
        check_images(x, "BagOfChannelsViT")
        batch, n_channels, height, width = x.shape
        return x.reshape(batch * n_channels, 1, height, width)

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict:
        """Training forward.

        x: ``(B, K, H, W)``; the usual case is K = 1 (the data pipeline feeds single channels).
        With K > 1 the channels are treated as independent images: the outputs then have
        ``B*K`` rows in the order of ``fold_channels`` (row ``b*K + k``), and ``masks`` must be
        ``(B*K, N)`` in that order too.

        Returns ``{"cls": (B*K, D), "patch": (B*K, N, D)}`` (``(B, D)``, ``(B, N, D)`` for K = 1),
        last block, normed.
        """
        return super().forward(self.fold_channels(x), masks)

    def embed(self, x: torch.Tensor, n_last_blocks: int = 4) -> dict:
        """Evaluation forward. x: ``(B, K, H, W)``.

        Returns ``{"cls_layers": (B, L, K, D), "patch": (B, K, N, D)}``: per channel, the normed
        CLS of the last ``L = n_last_blocks`` blocks (oldest first) and the normed last-block
        patch tokens. Channel order is the input order.
        """
        batch, n_channels = x.shape[:2]
        out = super().embed(self.fold_channels(x), n_last_blocks)
        cls_layers = out["cls_layers"].squeeze(2)  # (B*K, L, D)
        cls_layers = cls_layers.reshape(batch, n_channels, n_last_blocks, -1).transpose(1, 2)
        patch = out["patch"].squeeze(1)  # (B*K, N, D)
        patch = patch.reshape(batch, n_channels, patch.shape[1], patch.shape[2])
        return {"cls_layers": cls_layers, "patch": patch}
