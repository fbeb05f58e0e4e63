"""The reproduced values of a table's rows, read from score files and corpus summaries.

``chammi``/``columns`` tables: every ``--row LABEL=FILE`` (``FILE@SOURCE`` keeps one probed
source's rows) gives column -> value; the files of one label are merged, a column given by two
files is an error naming both. ``composition`` tables (table 7): the ExtendedCHAMMI summary
JSON. Each value keeps the file that gave it (``audit`` follows it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from channel_ssl.data.extended_chammi import (
    Discard,
    SourceRules,
    discarded_factors_text,
    normalise,
)
from channel_ssl.errors import UserError
from channel_ssl.paper_tables import COMPOSITION_FIELDS

log = logging.getLogger("channel_ssl.render_tables")

# (value, file that gave it); value is a float, an int count, a text, or NOT_APPLICABLE
Reproduced = dict[str, dict[str, tuple[float | int | str, str]]]


def split_selector(score_file: str | os.PathLike) -> tuple[str, str | None]:
    """``path@SOURCE`` -> (path, SOURCE): the rows of a run's score file made on one source."""
    text = str(score_file)
    path, sep, source = text.rpartition("@")
    if sep and source and "/" not in source:
        return path, source
    return text, None


def reproduced_values(kind: str, score_file: str | os.PathLike) -> dict[str, float]:
    """Column -> reproduced value (percent) from one score file (kind ``chammi`` or ``columns``).

    ``path@SOURCE`` keeps the rows whose ``source`` is SOURCE (a run's score file holds the
    probes of every source it was evaluated on, and two may fill the same table column).
    """
    file, source = split_selector(score_file)
    path = Path(file)
    if not path.exists():
        raise FileNotFoundError(f"score file {path} does not exist")
    scores = pd.read_csv(path)
    if source is not None:
        if "source" not in scores.columns:
            raise UserError(f"score file {path} has no 'source' column to select {source!r} from")
        scores = scores[scores["source"] == source]
        if scores.empty:
            raise UserError(f"score file {path} has no rows of source {source!r}")
    if kind == "chammi":
        from channel_ssl.eval.eval_chammi import chammi_summary

        try:
            return chammi_summary(scores)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from exc
    missing = [c for c in ("column", "value") if c not in scores.columns]
    if missing:
        raise UserError(f"score file {path} lacks column(s) {missing}")
    names = scores["column"].astype(str)
    if names.duplicated().any():
        raise UserError(
            f"score file {path} gives column {names[names.duplicated()].iloc[0]!r} more than once"
        )
    values = pd.to_numeric(scores["value"], errors="coerce")
    if values.isna().any():
        bad = names[values.isna()].iloc[0]
        raise UserError(f"score file {path}: column {bad!r} has no numeric value")
    return {c: float(v) for c, v in zip(names, values, strict=True)}


def _reproducible_row(arg: str, label: str, table_name: str, table: dict) -> None:
    by_label = {row["label"]: row for row in table["rows"]}
    if label not in by_label:
        raise UserError(
            f"{arg} {label!r} is not a row of {table_name}; valid labels: {list(by_label)}"
        )
    if by_label[label]["cited"]:
        raise UserError(
            f"{arg} {label!r}: {table_name} cites this row from other work; it is not reproduced"
        )


def parse_row_args(row_args: Iterable[str], table_name: str, table: dict) -> dict[str, list[str]]:
    """``["LABEL=path", ...]`` -> {label: [paths in given order]}; labels must be reproducible rows.

    A label may come several times (one score file per evaluation task), a file only once per label.
    """
    out: dict[str, list[str]] = {}
    for arg in row_args:
        label, sep, path = arg.partition("=")
        label = label.strip()
        if not sep or not path:
            raise UserError(f"--row {arg!r}: expected LABEL=SCORE_FILE")
        _reproducible_row("--row", label, table_name, table)
        if path in out.get(label, []):
            raise UserError(f"--row {label!r}={path} given twice")
        out.setdefault(label, []).append(path)
    return out


def parse_na_args(na_args: Iterable[str], table_name: str, table: dict) -> set[tuple[str, str]]:
    """``["LABEL=COLUMN", ...]`` -> {(label, column)}: cells not applicable in this build."""
    out: set[tuple[str, str]] = set()
    for arg in na_args:
        label, sep, column = arg.partition("=")
        label, column = label.strip(), column.strip()
        if not sep or not column:
            raise UserError(f"--na {arg!r}: expected LABEL=COLUMN")
        _reproducible_row("--na", label, table_name, table)
        if column not in table["columns"]:
            raise UserError(
                f"--na {arg!r}: {column!r} is not a column of {table_name}; "
                f"valid columns: {table['columns']}"
            )
        out.add((label, column))
    return out


def merge_row_files(table_name: str, table: dict, label: str, files: list[str]) -> Reproduced:
    """Column -> (value, file) of one row merged from its score files (one per evaluation task).

    A score file may carry columns of other tables too (one evaluation of a source serves
    every table that uses it); they are skipped. Raises UserError for a file that gives none of
    the table's columns (a misnamed column), a column given by two files (naming both), or a
    CHAMMI score file short of a column.
    """
    merged: dict[str, tuple[float, str]] = {}
    for path in files:
        values = reproduced_values(table["kind"], path)
        if not any(c in table["columns"] for c in values):
            raise UserError(
                f"score file {path} (row {label!r}) gives none of the columns of {table_name} "
                f"(it gives {sorted(values)}); valid columns: {table['columns']}"
            )
        values = {c: v for c, v in values.items() if c in table["columns"]}
        if table["kind"] == "chammi":
            missing = [c for c in table["columns"] if c not in values]
            if missing:
                raise UserError(
                    f"score file {path} gives no value for column(s) {missing} of {table_name}"
                )
        for column, value in values.items():
            if column in merged:
                raise UserError(
                    f"row {label!r} of {table_name}: column {column!r} is given by both "
                    f"{merged[column][1]} and {path}"
                )
            # the cell's source file is a path the audit can follow (no @SOURCE selector)
            merged[column] = (value, split_selector(path)[0])
    return merged


def _ordered_found(entry: dict) -> list[str]:
    """The discarded values found, in the rule's order (the paper's), not alphabetically."""
    order = [normalise(v) for v in entry.get("values", [])]
    rank = {n: i for i, n in enumerate(order)}
    return sorted(entry["found"], key=lambda v: (rank.get(normalise(v), len(order)), v))


def composition_values(summary_file: str | os.PathLike, table_name: str, table: dict) -> Reproduced:
    """Row label -> column -> (value, summary file) from an ExtendedCHAMMI summary JSON.

    Kept/Total/Channels are the numbers assembled, Image type the source's, Discarded factors the
    text of the discarded values actually found (:func:`discarded_factors_text`). Rows whose
    ``summary_source`` is absent from the summary are not reproduced.
    """
    path = Path(summary_file)
    if not path.exists():
        raise FileNotFoundError(f"summary file {path} does not exist")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"summary file {path} is not JSON: {exc}") from exc
    if not isinstance(summary, dict) or summary.get("mode") != "extended_chammi":
        raise UserError(
            f"summary file {path} is not an ExtendedCHAMMI summary (mode "
            f"{summary.get('mode') if isinstance(summary, dict) else None!r}, expected "
            "'extended_chammi'; written by assemble-corpus --extended-chammi)"
        )
    sources = summary.get("sources")
    if not isinstance(sources, dict):
        raise UserError(f"summary file {path} has no 'sources' mapping")
    out: Reproduced = {}
    for row in table["rows"]:
        key = row["summary_source"]
        if key not in sources:
            log.info("%s: %s not in %s; row %r not reproduced", table_name, key, path, row["label"])
            continue
        entry = sources[key]
        needed = [COMPOSITION_FIELDS[c] for c in table["columns"]]
        missing = [f for f in needed if f not in entry]
        if missing:
            raise UserError(f"summary file {path}: source {key!r} lacks key(s) {missing}")
        values: dict[str, tuple[float | int | str, str]] = {}
        for column in table["columns"]:
            field = COMPOSITION_FIELDS[column]
            if field == "discarded":
                try:
                    rules = SourceRules(
                        entry.get("title", key),
                        entry.get("image_type", ""),
                        tuple(
                            Discard(d["factor"], d["name"], tuple(d["values"]))
                            for d in entry["discarded"]
                        ),
                    )
                    found = [{"found": _ordered_found(d)} for d in entry["discarded"]]
                except (KeyError, TypeError) as exc:
                    raise UserError(
                        f"summary file {path}: source {key!r} has a malformed 'discarded' "
                        f"entry (needs factor, name, values, found): {exc!r}"
                    ) from exc
                value: float | int | str = discarded_factors_text(rules, found)
            elif column in table["text_columns"]:
                value = str(entry[field])
            else:
                value = int(entry[field])
            values[column] = (value, str(summary_file))
        out[row["label"]] = values
    return out
