"""Does pretraining learn? (``channel-ssl learning-check``, ``make learning-check``)

Pretrains every family the paper uses at CPU scale on a larger copy of the demo CHAMMI data
(structure to learn, enough test images that the score is not noise), and scores each trained
model with the CHAMMI 1-NN protocol **beside the same model at random initialisation**.

Outputs (``--out``, default ``results/learning``): ``summary.csv`` and ``summary.md`` with, per
run: family, iterations, the random-init score, the pretrained score (CHAMMI mean of the
per-dataset OOD means, and per task), the first and last logged loss terms, ln K and the
teacher-output entropy at the end, and each target as met or not. Exit status 1 when any target
is missed, so it can gate changes. The recipe is ``config/learning.yaml`` (schema-validated like
every workflow config); its values are CPU-scale, labelled as such, and are not the paper's.

Targets (docs/learning.md explains them):

- DINO BoC: pretrained minus random-init >= +5 points averaged over its seeds, > 0 for each;
- the other DINO families: >= +3 points;
- every DINO run: last DINO loss <= 0.8 ln K and teacher entropy <= 0.9 ln K at the end;
- MAE: reconstruction loss falls by >= 30 % from its first logged value.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from channel_ssl import registry
from channel_ssl.atomic import write_text as atomic_write_text
from channel_ssl.config import deep_merge, load_config
from channel_ssl.data.readers.chammi import DATASETS
from channel_ssl.errors import UserError

log = logging.getLogger("channel_ssl.learning_check")

# the registry run whose family/objective a learning-check run takes (one declaration of each)
TEMPLATE_RUNS = {
    "boc": "P-BoC-L-CHAMMI",
    "cvit": "P-CViT-L-CHAMMI",
    "ha": "P-HA-L",
    "mae": "P-MAE-BoC-L",
    "fixed": "P-Fixed-HPAFOV",
}
BOC_GAIN, OTHER_GAIN = 5.0, 3.0
DINO_LOSS_RATIO, ENTROPY_RATIO, MAE_DROP = 0.8, 0.9, 0.3


@dataclass(frozen=True)
class CheckRun:
    """One learning-check run: a template run of the registry, a seed, the datasets it sees."""

    name: str
    template: str
    seed: int
    datasets: tuple[str, ...] = DATASETS  # fixed-channel models see one channel count


def check_runs(seeds: int) -> list[CheckRun]:
    runs = [CheckRun(f"boc-seed{s}", "boc", s) for s in range(seeds)]
    runs += [
        CheckRun("cvit", "cvit", 0),
        CheckRun("ha", "ha", 0),
        CheckRun("mae-boc", "mae", 0),
        CheckRun("fixed-hpa", "fixed", 0, datasets=("HPA",)),
    ]
    return runs


def run_config(check: CheckRun, config: dict) -> dict:
    """The pretrain run config of ``check``: the registry's run assembled under ``config``."""
    # a template's overrides are pretrain settings: the registry builds the run from them
    overrides = config.get("learning", {}).get("overrides", {}).get(check.template, {})
    run_settings = deep_merge(config, {"pretrain": overrides})
    cfg = registry.run_config(TEMPLATE_RUNS[check.template], run_settings)
    cfg["run"] = f"learning-{check.name}"
    cfg["seed"] = int(check.seed)
    return cfg


# ------------------------------------------------------------------------------------ data
def prepare_data(out: Path, config: dict) -> dict:
    """Demo CHAMMI at ``learning.demo_scale``, shards, corpora; skips what already exists."""
    from channel_ssl.data.corpus import assemble_corpus
    from channel_ssl.data.demo.chammi import DemoParams, generate_demo
    from channel_ssl.data.preprocess import preprocess_dataset

    root = out / "data" / "chammi"
    scale = float(config["chammi"]["demo_scale"])
    if not all((root / d / "enriched_meta.csv").exists() for d in DATASETS):
        generate_demo(root, DemoParams(seed=int(config["seed"]), scale=scale))
    size = int(config["preprocess"]["image_size"])
    shards = {}
    for dataset in DATASETS:
        shard_dir = out / "shards" / dataset
        if not (shard_dir / "manifest.parquet").exists():
            preprocess_dataset(root, dataset, shard_dir, size, config["preprocess"]["shard_size"])
        shards[dataset] = shard_dir
    corpora = {}
    for name, datasets in (("all", DATASETS), ("HPA", ("HPA",))):
        path = out / "corpora" / name / "corpus.parquet"
        if not path.exists():
            assemble_corpus([shards[d] for d in datasets], path, ["Train"], balance="source")
        corpora[name] = path
    return {"root": root, "shards": shards, "corpora": corpora}


# ------------------------------------------------------------------------------ evaluation
def score(backbone, family: str, data: dict, datasets, config: dict) -> dict[str, float]:
    """CHAMMI 1-NN (macro-F1 x 100) of ``backbone``: per task, per dataset OOD mean, Mean
    (over ``datasets``)."""
    from channel_ssl.data.shards import ShardStore, load_manifest
    from channel_ssl.eval.eval_chammi import chammi_summary, evaluate_chammi
    from channel_ssl.eval.extract import extract_features

    features = {}
    for dataset in datasets:
        shard_dir = data["shards"][dataset]
        manifest = load_manifest(shard_dir / "manifest.parquet")
        features[dataset] = extract_features(
            backbone,
            family,
            manifest,
            ShardStore(shard_dir),
            len(manifest),
            ["cls1"],
            int(config["extract"]["crop_size"]),
            int(config["extract"]["batch_size"]),
        )["cls1"]
    return chammi_summary(evaluate_chammi(data["root"], features), datasets=tuple(datasets))


_LINE = re.compile(r"\[(\d+)/(\d+)\] (.*?) [\d.]+ img/s")


def parse_log(path: Path) -> list[dict]:
    """The progress lines of a pretraining log as dicts (``iteration`` + logged values)."""
    rows = []
    for line in path.read_text().splitlines():
        match = _LINE.search(line)
        if not match:
            continue
        values = {"iteration": int(match.group(1))}
        for item in match.group(3).split():
            key, _, value = item.partition("=")
            try:
                values[key] = float(value)
            except ValueError:
                continue
        rows.append(values)
    return rows


# ------------------------------------------------------------------------------- targets
def judge(rows: pd.DataFrame) -> list[tuple[str, bool, str]]:
    """``(target, met, numbers)`` for every target."""
    out = []
    boc = rows[rows["template"] == "boc"]
    gains = boc["gain"].to_numpy()
    if len(gains):
        out.append(
            (
                f"DINO BoC: mean gain over {len(gains)} seeds >= +{BOC_GAIN:g} and > 0 per seed",
                bool(gains.mean() >= BOC_GAIN and (gains > 0).all()),
                f"mean {gains.mean():+.2f}; per seed " + ", ".join(f"{g:+.2f}" for g in gains),
            )
        )
    for r in rows.itertuples():
        if r.template in ("cvit", "ha", "fixed"):
            out.append(
                (f"{r.run}: gain >= +{OTHER_GAIN:g}", bool(r.gain >= OTHER_GAIN), f"{r.gain:+.2f}")
            )
        if r.template != "mae":
            out.append(
                (
                    f"{r.run}: last DINO loss <= {DINO_LOSS_RATIO} ln K",
                    bool(r.last_dino <= DINO_LOSS_RATIO * r.ln_k),
                    f"{r.last_dino:.3f} vs {DINO_LOSS_RATIO * r.ln_k:.3f}",
                )
            )
            out.append(
                (
                    f"{r.run}: teacher entropy <= {ENTROPY_RATIO} ln K at the end",
                    bool(r.last_entropy <= ENTROPY_RATIO * r.ln_k),
                    f"{r.last_entropy:.3f} vs {ENTROPY_RATIO * r.ln_k:.3f}",
                )
            )
        else:
            drop = 1.0 - r.last_mae / r.first_mae
            out.append(
                (
                    f"{r.run}: MAE loss falls >= {MAE_DROP:.0%}",
                    bool(drop >= MAE_DROP),
                    f"{r.first_mae:.3f} -> {r.last_mae:.3f} ({drop:.0%})",
                )
            )
    return out


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def render_markdown(rows: pd.DataFrame, spread: dict, targets, seconds: float) -> str:
    lines = [
        "# Learning check (CPU scale; not the paper's recipe or data)",
        "",
        "Demo CHAMMI data at a larger scale, micro ViTs, `config/learning.yaml`. Scores: CHAMMI "
        "1-NN, macro-F1 x 100; `score` is the CHAMMI mean of the per-dataset OOD means "
        "(fixed-channel HPA run: the mean over HPA's OOD tasks). Losses are the first and last "
        "logged values (means over the first and last log intervals): `total` is the weighted "
        "sum the optimiser sees (DINO + iBOT + KoLeo), `dino` the image-level DINO term the "
        "targets judge, against ln K (uniform teacher).",
        "",
        f"Random-init spread over the BoC seeds (std of the Mean): {spread['std']:.2f} points "
        f"(values {', '.join(f'{v:.2f}' for v in spread['values'])}).",
        "",
    ]
    cols = [
        "run",
        "family",
        "objective",
        "iterations",
        "random_init",
        "pretrained",
        "gain",
        "first_total",
        "last_total",
        "first_dino",
        "last_dino",
        "ln_k",
        "last_entropy",
        "first_mae",
        "last_mae",
    ]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in rows.to_dict("records"):
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    lines += ["", "## Per task (pretrained / random init)", ""]
    task_cols = [c for c in rows.columns if c.startswith("pre:")]
    header = ["run"] + [c[4:] for c in task_cols]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for r in rows.to_dict("records"):
        cells = [r["run"]]
        for c in task_cols:
            pre, rnd = r.get(c), r.get("rnd:" + c[4:])
            cells.append("" if pre is None or pd.isna(pre) else f"{pre:.1f} / {rnd:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Targets", ""]
    for name, met, numbers in targets:
        lines.append(f"- {'MET' if met else 'NOT MET'}: {name} ({numbers})")
    lines += ["", f"Total time: {seconds / 60:.1f} min.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def run_check(check: CheckRun, config: dict, data: dict, out: Path, threads: int | None) -> dict:
    """Pretrain one learning-check run and score it beside its random init; its summary row."""
    import torch

    from channel_ssl.train.checkpoint import load_backbone
    from channel_ssl.train.pretrain import train
    from channel_ssl.train.run_config import load_run_config
    from channel_ssl.train.ssl_meta_arch import build_run_backbone

    if threads:
        torch.set_num_threads(threads)
    # worker processes name their log lines by run (two runs' progress lines interleave)
    multiprocessing.current_process().name = check.name
    cfg = load_run_config(run_config(check, config))
    family = cfg.model.family
    # random init: the very network the run starts from (same seed, same builder)
    torch.manual_seed(cfg.seed)
    random_backbone = build_run_backbone(cfg, drop_path=0.0).eval()
    random_scores = score(random_backbone, family, data, check.datasets, config)
    run_dir = out / "runs" / check.name
    log_path = run_dir / "pretrain.log"
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("channel_ssl").addHandler(handler)
    try:
        corpus = data["corpora"]["all" if check.datasets == DATASETS else check.datasets[0]]
        checkpoint = train(corpus, cfg, run_dir, device="cpu")
    finally:
        logging.getLogger("channel_ssl").removeHandler(handler)
        handler.close()
    backbone, _ = load_backbone(checkpoint)
    trained_scores = score(backbone, family, data, check.datasets, config)
    lines = parse_log(log_path)
    first, last = lines[0], lines[-1]
    ln_k = math.log(cfg.dino.n_prototypes)
    record = {
        "run": check.name,
        "family": family,
        "objective": cfg.objective,
        "template": check.template,
        "seed": check.seed,
        "iterations": last["iteration"],
        "random_init": random_scores["Mean"],
        "pretrained": trained_scores["Mean"],
        "gain": trained_scores["Mean"] - random_scores["Mean"],
        "first_total": first.get("total", float("nan")),
        "last_total": last.get("total", float("nan")),
        "ln_k": ln_k if cfg.objective != "mae" else float("nan"),
        "first_dino": first.get("dino", float("nan")),
        "last_dino": last.get("dino", float("nan")),
        "last_entropy": last.get("teacher_entropy", float("nan")),
        "first_mae": first.get("mae", float("nan")),
        "last_mae": last.get("mae", float("nan")),
    }
    for key, value in trained_scores.items():
        if key != "Mean":
            record[f"pre:{key}"] = value
            record[f"rnd:{key}"] = random_scores[key]
    for key in ("koleo", "ibot", "dino_channel"):
        if key in first:
            record[f"first_{key}"] = first[key]
            record[f"last_{key}"] = last[key]
    log.info(
        "%s: random init %.2f -> pretrained %.2f (%+.2f); dino %s, entropy %s of ln K %.3f",
        check.name,
        record["random_init"],
        record["pretrained"],
        record["gain"],
        _fmt(record["last_dino"]),
        _fmt(record["last_entropy"]),
        ln_k,
    )
    return record


def _worker_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s",
        force=True,
    )


def learning_check(
    config_path: str, out: Path, seeds: int | None = None, jobs: int = 1, threads: int | None = None
) -> int:
    """Every learning-check run (``jobs`` at a time, each in its own process when jobs > 1),
    then the summary and the targets; 0 when every target is met."""
    t0 = time.perf_counter()
    config = load_config(config_path)
    settings = config["learning"]
    seeds = int(seeds if seeds is not None else settings["boc_seeds"])
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(out, config)
    checks = check_runs(seeds)
    if jobs <= 1:
        records = [run_check(check, config, data, out, threads) for check in checks]
    else:
        # processes, not threads: micro ViTs use one core badly, two runs use two well
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_worker_logging
        ) as pool:
            futures = [pool.submit(run_check, c, config, data, out, threads) for c in checks]
            records = [f.result() for f in futures]
    rows = pd.DataFrame(records)
    boc_random = rows.loc[rows["template"] == "boc", "random_init"].to_numpy()
    spread = {
        "std": float(boc_random.std(ddof=1)) if len(boc_random) > 1 else float("nan"),
        "values": boc_random.tolist(),
    }
    targets = judge(rows)
    seconds = time.perf_counter() - t0
    atomic_write_text(out / "summary.csv", rows.to_csv(index=False))
    text = render_markdown(rows, spread, targets, seconds)
    atomic_write_text(out / "summary.md", text)
    print(text)
    missed = [t for t in targets if not t[1]]
    if missed:
        log.error("%d of %d learning targets missed", len(missed), len(targets))
        return 1
    log.info("all %d learning targets met in %.1f min", len(targets), seconds / 60)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config/learning.yaml", help="learning-check recipe")
    parser.add_argument("--out", default="results/learning", help="output directory")
    parser.add_argument("--seeds", type=int, default=None, help="BoC seeds (default: config)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs trained at the same time, one process each"
    )


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1; got {args.jobs}")
    return learning_check(args.config, Path(args.out), args.seeds, args.jobs, args.threads)
