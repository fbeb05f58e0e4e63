"""End-to-end tiny pretraining runs on a synthetic two-source corpus (CPU, seconds)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from channel_ssl.cli import main as cli_main
from channel_ssl.data.pretrain_batches import CorpusSampler
from channel_ssl.data.shards import ShardWriter
from channel_ssl.errors import UserError
from channel_ssl.train.checkpoint import load_backbone, load_checkpoint
from channel_ssl.train.param_groups import parameter_groups
from channel_ssl.train.pretrain import resolve_run, train
from channel_ssl.train.run_config import RunConfig, load_run_config
from channel_ssl.train.ssl_meta_arch import build_network


def _write_source(root, name, n_images, n_channels, size, rng):
    """One tiny source: shards of random uint8 blobs + manifest rows (with shard_dir)."""
    writer = ShardWriter(root / name, shard_size=4)
    rows = []
    for index in range(n_images):
        yy, xx = np.mgrid[:size, :size]
        image = np.stack(
            [
                (
                    255
                    * np.exp(
                        -((yy - rng.uniform(0, size)) ** 2 + (xx - rng.uniform(0, size)) ** 2)
                        / (2 * rng.uniform(3, 8) ** 2)
                    )
                ).astype(np.uint8)
                for _ in range(n_channels)
            ]
        )
        shard, offset = writer.add(image)
        rows.append(
            {
                "source": name,
                "image_id": f"{name}-{index}",
                "row": index,
                "channels": "|".join(f"c{k}" for k in range(n_channels)),
                "n_channels": n_channels,
                "height": size,
                "width": size,
                "label": "",
                "split": "unlabelled",
                "tasks": "",
                "factors": "{}",
                "shard": shard,
                "offset": offset,
                "shard_dir": name,  # relative to the corpus file's directory
            }
        )
    writer.close()
    return rows


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = _write_source(root, "A", 6, 3, 24, rng) + _write_source(root, "B", 5, 2, 20, rng)
    df = pd.DataFrame(rows)
    # balanced: each source has total weight 0.5
    df["weight"] = 0.5 / df.groupby("source")["source"].transform("size")
    path = root / "corpus.parquet"
    df.to_parquet(path, index=False)
    return path


def tiny_config(family, **overrides):
    config = {
        "run": f"test-{family}",
        "seed": 3,
        "model": {"family": family, "arch": "micro", "patch_size": 4, "k_max": 3},
        "iterations": 4,
        "batch_size": 4,
        "dino": {"n_prototypes": 32, "hidden_dim": 32, "bottleneck_dim": 16},
        "ibot": {"mask_sample_probability": 1.0},
        "crops": {
            "global_crops_size": 16,
            "local_crops_number": 2,
            "local_crops_size": 8,
        },
        "checkpoint_every": 2,
        "log_every": 1,
        "boc_pixel_budget": False,
    }
    config.update(overrides)
    return config


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", ["boc", "cvit", "ha"])
def test_tiny_run_trains_checkpoints_and_resumes_identically(family, corpus_path, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="channel_ssl")
    config = tiny_config(
        family,
        channel_sampling="hcs" if family == "cvit" else "none",
        # BoC: prototypes frozen for the whole run (checked below)
        freeze_last_layer_iterations=4 if family == "boc" else 0,
    )
    out = tmp_path / "run"
    final = train(corpus_path, json.dumps(config), out)
    totals = [r.getMessage() for r in caplog.records if "total=" in r.getMessage()]
    assert len(totals) == 4
    losses = [float(m.split("total=")[1].split()[0]) for m in totals]
    assert all(np.isfinite(losses))
    if family == "ha":
        assert "dino_channel=" in totals[0] and "koleo_channel=" in totals[0]
    assert "ibot=" in totals[0] and "koleo=" in totals[0]

    backbone, run_config = load_backbone(final)
    assert run_config["model"]["family"] == family
    assert not backbone.training
    state = load_checkpoint(final)
    assert state["iteration"] == 4
    assert _same_state(backbone.state_dict(), state["teacher"])
    # the teacher moved away from its initialisation but is not the student
    assert not _same_state(state["teacher"], state["student"])
    student_head, teacher_head = state["student_dino_head"], state["teacher_dino_head"]
    moved = (student_head["prototypes"] - teacher_head["prototypes"]).abs().max()
    mlp_moved = (student_head["mlp.0.weight"] - teacher_head["mlp.0.weight"]).abs().max()
    assert float(mlp_moved) > 1e-6
    if family == "boc":
        assert float(moved) < 1e-7  # frozen: the EMA of an unchanged student is unchanged
    else:
        assert float(moved) > 1e-6
    emb = backbone.embed(torch.randn(2, 3, 16, 16), n_last_blocks=1)
    assert torch.isfinite(emb["cls_layers"]).all()

    # simulate preemption after iteration 2: keep only ckpt-2 and rerun the same command
    (out / "checkpoint.pt").unlink()
    (out / "checkpoints" / "ckpt-4.pt").unlink()
    caplog.clear()
    train(corpus_path, json.dumps(config), out)
    assert any(
        "resumed from" in r.getMessage() and "iteration 2/4" in r.getMessage()
        for r in caplog.records
    )
    resumed = load_checkpoint(out / "checkpoint.pt")
    for key in ("student", "teacher", "student_dino_head", "teacher_dino_head", "losses"):
        assert _same_state(resumed[key], state[key]), key


def test_random_init_checkpoint_is_the_network_training_starts_from(corpus_path, tmp_path, capsys):
    from channel_ssl.cli import main as cli_main

    config = json.dumps(tiny_config("boc", iterations=1, checkpoint_every=1))
    out = tmp_path / "random"
    argv = ["pretrain", "--random-init", "--run-config", config, "--out-dir", str(out)]
    assert cli_main(argv) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["random_init"] and state["iteration"] == 0
    backbone, _ = load_backbone(out / "checkpoint.pt")
    assert _same_state(state["student"], state["teacher"])
    # the very networks a real run of this config starts from (same builder, same seed)
    from channel_ssl.train.run_config import load_run_config
    from channel_ssl.train.ssl_meta_arch import build_training

    initial = build_training(load_run_config(config), torch.device("cpu"))
    assert _same_state(backbone.state_dict(), initial.teacher.backbone.state_dict())
    # a random-init checkpoint trains nothing, so it takes no corpus
    assert cli_main(argv + ["--corpus", str(corpus_path)]) == 2
    assert "--random-init trains nothing" in capsys.readouterr().err


def test_bad_run_config_key_is_named(corpus_path, tmp_path, capsys):
    with pytest.raises(UserError, match="'dino.n_protoypes'"):
        load_run_config({"dino": {"n_protoypes": 3}})
    with pytest.raises(UserError, match="'model.family'"):
        load_run_config({"model": {"family": "resnet"}})
    code = cli_main(
        [
            "pretrain",
            "--corpus",
            str(corpus_path),
            "--run-config",
            '{"iteratons": 3}',
            "--out-dir",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert "'iteratons'" in capsys.readouterr().err


def test_run_config_file_and_defaults(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"run": "P-BoC-L"}))
    cfg = load_run_config(str(path))
    assert cfg == RunConfig(run="P-BoC-L")
    assert cfg.dino.n_prototypes == 65536 and cfg.crops.local_crops_scale == [0.005, 0.4]


def test_boc_pixel_budget_and_derived_values(corpus_path):
    from channel_ssl.data.pretrain_batches import load_corpus

    corpus = load_corpus(corpus_path)
    cfg = load_run_config({"model": {"family": "boc"}, "iterations": 36, "batch_size": 256})
    resolved = resolve_run(cfg, corpus)
    # balanced sources of 3 and 2 channels: 2.5 channels per sampled image
    assert resolved.boc_iterations_multiplier == pytest.approx(2.5)
    assert resolved.total_iterations == 90
    # an epoch is iterations / 36 = 1 iteration, for BoC too: its longer run keeps the
    # warm-ups of the others (DINOv2's epochs are a fixed number of iterations)
    assert resolved.warmup_iterations == 20 and resolved.warmup_teacher_temp_iterations == 20
    assert resolved.freeze_last_layer_iterations == 1
    assert resolved.lr == pytest.approx(5e-4 * 0.5)  # sqrt(256 / 1024)
    joint = resolve_run(load_run_config({"model": {"family": "cvit"}, "iterations": 36}), corpus)
    assert joint.total_iterations == 36 and joint.boc_iterations_multiplier == 1.0
    assert joint.warmup_iterations == 20 and joint.freeze_last_layer_iterations == 1
    # paper scale: 45,000 iterations = 36 epochs of 1,250; the 20 warm-up epochs are 25,000
    # iterations for P-BoC-L as for P-CViT-L, although BoC trains x mean-channels longer
    paper = load_run_config({"model": {"family": "boc"}, "iterations": 45000})
    big = resolve_run(paper, corpus)
    assert big.total_iterations == 112500 and big.warmup_iterations == 25000
    assert big.freeze_last_layer_iterations == 1250


def test_sampler_is_balanced_and_homogeneous_in_k(corpus_path):
    from channel_ssl.data.pretrain_batches import load_corpus

    corpus = load_corpus(corpus_path)
    generator = torch.Generator().manual_seed(0)
    joint = CorpusSampler(corpus, "cvit")
    sources = []
    for _ in range(400):
        rows, channels = joint.draw(8, generator)
        assert channels is None
        assert corpus["n_channels"].iloc[rows].nunique() == 1
        sources.append(corpus["source"].iloc[rows[0]])
    assert abs(np.mean(np.array(sources) == "A") - 0.5) < 0.08
    boc = CorpusSampler(corpus, "boc")
    rows, channels = boc.draw(4000, generator)
    assert (channels < corpus["n_channels"].to_numpy()[rows]).all()
    assert abs(np.mean(corpus["source"].to_numpy()[rows] == "A") - 0.5) < 0.04


def test_boc_sampler_draws_beyond_torch_multinomial_category_limit():
    # 2**24 + a few (image, channel) pairs: one torch.multinomial over the pairs refuses this
    n_rows = 2**22 + 1
    corpus = pd.DataFrame(
        {"weight": np.full(n_rows, 1.0 / n_rows), "n_channels": np.full(n_rows, 4, np.int64)}
    )
    corpus.loc[0, "weight"] = 0.25  # one heavy image: a quarter of all draws, any channel
    boc = CorpusSampler(corpus, "boc")
    rows, channels = boc.draw(20000, torch.Generator().manual_seed(0))
    assert rows.max() < n_rows and (channels >= 0).all() and (channels < 4).all()
    heavy = rows == 0
    assert abs(heavy.mean() - 0.25 / (1 + 0.25 - 1.0 / n_rows)) < 0.015
    # channels of one image uniform
    counts = np.bincount(channels[heavy], minlength=4) / heavy.sum()
    assert np.abs(counts - 0.25).max() < 0.03


def test_parameter_groups_layer_decay_and_no_weight_decay():
    cfg = load_run_config(tiny_config("cvit"))
    network = build_network(cfg, drop_path=0.0)
    groups = parameter_groups(network, layerwise_decay=0.5, patch_embed_lr_mult=0.2)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(network.named_parameters())
    n = network.backbone.n_blocks
    assert by_param[id(named["backbone.blocks.0.attn.qkv.weight"])]["lr_mult"] == pytest.approx(
        0.5**n
    )
    assert by_param[id(named[f"backbone.blocks.{n - 1}.mlp.fc1.weight"])][
        "lr_mult"
    ] == pytest.approx(0.5)
    assert by_param[id(named["backbone.norm.weight"])]["lr_mult"] == 1.0
    assert by_param[id(named["backbone.patch_embed.weight"])]["lr_mult"] == pytest.approx(
        0.2 * 0.5 ** (n + 1)
    )
    # DINOv2's rule: no weight decay on biases, norms and LayerScale gammas, and only there
    for name, decays in named.items():
        exempt = name.endswith(".bias") or "norm" in name or "gamma" in name
        assert by_param[id(decays)]["wd_mult"] == (0.0 if exempt else 1.0), name
    for name in ("backbone.blocks.0.attn.qkv.bias", "backbone.norm.weight"):
        assert by_param[id(named[name])]["wd_mult"] == 0.0, name
    assert any("gamma" in n for n in named)
    for name in (
        "backbone.pos_embed",
        "backbone.cls_token",
        "backbone.channel_embed.weight",
        "backbone.blocks.0.attn.qkv.weight",
        "dino_head.prototypes",
    ):
        assert by_param[id(named[name])]["wd_mult"] == 1.0, name
    assert by_param[id(named["dino_head.prototypes"])]["is_last_layer"]
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_gradients_are_clipped_per_part_as_dinov2_does():
    from channel_ssl.train.param_groups import clip_gradients

    network = build_network(load_run_config(tiny_config("boc")), drop_path=0.0)
    for p in network.parameters():
        p.grad = torch.zeros_like(p)
    network.backbone.patch_embed.weight.grad.fill_(100.0)  # a huge backbone gradient
    head_weight = network.dino_head.mlp[0].weight
    head_weight.grad.fill_(1e-3)  # a small head gradient
    small = head_weight.grad.norm().item()
    norms = clip_gradients(network, 3.0)
    assert len(norms) == len(list(network.children()))
    backbone_norm = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in network.backbone.parameters()])
    )
    assert backbone_norm == pytest.approx(3.0, rel=1e-4)
    # one global norm would have scaled the head's gradient down too
    assert head_weight.grad.norm().item() == pytest.approx(small)


def test_last_layer_freeze_is_a_zero_lr_and_the_prototypes_still_decay_after(corpus_path, tmp_path):
    config = tiny_config(
        "boc", iterations=4, freeze_last_layer_iterations=2, checkpoint_every=1, keep_checkpoints=4
    )
    train(corpus_path, json.dumps(config), tmp_path / "run")
    ckpts = [load_checkpoint(tmp_path / "run" / "checkpoints" / f"ckpt-{i}.pt") for i in (1, 2, 4)]
    protos = [c["student_dino_head"]["prototypes"] for c in ckpts]
    assert torch.equal(protos[0], protos[1])  # frozen for the first 2 iterations
    assert not torch.equal(protos[1], protos[2])  # then trained
    # the optimiser kept the prototypes' moments during the freeze (lr 0, not grad None)
    optimizer = ckpts[1]["optimizer"]
    last = [i for g in optimizer["param_groups"] if g["is_last_layer"] for i in g["params"]]
    assert last and all("exp_avg" in optimizer["state"][i] for i in last)


def test_only_the_newest_periodic_checkpoints_are_kept(corpus_path, tmp_path):
    config = tiny_config("cvit", iterations=5, checkpoint_every=1, keep_checkpoints=2)
    train(corpus_path, json.dumps(config), tmp_path / "run")
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["ckpt-4.pt", "ckpt-5.pt"]
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_sigusr1_checkpoints_exits_for_requeue_and_resumes_bit_identically(
    corpus_path, tmp_path, monkeypatch, caplog
):
    import os
    import signal

    from channel_ssl.train import pretrain as pretrain_module
    from channel_ssl.train.preemption import REQUEUE_EXIT, StopRequested

    config = json.dumps(tiny_config("cvit", iterations=6, checkpoint_every=100))
    reference = load_checkpoint(train(corpus_path, config, tmp_path / "uninterrupted"))

    # SIGUSR1 arrives during iteration 3 (as SLURM sends it ahead of the time limit)
    real_at = pretrain_module.TrainingSchedules.at

    def at(self, iteration):
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_at(self, iteration)

    monkeypatch.setattr(pretrain_module.TrainingSchedules, "at", at)
    out = tmp_path / "stopped"
    with (
        caplog.at_level(logging.WARNING, logger="channel_ssl"),
        pytest.raises(StopRequested) as stop,
    ):
        train(corpus_path, config, out)
    assert stop.value.code == REQUEUE_EXIT and stop.value.iteration == 3
    assert "received SIGUSR1" in caplog.text and "stopped at iteration 3/6" in caplog.text
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["ckpt-3.pt"]
    assert not (out / "checkpoint.pt").exists()
    assert signal.getsignal(signal.SIGUSR1) is not None  # the handler was put back
    monkeypatch.setattr(pretrain_module.TrainingSchedules, "at", real_at)

    # a killed write left a temporary; the newest checkpoint is damaged: both handled on resume
    (out / "checkpoints" / ".ckpt-4.pt.x1y2.tmp.pt").write_bytes(b"partial")
    (out / "checkpoints" / "ckpt-5.pt").write_bytes(b"not a checkpoint")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="channel_ssl"):
        resumed = load_checkpoint(train(corpus_path, config, out))
    assert "ckpt-5.pt is unreadable" in caplog.text and "resumed from" in caplog.text
    assert not (out / "checkpoints" / ".ckpt-4.pt.x1y2.tmp.pt").exists()
    for key in ("student", "teacher", "student_dino_head", "teacher_dino_head", "losses"):
        assert _same_state(resumed[key], reference[key]), key


def test_teacher_update_is_the_ema_of_the_student():
    """teacher <- m teacher + (1 - m) student for every parameter (heads included)."""
    from channel_ssl.train.ssl_meta_arch import build_training

    training = build_training(load_run_config(tiny_config("boc")), torch.device("cpu"))
    with torch.no_grad():
        for p in training.student.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in training.teacher.parameters()]
    training.after_optimizer_step({"teacher_momentum": 0.9})
    pairs = zip(training.teacher.parameters(), before, training.student.parameters(), strict=True)
    for teacher, old, student in pairs:
        torch.testing.assert_close(teacher, 0.9 * old + 0.1 * student)
