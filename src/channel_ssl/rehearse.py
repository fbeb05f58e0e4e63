"""``channel-ssl rehearse`` (``make rehearse``): the paper configuration's code paths at the
paper's sizes, on a CPU, before anyone spends GPU-hours on them.

Shrunk only where it cannot fit: the batch per process (2), the iterations (2, and one
resumed), the corpus (a synthetic one at 224 px with two channels per image, so that the
joint-encoding families fit in the time), never the models or the crops: ViT-L/16 (ViT-S/16
for P-BoC-S) at 224 px, 2 global + 8 local crops of 96 px, 65,536 prototypes, iBOT, KoLeo,
the paper's optimiser recipe. Steps, each in its own process (peak memory is that process's):

- ``train-<run>``: the run's config from ``config/paper.yaml`` for BoC, Channel-ViT, HA, MAE
  BoC and a fixed-channel ViT, 2 iterations each; P-BoC-L then runs its second iteration
  again from the checkpoint after the first (resume must reproduce it bit for bit);
- ``ddp-gloo``: P-BoC-S as 2 processes under ``torchrun`` (gloo); both ranks must hold the
  same teacher weights and centres afterwards;
- ``sampler``: the BoC and the joint samplers on a manifest with ExtendedCHAMMI's row count
  and channel mix (7.7 M rows), timing the first draws;
- ``signal``: SIGUSR1 during iteration 2 of P-BoC-S -> checkpoint -> exit 75 -> resumed run
  equal to an uninterrupted one;
- ``plan``: ``channel-ssl plan`` on the paper configuration.

Prints one table (step, seconds, peak memory, ok) and exits 1 if any step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_RUNS = ("P-BoC-L", "P-CViT-L", "P-HA-L", "P-MAE-BoC-L", "P-Fixed-WTC")
RESUMED_RUN = "P-BoC-L"  # the one run that also resumes (the signal step resumes P-BoC-S)
STEPS = tuple(f"train-{r}" for r in TRAIN_RUNS) + ("ddp-gloo", "sampler", "signal", "plan")
IMAGE_SIZE = 224
REHEARSAL_CHANNELS = 2


# ------------------------------------------------------------------------------ fixtures
def synthetic_corpus(root: Path, n_channels: int, n_images: int = 8) -> Path:
    """A corpus of ``n_images`` random ``n_channels``-channel 224 px images."""
    import numpy as np
    import pandas as pd

    from channel_ssl.data.sources import write_source

    rng = np.random.default_rng(0)
    items = (
        (
            rng.integers(0, 255, (n_channels, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8),
            {
                "image_id": f"img{i}",
                "row": i,
                "channels": [f"c{k}" for k in range(n_channels)],
                "label": "",
                "split": "train",
                "factors": {},
            },
        )
        for i in range(n_images)
    )
    out = root / f"source-{n_channels}ch"
    manifest = write_source("rehearsal", items, out, IMAGE_SIZE, 64)
    corpus = manifest.copy()
    corpus["shard_dir"] = str(out)
    corpus["weight"] = 1.0 / len(corpus)
    path = root / f"corpus-{n_channels}ch.parquet"
    pd.DataFrame(corpus).to_parquet(path, index=False)
    return path


def paper_run_config(run: str, **overrides) -> dict:
    """``run``'s config under ``config/paper.yaml``, shrunk to batch 2 x ``overrides``."""
    from channel_ssl import registry
    from channel_ssl.config import load_config

    cfg = registry.run_config(run, load_config("config/paper.yaml"))
    cfg.update(batch_size=2, iterations=2, checkpoint_every=1, log_every=1, num_workers=0)
    cfg["boc_pixel_budget"] = False
    cfg["freeze_last_layer_iterations"] = 0
    cfg["warmup_iterations"] = 1
    cfg["dino"]["warmup_teacher_temp_iterations"] = 1
    if cfg["model"]["family"] == "fixed":
        cfg["model"]["in_chans"] = REHEARSAL_CHANNELS
    cfg.update(overrides)
    return cfg


def _same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


STATE_KEYS = ("student", "teacher", "losses")


# --------------------------------------------------------------------------------- steps
def _digest(state: dict) -> dict[str, str]:
    """sha256 of every tensor of the ``STATE_KEYS`` entries (compare runs without holding
    two ViT-L checkpoints in memory)."""
    import hashlib

    out = {}
    for key in STATE_KEYS:
        for name, tensor in (state.get(key) or {}).items():
            out[f"{key}.{name}"] = hashlib.sha256(tensor.cpu().numpy().tobytes()).hexdigest()
    return out


def step_train(run: str, work: Path) -> str:
    """2 iterations of ``run`` at its paper size; P-BoC-L also resumes its second iteration
    from the checkpoint after the first, which must reproduce it bit for bit."""
    import torch

    from channel_ssl.train.checkpoint import load_checkpoint
    from channel_ssl.train.pretrain import train

    torch.set_num_threads(os.cpu_count() or 1)
    corpus = synthetic_corpus(work, REHEARSAL_CHANNELS)
    cfg = paper_run_config(run)
    state = load_checkpoint(train(corpus, json.dumps(cfg), work / "full"))
    n_params = sum(v.numel() for v in state["student"].values())
    full = _digest(state)
    del state
    detail = f"{cfg['model']['arch']}, {n_params / 1e6:.0f} M backbone parameters, 2 iterations"
    if run != RESUMED_RUN:
        return detail
    resumed_dir = work / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    os.replace(
        work / "full" / "checkpoints" / "ckpt-1.pt", resumed_dir / "checkpoints" / "ckpt-1.pt"
    )
    resumed = _digest(load_checkpoint(train(corpus, json.dumps(cfg), resumed_dir)))
    bad = sorted({k.split(".")[0] for k in full if full[k] != resumed.get(k)})
    if bad or full.keys() != resumed.keys():
        raise AssertionError(f"resumed run differs from the uninterrupted one in {bad}")
    return detail + "; resumed from iteration 1: identical"


def step_ddp(work: Path) -> str:
    corpus = synthetic_corpus(work, REHEARSAL_CHANNELS)
    cfg = paper_run_config("P-BoC-S", batch_size=4)
    script = work / "ddp_worker.py"
    script.write_text(
        "import os, sys, torch\n"
        "from pathlib import Path\n"
        "from channel_ssl.train import pretrain\n"
        "torch.set_num_threads(1)\n"
        "built = []\n"
        "build = pretrain.build_training\n"
        "def keep(*a, **k):\n"
        "    built.append(build(*a, **k))\n"
        "    return built[-1]\n"
        "pretrain.build_training = keep\n"
        "pretrain.train(sys.argv[1], sys.argv[2], sys.argv[3], device='cpu')\n"
        "state = built[0].state_dict()\n"
        "out = Path(sys.argv[4]); out.mkdir(parents=True, exist_ok=True)\n"
        "torch.save(state, out / f\"rank{os.environ['RANK']}.pt\")\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(corpus),
        json.dumps(cfg),
        str(work / "ddp"),
        str(work / "ranks"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed:\n{proc.stderr[-3000:]}")
    import torch

    states = [torch.load(p, weights_only=False) for p in sorted((work / "ranks").glob("*.pt"))]
    if len(states) != 2:
        raise AssertionError(f"expected the final state of 2 ranks, found {len(states)}")
    for key in ("teacher", "losses"):
        if not _same(states[0][key], states[1][key]):
            raise AssertionError(f"ranks 0 and 1 hold different {key}")
    return "2 ranks (gloo): identical teacher weights and centres"


def step_sampler(work: Path) -> str:
    import numpy as np
    import pandas as pd
    import torch

    from channel_ssl.data.pretrain_batches import CorpusSampler

    # ExtendedCHAMMI's mix (docs/paper.md section 3): mostly 5-channel Cell Painting
    mix = {5: 6_100_000, 4: 900_000, 3: 200_000, 2: 500_000}
    n_channels = np.concatenate([np.full(n, k, np.int64) for k, n in mix.items()])
    corpus = pd.DataFrame({"n_channels": n_channels, "weight": np.full(len(n_channels), 1.0)})
    corpus["weight"] /= corpus["weight"].sum()
    lines = []
    for family in ("boc", "cvit"):
        t0 = time.perf_counter()
        sampler = CorpusSampler(corpus, family)
        built = time.perf_counter() - t0
        generator = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for _ in range(10):
            sampler.draw(1024, generator)
        lines.append(
            f"{family}: built {built:.2f} s, 10 draws of 1024 {time.perf_counter() - t0:.3f} s"
        )
    return f"{len(corpus):,} rows; " + "; ".join(lines)


def step_signal(work: Path) -> str:
    from channel_ssl.train.checkpoint import load_checkpoint
    from channel_ssl.train.preemption import REQUEUE_EXIT

    corpus = synthetic_corpus(work, REHEARSAL_CHANNELS)
    cfg = json.dumps(paper_run_config("P-BoC-S", iterations=3, checkpoint_every=100))
    worker = work / "signal_worker.py"
    worker.write_text(
        "import os, signal, sys\n"
        "from channel_ssl.train import pretrain\n"
        "at = pretrain.TrainingSchedules.at\n"
        "def hooked(self, i):\n"
        "    if i == 1 and sys.argv[4] == 'stop':\n"
        "        os.kill(os.getpid(), signal.SIGUSR1)\n"
        "    return at(self, i)\n"
        "pretrain.TrainingSchedules.at = hooked\n"
        "pretrain.train(sys.argv[1], sys.argv[2], sys.argv[3], device='cpu')\n"
    )

    def launch(out: Path, mode: str) -> int:
        cmd = [sys.executable, str(worker), str(corpus), cfg, str(out), mode]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900).returncode

    if (code := launch(work / "stopped", "stop")) != REQUEUE_EXIT:
        raise AssertionError(f"stopped run exited {code}, expected {REQUEUE_EXIT}")
    kept = sorted(p.name for p in (work / "stopped" / "checkpoints").iterdir())
    if kept != ["ckpt-2.pt"]:
        raise AssertionError(f"expected the stop checkpoint ckpt-2.pt, found {kept}")
    if (code := launch(work / "stopped", "go")) != 0:
        raise AssertionError(f"resumed run exited {code}")
    if (code := launch(work / "straight", "go")) != 0:
        raise AssertionError(f"uninterrupted run exited {code}")
    a = load_checkpoint(work / "stopped" / "checkpoint.pt")
    b = load_checkpoint(work / "straight" / "checkpoint.pt")
    bad = [k for k in STATE_KEYS if not _same(a[k], b[k])]
    if bad:
        raise AssertionError(f"stopped + resumed run differs in {bad}")
    return (
        f"SIGUSR1 -> ckpt-2.pt, exit {REQUEUE_EXIT}, resumed run identical to an uninterrupted one"
    )


def step_plan(work: Path) -> str:
    from channel_ssl.config import load_config
    from channel_ssl.plan import plan, render

    config = load_config("config/paper.yaml")
    plans = plan(config)
    text = render(plans, config)
    (work / "plan.md").write_text(text)
    total = sum(p.gpu_hours for p in plans)
    return f"{len(plans)} runs, {total:,.0f} GPU-hours estimated"


def run_step(name: str, work: Path) -> str:
    if name.startswith("train-"):
        return step_train(name[len("train-") :], work)
    return {
        "ddp-gloo": step_ddp,
        "sampler": step_sampler,
        "signal": step_signal,
        "plan": step_plan,
    }[name](work)


# ---------------------------------------------------------------------------------- main
def rehearse(steps: list[str], out: Path) -> int:
    rows = []
    for name in steps:
        work = Path(tempfile.mkdtemp(prefix=f"rehearse-{name}-"))
        result = out / f"{name}.json"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "channel_ssl.rehearse",
                "--step",
                name,
                "--work",
                str(work),
                "--result",
                str(result),
            ],
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - t0
        info = json.loads(result.read_text()) if result.exists() else {}
        ok = proc.returncode == 0 and info.get("ok", False)
        detail = info.get("detail") or proc.stderr.strip().splitlines()[-1:] or [""]
        rows.append(
            {
                "step": name,
                "seconds": round(seconds, 1),
                "peak_gb": info.get("peak_gb", float("nan")),
                "ok": ok,
                "detail": detail if isinstance(detail, str) else detail[0],
            }
        )
        print(
            f"{name}: {'ok' if ok else 'FAILED'} in {seconds:.1f} s - {rows[-1]['detail']}",
            flush=True,
        )
        subprocess.run(["rm", "-rf", str(work)], check=False)
    lines = ["| step | seconds | peak memory (GB) | ok | what |", "|---|---:|---:|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['step']} | {r['seconds']:.1f} | {r['peak_gb']:.1f} | "
            f"{'ok' if r['ok'] else 'FAILED'} | {r['detail']} |"
        )
    total = sum(r["seconds"] for r in rows)
    lines += ["", f"Total: {total / 60:.1f} min on {os.cpu_count()} CPU cores."]
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rehearsal.md").write_text(text + "\n")
    print(text)
    return 0 if all(r["ok"] for r in rows) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results/rehearsal", help="where rehearsal.md goes")
    parser.add_argument("--only", action="append", choices=STEPS, help="run only these steps")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return rehearse(list(args.only or STEPS), out)


def _child(argv: list[str]) -> int:
    """One step in this process; writes ``{ok, detail, peak_gb}`` to ``--result``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--step", required=True, choices=STEPS)
    parser.add_argument("--work", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    try:
        detail, ok = run_step(args.step, Path(args.work)), True
    except Exception as exc:  # the table reports any failure of the step
        detail, ok = f"{type(exc).__name__}: {str(exc)[:300]}", False
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_kb = max(peak_kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    Path(args.result).write_text(
        json.dumps({"ok": ok, "detail": detail, "peak_gb": peak_kb / 2**20})
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
