"""``python -m bench [--threads N] [--repeats N] [--quick] [--only NAME ...] [--out DIR]``
(see bench/__init__.py)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MEASURES = ("ha", "step-micro", "step-vit-s", "probe", "knn", "shards")


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else the machine type."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch, BLAS, faiss)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per measure")
    parser.add_argument(
        "--heavy-repeats",
        type=int,
        default=3,
        help="interleaved runs of the slow measures (probe sweep, CHAMMI 1-NN)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, one run each (checks the harness)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=MEASURES,
        help="run only these measures; the table is printed, not written to --out",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.{md,csv} go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy, torch and faiss load
    import torch

    from bench import evaluation, models
    from bench.harness import markdown, table
    from channel_ssl.atomic import write_table, write_text

    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    heavy = 1 if args.quick else args.heavy_repeats
    measures = {
        "ha": lambda: models.ha_vs_boc_forward(repeats, batch=1 if args.quick else 2),
        "step-micro": lambda: models.dino_step_vs_timm(models.MICRO, repeats, 1.3),
        "step-vit-s": lambda: models.dino_step_vs_timm(models.VIT_S, repeats, 1.25),
        "probe": lambda: evaluation.probe_vs_sklearn(
            heavy, *((2000, 500, 256) if args.quick else (12000, 3000, 768))
        ),
        "knn": lambda: evaluation.knn_vs_morphem(heavy, scale=0.05 if args.quick else 1.0),
        "shards": lambda: evaluation.shards_vs_files(repeats, n_images=200 if args.quick else 2000),
    }
    assert tuple(measures) == MEASURES
    start = time.perf_counter()
    rows = []
    for name in args.only or MEASURES:
        row = measures[name]()
        rows.append(row)
        print(
            f"[{time.perf_counter() - start:6.1f} s] {row.measure}: {row.as_dict()['ratio']}",
            flush=True,
        )
    df = table(rows)
    elapsed = time.perf_counter() - start
    header = (
        f"Benchmark ({'quick, ' if args.quick else ''}medians of {repeats} interleaved runs, "
        f"{heavy} for the probe and the 1-NN; {args.threads} threads) on {platform.node()}: "
        f"{os.cpu_count()} CPU cores, {_cpu_model()}, "
        f"torch {torch.__version__}; load average at the end {os.getloadavg()[0]:.1f}; "
        f"{elapsed / 60:.1f} min.\n\n"
    )
    text = header + markdown(df)
    print("\n" + text)
    if not args.only:
        write_table(args.out / "latest.csv", df)
        write_text(args.out / "latest.md", text)
    missed = [r.measure for r in rows if not r.met]
    if missed:
        print(f"{len(missed)} target(s) missed: " + "; ".join(missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
