"""Linear probes on frozen features: several learning rates trained together, chosen on validation.

Protocol (paper appendix D.2): ``n_classifiers`` linear classifiers whose learning rates are
log-spaced over [lr_min, lr_max] are trained together, in one pass over the same mini-batches
(one ``(n_classifiers, C, F)`` weight multiplied in one batched product; AdamW with one
learning rate per classifier, cosine schedule to 0). Features are standardised with the training statistics. The best
classifier is chosen on a validation split carved from the training data, never on test data;
only then is the test set predicted.

- single-label: softmax cross-entropy; validation score = macro F1 over the labels present in the
  validation ground truth; prediction = argmax.
- multi-label (e.g. HPA-FOV, 28 classes): per-class BCE; validation score = macro F1 over the
  classes present in the validation ground truth
  (:func:`channel_ssl.eval.metrics.multilabel_present_f1`, the same function that scores the
  test set, so selection and test use one F1 definition); prediction = logit > 0.

CHAMMI (command ``linear-probe``): same inputs as ``eval-chammi`` and the same tasks, folds and
metrics as the 1-NN protocol (``eval_chammi``); for the leave-one-group-out tasks (HPA Task_three,
CP Task_four) a probe is trained per group on Train + the other groups' task rows, because these
labels never occur in Train. Output columns: ``dataset, task, classifier, accuracy,
f1_score_macro, lr, val_f1`` (``lr``/``val_f1`` of the chosen classifier; for leave-one-group-out
tasks one value per group, in group order, joined by ``;``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from channel_ssl.atomic import write_table
from channel_ssl.errors import UserError
from channel_ssl.eval.eval_chammi import (
    DATASETS,
    METADATA_NAME,
    SCORE_COLUMNS,
    add_chammi_io_arguments,
    build_protocol,
    chammi_summary,
    check_features,
    load_chammi_features,
    read_metadata,
    task_scores,
)
from channel_ssl.eval.metrics import multilabel_present_f1
from channel_ssl.progress import ProgressLogger
from channel_ssl.step_io import chammi_scores

log = logging.getLogger("channel_ssl.eval.linear_probe")

PROBE_COLUMNS = SCORE_COLUMNS + ["lr", "val_f1"]


@dataclass
class ProbeConfig:
    """Hyper-parameters of one probe sweep."""

    n_classifiers: int = 14
    lr_min: float = 1e-4
    lr_max: float = 1.0
    epochs: int = 10
    batch_size: int = 256
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"
    # the augmented protocol (eval/augmented_probe.py): trains on images through the frozen
    # backbone instead of on the precomputed features; None = the features protocol
    trainer: object | None = None

    def learning_rates(self) -> np.ndarray:
        """(n_classifiers,) learning rates, log-spaced over [lr_min, lr_max]."""
        if not 0 < self.lr_min <= self.lr_max:
            raise UserError(f"need 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}")
        return np.logspace(math.log10(self.lr_min), math.log10(self.lr_max), self.n_classifiers)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def single_label_macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over the labels present in ``y_true`` (CHAMMI's metric)."""
    return float(
        f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0)
    )


@dataclass
class TrainedProbes:
    """``n_classifiers`` trained linear classifiers on standardised features.

    Attributes:
        lrs: (n_classifiers,) learning rates.
        mean, std: (F,) training feature statistics.
        weight: (n_classifiers, C, F); bias: (n_classifiers, C).
        multilabel: how outputs are turned into predictions.
    """

    lrs: np.ndarray
    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    multilabel: bool

    @torch.no_grad()
    def logits(self, x: np.ndarray, batch_size: int = 4096) -> torch.Tensor:
        """(n_classifiers, n, C) logits of every classifier."""
        out = []
        for start in range(0, len(x), batch_size):
            xb = torch.as_tensor(
                np.asarray(x[start : start + batch_size], np.float32), device=self.mean.device
            )
            xb = (xb - self.mean) / self.std
            out.append(torch.einsum("nf,kcf->knc", xb, self.weight) + self.bias[:, None, :])
        if not out:
            return torch.empty(len(self.lrs), 0, self.weight.shape[1])
        return torch.cat(out, dim=1).cpu()

    def predict(self, x: np.ndarray, index: int | None = None) -> np.ndarray:
        """Predictions of classifier ``index`` (or of all: leading axis n_classifiers).

        single-label: (n,) class ids; multi-label: (n, C) 0/1 int8.
        """
        logits = self.logits(x)
        if index is not None:
            logits = logits[index]
        if self.multilabel:
            return (logits > 0).numpy().astype(np.int8)
        return logits.argmax(dim=-1).numpy()


class BatchedAdamW:
    """AdamW (torch's update, ``amsgrad=False``) of parameters whose leading axis is the
    classifier, with one learning rate per classifier: classifier k's slice is updated exactly
    as a torch ``AdamW`` parameter group with lr ``lrs[k]`` would update it.
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        lrs: np.ndarray,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = params
        self.base_lrs = [
            torch.as_tensor(lrs, dtype=p.dtype, device=p.device).reshape(-1, *[1] * (p.dim() - 1))
            for p in params
        ]
        self.weight_decay = weight_decay
        self.betas = betas
        self.eps = eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = 0

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], lr_factor: float) -> None:
        """One update with learning rates ``lrs * lr_factor`` (the schedule's factor)."""
        self.steps += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        for param, grad, m, v, base in zip(
            self.params, grads, self.exp_avg, self.exp_avg_sq, self.base_lrs, strict=True
        ):
            lr = base * lr_factor
            if self.weight_decay:  # (a factor of exactly 1 otherwise)
                param.mul_(1 - lr * self.weight_decay)
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = v.sqrt().div_(bias_correction2_sqrt).add_(self.eps)
            param.sub_(torch.div(m, denom, out=denom).mul_(lr / bias_correction1))


# Probabilities under e^-64 = 1.6e-28 (1e-20 of float32's resolution of the largest
# probability of a softmax, or of a sigmoid's complement) are taken as exactly 0: computed,
# their exp takes torch's ~30x slower path for underflowing arguments and their subnormal
# gradients slow the products ~5x. Sums and losses are unchanged in float32; a gradient
# entry changes by < 1.6e-28 x the feature it multiplies.
_LOG_TINY = -64.0


def _probe_gradients(
    xb: torch.Tensor, yb: torch.Tensor, theta: torch.Tensor, multilabel: bool, with_loss: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradient of the sum over classifiers of each one's mean loss (softmax cross-entropy, or
    BCE averaged over samples and classes), in closed form: every classifier gets exactly its
    own gradient.

    ``theta`` (K, C, F + 1) holds each classifier's weight with its bias as the last column;
    ``xb`` (n, F + 1) ends in a column of ones, so one (K C, F + 1) x (F + 1, n) product gives
    every logit and one (K C, n) x (n, F + 1) product every gradient. Logits are laid out
    (K, C, n): the reductions over the classes run over a middle axis, vectorised along the
    samples (torch reduces a short innermost axis ~10x slower). Returns (d theta, the summed
    loss as a 0-d tensor if ``with_loss`` else None).
    """
    n_probes, n_classes, width = theta.shape
    n = len(xb)
    logits = (theta.reshape(-1, width) @ xb.t()).reshape(n_probes, n_classes, n)
    loss = None
    if multilabel:
        target = yb.t()[None]  # (1, C, n)
        if with_loss:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, target.expand_as(logits), reduction="sum"
            ) / (n * n_classes)
        delta = torch.sigmoid(logits.clamp(_LOG_TINY, -_LOG_TINY))
        delta.masked_fill_(logits < _LOG_TINY, 0.0).sub_(target)
        delta /= n * n_classes
    else:
        shifted = logits - logits.amax(dim=1, keepdim=True)
        tiny = shifted < _LOG_TINY
        exp = shifted.clamp(min=_LOG_TINY).exp_()
        total = exp.sum(dim=1, keepdim=True)
        index = yb.reshape(1, 1, n).expand(n_probes, 1, n)
        if with_loss:
            loss = (total.log() - shifted.gather(1, index)).sum() / n
        delta = exp.div_(total).masked_fill_(tiny, 0.0)
        delta.scatter_add_(1, index, torch.full(index.shape, -1.0, dtype=delta.dtype))
        delta /= n
    grad = (delta.reshape(-1, n) @ xb).reshape(n_probes, n_classes, width)
    return grad, loss


def feature_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F,) mean and std of training features ``x (n, F)`` that standardise every probe's
    input; a constant feature gets std 1 (left unscaled)."""
    std = x.std(0, unbiased=False)
    return x.mean(0), torch.where(std > 0, std, torch.ones_like(std))


def initial_weights(gen: torch.Generator, n_probes: int, n_classes: int, n_features: int):
    """(n_probes, C, F) initial weights: N(0, 0.01^2), drawn classifier by classifier."""
    return torch.stack(
        [torch.randn((n_classes, n_features), generator=gen) * 0.01 for _ in range(n_probes)]
    )


def train_probes(
    x_train: np.ndarray,
    y_train: np.ndarray,
    n_classes: int,
    config: ProbeConfig,
    multilabel: bool = False,
    positions: np.ndarray | None = None,
) -> TrainedProbes:
    """Train ``config.n_classifiers`` linear classifiers together on the same mini-batches.

    Args:
        x_train: (n, F) features. y_train: (n,) int class ids in [0, n_classes) or, multi-label,
            (n, n_classes) 0/1 targets.
        positions: (n,) manifest positions of the training rows; the augmented protocol
            (``config.trainer``) reads their images.
    """
    if config.trainer is not None:
        return config.trainer.train(x_train, positions, y_train, n_classes, config, multilabel)
    device = resolve_device(config.device)
    x = torch.as_tensor(np.asarray(x_train, np.float32))
    if not torch.isfinite(x).all():
        raise UserError("training features contain NaN or inf")
    mean, std = feature_statistics(x)
    x = ((x - mean) / std).to(device)
    if multilabel:
        y = torch.as_tensor(np.asarray(y_train, np.float32), device=device)
    else:
        y = torch.as_tensor(np.asarray(y_train, np.int64), device=device)

    lrs = config.learning_rates()
    gen = torch.Generator().manual_seed(config.seed)
    n, n_features = x.shape
    n_probes = len(lrs)
    # all classifiers in one (n_probes, C, F + 1) tensor, bias last: the same initial draws,
    # classifier by classifier, as one nn.Linear each (bias 0)
    weight = initial_weights(gen, n_probes, n_classes, n_features)
    theta = torch.cat([weight, torch.zeros(n_probes, n_classes, 1)], dim=2).to(device)
    # a column of ones multiplies the bias
    x = torch.cat([x, torch.ones(n, 1, device=device)], dim=1)
    optimizer = BatchedAdamW([theta], lrs, config.weight_decay)
    batch_size = min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch_size)
    total = config.epochs * steps_per_epoch
    progress = ProgressLogger(total, every=max(1, total // 10), unit="sample", logger=log)
    step = 0
    for _epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            # gathered just before use: the two products then read it from cache
            rows = order[start : start + batch_size]
            xb, yb = x.index_select(0, rows), y.index_select(0, rows)
            due = progress.due(step)  # the loss is computed for the log lines only
            grad, loss = _probe_gradients(xb, yb, theta, multilabel, with_loss=due)
            # cosine schedule to 0, as LambdaLR(0.5 (1 + cos(pi s / total))) steps it
            optimizer.step([grad], 0.5 * (1 + math.cos(math.pi * step / total)))
            logged = {"loss": float(loss) / n_probes} if due else {}
            progress.step(step, items=len(xb), **logged)
            step += 1
    weight, bias = theta[..., :n_features].contiguous(), theta[..., n_features].contiguous()
    return TrainedProbes(lrs, mean.to(device), std.to(device), weight, bias, multilabel)


@dataclass
class ProbeResult:
    """Outcome of a probe sweep: per-classifier validation scores, the choice and its test output."""

    probes: TrainedProbes
    val_scores: np.ndarray  # (n_classifiers,)
    best: int
    test_prediction: np.ndarray = field(repr=False)  # (n_test,) ids or (n_test, C) 0/1

    @property
    def lr(self) -> float:
        return float(self.probes.lrs[self.best])

    @property
    def val_score(self) -> float:
        return float(self.val_scores[self.best])


def select_on_validation(
    probes: TrainedProbes, x_val: np.ndarray, y_val: np.ndarray
) -> tuple[np.ndarray, int]:
    """(n_classifiers,) validation scores and the index of the best (lowest lr on ties)."""
    predictions = probes.predict(x_val)
    score = multilabel_present_f1 if probes.multilabel else single_label_macro_f1
    scores = np.array([score(y_val, p) for p in predictions])
    return scores, int(np.argmax(scores))


def fit_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    config: ProbeConfig,
    n_classes: int | None = None,
    multilabel: bool = False,
    positions_train: np.ndarray | None = None,
) -> ProbeResult:
    """Generic probe: train the sweep on (x_train, y_train), choose on (x_val, y_val), predict x_test.

    Shapes: x_* (n_*, F); single-label y_* (n_*,) int ids; multi-label y_* (n_*, C) 0/1.
    ``n_classes`` defaults to max id + 1 (single-label) or C (multi-label). Test labels are not
    an input: the choice cannot depend on them.
    """
    if n_classes is None:
        n_classes = (
            int(np.asarray(y_train).shape[1])
            if multilabel
            else int(max(np.max(y_train), np.max(y_val)) + 1)
        )
    probes = train_probes(
        x_train, y_train, n_classes, config, multilabel=multilabel, positions=positions_train
    )
    val_scores, best = select_on_validation(probes, x_val, y_val)
    log.info(
        "val scores per lr: %s; chosen lr=%.3g", np.round(val_scores, 4).tolist(), probes.lrs[best]
    )
    return ProbeResult(probes, val_scores, best, probes.predict(x_test, best))


def split_train_val(
    rows: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a stratified, seeded validation split from ``rows`` (falls back to unstratified when a
    class is too small to be split)."""
    try:
        return train_test_split(rows, test_size=val_fraction, random_state=seed, stratify=labels)
    except ValueError as exc:
        log.warning("stratified validation split impossible (%s); using a random split", exc)
        return train_test_split(rows, test_size=val_fraction, random_state=seed)


# --------------------------------------------------------------------------- CHAMMI


def _join(values: list[float]) -> float | str:
    return values[0] if len(values) == 1 else ";".join(f"{v:.6g}" for v in values)


def linear_probe_chammi(
    root: str | os.PathLike, features: dict[str, np.ndarray], config: ProbeConfig
) -> pd.DataFrame:
    """CHAMMI linear-probe scores (PROBE_COLUMNS) for the given datasets (order Allen, HPA, CP)."""
    unknown = sorted(set(features) - set(DATASETS))
    if unknown:
        raise UserError(f"unknown CHAMMI dataset(s) {unknown}; expected some of {list(DATASETS)}")
    rows = []
    for dataset in (d for d in DATASETS if d in features):
        meta_path = os.path.join(root, dataset, METADATA_NAME)
        meta = read_metadata(meta_path)
        feats = np.asarray(features[dataset])
        check_features(feats, len(meta), f"<{dataset} features>", meta_path)
        protocol = build_protocol(meta, dataset, meta_path)
        n_classes = len(protocol.label_names)
        trained: dict[bytes, tuple[TrainedProbes, int, float]] = {}
        for task in protocol.tasks:
            predictions, truths, lrs, val_f1s = [], [], [], []
            for group, reference_rows, query_rows in protocol.iter_folds(task):
                key = reference_rows.tobytes()
                if key not in trained:  # Task_one/two/three share the Train-only probe
                    fit_rows, val_rows = split_train_val(
                        reference_rows,
                        protocol.labels[reference_rows],
                        config.val_fraction,
                        config.seed,
                    )
                    log.info(
                        "%s %s%s: training %d probes on %d rows (val %d)",
                        dataset,
                        task,
                        "" if group is None else f" group {group}",
                        config.n_classifiers,
                        len(fit_rows),
                        len(val_rows),
                    )
                    probes = train_probes(
                        feats[fit_rows], protocol.labels[fit_rows], n_classes, config
                    )
                    val_scores, best = select_on_validation(
                        probes, feats[val_rows], protocol.labels[val_rows]
                    )
                    trained[key] = (probes, best, float(val_scores[best]))
                probes, best, val_f1 = trained[key]
                predictions.append(probes.predict(feats[query_rows], best))
                truths.append(protocol.labels[query_rows])
                lrs.append(float(probes.lrs[best]))
                val_f1s.append(val_f1)
            accuracy, f1 = task_scores(np.concatenate(truths), np.concatenate(predictions))
            log.info(
                "%s %s: accuracy=%.4f f1_macro=%.4f lr=%s", dataset, task, accuracy, f1, _join(lrs)
            )
            rows.append(
                {
                    "dataset": dataset,
                    "task": task,
                    "classifier": "linear",
                    "accuracy": accuracy,
                    "f1_score_macro": f1,
                    "lr": _join(lrs),
                    "val_f1": _join(val_f1s),
                }
            )
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def add_probe_arguments(parser: argparse.ArgumentParser, batch_flag: str = "--batch-size") -> None:
    """The probe sweep's options (shared by every command that trains probes)."""
    d = ProbeConfig()
    parser.add_argument("--n-classifiers", type=int, default=d.n_classifiers)
    parser.add_argument("--lr-min", type=float, default=d.lr_min)
    parser.add_argument("--lr-max", type=float, default=d.lr_max)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument(batch_flag, type=int, default=d.batch_size, dest="probe_batch_size")
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def probe_config_from_args(args: argparse.Namespace, device: str) -> ProbeConfig:
    """The :class:`ProbeConfig` of options added by :func:`add_probe_arguments`."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return ProbeConfig(
        n_classifiers=args.n_classifiers,
        lr_min=args.lr_min,
        lr_max=args.lr_max,
        epochs=args.epochs,
        batch_size=args.probe_batch_size,
        weight_decay=args.weight_decay,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=device,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_chammi_io_arguments(parser)
    add_probe_arguments(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto")


def run(args: argparse.Namespace) -> int:
    config = probe_config_from_args(args, args.device)
    features = load_chammi_features(args.root, args.features_dir, args.feature_file)
    scores = linear_probe_chammi(args.root, features, config)
    write_table(args.out, scores)
    summary = chammi_summary(scores)
    log.info(
        "CHAMMI linear-probe summary (percent): %s",
        ", ".join(f"{k}={v:.1f}" for k, v in summary.items()),
    )
    return 0


# the CHAMMI features of one recipe and CHAMMI's metadata -> one score file
step_io = chammi_scores
