"""GPU section of the benchmark (needs CUDA; not part of ``make bench`` or the tests).

``python -m bench.gpu --out DIR`` measures, in bf16 with PyTorch's fused attention
(``scaled_dot_product_attention``, flash kernels on Hopper):

- one DINO training step of a ViT-L/16 BoC and a ViT-L/16 Channel-ViT (student and teacher,
  DINO and iBOT heads with 65,536 prototypes, 2 x 224 + 8 x 96 px crops, losses, backward,
  clipping, AdamW, EMA), at the paper's per-GPU batches: model FLOPs counted by
  ``torch.utils.flop_counter`` over one step, divided by the step time and the chip's bf16
  dense peak (model FLOP utilisation);
- feature extraction: ViT-L/16 BoC forward of 224 px single-channel images, images per second;
- the paper's ViT-S/16 BoC recipe (``config/paper.yaml``'s run ``P-BoC-S``, kept in
  ``bench/paper_vits_boc.json``) for a few hundred iterations on demo CHAMMI data preprocessed
  at 224 px: whether its DINO loss falls below ln K.

It writes ``DIR/gpu.json`` and ``DIR/gpu.md`` (and the short run's log). ``--quick`` runs
every part at toy sizes on whatever device there is (a check of the script, not a measure).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch

from bench.models import StepSize, _batch, _run_config, step_function

# bf16 dense tensor-core peaks (vendor figures, no sparsity), by device name
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}
VIT_L = StepSize("ViT-L/16", "vit_large", 16, 224, 96, 8, 65536, 2048, 256, 32)
TOY = StepSize("toy", "micro", 8, 32, 16, 2, 256, 128, 32, 4)
PAPER_RUN = Path(__file__).with_name("paper_vits_boc.json")


def _peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(size: StepSize, family: str, device: torch.device, steps: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from channel_ssl.train.run_config import load_run_config
    from channel_ssl.train.ssl_meta_arch import build_training

    raw = _run_config(size)
    raw["model"]["family"] = family
    raw["precision"] = "bf16"
    n_channels = 5
    if family == "cvit":
        raw["model"]["k_max"] = n_channels
    cfg = load_run_config(raw)
    training = build_training(cfg, device)
    batch = _batch(size, cfg, n_channels if family == "cvit" else None)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    step = step_function(training, cfg, batch, device, bf16=device.type == "cuda")

    for _ in range(3):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        terms = step()
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    peak = _peak(device)
    return {
        "family": family,
        "arch": size.arch,
        "batch_images": size.batch,
        "channels_per_image": n_channels if family == "cvit" else 1,
        "step_s": seconds,
        "model_tflop_per_step": flops / 1e12,
        "achieved_tflop_s": flops / seconds / 1e12,
        "mfu": None if peak is None else flops / seconds / peak,
        "peak_tflop_s": None if peak is None else peak / 1e12,
        "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "loss": float(terms["total"].detach()),
    }


def extraction(size: StepSize, device: torch.device, batch: int, repeats: int) -> dict:
    from channel_ssl.models import build_backbone

    backbone = build_backbone("boc", size.arch, img_size=size.global_size).to(device).eval()
    x = torch.randn(batch, 1, size.global_size, size.global_size, device=device)

    def forward():
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        ):
            return backbone(x)["cls"]

    for _ in range(3):
        forward()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        forward()
    _sync(device)
    seconds = (time.perf_counter() - start) / repeats
    return {"arch": size.arch, "batch": batch, "images_per_s": batch / seconds}


def short_paper_run(
    out: Path, work: Path, device: torch.device, iterations: int, batch: int
) -> dict:
    """The paper's ViT-S/16 BoC recipe for ``iterations`` base iterations on demo CHAMMI
    (data and checkpoint under ``work``, the log under ``out``)."""
    from channel_ssl.data.corpus import assemble_corpus
    from channel_ssl.data.demo.chammi import DemoParams, generate_demo
    from channel_ssl.data.preprocess import preprocess_dataset
    from channel_ssl.data.readers.chammi import DATASETS
    from channel_ssl.train.pretrain import train

    run = json.loads(PAPER_RUN.read_text())
    # a few hundred iterations at one GPU's batch: lr follows the recipe's linear scaling;
    # warm-ups stay the recipe's rule (20 DINOv2 epochs of iterations / 36)
    run.update(iterations=iterations, batch_size=batch, checkpoint_every=10**9)
    if device.type != "cuda":  # --quick on CPU: a toy network
        run["model"]["arch"] = "micro"
        run["model"]["patch_size"] = 8
        run["crops"].update(global_crops_size=32, local_crops_size=16, local_crops_number=2)
        run["dino"].update(n_prototypes=256, hidden_dim=128, bottleneck_dim=32)
        run["num_workers"] = 0
    size = run["crops"]["global_crops_size"]
    root = work / "data" / "chammi"
    generate_demo(root, DemoParams(seed=0))
    manifests = []
    for dataset in DATASETS:
        shard_dir = work / "data" / "shards" / dataset
        preprocess_dataset(root, dataset, shard_dir, size, 1024)
        manifests.append(shard_dir)
    corpus = work / "data" / "corpus.parquet"
    assemble_corpus(manifests, corpus, ["Train"], balance="source")
    log_path = out / "paper_vits_boc.log"
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("channel_ssl").addHandler(handler)
    logging.getLogger("channel_ssl").setLevel(logging.INFO)
    start = time.perf_counter()
    try:
        train(corpus, run, work / "run", device=device.type)
    finally:
        logging.getLogger("channel_ssl").removeHandler(handler)
        handler.close()
    seconds = time.perf_counter() - start
    lines = [line for line in log_path.read_text().splitlines() if " dino=" in line]

    def value(line: str, key: str) -> float:
        return float(line.split(f" {key}=")[1].split()[0])

    ln_k = math.log(run["dino"]["n_prototypes"])
    first, last = lines[0], lines[-1]
    return {
        "iterations_logged": [line.split("[")[1].split("]")[0] for line in (first, last)],
        "batch": batch,
        "seconds": seconds,
        "ln_k": ln_k,
        "first_dino": value(first, "dino"),
        "last_dino": value(last, "dino"),
        "min_dino": min(value(line, "dino") for line in lines),
        "last_teacher_entropy": value(last, "teacher_entropy"),
        "below_ln_k_at_end": value(last, "dino") < ln_k,
    }


def render(report: dict) -> str:
    lines = [f"GPU benchmark on {report['device']} (torch {report['torch']}), bf16, fused "
             "attention (scaled_dot_product_attention)", ""]  # fmt: skip
    lines += ["| training step | batch | step | model TFLOP/step | TFLOP/s | MFU | memory |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for s in report["steps"]:
        mfu = "n/a" if s["mfu"] is None else f"{100 * s['mfu']:.1f} %"
        mem = "n/a" if s["max_memory_gib"] is None else f"{s['max_memory_gib']:.1f} GiB"
        lines.append(
            f"| {s['arch']} {s['family']} | {s['batch_images']} images x "
            f"{s['channels_per_image']} ch | {1000 * s['step_s']:.1f} ms | "
            f"{s['model_tflop_per_step']:.2f} | {s['achieved_tflop_s']:.1f} | {mfu} | {mem} |"
        )
    e = report["extraction"]
    lines += ["", f"Extraction: {e['arch']} BoC forward, batch {e['batch']} single-channel "
              f"224 px images: {e['images_per_s']:,.0f} images/s."]  # fmt: skip
    r = report.get("paper_run")
    if r:
        lines += ["", f"Paper ViT-S/16 BoC recipe, batch {r['batch']}, iterations "
                  f"{r['iterations_logged'][0]} .. {r['iterations_logged'][1]} "
                  f"({r['seconds']:.0f} s): DINO loss {r['first_dino']:.3f} -> "
                  f"{r['last_dino']:.3f} (min {r['min_dino']:.3f}; ln K = {r['ln_k']:.3f}); "
                  f"teacher entropy at the end {r['last_teacher_entropy']:.3f}; below ln K at "
                  f"the end: {'yes' if r['below_ln_k_at_end'] else 'NO'}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="gpu.json, gpu.md, the run's log")
    parser.add_argument("--work", type=Path, default=None, help="data and checkpoint (OUT/work)")
    parser.add_argument("--quick", action="store_true", help="toy sizes (checks the script)")
    parser.add_argument("--iterations", type=int, default=150, help="short paper run")
    parser.add_argument("--batch", type=int, default=256, help="short paper run's batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    size = TOY if args.quick else VIT_L
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "steps": [],
    }

    def save() -> None:
        (args.out / "gpu.json").write_text(json.dumps(report, indent=1))
        (args.out / "gpu.md").write_text(render(report) if "extraction" in report else "")

    for family, batch in (("boc", 2 if args.quick else 32), ("cvit", 2 if args.quick else 8)):
        step_size = StepSize(**{**size.__dict__, "batch": batch})
        report["steps"].append(training_step(step_size, family, device, 2 if args.quick else 10))
        print(json.dumps(report["steps"][-1]), flush=True)
        save()
        torch.cuda.empty_cache() if device.type == "cuda" else None
    report["extraction"] = extraction(
        size, device, 4 if args.quick else 256, 2 if args.quick else 10
    )
    print(json.dumps(report["extraction"]), flush=True)
    save()
    iterations = 4 if args.quick else args.iterations
    work = args.work or args.out / "work"
    report["paper_run"] = short_paper_run(
        args.out, work, device, iterations, 8 if args.quick else args.batch
    )
    save()
    print(render(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
