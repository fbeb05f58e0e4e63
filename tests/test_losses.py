"""DINOv2 losses and head against brute-force numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from channel_ssl.losses import DINOLoss, IBOTPatchLoss, koleo_loss, sinkhorn_knopp
from channel_ssl.models.heads import DINOHead


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_log_softmax(x):
    return np.log(np_softmax(x))


def test_dino_loss_centering_matches_numpy_and_skips_identical_views():
    rng = np.random.default_rng(0)
    n, p, tt, st = 5, 7, 0.04, 0.1
    student = [rng.normal(size=(n, p)) for _ in range(4)]  # 2 global + 2 local views
    teacher = [rng.normal(size=(n, p)) for _ in range(2)]
    center0 = rng.normal(size=(1, p)) * 0.1

    loss_fn = DINOLoss(p, student_temp=st, center_momentum=0.9)
    loss_fn.center.copy_(torch.tensor(center0))
    targets = loss_fn.teacher_targets(torch.tensor(np.concatenate(teacher)), tt).chunk(2)
    loss = loss_fn([torch.tensor(s) for s in student], list(targets))

    expected, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        q = np_softmax((t - center0) / tt)
        for j, s in enumerate(student):
            if i == j:
                continue
            expected += -(q * np_log_softmax(s / st)).sum(-1).mean()
            pairs += 1
    assert pairs == 6
    assert float(loss) == pytest.approx(expected / pairs, rel=1e-6)
    # centre EMA: 0.9 * old + 0.1 * batch mean of the teacher logits
    new_center = 0.9 * center0 + 0.1 * np.concatenate(teacher).mean(0, keepdims=True)
    np.testing.assert_allclose(loss_fn.center.numpy(), new_center, rtol=1e-6)


def test_dino_loss_is_minimal_when_student_matches_sharp_teacher():
    p = 4
    loss_fn = DINOLoss(p, student_temp=0.1)
    onehot = torch.eye(p)
    good = loss_fn([onehot * 5, onehot * 5], [onehot, onehot])
    bad = loss_fn([onehot.flip(0) * 5, onehot.flip(0) * 5], [onehot, onehot])
    assert float(good) < 1e-6 < float(bad)


def test_sinkhorn_knopp_equipartition_and_reference():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 4))
    q = sinkhorn_knopp(torch.tensor(logits), 0.5, n_iterations=3).numpy()
    # brute force reference of the same 3 alternating normalisations
    ref = np.exp(logits / 0.5).T
    ref /= ref.sum()
    for _ in range(3):
        ref /= ref.sum(1, keepdims=True) * 4
        ref /= ref.sum(0, keepdims=True) * 6
    ref = (ref * 6).T
    np.testing.assert_allclose(q, ref, rtol=1e-5)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
    q_long = sinkhorn_knopp(torch.tensor(logits), 0.5, n_iterations=50).numpy()
    np.testing.assert_allclose(q_long.sum(0), 6 / 4, rtol=1e-4)  # equal mass per prototype


def test_dino_loss_sinkhorn_option_leaves_centre_alone():
    loss_fn = DINOLoss(4, centering="sinkhorn_knopp")
    targets = loss_fn.teacher_targets(torch.randn(8, 4), 0.07)
    assert torch.allclose(targets.sum(1), torch.ones(8), atol=1e-5)
    assert torch.equal(loss_fn.center, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="centering='bogus'"):
        DINOLoss(4, centering="bogus")


def test_ibot_loss_counts_masked_tokens_only_with_per_image_weights():
    rng = np.random.default_rng(2)
    b, m, p, st, tt = 3, 5, 6, 0.1, 0.05
    masks = np.zeros((b, m), dtype=bool)
    masks[0, [1, 3]] = True
    masks[2, [0, 1, 2, 4]] = True  # image 1 unmasked
    n_masked = int(masks.sum())
    s_logits = rng.normal(size=(n_masked, p))
    t_logits = rng.normal(size=(n_masked, p))
    loss_fn = IBOTPatchLoss(p, student_temp=st)
    targets = loss_fn.teacher_targets(torch.tensor(t_logits), tt)
    loss = loss_fn(torch.tensor(s_logits), targets, torch.tensor(masks))

    q = np_softmax(t_logits / tt)  # centre starts at 0
    ce = -(q * np_log_softmax(s_logits / st)).sum(-1)
    rows = np.nonzero(masks)[0]
    per_image = [ce[rows == i].mean() for i in (0, 2)]
    assert float(loss) == pytest.approx(sum(per_image) / b, rel=1e-6)
    np.testing.assert_allclose(
        loss_fn.center.numpy(), 0.1 * t_logits.mean(0, keepdims=True), rtol=1e-6
    )
    empty = loss_fn(torch.zeros(0, p), torch.zeros(0, p), torch.zeros(b, m, dtype=torch.bool))
    assert float(empty) == 0.0


def test_koleo_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 5))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.linalg.norm(xn[:, None] - xn[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    expected = -np.log(d.min(1)).mean()
    assert float(koleo_loss(torch.tensor(x))) == pytest.approx(expected, rel=1e-5)
    # spread-out points have lower KoLeo than clustered ones
    clustered = torch.tensor(xn[:1]).repeat(7, 1) + 0.01 * torch.randn(7, 5, dtype=torch.float64)
    assert float(koleo_loss(clustered)) > float(koleo_loss(torch.tensor(x)))
    with pytest.raises(ValueError, match="at least 2"):
        koleo_loss(torch.randn(1, 5))


def test_dino_head_shapes_and_normalisation():
    torch.manual_seed(0)
    head = DINOHead(in_dim=12, n_prototypes=10, hidden_dim=16, bottleneck_dim=8, nlayers=3)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 16), (16, 16), (16, 8)]
    x = torch.randn(4, 12)
    with torch.no_grad():
        logits = head(x)
    assert logits.shape == (4, 10)
    # logits are cosine similarities: bounded by 1, invariant to the scale of the prototypes
    assert float(logits.abs().max()) <= 1 + 1e-5
    with torch.no_grad():
        head.prototypes.mul_(7.0)
        torch.testing.assert_close(head(x), logits)
    assert DINOHead(12, 10, 16, 8, nlayers=1)(x).shape == (4, 10)


def test_ibot_centre_stays_finite_when_a_batch_masks_no_patch():
    loss = IBOTPatchLoss(8)
    before = loss.center.clone()
    targets = loss.teacher_targets(torch.zeros(0, 8), 0.04)
    assert targets.shape == (0, 8)
    loss._targets.update_center(torch.zeros(0, 8))
    assert torch.isfinite(loss.center).all() and torch.equal(loss.center, before)
    loss._targets.update_center(torch.ones(3, 8))
    assert torch.allclose(loss.center, torch.full((1, 8), 0.1))


def test_prototype_scores_equal_the_normalised_product_with_their_gradients():
    """Scores scaled per column equal ``z @ F.normalize(v).t()``, forward and backward
    (float64 gradcheck of the closed-form backward, a clamped-norm row included), and the
    no-grad path gives the same scores."""
    import torch.nn.functional as F

    from channel_ssl.models.heads import _PrototypeScores, prototype_scores

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 7, 5, dtype=torch.float64, generator=gen).requires_grad_()
    v = torch.randn(11, 5, dtype=torch.float64, generator=gen)
    v[3] = 1e-9  # norm under eps: clamped, no radial term
    v.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: _PrototypeScores.apply(a, b, 1e-6), (z[0].detach().requires_grad_(), v)
    )
    grad = torch.randn(2, 7, 11, dtype=torch.float64, generator=gen)
    ours = prototype_scores(z, v)
    gz, gv = torch.autograd.grad(ours, (z, v), grad)
    reference = z @ F.normalize(v, dim=-1, eps=1e-6).t()
    rz, rv = torch.autograd.grad(reference, (z, v), grad)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(gz, rz)
    torch.testing.assert_close(gv, rv)
    with torch.no_grad():
        torch.testing.assert_close(prototype_scores(z, v), reference)
