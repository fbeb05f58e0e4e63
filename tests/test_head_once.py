"""The DINO head run once per network on all tokens of a step (CLS, masked patches, HA channel
CLS) gives the logits and loss terms of one head call per token set."""

from __future__ import annotations

import copy

import pytest
import torch
from test_pretrain import corpus_path, tiny_config  # noqa: F401 (fixture)

from channel_ssl.data.pretrain_batches import PretrainBatches, load_corpus
from channel_ssl.train.pretrain import make_schedules, resolve_run
from channel_ssl.train.run_config import load_run_config
from channel_ssl.train.ssl_meta_arch import build_training

# float32: the concatenated MLP product sums in another order than the separate ones
# (logits and loss terms: |a - b| <= ATOL + RTOL |b|; prototype gradients: 1e-4 of their max)
ATOL = 1e-6
RTOL = 1e-5


def _separate_calls(net, global_crops, local_crops, masks, channel_tokens, mask_input=True):
    """The outputs of one head call per token set (the path before the heads were batched)."""
    outputs = [net.backbone(global_crops, masks=masks if mask_input else None)]
    if local_crops is not None:
        outputs.append(net.backbone(local_crops, masks=None))
    out = {
        "cls": outputs[0]["cls"],
        "cls_logits": net.dino_head(torch.cat([o["cls"] for o in outputs])),
        "patch_logits": (net.ibot_head or net.dino_head)(outputs[0]["patch"][masks]),
    }
    if channel_tokens:
        out["channel_cls"] = outputs[0]["channel_cls"]
        out["channel_logits"] = net.dino_head(torch.cat([o["channel_cls"] for o in outputs]))
    return out


@pytest.mark.parametrize(("family", "separate_head"), [("boc", False), ("ha", False), ("ha", True)])
def test_one_head_call_equals_separate_calls(family, separate_head, corpus_path):  # noqa: F811
    config = tiny_config(family, model={**tiny_config(family)["model"], "drop_path": 0.0})
    config["ibot"] = {**config["ibot"], "separate_head": separate_head}
    cfg = load_run_config(config)
    corpus = load_corpus(corpus_path)
    training = build_training(cfg, torch.device("cpu"))
    batch = PretrainBatches(corpus, cfg, local_batch=4, total_iterations=4, patch_size=4)[0]
    channels = training.with_channel_tokens
    assert channels == (family == "ha")
    values = make_schedules(cfg, resolve_run(cfg, corpus)).at(0)
    objective = copy.deepcopy(training.objective)

    torch.manual_seed(0)
    student, teacher = training._forward(training.student, batch)
    with torch.no_grad():
        old_teacher = _separate_calls(
            training.teacher, batch["global"], None, batch["masks"], channels, mask_input=False
        )
    old_student = _separate_calls(
        training.student, batch["global"], batch["local"], batch["masks"], channels
    )
    keys = ["cls_logits", "patch_logits"] + (["channel_logits"] if channels else [])
    for key in keys:
        assert student[key].shape == old_student[key].shape, key
        torch.testing.assert_close(student[key], old_student[key], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(teacher[key], old_teacher[key], atol=ATOL, rtol=RTOL)

    temp = values["teacher_temp"]
    new_terms = training.objective(student, teacher, batch["masks"], temp)
    old_terms = objective(old_student, old_teacher, batch["masks"], temp)
    assert new_terms.keys() == old_terms.keys()
    for key in new_terms:
        torch.testing.assert_close(new_terms[key], old_terms[key], atol=ATOL, rtol=RTOL)
    new_terms["total"].backward()
    grad = training.student.dino_head.prototypes.grad
    training.student.zero_grad()
    old_terms["total"].backward()
    # gradients sum many terms: compared relative to their largest entry
    old_grad = training.student.dino_head.prototypes.grad
    assert float((grad - old_grad).abs().max()) <= 1e-4 * float(old_grad.abs().max())
