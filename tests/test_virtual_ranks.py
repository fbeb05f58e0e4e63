"""Several channel-count groups per step on one process (``groups_per_step``, virtual ranks):
the sub-batches are the batches that many real ranks would draw, the centres are updated once
from all of them, and one process with G sub-batches trains what G DDP ranks train."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from test_pretrain import corpus_path, tiny_config  # noqa: F401 (fixture)

from channel_ssl.data.pretrain_batches import PretrainBatches, load_corpus
from channel_ssl.errors import UserError
from channel_ssl.train.checkpoint import load_checkpoint
from channel_ssl.train.pretrain import make_schedules, resolve_run, train
from channel_ssl.train.run_config import load_run_config
from channel_ssl.train.ssl_meta_arch import build_training


def _no_drop_path(config: dict) -> dict:
    """Stochastic depth draws per rank; without it a rank's step is a function of its batch."""
    return {**config, "model": {**config["model"], "drop_path": 0.0}}


def _batches(corpus, config: dict, local_batch: int, rank: int = 0) -> PretrainBatches:
    cfg = load_run_config(config)
    return PretrainBatches(
        corpus, cfg, local_batch=local_batch, total_iterations=10, patch_size=4, rank=rank
    )


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def test_sub_batches_are_the_batches_of_as_many_ranks(corpus_path):  # noqa: F811
    corpus = load_corpus(corpus_path)
    config = tiny_config("cvit", channel_sampling="hcs")
    virtual = _batches(corpus, {**config, "groups_per_step": 3}, local_batch=6, rank=1)
    for iteration in (0, 7):
        item = virtual[iteration]
        assert item["n_images"] == 6 and len(item["parts"]) == 3
        for g, part in enumerate(item["parts"]):
            # virtual rank 1 * 3 + g of a plain run with 2 images per rank
            real = _batches(corpus, config, local_batch=2, rank=3 + g)[iteration]
            assert part.keys() == real.keys()
            assert all(_same(part[k], real[k]) for k in part), (iteration, g)
    # over many steps the parts of one step come from different channel-count groups
    mixed = sum(len({p["global"].shape[1] for p in virtual[i]["parts"]}) > 1 for i in range(10))
    assert mixed >= 5
    # one group per step is exactly the plain batch
    plain = _batches(corpus, {**config, "groups_per_step": 1}, local_batch=6, rank=1)[3]
    again = _batches(corpus, config, local_batch=6, rank=1)[3]
    assert "parts" not in plain and all(_same(plain[k], again[k]) for k in plain)


def test_one_step_of_sub_batches_updates_each_centre_once_from_all_of_them(corpus_path):  # noqa: F811
    corpus = load_corpus(corpus_path)
    config = _no_drop_path({**tiny_config("ha"), "groups_per_step": 2})
    cfg = load_run_config(config)
    training = build_training(cfg, torch.device("cpu"))
    values = make_schedules(cfg, resolve_run(cfg, corpus)).at(0)
    batch = _batches(corpus, config, local_batch=4)[0]
    before = copy.deepcopy(training.objective)
    terms = training.loss_terms(training.student, batch, values)

    # reference: every part scored by a copy holding the step's centres, then one EMA update
    # of each centre with the mean over both parts' teacher outputs
    temp, momentum = values["teacher_temp"], cfg.dino.center_momentum
    part_totals, cls, patch, channel = [], [], [], []
    for part in batch["parts"]:
        with torch.no_grad():
            teacher = training.teacher(
                part["global"],
                masks=part["masks"],
                mask_input=False,
                with_channel_tokens=True,
            )
            student = training.student(
                part["global"], part["local"], masks=part["masks"], with_channel_tokens=True
            )
        scored = copy.deepcopy(before)(student, teacher, part["masks"], temp)
        part_totals.append(float(scored["total"]))
        cls.append(teacher["cls_logits"])
        patch.append(teacher["patch_logits"])
        channel.append(teacher["channel_logits"].flatten(0, 1))
    assert float(terms["total"].detach()) == pytest.approx(sum(part_totals) / 2, rel=1e-5)
    for loss, logits in (
        ("dino", cls),
        ("ibot", patch),
        ("dino_channel", channel),
    ):
        old = getattr(before, loss).center
        expected = momentum * old + (1 - momentum) * torch.cat(logits).mean(0, keepdim=True)
        assert torch.allclose(getattr(training.objective, loss).center, expected, atol=1e-6), loss


def test_sub_batches_must_divide_the_batch_and_need_centring(corpus_path, tmp_path):  # noqa: F811
    corpus = load_corpus(corpus_path)
    with pytest.raises(UserError, match="'groups_per_step' 3 must be >= 1 and divide"):
        _batches(corpus, {**tiny_config("cvit"), "groups_per_step": 3}, local_batch=4)
    bad = {**tiny_config("cvit"), "groups_per_step": 2}
    bad["dino"] = {**bad["dino"], "centering": "sinkhorn_knopp"}
    with pytest.raises(UserError, match="'groups_per_step'.*Sinkhorn-Knopp"):
        load_run_config(bad)


_RANK_SCRIPT = """
import os, sys, torch
from pathlib import Path
from channel_ssl.train import pretrain
torch.set_num_threads(1)
built = []
build = pretrain.build_training
def keep(*a, **k):
    built.append(build(*a, **k))
    return built[-1]
pretrain.build_training = keep
pretrain.train(sys.argv[1], sys.argv[2], sys.argv[3], device="cpu")
torch.save(built[0].state_dict(), Path(sys.argv[4]) / f"rank{os.environ.get('RANK', '0')}.pt")
"""


@pytest.mark.slow  # two torchrun processes: make test-e2e
def test_one_process_with_two_sub_batches_trains_what_two_ddp_ranks_train(
    corpus_path,  # noqa: F811
    tmp_path,
):
    config = _no_drop_path(tiny_config("cvit", channel_sampling="hcs", iterations=3, batch_size=4))
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run(
        [
            *cmd,
            str(script),
            str(corpus_path),
            json.dumps(config),
            str(tmp_path / "ddp"),
            str(ranks),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    ddp = torch.load(ranks / "rank0.pt", weights_only=False)
    single = train(corpus_path, json.dumps({**config, "groups_per_step": 2}), tmp_path / "virtual")
    virtual = load_checkpoint(single)
    for key in ("teacher", "teacher_dino_head", "losses"):
        for name, value in ddp[key].items():
            # the same arithmetic summed in another order (gradients averaged vs losses)
            assert torch.allclose(virtual[key][name], value, atol=1e-5, rtol=1e-4), (key, name)
