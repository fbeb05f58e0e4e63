"""``channel-ssl repair``: set aside the outputs that changed after they were made.

An output whose content no longer matches its provenance record (edited by hand, damaged) is
renamed ``<file>.changed-<sha12>``, and every result computed from it ``<file>.stale-<sha12>``;
nothing is deleted. The next ``snakemake`` then re-makes exactly those. This is an explicit
step a user runs (``make demo`` runs it first): no Snakemake invocation moves a file by itself,
whatever its flags (``-n``, ``--dag``, ``--report``, ``--touch``, ...).
"""

from __future__ import annotations

import argparse
import os
import sys

from channel_ssl.audit import changed_outputs, set_aside_changed, stale_outputs
from channel_ssl.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results-dir",
        default="results/demo",
        help="workflow results directory (default: the demo's)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="only list what would be set aside; move nothing"
    )


def run(args: argparse.Namespace, out=sys.stdout) -> int:
    """Set aside the outputs that changed after they were made, and what was computed from
    them, so that the next ``snakemake`` re-makes exactly those. Nothing is deleted."""
    if not os.path.isdir(args.results_dir):
        if os.path.exists(args.results_dir):
            raise UserError(f"--results-dir {args.results_dir} is not a directory")
        print(f"{args.results_dir} does not exist yet: nothing to repair", file=out)
        return 0
    if args.dry_run:
        changed = changed_outputs(args.results_dir)
        stale = stale_outputs(args.results_dir, changed)
        for path in changed:
            print(f"changed: {path}", file=out)
        for path in stale:
            if os.path.exists(path):
                print(f"stale (computed from a changed output): {path}", file=out)
        if not changed:
            print(f"every output under {args.results_dir} matches its record", file=out)
        return 0
    moved = set_aside_changed(args.results_dir)
    for path, aside in moved:
        print(f"set aside: {path} -> {aside}", file=out)
    if moved:
        print("run snakemake again to re-make them", file=out)
    else:
        print(f"every output under {args.results_dir} matches its record", file=out)
    return 0
