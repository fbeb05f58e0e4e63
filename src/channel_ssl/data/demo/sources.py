"""Demo copies of the non-CHAMMI sources in their native layouts (``channel-ssl make-demo-source``).

``channel-ssl make-demo-source --source NAME --out RAW_DIR --seed S [--scale F]
[--chammi-root ROOT]``

:data:`DEMOS` is a dispatch table ``name -> "module:function"`` derived from the registry; the
function is ``make_demo(raw_dir, seed, scale, **options)`` and writes the source's native file
layout so that the source's reader (:data:`channel_ssl.data.sources.READERS`) reads the demo
with the same code as the real data. Everything is a function of the seed.

``--chammi-root`` is understood by the sources CHAMMI was cut from (HPA FOV, HPA single cell,
WTC, Cell Painting): their demo copies then contain the cells of that CHAMMI copy (same
identities and factors), as the real sources contain the real CHAMMI cells, so the removal of
CHAMMI's IID-task images from ExtendedCHAMMI has something to remove. Without it they
regenerate the demo CHAMMI plan of the same seed (:mod:`channel_ssl.data.demo.chammi`).
"""

from __future__ import annotations

import argparse
import inspect
import os

from channel_ssl import registry
from channel_ssl.atomic import write_json
from channel_ssl.data.sources import resolve
from channel_ssl.provenance import StepIO
from channel_ssl.step_io import chammi_metadata, files_under

# source (and raw directory) name -> "module:function" of its demo generator, as each source
# declares it in the registry; sources sharing a raw directory share its generator
DEMOS: dict[str, str] = {
    **{src.raw: src.demo for src in registry.SOURCES.values()},
    **{name: src.demo for name, src in registry.SOURCES.items()},
}
MARKER = "DEMO_SOURCE.json"


def make_demo_source(source: str, raw_dir, seed: int = 0, scale: float = 1.0, **options):
    """Write the demo copy of ``source`` under ``raw_dir``; returns what its generator returns.

    ``options`` (e.g. ``chammi_root``) go only to generators that accept them.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    make_demo = resolve(DEMOS, source, "demo source")
    accepted = inspect.signature(make_demo).parameters
    kwargs = {k: v for k, v in options.items() if v is not None and k in accepted}
    return make_demo(raw_dir, seed, scale, **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, choices=sorted(DEMOS))
    parser.add_argument("--out", required=True, help="directory to write the native layout into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every image count by this"
    )
    parser.add_argument(
        "--chammi-root",
        default=None,
        help="demo CHAMMI whose cells the source copy should contain (CHAMMI-derived sources only)",
    )


def run(args: argparse.Namespace) -> int:
    make_demo_source(args.source, args.out, args.seed, args.scale, chammi_root=args.chammi_root)
    # The marker closes the copy: the workflow waits for it, provenance hashes what is beside it.
    write_json(
        os.path.join(args.out, MARKER),
        {"source": args.source, "seed": args.seed, "scale": args.scale, "demo": True},
    )
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    marker = os.path.join(args.out, "DEMO_SOURCE.json")
    inputs = chammi_metadata(args.chammi_root) if args.chammi_root else []
    return StepIO(inputs=inputs, outputs=[marker], members=files_under(args.out, {marker}))
