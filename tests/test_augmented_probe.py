"""The paper's probe protocol: augmentation through the frozen backbone, Bao et al.'s JUMP-CP
normalisation, per-source settings reaching the probe, and end to end through evaluate-run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from channel_ssl.errors import UserError
from channel_ssl.eval.augmented_probe import (
    BAO_JUMPCP,
    ProtocolSettings,
    centre_crop,
    normalise,
    random_crop_flip,
)

REPO = Path(__file__).resolve().parents[1]


def test_bao_normalisation_uses_the_fixed_statistics_by_channel_name():
    x = torch.full((1, 2, 4, 4), 20.0)
    out = normalise(x, "bao_jumpcp", ("DNA", "Mito"))
    assert torch.allclose(
        out[0, 0], torch.full((4, 4), (20 - 4.1723172504050225) / 17.964118200870608)
    )
    assert torch.allclose(
        out[0, 1], torch.full((4, 4), (20 - 4.031743599139058) / 17.318438884455695)
    )
    assert len(BAO_JUMPCP) == 8
    with pytest.raises(UserError, match="no statistics for channel"):
        normalise(x, "bao_jumpcp", ("DNA", "GFP"))
    self_normed = normalise(torch.rand(1, 2, 8, 8) * 255, "self", ("a", "b"))
    assert torch.allclose(self_normed.mean((2, 3)), torch.zeros(1, 2), atol=1e-5)
    with pytest.raises(UserError, match="probe normalisation"):
        ProtocolSettings(10, 8, 16, "imagenet")


def test_training_crops_are_random_and_evaluation_crops_central_and_padded():
    x = torch.arange(2 * 1 * 10 * 10, dtype=torch.float32).reshape(2, 1, 10, 10)
    gen = torch.Generator().manual_seed(0)
    crops = [random_crop_flip(x, 6, gen) for _ in range(5)]
    assert all(c.shape == (2, 1, 6, 6) for c in crops)
    assert len({c.sum().item() for c in crops}) > 1  # new crops at every step
    assert torch.equal(centre_crop(x, 6), x[..., 2:8, 2:8])
    padded = centre_crop(x, 14)  # smaller images are zero-padded, not resized
    assert padded.shape[-1] == 14 and padded[..., :2, :].abs().sum() == 0
    assert torch.equal(padded[..., 2:12, 2:12], x)


def _source(root: Path, n: int = 48) -> Path:
    from channel_ssl.data.sources import write_source

    rng = np.random.default_rng(0)

    def image(label):
        img = rng.integers(0, 40, (2, 20, 20)).astype(np.uint8)
        if label == "bright":
            img[:, 5:15, 5:15] += 150
        return img

    splits = ["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4)
    items = []
    for i in range(n):
        label = "bright" if i % 2 else "dark"
        items.append(
            (
                image(label),
                {
                    "image_id": f"i{i}",
                    "row": i,
                    "channels": ["DNA", "Mito"],
                    "label": label,
                    "split": splits[i],
                    "factors": {},
                },
            )
        )
    write_source("wtc", items, root / "wtc", 20, 64)
    return root / "wtc" / "manifest.parquet"


@pytest.mark.slow  # a whole evaluate-run process: make test-e2e
def test_evaluate_run_trains_the_augmented_probe_and_labels_its_scores(tmp_path):
    from channel_ssl.train.pretrain import save_random_init

    manifest = _source(tmp_path)
    config = {
        "model": {"family": "boc", "arch": "nano", "patch_size": 4},
        "dino": {"n_prototypes": 16, "hidden_dim": 16, "bottleneck_dim": 8},
        "crops": {"global_crops_size": 16, "local_crops_size": 8},
    }
    checkpoint = save_random_init(config, tmp_path / "ckpt")
    plan = [
        {
            "manifest": str(manifest),
            "features": str(tmp_path / "feats" / "cls4_pool.npy"),
            "probes": [["wtc_cell_cycle", ["WTC F1 Cell cycle st."]]],
            "protocol": {
                "iterations": 12,
                "batch_size": 8,
                "crop_size": 16,
                "normalisation": "bao_jumpcp",
            },
        }
    ]
    log = tmp_path / "eval.log"
    cmd = [
        sys.executable, "-m", "channel_ssl.cli", "evaluate-run", "--checkpoint", str(checkpoint),
        "--plan", json.dumps(plan), "--scores-out", str(tmp_path / "scores.csv"),
        "--crop-size", "20", "--n-classifiers", "3", "--epochs", "1", "--log", str(log),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert scores["protocol"].tolist() == ["augmented"]
    assert 0 <= scores["value"].iloc[0] <= 100
    text = log.read_text()
    assert "augmented probe: 12 iterations x 8 images, crop 16, bao_jumpcp normalisation" in text
    assert re.search(r"\[12/12\]", text)  # the schedule ran every iteration
    # evaluation features are the protocol's centre crop (16), not --crop-size (20)
    record = json.loads((tmp_path / "feats" / "cls4_pool.npy.prov.json").read_text())
    assert "16" in json.dumps(record)
