"""``channel-ssl audit``: where a number comes from, and whether it is still true.

Follows the provenance records (:mod:`channel_ssl.provenance`) from a table, a table cell or
any output down to the data the workflow started from, printing each step's command, config
hash, code commit and job. ``--verify`` re-hashes every file of the lineage and reports the
ones that changed after the number was made (exit 1); it never modifies anything.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from channel_ssl.errors import UserError
from channel_ssl.provenance import (
    SUFFIX,
    output_matches_record,
    read_record,
    record_path,
    sha256_file,
)

# Table columns that belong to one CHAMMI dataset: the cell depends on that dataset's files only.
_COLUMN_DATASET = {"WTC": "Allen", "HPA": "HPA", "CP": "CP"}


@dataclass
class Problem:
    path: str
    what: str  # "changed", "missing", "stale"
    detail: str


@dataclass
class Lineage:
    lines: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    n_files: int = 0


def resolve_target(target: str, results_dir: str) -> Path:
    """A table/figure name (``table5``) or a path of an output that has a record."""
    p = Path(target)
    if p.exists() and not p.is_dir():
        return p
    for candidate in (
        Path(results_dir) / "tables" / f"{target}.csv",
        Path(results_dir) / "figures" / f"{target}.png",
    ):
        if candidate.exists():
            return candidate
    raise UserError(
        f"no output named {target!r}: neither a file nor {results_dir}/tables/{target}.csv "
        f"(or figures/{target}.png); run the workflow for it first or pass --results-dir"
    )


def find_cell(table_csv: Path, cell: str) -> pd.Series:
    """The long-format row of ``table_csv`` for ``cell`` = "ROW,COLUMN" (row may be a prefix)."""
    if "," not in cell:
        raise UserError(f"--cell must be 'ROW,COLUMN', got {cell!r}")
    row_label, column = (part.strip() for part in cell.rsplit(",", 1))
    df = pd.read_csv(table_csv, dtype=str, keep_default_na=False)
    rows = list(dict.fromkeys(df["row"]))
    matches = [r for r in rows if r == row_label] or [r for r in rows if r.startswith(row_label)]
    if len(matches) != 1:
        raise UserError(
            f"{table_csv}: row {row_label!r} matches {len(matches)} rows; rows are: {rows}"
        )
    columns = list(dict.fromkeys(df["column"]))
    col = [c for c in columns if c.lower() == column.lower()]
    if not col:
        raise UserError(f"{table_csv}: no column {column!r}; columns are: {columns}")
    sel = df[(df["row"] == matches[0]) & (df["column"] == col[0])]
    return sel.iloc[0]


def _job_text(rec: dict) -> str:
    job = rec.get("job")
    if job:
        return f"slurm job {job.get('slurm_job_id')}" + (
            f"[{job['slurm_array_task_id']}]" if job.get("slurm_array_task_id") else ""
        )
    return f"local on {rec.get('host')}"


def _commit_text(rec: dict) -> str:
    git = rec.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12]
    return commit + (" (dirty tree)" if git.get("dirty") else "")


def _check_file(entry: dict, lineage: Lineage) -> None:
    path = entry["path"]
    lineage.n_files += 1
    if not os.path.exists(path):
        lineage.problems.append(Problem(path, "missing", "recorded but no longer on disk"))
        return
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        lineage.problems.append(
            Problem(path, "changed", f"sha256 {actual[:12]} but recorded {entry['sha256'][:12]}")
        )


def walk(
    path: str,
    lineage: Lineage,
    verify: bool,
    prefix: str = "",
    last: bool = True,
    only_dataset: str | None = None,
) -> None:
    """Append the lineage of ``path`` to ``lineage`` as tree lines (depth first)."""
    branch = "└─ " if last else "├─ "
    child_prefix = prefix + ("   " if last else "│  ")
    rec = read_record(path)
    if rec is None:
        lineage.lines.append(f"{prefix}{branch}{path}  [source file, no record]")
        return
    key = os.path.normpath(path)
    if key in lineage.seen:
        lineage.lines.append(f"{prefix}{branch}{path}  [{rec['step']}] (see above)")
        return
    lineage.seen.add(key)
    members = rec.get("members", [])
    extra = f" (+{len(members)} files)" if members else ""
    lineage.lines.append(
        f"{prefix}{branch}{path}  [{rec['step']}]{extra}  config {rec['config_hash'][:12]}"
        f"  commit {_commit_text(rec)}  {_job_text(rec)}  {rec.get('end')}"
    )
    lineage.lines.append(f"{child_prefix}$ {' '.join(rec['argv'])}")
    if verify:
        for entry in rec.get("outputs", []) + members:
            _check_file(entry, lineage)
    inputs = rec.get("inputs", [])
    if only_dataset is not None:
        inputs = [i for i in inputs if f"{os.sep}{only_dataset}{os.sep}" in i["path"]] or inputs
    for i, entry in enumerate(inputs):
        is_last = i == len(inputs) - 1
        if verify:
            _verify_input(entry, lineage)
        walk(entry["path"], lineage, verify, child_prefix, is_last)


def _verify_input(entry: dict, lineage: Lineage) -> None:
    """An input must still be what the consumer read: same content, same producing record."""
    if entry.get("record"):
        now = read_record(entry["path"])
        if now is None:
            lineage.problems.append(
                Problem(entry["path"], "missing", "its provenance record is gone")
            )
        elif now.get("record_hash") != entry.get("record_hash"):
            lineage.problems.append(
                Problem(entry["path"], "stale", "re-made after the result that used it")
            )
    else:
        _check_file(entry, lineage)


def audit(target: str, results_dir: str, cell: str | None, verify: bool, out=sys.stdout) -> int:
    path = resolve_target(target, results_dir)
    lineage = Lineage()
    start = str(path)
    only_dataset = None
    if cell is not None:
        row = find_cell(path, cell)
        out.write(
            f"{target} cell [{row['row']}, {row['column']}]: reproduced {row['reproduced'] or '-'}"
            f", paper {row['paper'] or '-'}, difference {row['difference'] or '-'}\n"
        )
        if row.get("cited", "") == "true":
            out.write(f"  cited from other work: {row['source_file']}\n")
            return 0
        start = row["source_file"]
        only_dataset = (
            _COLUMN_DATASET.get(row["column"].split()[0]) if " " in row["column"] else None
        )
        if verify:
            _verify_input(
                {
                    "path": start,
                    "record": str(record_path(start)),
                    "record_hash": _table_input_hash(path, start),
                },
                lineage,
            )
        walk(start, lineage, verify, only_dataset=only_dataset)
        # the table itself (the number's last step)
        if verify:
            _verify_outputs_of(path, lineage)
    else:
        walk(start, lineage, verify)
    out.write("\n".join(lineage.lines) + "\n")
    if verify:
        if lineage.problems:
            out.write(f"\nVERIFY FAILED: {len(lineage.problems)} problem(s) in the lineage\n")
            for p in lineage.problems:
                out.write(f"  {p.what.upper()}: {p.path}: {p.detail}\n")
            out.write(
                "Re-run the workflow (snakemake) to re-make changed outputs: files that no longer "
                "match their records are regenerated.\n"
            )
            return 1
        out.write(f"\nverified: {lineage.n_files} files match their records\n")
    return 0


def _table_input_hash(table: Path, score_file: str) -> str | None:
    rec = read_record(table)
    for entry in (rec or {}).get("inputs", []):
        if os.path.normpath(entry["path"]) == os.path.normpath(score_file):
            return entry.get("record_hash")
    return None


def _verify_outputs_of(path: Path, lineage: Lineage) -> None:
    rec = read_record(path)
    if rec is None:
        lineage.problems.append(Problem(str(path), "missing", "no provenance record"))
        return
    for entry in rec.get("outputs", []):
        _check_file(entry, lineage)


def changed_outputs(results_dir: str) -> list[str]:
    """Outputs under ``results_dir`` whose content no longer matches their own record.

    Used by the workflow to re-make them; checks size and mtime first, hashes only on doubt.
    """
    changed = []
    for rp in glob.glob(os.path.join(results_dir, "**", f"*{SUFFIX}"), recursive=True):
        out = rp[: -len(SUFFIX)]
        if os.path.exists(out) and output_matches_record(out) is False:
            changed.append(out)
            continue
        rec = read_record(rp) or {}
        for m in rec.get("members", []):
            if not _member_matches(m):
                changed.append(out)
                break
    return sorted(set(changed))


def downstream_outputs(results_dir: str, paths: list[str]) -> list[str]:
    """Every output under ``results_dir`` computed (directly or not) from any of ``paths``."""
    consumers: dict[str, set[str]] = {}
    for rp in glob.glob(os.path.join(results_dir, "**", f"*{SUFFIX}"), recursive=True):
        rec = read_record(rp) or {}
        outs = [os.path.normpath(o["path"]) for o in rec.get("outputs", [])]
        for entry in rec.get("inputs", []):
            consumers.setdefault(os.path.normpath(entry["path"]), set()).update(outs)
    seen: set[str] = set()
    todo = [os.path.normpath(p) for p in paths]
    while todo:
        for out in consumers.get(todo.pop(), ()):
            if out not in seen:
                seen.add(out)
                todo.append(out)
    return sorted(seen - {os.path.normpath(p) for p in paths})


def stale_outputs(results_dir: str, changed: list[str]) -> list[str]:
    """What re-making ``changed`` re-makes too: the other outputs of the steps that wrote them
    (a step writes all its outputs again, e.g. evaluate-run its score and feature files) and
    everything computed from any of those."""
    changed_set = {os.path.normpath(p) for p in changed}
    siblings: set[str] = set()
    for rp in glob.glob(os.path.join(results_dir, "**", f"*{SUFFIX}"), recursive=True):
        outs = {os.path.normpath(o["path"]) for o in (read_record(rp) or {}).get("outputs", [])}
        if outs & changed_set:
            siblings |= outs
    siblings -= changed_set
    stale = siblings | set(downstream_outputs(results_dir, [*changed_set, *siblings]))
    return sorted(stale - changed_set)


def set_aside_changed(results_dir: str) -> list[tuple[str, str]]:
    """Rename outputs that no longer match their records, and everything computed from them.

    A changed output becomes ``<path>.changed-<sha12>``; what is re-made with it or computed
    from it (:func:`stale_outputs`) becomes ``<path>.stale-<sha12>``. Nothing is deleted, and
    because the files are now missing the workflow re-makes them (and only them). Returns
    ``(path, new name)`` pairs.
    """
    changed = changed_outputs(results_dir)
    moved = []
    for kind, paths in (("changed", changed), ("stale", stale_outputs(results_dir, changed))):
        for path in paths:
            if os.path.exists(path):
                aside = f"{path}.{kind}-{sha256_file(path)[:12]}"
                os.replace(path, aside)
                moved.append((path, aside))
    return moved


def _member_matches(entry: dict) -> bool:
    path = entry["path"]
    if not os.path.exists(path):
        return False
    st = os.stat(path)
    if st.st_size != entry["size"]:
        return False
    if entry.get("mtime_ns") == st.st_mtime_ns:
        return True
    return sha256_file(path) == entry["sha256"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="table or figure name (table5) or the path of any output")
    parser.add_argument("--cell", help="'ROW,COLUMN' of a table, e.g. 'DINO BoC,WTC Task2'")
    parser.add_argument("--verify", action="store_true", help="re-hash the lineage's files")
    parser.add_argument(
        "--results-dir",
        default="results/demo",
        help="workflow results directory (default: the demo's)",
    )


def run(args: argparse.Namespace) -> int:
    return audit(args.target, args.results_dir, args.cell, args.verify)
