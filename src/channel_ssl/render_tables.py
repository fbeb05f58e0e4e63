"""Render a paper table: reproduced values beside the paper's printed values.

``channel-ssl render-table --table table1 --row "Channel-ViT=hpa.csv" --row "Channel-ViT=jump.csv"
[--row ...] [--na "LABEL=COLUMN" ...] --out-csv T.csv --out-md T.md [--note "DEMO: ..."]``

``channel-ssl render-table --table table7 --summary corpus.summary.json --out-csv T.csv --out-md T.md``

The paper's values come from ``resources/paper_tables.yaml`` (schema in that file). For every
row and column: the reproduced value, the paper's value and the difference (reproduced - paper,
from the rounded values). Percent values have 1 decimal; the counts of ``composition`` tables
are integers; text cells (table 7's image type, discarded factors) have no difference.

Reproduced values:

- ``chammi``/``columns`` tables: ``--row LABEL=FILE``, repeatable, also for one label (one file
  per evaluation task); the files' columns are merged. A column given by two files is an error
  naming both. Every cell's ``source_file`` is the file that gave that column (``audit`` follows
  it). A column no file gives stays "not reproduced".
- ``--na LABEL=COLUMN`` marks a cell not applicable for this build (e.g. Channel-ViT cannot take
  JUMP-CP's 8 channels): reproduced ``x``.
- ``composition`` tables (table 7): ``--summary`` = the ExtendedCHAMMI summary JSON of
  ``channel-ssl assemble-corpus --extended-chammi`` (schema in
  :mod:`channel_ssl.data.extended_chammi`); each row names its ``summary_source``.

Cited rows (numbers the paper copies from other work) show the paper's value only. Outputs:

- CSV, long format: ``table, row, column, reproduced, paper, difference, cited, source_file, note``
  (``reproduced`` is ``''`` when not reproduced, ``x`` when not applicable);
- Markdown: title, the ``--note`` header, a grid with ``repro / paper (diff)`` per cell (``x``
  where the paper prints a cross and nothing is reproduced) and numbered footnotes for the cell
  notes (the paper's inconsistencies).

Output is a pure function of the inputs (no timestamps), so reruns are byte-identical.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from channel_ssl.atomic import write_table, write_text
from channel_ssl.data.extended_chammi import (
    Discard,
    SourceRules,
    discarded_factors_text,
    normalise,
)
from channel_ssl.errors import UserError
from channel_ssl.provenance import StepIO

log = logging.getLogger("channel_ssl.render_tables")

KINDS = ("chammi", "columns", "composition")
CSV_COLUMNS = [
    "table",
    "row",
    "column",
    "reproduced",
    "paper",
    "difference",
    "cited",
    "source_file",
    "note",
]
NOT_APPLICABLE = "x"
# composition column -> summary field (see channel_ssl.data.extended_chammi); the discarded
# factors are worded by discarded_factors_text
COMPOSITION_FIELDS = {
    "Image type": "image_type",
    "Kept": "kept",
    "Total": "total",
    "Channels": "n_channels",
    "Discarded factors": "discarded",
}

# (value, file that gave it); value is a float, an int count, a text, or NOT_APPLICABLE
Reproduced = dict[str, dict[str, tuple[float | int | str, str]]]


def default_tables_path() -> Path:
    return Path(str(resources.files("channel_ssl") / "resources" / "paper_tables.yaml"))


def _check_composition(where: str, table: dict) -> None:
    unknown = [c for c in table["columns"] if c not in COMPOSITION_FIELDS]
    if unknown:
        raise UserError(
            f"{where}: composition column(s) {unknown} not among {list(COMPOSITION_FIELDS)}"
        )
    seen: set[str] = set()
    for row in table["rows"]:
        source = row.get("summary_source")
        if not isinstance(source, str) or not source:
            raise UserError(f"{where}: row {row.get('label')!r} has no summary_source")
        if source in seen:
            raise UserError(f"{where}: summary_source {source!r} is used by two rows")
        seen.add(source)


def _check_values(where: str, table: dict, row: dict) -> None:
    label = row.get("label")
    if len(row.get("values", [])) != len(table["columns"]):
        raise UserError(
            f"{where}: row {label!r} has {len(row.get('values', []))} values for {len(table['columns'])} columns"
        )
    for column, value in zip(table["columns"], row["values"], strict=True):
        if column in table["text_columns"]:
            if not isinstance(value, str):
                raise UserError(
                    f"{where}: row {label!r} column {column!r}: text column value {value!r} is not text"
                )
        elif not (
            (isinstance(value, int | float) and not isinstance(value, bool))
            or value == NOT_APPLICABLE
        ):
            raise UserError(
                f"{where}: row {label!r} value {value!r} is neither a number nor {NOT_APPLICABLE!r}"
            )


def load_paper_tables(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """Read and check the paper-table yaml; returns table name -> table dict (see the yaml's schema)."""
    path = Path(path) if path is not None else default_tables_path()
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    tables = doc.get("tables") if isinstance(doc, dict) else None
    if not isinstance(tables, dict):
        raise UserError(f"{path}: no 'tables' mapping")
    for name, table in tables.items():
        where = f"{path}: table {name}"
        for key in ("title", "kind", "columns", "rows"):
            if key not in table:
                raise UserError(f"{where}: missing key {key!r}")
        if table["kind"] not in KINDS:
            raise UserError(f"{where}: kind {table['kind']!r} not one of {list(KINDS)}")
        table.setdefault("row_attributes", [])
        table.setdefault("notes", [])
        table.setdefault("text_columns", [])
        if table["text_columns"] and table["kind"] != "composition":
            raise UserError(f"{where}: text_columns are only allowed in composition tables")
        bad = sorted(set(table["text_columns"]) - set(table["columns"]))
        if bad:
            raise UserError(f"{where}: text_columns {bad} are not columns")
        if table["kind"] == "composition":
            _check_composition(where, table)
        labels = set()
        for row in table["rows"]:
            label = row.get("label")
            if label in labels:
                raise UserError(f"{where}: row label {label!r} is not unique")
            labels.add(label)
            _check_values(where, table, row)
            row.setdefault("cited", False)
            row.setdefault("attributes", {})
            row.setdefault("notes", {})
            bad = sorted(set(row["notes"]) - set(table["columns"]))
            if bad:
                raise UserError(f"{where}: row {label!r} has notes for unknown column(s) {bad}")
            if row["cited"] and not row.get("source"):
                raise UserError(f"{where}: cited row {label!r} has no source")
    return tables


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


REFERENCE_NOTE = "reference row, not in the paper: scored with the same protocol"


def with_reference_rows(
    table_name: str, table: dict, reference_args: Iterable[str]
) -> tuple[dict, dict[str, list[str]]]:
    """``table`` with a row appended per ``LABEL=score file`` reference argument (no paper
    value, marked as not the paper's), and {label: [score file]}."""
    files: dict[str, list[str]] = {}
    rows = list(table["rows"])
    labels = {row["label"] for row in rows}
    for arg in reference_args:
        label, sep, path = arg.partition("=")
        label = label.strip()
        if not sep or not path:
            raise UserError(f"--reference {arg!r}: expected LABEL=SCORE_FILE")
        if label in labels:
            raise UserError(f"--reference {label!r}: {table_name} already has a row so named")
        if table["kind"] == "composition":
            raise UserError(f"{table_name} is a composition table: --reference does not apply")
        labels.add(label)
        files[label] = [path]
        rows.append(
            {
                "label": label,
                "values": [""] * len(table["columns"]),
                "cited": False,
                "reference": True,
                "notes": {},
                "attributes": {},
            }
        )
    return {**table, "rows": rows}, files


def _fmt(value: float | None, decimals: int = 1) -> str:
    if value is None:
        return ""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def build_cells(
    table_name: str,
    table: dict,
    row_files: Mapping[str, str | list[str]],
    na: Iterable[tuple[str, str]] = (),
    summary: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The long-format table (CSV_COLUMNS), values as strings ('' when absent).

    Args:
        row_files: row label -> score file(s) (``chammi``/``columns`` tables).
        na: (label, column) cells not applicable in this build (reproduced ``x``).
        summary: ExtendedCHAMMI summary JSON (``composition`` tables).
    """
    if table["kind"] == "composition":
        if row_files:
            raise UserError(
                f"{table_name} is a composition table: give --summary SUMMARY.json, not --row"
            )
        if na:
            raise UserError(f"{table_name} is a composition table: --na does not apply")
        reproduced = composition_values(summary, table_name, table) if summary else {}
    else:
        if summary is not None:
            raise UserError(
                f"--summary is for composition tables (table 7); {table_name} takes --row"
            )
        reproduced = {
            label: merge_row_files(
                table_name, table, label, [files] if isinstance(files, str) else list(files)
            )
            for label, files in row_files.items()
        }
    for label, column in sorted(na):
        if column in reproduced.get(label, {}):
            raise UserError(
                f"--na {label}={column}: that cell is also given by score file "
                f"{reproduced[label][column][1]}"
            )
        reproduced.setdefault(label, {})[column] = (NOT_APPLICABLE, "")
    decimals = 0 if table["kind"] == "composition" else 1

    records = []
    for row in table["rows"]:
        label = row["label"]
        given = {} if row["cited"] else reproduced.get(label, {})
        for column, paper in zip(table["columns"], row["values"], strict=True):
            text_column = column in table["text_columns"]
            value, source_file = given.get(column, (None, ""))
            paper_num = (
                None
                if text_column or paper == NOT_APPLICABLE or row.get("reference")
                else float(paper)
            )
            repro_num = None
            if value is None:
                repro_text = ""
            elif value == NOT_APPLICABLE or text_column:
                repro_text = str(value)
            else:
                repro_num = round(float(value), decimals)
                repro_text = _fmt(repro_num, decimals)
            difference = (
                _fmt(round(repro_num - round(paper_num, decimals), decimals), decimals)
                if repro_num is not None and paper_num is not None
                else ""
            )
            records.append(
                {
                    "table": table_name,
                    "row": label,
                    "column": column,
                    "reproduced": repro_text,
                    "paper": str(paper) if paper_num is None else _fmt(paper_num, decimals),
                    "difference": difference,
                    "cited": "true" if row["cited"] else "false",
                    "source_file": row.get("source", "") if row["cited"] else source_file,
                    "note": REFERENCE_NOTE
                    if row.get("reference")
                    else row["notes"].get(column, ""),
                }
            )
    return pd.DataFrame(records, columns=CSV_COLUMNS)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _cell_text(cell: pd.Series, cited: bool, reference: bool = False) -> str:
    """``repro / paper (diff)``; the paper's value alone for cited rows, ours alone for
    reference rows; ``x`` = not applicable."""
    paper, repro = cell["paper"], cell["reproduced"]
    if cited:
        return paper
    if reference:
        return repro or "-"
    if not repro:
        return NOT_APPLICABLE if paper == NOT_APPLICABLE else f"- / {paper}"
    if repro == NOT_APPLICABLE and paper == NOT_APPLICABLE:
        return NOT_APPLICABLE
    diff = cell["difference"]
    diff = f" ({'' if diff.startswith('-') else '+'}{diff})" if diff else ""
    return f"{repro} / {paper}{diff}"


def _sources_lines(table: dict, cells: pd.DataFrame) -> list[str]:
    lines = []
    for row in table["rows"]:
        if row["cited"]:
            lines.append(f"- {row['label']} (cited): {row.get('source', '')}")
            continue
        given = cells[(cells["row"] == row["label"]) & (cells["source_file"] != "")]
        files = list(dict.fromkeys(given["source_file"]))  # in column order
        if len(files) == 1:
            lines.append(f"- {row['label']}: `{files[0]}`")
        elif files:
            parts = [
                f"`{f}` ({', '.join(given.loc[given['source_file'] == f, 'column'])})"
                for f in files
            ]
            lines.append(f"- {row['label']}: " + "; ".join(parts))
    return lines


def render_markdown(
    table_name: str, table: dict, cells: pd.DataFrame, header_note: str | None
) -> str:
    """The Markdown page of one table (deterministic)."""
    lines = [f"# {table_name}: {table['title']}", ""]
    if header_note:
        lines += [f"> {header_note}", ""]
    lines += [
        f"Metric: {table.get('metric', '')}. Cells: reproduced / paper (reproduced - paper); "
        "'-' = not reproduced in this build; 'x' = not applicable; cited rows show the "
        "paper's value only.",
        "",
    ]
    footnotes: list[str] = []
    head = [table.get("label_header", "Model"), *table["row_attributes"], *table["columns"]]
    lines.append("| " + " | ".join(_md_escape(h) for h in head) + " |")
    lines.append(
        "|"
        + "|".join(
            ["---"] * (1 + len(table["row_attributes"]))
            + ["---" if c in table["text_columns"] else "---:" for c in table["columns"]]
        )
        + "|"
    )
    for row in table["rows"]:
        row_cells = cells[cells["row"] == row["label"]].set_index("column")
        label = row["label"] + (" (cited)" if row["cited"] else "")
        out = [_md_escape(label)] + [
            _md_escape(row["attributes"].get(a, "")) for a in table["row_attributes"]
        ]
        for column in table["columns"]:
            cell = row_cells.loc[column]
            text = _cell_text(cell, row["cited"], bool(row.get("reference")))
            if cell["note"] and not row.get("reference"):
                if cell["note"] not in footnotes:
                    footnotes.append(cell["note"])
                text += f" [{footnotes.index(cell['note']) + 1}]"
            out.append(_md_escape(text))
        lines.append("| " + " | ".join(out) + " |")
    lines.append("")
    sources = _sources_lines(table, cells)
    if sources:
        lines += ["Sources:", *sources, ""]
    not_applicable = cells[(cells["cited"] == "false") & (cells["reproduced"] == NOT_APPLICABLE)]
    references = [row["label"] for row in table["rows"] if row.get("reference")]
    if table["notes"] or footnotes or len(not_applicable) or references:
        lines.append("Notes:")
        lines += [f"- {n}" for n in table["notes"]]
        lines += [
            f"- {label}: the network at initialisation, never trained, scored with the same "
            "protocol; it shows what pretraining added."
            for label in references
        ]
        lines += [
            f"- Not applicable in this build: {r.row}, {r.column}."
            for r in not_applicable.itertuples()
        ]
        lines += [f"- [{i + 1}] {n}" for i, n in enumerate(footnotes)]
        lines.append("")
    return "\n".join(lines)


def render_table(
    table_name: str,
    row_files: Iterable[str],
    out_csv: str | os.PathLike,
    out_md: str | os.PathLike,
    note: str | None = None,
    tables_path: str | os.PathLike | None = None,
    na: Iterable[str] = (),
    summary: str | os.PathLike | None = None,
    reference: Iterable[str] = (),
) -> pd.DataFrame:
    """Render ``table_name`` and return its cells.

    Args:
        row_files: ``LABEL=score file`` strings; a label may repeat (one file per task).
        reference: ``LABEL=score file`` strings: rows this project scores that are not the
            paper's (the random-init reference), shown after the paper's rows, without a
            paper value.
        na: ``LABEL=COLUMN`` strings: cells not applicable in this build.
        summary: ExtendedCHAMMI summary JSON, for ``composition`` tables (table 7).
    """
    tables = load_paper_tables(tables_path)
    if table_name not in tables:
        raise UserError(f"unknown table {table_name!r}; known tables: {sorted(tables)}")
    table = tables[table_name]
    files = parse_row_args(row_files, table_name, table)
    na_cells = parse_na_args(na, table_name, table)
    table, reference_files = with_reference_rows(table_name, table, reference)
    files.update(reference_files)
    cells = build_cells(table_name, table, files, na_cells, summary)
    write_table(out_csv, cells)
    write_text(out_md, render_markdown(table_name, table, cells, note))
    n_rows = cells.loc[cells["reproduced"] != "", "row"].nunique()
    log.info("rendered %s (%d reproduced rows) -> %s, %s", table_name, n_rows, out_csv, out_md)
    return cells


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--table", required=True, help="table name in paper_tables.yaml, e.g. table5"
    )
    parser.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="LABEL=SCORES",
        help="a reproduced row and a score file; repeat a label for one file per task",
    )
    parser.add_argument(
        "--na",
        action="append",
        default=[],
        metavar="LABEL=COLUMN",
        help="a cell not applicable in this build (shown 'x'), e.g. Channel ViT=JUMP-CP 8 channels",
    )
    parser.add_argument(
        "--summary",
        help="ExtendedCHAMMI summary JSON (assemble-corpus --extended-chammi), for table 7",
    )
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=SCORES",
        help="a reference row that is not the paper's (e.g. the random-init ViT) and its scores",
    )
    parser.add_argument("--out-csv", required=True, help="long-format table CSV to write")
    parser.add_argument("--out-md", required=True, help="Markdown table to write")
    parser.add_argument(
        "--note", help="header note shown above the table (e.g. 'DEMO numbers ...')"
    )
    parser.add_argument("--tables", help="paper-table yaml (default: the packaged one)")


def run(args: argparse.Namespace) -> int:
    render_table(
        args.table,
        args.row,
        args.out_csv,
        args.out_md,
        note=args.note,
        tables_path=args.tables,
        na=args.na,
        summary=args.summary,
        reference=args.reference,
    )
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    rows = list(args.row) + list(getattr(args, "reference", None) or [])
    files = (split_selector(row.split("=", 1)[1])[0] for row in rows if "=" in row)
    inputs = list(dict.fromkeys(files))
    if getattr(args, "summary", None):
        inputs.append(args.summary)
    return StepIO(inputs=inputs, outputs=[args.out_csv, args.out_md])
