"""Manifests -> one pretraining corpus table with per-row sampling weights.

``channel-ssl assemble-corpus --manifest DIR [--manifest DIR ...] --splits Train
[--exclude COLUMN=VALUE ...] --balance source|none --out corpus.parquet``

The corpus has every manifest column plus

    shard_dir   str    the manifest's directory, relative to the corpus file's directory
                       when the two share a root (absolute otherwise)
    weight      float  sampling weight; ``source``: every source gets the same total weight
                       (weights average 1); ``none``: 1 per row

``--exclude KEY=VALUE`` drops rows whose manifest column KEY, or factor KEY in the
``factors`` JSON, equals VALUE (compared as text), e.g. ``cell_type=HEK 293`` or
``Plate=SQ00015125``; this is how ExtendedCHAMMI keeps CHAMMI's OOD tasks unseen. A summary
with kept / total counts per source is logged and written beside the corpus as
``<corpus stem>.summary.json``.

``--extended-chammi [--chammi-root ROOT] [--leave-out SOURCE[,SOURCE]]`` assembles
ExtendedCHAMMI instead: the exclusion rules of the paper (docs/paper.md section 3) are applied per source
as data (:mod:`channel_ssl.data.extended_chammi`), CHAMMI's IID-task images found under ROOT are
removed, ``--leave-out`` drops whole sources (table 9: ``wtc``, ``cellpainting``, ``hpa``,
``opencell``), and the summary records per source kept / total and the discarded factor values
found (table 7). ``--splits`` and ``--exclude`` do not apply in that mode (the rules decide).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import pandas as pd

from channel_ssl.atomic import write_json, write_table
from channel_ssl.data.corpus_rows import BALANCE_MODES, relative_shard_dir, source_weights
from channel_ssl.data.shards import MANIFEST_NAME, load_manifest
from channel_ssl.errors import UserError
from channel_ssl.provenance import StepIO
from channel_ssl.step_io import manifest_file

log = logging.getLogger("channel_ssl.corpus")


def parse_exclusion(text: str) -> tuple[str, str]:
    """``'cell_type=HEK 293'`` -> ``('cell_type', 'HEK 293')``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--exclude {text!r}: expected COLUMN=VALUE")
    return key.strip(), value.strip()


def assemble_corpus(
    manifests: list[str | os.PathLike],
    out: str | os.PathLike,
    splits: list[str],
    exclude: list[tuple[str, str]] = (),
    balance: str = "source",
) -> tuple[pd.DataFrame, dict]:
    """Concatenate ``manifests`` (directories or manifest files), filter, weight, write ``out``.

    Returns the corpus and the per-source summary ``{source: {total, in_splits, kept}}``.

    Raises:
        FileNotFoundError: a manifest does not exist.
        UserError: an exclusion key is neither a manifest column nor a factor of any row,
            or nothing is left after filtering.
    """
    out = Path(out)
    frames = []
    for m in manifests:
        path = Path(m)
        if path.suffix == ".parquet":
            manifest_file, manifest_dir = path, path.parent
        else:
            manifest_file, manifest_dir = path / MANIFEST_NAME, path
        df = load_manifest(manifest_file)
        df["shard_dir"] = relative_shard_dir(manifest_dir, out.parent)
        frames.append(df)
    if not frames:
        raise UserError("assemble-corpus needs at least one --manifest")
    corpus = pd.concat(frames, ignore_index=True)
    factors = corpus["factors"].map(lambda s: json.loads(s) if s else {})
    factor_keys = set().union(*factors) if len(factors) else set()

    total = corpus["source"].value_counts()
    corpus = corpus[corpus["split"].isin(splits)]
    factors = factors[corpus.index]
    in_splits = corpus["source"].value_counts()

    keep = pd.Series(True, index=corpus.index)
    for key, value in exclude:
        if key in corpus.columns:
            hit = corpus[key].astype(str) == value
        elif key in factor_keys:
            hit = factors.map(lambda f, k=key: str(f.get(k)) if k in f else None) == value
        else:
            raise UserError(
                f"--exclude {key}={value}: {key!r} is neither a manifest column nor a factor "
                f"(factors seen: {sorted(factor_keys)})"
            )
        log.info("exclude %s=%s drops %d row(s)", key, value, int((hit & keep).sum()))
        keep &= ~hit
    corpus = corpus[keep].reset_index(drop=True)
    if corpus.empty:
        raise UserError(
            f"corpus {out} would be empty (splits {splits}, exclusions {list(exclude)})"
        )
    corpus["weight"] = source_weights(corpus["source"], balance)

    kept = corpus["source"].value_counts()
    summary = {
        str(s): {
            "total": int(total[s]),
            "in_splits": int(in_splits.get(s, 0)),
            "kept": int(kept.get(s, 0)),
        }
        for s in total.index
    }
    for s, c in summary.items():
        log.info(
            "source %s: kept %d / %d (%d in splits %s)",
            s,
            c["kept"],
            c["total"],
            c["in_splits"],
            splits,
        )
    write_table(out, corpus)
    write_json(
        out.with_name(out.stem + ".summary.json"),
        {
            "splits": list(splits),
            "exclude": [f"{k}={v}" for k, v in exclude],
            "balance": balance,
            "sources": summary,
        },
    )
    return corpus, summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--manifest",
        action="append",
        required=True,
        help="preprocessed directory (or its manifest.parquet); repeatable",
    )
    parser.add_argument("--splits", nargs="+", default=["Train"], help="splits to keep")
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="drop rows whose column or factor equals VALUE; repeatable",
    )
    parser.add_argument("--balance", choices=BALANCE_MODES, default="source")
    parser.add_argument("--out", required=True, help="corpus .parquet to write")
    parser.add_argument(
        "--extended-chammi",
        action="store_true",
        help="apply the ExtendedCHAMMI exclusion rules per source (docs/paper.md section 3)",
    )
    parser.add_argument(
        "--chammi-root",
        default=None,
        help="with --extended-chammi: CHAMMI root whose Task_one images are removed",
    )
    parser.add_argument(
        "--leave-out",
        default="",
        metavar="SOURCE[,SOURCE]",
        help="with --extended-chammi: sources to leave out (wtc, cellpainting, hpa, opencell)",
    )


def run(args: argparse.Namespace) -> int:
    leave_out = [s for s in getattr(args, "leave_out", "").split(",") if s.strip()]
    if getattr(args, "extended_chammi", False):
        from channel_ssl.data.extended_chammi import (
            assemble_extended_chammi,
            group_manifests_by_source,
        )

        if args.exclude:
            raise UserError(
                "--exclude cannot be combined with --extended-chammi (the rules decide)"
            )
        if args.splits != ["Train"]:
            log.info("--extended-chammi: ignoring --splits %s (the rules decide)", args.splits)
        assemble_extended_chammi(
            group_manifests_by_source(args.manifest),
            args.out,
            chammi_root=args.chammi_root,
            leave_out=leave_out,
            balance=args.balance,
        )
        return 0
    if args.chammi_root or leave_out:
        raise UserError("--chammi-root and --leave-out need --extended-chammi")
    exclusions = [parse_exclusion(e) for e in args.exclude]
    assemble_corpus(args.manifest, args.out, args.splits, exclusions, args.balance)
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    out = Path(args.out)
    summary = out.with_name(out.stem + ".summary.json")
    return StepIO(
        inputs=[manifest_file(m) for m in args.manifest],
        outputs=[str(out)],
        members=[str(summary)] if summary.exists() else [],
    )
