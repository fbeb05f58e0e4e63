"""DINOv1 objective and fixed-channel training (the CellDINO baselines) on tiny corpora."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from test_pretrain import _write_source, tiny_config

from channel_ssl.errors import UserError
from channel_ssl.train.checkpoint import load_backbone, load_checkpoint
from channel_ssl.train.pretrain import train
from channel_ssl.train.run_config import load_run_config


@pytest.fixture(scope="module")
def three_channel_corpus(tmp_path_factory):
    """One source of 3-channel images (a fixed-channel model takes exactly K = in_chans)."""
    root = tmp_path_factory.mktemp("fixed-corpus")
    df = pd.DataFrame(_write_source(root, "W", 6, 3, 20, np.random.default_rng(2)))
    df["weight"] = 1.0 / len(df)
    path = root / "corpus.parquet"
    df.to_parquet(path, index=False)
    return path


def _logged_terms(caplog) -> list[dict[str, float]]:
    terms = []
    for record in caplog.records:
        message = record.getMessage()
        if "total=" in message:
            pairs = [p.split("=", 1) for p in message.split() if "=" in p]
            terms.append({k: v for k, v in pairs})
    return terms


def _fixed_config(objective: str) -> dict:
    config = tiny_config("fixed", objective=objective)
    config["model"]["in_chans"] = 3
    return config


@pytest.mark.parametrize("objective", ["dinov1", "dino"])
def test_fixed_channel_model_trains_with_dino_objectives(
    objective, three_channel_corpus, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="channel_ssl")
    final = train(three_channel_corpus, json.dumps(_fixed_config(objective)), tmp_path / "run")
    terms = _logged_terms(caplog)
    assert len(terms) == 4
    assert all(np.isfinite(float(t["total"])) for t in terms)
    if objective == "dinov1":
        # DINO CLS loss only: no iBOT, no KoLeo, so the total is the DINO term
        assert all("ibot" not in t and "koleo" not in t for t in terms)
        assert all(t["total"] == t["dino"] for t in terms)
    else:
        assert all("ibot" in t and "koleo" in t for t in terms)
    backbone, run_config = load_backbone(final)
    assert run_config["objective"] == objective and backbone.in_chans == 3
    state = load_checkpoint(final)
    assert any(not torch.equal(state["teacher"][k], state["student"][k]) for k in state["teacher"])
    emb = backbone.embed(torch.randn(2, 3, 16, 16), n_last_blocks=4)
    assert emb["cls_layers"].shape == (2, 4, 1, backbone.embed_dim)


def test_dinov1_student_sees_unmasked_crops(three_channel_corpus):
    from channel_ssl.data.pretrain_batches import PretrainBatches, load_corpus

    corpus = load_corpus(three_channel_corpus)
    batches = {
        objective: PretrainBatches(
            corpus,
            load_run_config(_fixed_config(objective)),
            local_batch=4,
            total_iterations=4,
            patch_size=4,
        )[0]
        for objective in ("dino", "dinov1")
    }
    assert batches["dinov1"]["masks"] is None
    assert batches["dino"]["masks"].any()  # mask_sample_probability 1 in the tiny config
    assert batches["dinov1"]["global"].shape == batches["dino"]["global"].shape == (8, 3, 16, 16)
    assert batches["dinov1"]["local"].shape == (8, 3, 8, 8)


def test_objective_and_family_checks():
    with pytest.raises(UserError, match="'objective' is 'byol'; valid: dino, dinov1, mae"):
        load_run_config({"objective": "byol"})
    with pytest.raises(UserError, match="'channel_sampling' is 'hcs' but model.family 'fixed'"):
        load_run_config({"model": {"family": "fixed"}, "channel_sampling": "hcs"})


def test_fixed_model_rejects_a_corpus_with_other_channel_counts(tmp_path):
    root = tmp_path / "corpus"
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        _write_source(root, "A", 2, 3, 16, rng) + _write_source(root, "B", 2, 2, 16, rng)
    )
    df["weight"] = 0.25
    path = root / "corpus.parquet"
    df.to_parquet(path, index=False)
    with pytest.raises(
        UserError, match="has 2 channels but the fixed-channel model takes model.in_chans=3"
    ):
        train(path, json.dumps(_fixed_config("dinov1")), tmp_path / "run")
