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
import logging
import os
from collections.abc import Iterable, Mapping

import pandas as pd

from channel_ssl.atomic import write_table, write_text
from channel_ssl.errors import UserError
from channel_ssl.paper_tables import (
    NOT_APPLICABLE,
    load_paper_tables,
)
from channel_ssl.provenance import StepIO
from channel_ssl.table_values import (
    composition_values,
    merge_row_files,
    parse_na_args,
    parse_row_args,
    split_selector,
)

log = logging.getLogger("channel_ssl.render_tables")

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
