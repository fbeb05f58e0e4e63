"""channel-ssl plan: the cost of every pretraining run, and the job sizes it sets."""

from __future__ import annotations

import pytest

from channel_ssl import registry
from channel_ssl.cli import main as cli_main
from channel_ssl.config import load_config
from channel_ssl.plan import checkpoint_bytes, mean_channels, plan, sizing, vit_forward_flops


@pytest.fixture(scope="module")
def paper():
    return load_config("config/paper.yaml")


def test_vit_forward_flops_match_the_published_vit_l16_count():
    # ViT-L/16 at 224 px: 197 tokens, 61.6 GMACs (timm's "GFLOPs" column) = 123 GFLOPs
    assert vit_forward_flops(24, 1024, 197) == pytest.approx(2 * 61.6e9, rel=0.01)


def test_extended_chammi_mean_channels_and_boc_iterations(paper):
    # HPA single cell 4, WTC 3, OpenCell 2, Cell Painting 5, HPA-FOV 4, sampled in balance
    assert mean_channels("extended") == pytest.approx(3.6)
    assert mean_channels("extended_minus_hpa") == pytest.approx(10 / 3)
    assert sizing("P-BoC-L", paper).iterations == 162000  # 45,000 x 3.6
    assert sizing("P-CViT-L", paper).iterations == 45000


def test_paper_plan_sizes_runs_by_cost_within_the_groups_maxima(paper):
    plans = {p.run: p for p in plan(paper)}
    assert set(plans) == set(registry.RUNS)
    for p in plans.values():
        group = paper["resources"]["pretrain_boc" if p.family == "boc" else "pretrain"]
        assert 1 <= p.nodes <= group["nodes"] and p.gpus == p.nodes * group["gpus_per_node"]
        assert p.runtime_minutes <= group["runtime"]
        assert p.batch % p.gpus == 0
    # a ViT-S run costs a fraction of a ViT-L one and asks for less
    assert plans["P-BoC-S"].gpu_hours < plans["P-BoC-L"].gpu_hours / 5
    assert plans["P-BoC-S"].nodes <= plans["P-BoC-L"].nodes
    # a ViT-L checkpoint with optimiser state is ~5 GB; 3 periodic + the final one are kept
    assert 4.5 < plans["P-BoC-L"].checkpoint_gb < 6
    assert plans["P-BoC-L"].disk_gb == pytest.approx(4 * plans["P-BoC-L"].checkpoint_gb)


def test_checkpoint_bytes_count_student_teacher_and_adam_moments():
    from channel_ssl.train.run_config import load_run_config
    from channel_ssl.train.ssl_meta_arch import build_network

    config = {
        "model": {"family": "boc", "arch": "micro", "patch_size": 4},
        "dino": {"n_prototypes": 32, "hidden_dim": 32, "bottleneck_dim": 16},
        "crops": {"global_crops_size": 16, "local_crops_size": 8},
    }
    import json

    n, trainable = checkpoint_bytes(json.dumps(config))
    network = build_network(load_run_config(config), drop_path=0.0)
    params = sum(p.numel() for p in network.parameters())
    assert trainable == sum(p.numel() for p in network.parameters() if p.requires_grad)
    assert n == 4 * 2 * params + 8 * trainable


def test_plan_command_prints_totals_and_warns_about_unset_raw_dirs(capsys):
    assert cli_main(["plan", "--config", "config/paper.yaml", "--run", "P-BoC-S"]) == 0
    out = capsys.readouterr().out
    assert "| P-BoC-S | boc | vit_small |" in out
    assert "Totals: 1 runs" in out and "GPU-hours" in out
    assert "WARNING: sources.raw_dirs is unset for:" in out and "hpa_fov" in out
