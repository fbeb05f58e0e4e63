"""MAE objective: loss on hand-made inputs, visible-only encoding, decoder, tiny training run."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from test_pretrain import _write_source, tiny_config

from channel_ssl.errors import UserError
from channel_ssl.losses.mae import (
    mae_loss,
    n_masked_patches,
    normalize_patches,
    patchify,
    random_patch_mask,
    visible_indices,
)
from channel_ssl.models import build_backbone
from channel_ssl.models.mae_decoder import (
    MAEDecoder,
    MAENetwork,
    encode_visible,
    sincos_position_embedding,
)
from channel_ssl.train.checkpoint import load_backbone, load_checkpoint
from channel_ssl.train.pretrain import train
from channel_ssl.train.run_config import load_run_config


# ------------------------------------------------------------------------------------ loss
def test_patchify_order_matches_patch_grid():
    images = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    patches = patchify(images, 2)
    assert patches.shape == (2, 4, 2 * 2 * 2)
    # patch 1 = row 0, column 1: pixels (0..1, 2..3), vector ordered (row, column, channel)
    expected = torch.stack([images[0, :, r, c] for r in (0, 1) for c in (2, 3)]).reshape(-1)
    torch.testing.assert_close(patches[0, 1], expected)
    with pytest.raises(ValueError, match="not a multiple of patch_size=3"):
        patchify(images, 3)


def test_mae_loss_counts_only_masked_patches():
    target = torch.zeros(1, 4, 4)
    pred = torch.full((1, 4, 4), 100.0)  # huge errors on the visible patches must not count
    pred[0, 0] = 1.0  # squared error 1 per pixel
    pred[0, 2] = 2.0  # squared error 4 per pixel
    mask = torch.tensor([[True, False, True, False]])
    assert float(mae_loss(pred, target, mask, norm_pix=False)) == pytest.approx(2.5)


def test_mae_loss_norm_pix_by_hand():
    target = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [9.0, 0.0, 9.0, 0.0]]])
    pred = torch.zeros(1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    # patch 0: mean 2.5, unbiased var 5/3 -> normalised [-1.5, -.5, .5, 1.5] / sqrt(5/3 + 1e-6)
    var = 5.0 / 3.0
    first = (2.25 + 0.25 + 0.25 + 2.25) / 4 / (var + 1e-6)
    # patch 1 is constant: normalised to 0, so predicting 0 is exact
    expected = (first + 0.0) / 2
    assert float(mae_loss(pred, target, mask, norm_pix=True)) == pytest.approx(expected, rel=1e-5)
    # normalised targets make the loss blind to each patch's brightness and contrast
    rescaled = target * torch.tensor([3.0, 0.5, 2.0])[None, :, None] + 7.0
    assert float(mae_loss(pred, rescaled, mask)) == pytest.approx(expected, rel=1e-4)
    torch.testing.assert_close(normalize_patches(target)[0, 1], torch.zeros(4))
    with pytest.raises(ValueError, match="no patch is masked"):
        mae_loss(pred, target, torch.zeros(1, 3, dtype=torch.bool))


def test_random_patch_mask_ratio_seeded_and_per_sample():
    mask = random_patch_mask(6, 16, 0.75, np.random.default_rng(0))
    assert mask.dtype == torch.bool and mask.shape == (6, 16)
    assert mask.sum(dim=1).tolist() == [12] * 6
    assert len({tuple(row.tolist()) for row in mask}) > 1  # each sample draws its own
    assert torch.equal(mask, random_patch_mask(6, 16, 0.75, np.random.default_rng(0)))
    assert n_masked_patches(4, 0.99) == 3  # at least one patch stays visible
    keep = visible_indices(mask)
    assert keep.shape == (6, 4)
    for row in range(6):
        assert keep[row].tolist() == torch.nonzero(~mask[row]).flatten().tolist()
    with pytest.raises(ValueError, match="same number"):
        visible_indices(torch.tensor([[True, False], [False, False]]))


# ---------------------------------------------------------------------------------- models
def _encoder(in_chans=1):
    torch.manual_seed(0)
    family = "boc" if in_chans == 1 else "fixed"
    return build_backbone(family, "micro", img_size=16, patch_size=4, in_chans=in_chans).eval()


@pytest.mark.parametrize("in_chans", [1, 3])
def test_encode_visible_with_every_patch_equals_the_full_forward(in_chans):
    encoder = _encoder(in_chans)
    x = torch.randn(2, in_chans, 16, 16)
    with torch.no_grad():
        full = encoder(x)
        tokens = encode_visible(encoder, x, torch.arange(16).expand(2, 16))
    torch.testing.assert_close(tokens[:, 0], full["cls"])
    torch.testing.assert_close(tokens[:, 1:], full["patch"])


def test_encoder_never_sees_masked_pixels():
    encoder = _encoder()
    x = torch.randn(1, 1, 16, 16)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 5] = True  # patch 5 = rows 4..7, columns 4..7
    changed = x.clone()
    changed[..., 4:8, 4:8] += 10.0
    keep = visible_indices(mask)
    with torch.no_grad():
        torch.testing.assert_close(
            encode_visible(encoder, x, keep), encode_visible(encoder, changed, keep)
        )
        # a visible patch's pixels do change the encoding
        changed[..., 0:4, 0:4] += 10.0
        assert not torch.allclose(
            encode_visible(encoder, x, keep), encode_visible(encoder, changed, keep)
        )


def test_encode_visible_rejects_joint_models_and_wrong_channels():
    cvit = build_backbone("cvit", "micro", img_size=16, patch_size=4, k_max=3)
    with pytest.raises(ValueError, match="single-projection ViT"):
        encode_visible(cvit, torch.randn(1, 2, 16, 16), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="in_chans=1 channels but got K=2"):
        encode_visible(_encoder(), torch.randn(1, 2, 16, 16), torch.zeros(1, 4, dtype=torch.long))


def test_sincos_position_embedding_is_distinct_per_position():
    table = sincos_position_embedding(8, 3, 3)
    assert table.shape == (9, 8)
    assert torch.cdist(table, table).add(torch.eye(9)).min() > 1e-3
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_embedding(6, 2, 2)


def test_mae_network_learns_to_reconstruct_a_fixed_batch():
    encoder = _encoder()
    torch.manual_seed(0)
    decoder = MAEDecoder(
        64, patch_size=4, in_chans=1, grid_size=4, decoder_dim=32, depth=1, num_heads=2
    )
    network = MAENetwork(encoder, decoder).train()
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    # smooth, predictable images: sinusoids of a few phases
    images = torch.stack([torch.sin(xx / 3 + p) + torch.cos(yy / 4 - p) for p in range(4)])
    images = images[:, None]
    mask = random_patch_mask(4, 16, 0.5, np.random.default_rng(1))
    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        pred = network(images, mask)
        assert pred.shape == (4, 16, 16)
        loss = mae_loss(pred, patchify(images, 4), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


# --------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("mae-corpus")
    rng = np.random.default_rng(1)
    rows = _write_source(root, "A", 5, 3, 24, rng) + _write_source(root, "B", 4, 2, 20, rng)
    df = pd.DataFrame(rows)
    df["weight"] = 0.5 / df.groupby("source")["source"].transform("size")
    path = root / "corpus.parquet"
    df.to_parquet(path, index=False)
    return path


def _mae_config(**overrides):
    config = tiny_config(
        "boc",
        objective="mae",
        mae={"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
        # the MAE objective ignores local crops: a size that is no multiple of the patch is fine
        crops={"global_crops_size": 16, "local_crops_size": 6},
    )
    config.update(overrides)
    return config


def test_mae_config_defaults_and_validation():
    cfg = load_run_config({"objective": "mae"})
    assert (cfg.mae.mask_ratio, cfg.mae.norm_pix_loss) == (0.75, True)
    with pytest.raises(UserError, match="'mae.mask_rate'"):
        load_run_config({"objective": "mae", "mae": {"mask_rate": 0.5}})
    with pytest.raises(UserError, match="'mae.mask_ratio' must be in"):
        load_run_config({"objective": "mae", "mae": {"mask_ratio": 1.0}})
    with pytest.raises(UserError, match="'model.family' is 'cvit'; the 'mae' objective"):
        load_run_config({"objective": "mae", "model": {"family": "cvit"}})


def test_mae_run_trains_resumes_and_extracts(corpus_path, tmp_path, caplog):
    from channel_ssl.data.shards import ShardStore
    from channel_ssl.eval.extract import extract_features

    caplog.set_level(logging.INFO, logger="channel_ssl")
    config = _mae_config()
    out = tmp_path / "run"
    final = train(corpus_path, json.dumps(config), out)
    logged = [r.getMessage() for r in caplog.records if "total=" in r.getMessage()]
    assert len(logged) == 4
    assert all("mae=" in m and "dino=" not in m and "ibot=" not in m for m in logged)
    losses = [float(m.split("total=")[1].split()[0]) for m in logged]
    assert np.isfinite(losses).all() and min(losses) > 0

    state = load_checkpoint(final)
    assert state["iteration"] == 4 and "decoder" in state
    initial = load_checkpoint(out / "checkpoints" / "ckpt-2.pt")
    assert any(
        not torch.equal(state["student"][k], initial["student"][k]) for k in state["student"]
    )
    backbone, run_config = load_backbone(final)
    assert run_config["objective"] == "mae" and run_config["model"]["family"] == "boc"
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state["student"][key]), key

    # extraction works unchanged on the MAE encoder
    root = corpus_path.parent / "A"
    manifest = pd.DataFrame(pd.read_parquet(corpus_path).query("source == 'A'"))
    manifest = manifest.drop(columns=["shard_dir", "weight"])
    feats = extract_features(backbone, "boc", manifest, ShardStore(root), 5, ["cls1"], 16, 2)
    assert feats["cls1"].shape == (5, 3 * backbone.embed_dim)
    assert np.isfinite(feats["cls1"]).all()

    # preemption after iteration 2: the resumed run ends in the same state
    (out / "checkpoint.pt").unlink()
    (out / "checkpoints" / "ckpt-4.pt").unlink()
    train(corpus_path, json.dumps(config), out)
    resumed = load_checkpoint(out / "checkpoint.pt")
    for key in ("student", "teacher", "decoder"):
        for name, value in state[key].items():
            assert torch.equal(resumed[key][name], value), (key, name)


def test_mae_runs_train_with_maes_own_optimiser_recipe():
    from channel_ssl import registry
    from channel_ssl.config import load_config
    from channel_ssl.train.pretrain import resolve_run
    from channel_ssl.train.run_config import load_run_config

    paper = load_config("config/paper.yaml")
    mae = registry.run_config("P-MAE-BoC-L", paper)
    assert (mae["lr"], mae["lr_ref_batch"], mae["lr_scaling"]) == (1.5e-4, 256, "linear")
    assert mae["weight_decay"] == mae["weight_decay_end"] == 0.05
    assert mae["betas"] == [0.9, 0.95] and mae["layerwise_decay"] == 1.0
    assert mae["patch_embed_lr_mult"] == 1.0 and mae["clip_grad"] == 0.0
    assert mae["model"]["drop_path"] == 0.0 and mae["mae"]["mask_ratio"] == 0.75
    assert "optimizer" not in mae["mae"]
    import pandas as pd

    corpus = pd.DataFrame({"n_channels": [4, 4], "weight": [0.5, 0.5]})
    cfg = load_run_config(mae)
    assert resolve_run(cfg, corpus).lr == pytest.approx(1.5e-4 * cfg.batch_size / 256)
    # the DINO runs keep DINOv2's recipe
    dino = registry.run_config("P-BoC-L", paper)
    assert dino["lr_ref_batch"] == 1024 and dino["layerwise_decay"] == 0.9
    dino_cfg = load_run_config(dino)
    assert dino_cfg.lr_scaling == "sqrt" and dino_cfg.betas == [0.9, 0.999]
