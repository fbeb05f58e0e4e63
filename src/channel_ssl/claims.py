"""The paper's claims about its own results, checked against its tables and against this build.

``channel-ssl render-claims --table-csv T1.csv [T2.csv ...] --out-csv claims.csv --out-md claims.md
[--claims claims.yaml] [--tables paper_tables.yaml] [--note "DEMO: ..."]``

The claims are data (``resources/claims.yaml``, schema in that file): a sentence, where the
paper makes it, the table cells it rests on as (table, row, column) and a test on them, e.g.
``boc > cvit``, ``max(boc - microsnoop) <= 20`` or ``rounds_to(mean(hpa_tasks), hpa)``. Each
test is evaluated twice:

- on the paper's printed values (``resources/paper_tables.yaml``): every claim gets ``yes`` or
  ``no``; ``no`` means the paper's own numbers contradict the sentence;
- on the reproduced values, read from the rendered table CSVs (``render-table``'s long format):
  ``yes``/``no``, or ``-`` when a cell the claim needs is not reproduced in this build (a table
  whose CSV is not given, an empty cell, ``x``). Cells of rows the paper cites from other work
  keep the paper's value (they are never reproduced).

Tests are parsed, never executed as Python (:mod:`channel_ssl.claim_language`): only numbers,
lists of numbers, the cell names, ``+ - * /``, comparisons, ``and``/``or``/``not`` and its
:data:`~channel_ssl.claim_language.FUNCTIONS` are allowed. A claim naming an unknown table, row or column, a text column, a cell the paper prints
as ``x``, an unknown name or function, or a test that does not give one true/false is an error
naming the claim.

Outputs (pure functions of the inputs, so reruns are byte-identical):

- CSV: ``claim, sentence, quote, where, cells, test, paper_values, paper_holds,
  reproduced_values, reproduced_holds, note``;
- Markdown: a summary grid (claim, where, test, paper, reproduced), the claims contradicted by
  the paper's own numbers, and per claim its cells and values.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from channel_ssl.atomic import write_table, write_text
from channel_ssl.claim_language import (
    FUNCTIONS,
    evaluate_test,
    explain,
    names_in,
    number_text,
    parse_test,
)
from channel_ssl.errors import UserError
from channel_ssl.paper_tables import NOT_APPLICABLE, default_tables_path, load_paper_tables
from channel_ssl.provenance import StepIO
from channel_ssl.render_tables import CSV_COLUMNS as TABLE_CSV_COLUMNS

log = logging.getLogger("channel_ssl.claims")

CSV_COLUMNS = [
    "claim",
    "sentence",
    "quote",
    "where",
    "cells",
    "test",
    "paper_values",
    "paper_holds",
    "reproduced_values",
    "reproduced_holds",
    "note",
]
CLAIM_KEYS = {"id", "sentence", "quote", "where", "cells", "test", "note"}
REQUIRED_KEYS = ("id", "sentence", "where", "cells", "test")
CELL_KEYS = {"table", "row", "rows", "column", "columns"}
HOLDS, FAILS, UNKNOWN = "yes", "no", "-"


def default_claims_path() -> Path:
    return Path(str(resources.files("channel_ssl") / "resources" / "claims.yaml"))


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class CellRef:
    """One name of a claim: a cell, or a vector of cells over ``rows`` x ``columns``."""

    name: str
    table: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    vector: bool

    @property
    def keys(self) -> list[tuple[str, str, str]]:
        return [(self.table, r, c) for r in self.rows for c in self.columns]

    def text(self) -> str:
        rows = f"[{', '.join(self.rows)}]" if len(self.rows) > 1 else self.rows[0]
        cols = f"[{', '.join(self.columns)}]" if len(self.columns) > 1 else self.columns[0]
        if self.vector and len(self.rows) == len(self.columns) == 1:
            cols = f"[{cols}]"
        return f"{self.name} = {self.table} / {rows} / {cols}"


@dataclass(frozen=True)
class Claim:
    id: str
    sentence: str
    where: str
    cells: tuple[CellRef, ...]
    test: str
    tree: ast.Expression
    quote: str = ""
    note: str = ""

    @property
    def tables(self) -> list[str]:
        return list(dict.fromkeys(c.table for c in self.cells))


def _as_list(value, where: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise UserError(f"{where}: {key} must be a name or a non-empty list of names, got {value!r}")


def _cell_ref(where: str, name: str, spec, tables: Mapping[str, dict]) -> CellRef:
    where = f"{where} cell {name!r}"
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected {{table, row, column}}, got {spec!r}")
    unknown = sorted(set(spec) - CELL_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(CELL_KEYS)}")
    if ("row" in spec) == ("rows" in spec) or ("column" in spec) == ("columns" in spec):
        raise UserError(f"{where}: give one of row/rows and one of column/columns")
    if "rows" in spec and "columns" in spec:
        raise UserError(f"{where}: a vector runs over rows or over columns, not both")
    table_name = spec.get("table")
    if table_name not in tables:
        raise UserError(f"{where}: unknown table {table_name!r}; known tables: {list(tables)}")
    table = tables[table_name]
    rows = _as_list(spec.get("row", spec.get("rows")), where, "row")
    columns = _as_list(spec.get("column", spec.get("columns")), where, "column")
    by_label = {row["label"]: row for row in table["rows"]}
    for row in rows:
        if row not in by_label:
            raise UserError(f"{where}: {table_name} has no row {row!r}; rows: {list(by_label)}")
    for column in columns:
        if column not in table["columns"]:
            raise UserError(
                f"{where}: {table_name} has no column {column!r}; columns: {table['columns']}"
            )
        if column in table["text_columns"]:
            raise UserError(f"{where}: {table_name} column {column!r} is text, not a number")
    for row in rows:
        for column in columns:
            value = by_label[row]["values"][table["columns"].index(column)]
            if value == NOT_APPLICABLE:
                raise UserError(
                    f"{where}: {table_name} [{row}, {column}] is {NOT_APPLICABLE!r} (not "
                    "applicable) in the paper; a claim needs a number"
                )
    return CellRef(name, table_name, rows, columns, "rows" in spec or "columns" in spec)


def _claim(where: str, entry, tables: Mapping[str, dict]) -> Claim:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a mapping, got {entry!r}")
    where = f"{where} ({entry.get('id', '?')!r})" if "id" in entry else where
    missing = [k for k in REQUIRED_KEYS if not entry.get(k)]
    if missing:
        raise UserError(f"{where}: missing key(s) {missing}")
    unknown = sorted(set(entry) - CLAIM_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(CLAIM_KEYS)}")
    if not isinstance(entry["cells"], dict):
        raise UserError(f"{where}: cells must be a mapping name -> {{table, row, column}}")
    for name in entry["cells"]:
        if not str(name).isidentifier() or name in FUNCTIONS:
            raise UserError(f"{where}: cell name {name!r} is not a usable name in a test")
    cells = tuple(_cell_ref(where, n, s, tables) for n, s in entry["cells"].items())
    test = str(entry["test"])
    try:
        tree = parse_test(test)
        unused = sorted(set(entry["cells"]) - names_in(tree))
        claim = Claim(
            str(entry["id"]),
            str(entry["sentence"]),
            str(entry["where"]),
            cells,
            test,
            tree,
            str(entry.get("quote") or ""),
            str(entry.get("note") or ""),
        )
        evaluate_test(tree, paper_environment(claim, tables))  # checks names and shapes
    except (ValueError, TypeError) as exc:  # TypeError: a function given the wrong arguments
        raise UserError(f"{where}: test {test!r}: {exc}") from exc
    if unused:
        raise UserError(f"{where}: cell(s) {unused} are not used by the test {test!r}")
    return claim


def load_claims(
    path: str | os.PathLike | None = None, tables: Mapping[str, dict] | None = None
) -> list[Claim]:
    """Read and check the claims yaml against the paper tables (see the yaml's schema)."""
    path = Path(path) if path is not None else default_claims_path()
    tables = load_paper_tables() if tables is None else tables
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    entries = doc.get("claims") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: no 'claims' list")
    claims, seen = [], set()
    for i, entry in enumerate(entries):
        claim = _claim(f"{path}: claim {i + 1}", entry, tables)
        if claim.id in seen:
            raise UserError(f"{path}: claim id {claim.id!r} is not unique")
        seen.add(claim.id)
        claims.append(claim)
    return claims


def claim_tables(path: str | os.PathLike | None = None) -> list[str]:
    """The tables the claims rest on, in paper order (what ``render-claims`` needs rendered)."""
    tables = load_paper_tables()
    used = {t for claim in load_claims(path, tables) for t in claim.tables}
    return [t for t in tables if t in used]


# --------------------------------------------------------------------------- values


def _cell_value(ref: CellRef, values: Mapping[tuple[str, str, str], float | None]):
    found = [values.get(key) for key in ref.keys]
    if any(v is None for v in found):
        return None
    return np.array(found, dtype=float) if ref.vector else float(found[0])


def _environment(claim: Claim, values: Mapping[tuple[str, str, str], float | None]):
    env = {ref.name: _cell_value(ref, values) for ref in claim.cells}
    return None if any(v is None for v in env.values()) else env


def paper_values(tables: Mapping[str, dict]) -> dict[tuple[str, str, str], float | None]:
    """(table, row, column) -> the paper's printed number (None for 'x' and text)."""
    out: dict[tuple[str, str, str], float | None] = {}
    for name, table in tables.items():
        for row in table["rows"]:
            for column, value in zip(table["columns"], row["values"], strict=True):
                numeric = isinstance(value, int | float) and not isinstance(value, bool)
                out[(name, row["label"], column)] = float(value) if numeric else None
    return out


def paper_environment(claim: Claim, tables: Mapping[str, dict]) -> dict[str, object]:
    return _environment(claim, paper_values(tables))


def read_table_csvs(paths: Iterable[str | os.PathLike]) -> dict[str, pd.DataFrame]:
    """Table name -> its rendered long-format CSV (``render-table``'s output)."""
    out: dict[str, pd.DataFrame] = {}
    origin: dict[str, str] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"table CSV {path} does not exist")
        cells = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in TABLE_CSV_COLUMNS if c not in cells.columns]
        if missing:
            raise UserError(f"table CSV {path} lacks column(s) {missing} (not a render-table CSV)")
        names = cells["table"].unique()
        if len(names) != 1:
            raise UserError(f"table CSV {path} holds tables {list(names)}; expected one")
        name = str(names[0])
        if name in out:
            raise UserError(f"table {name} is given twice: {origin[name]} and {path}")
        out[name], origin[name] = cells, str(path)
    return out


def reproduced_values(
    tables: Mapping[str, dict], table_csvs: Mapping[str, pd.DataFrame]
) -> dict[tuple[str, str, str], float | None]:
    """(table, row, column) -> the reproduced number; None when not reproduced in this build.

    Cited rows keep the paper's value; tables without a CSV, empty and 'x' cells are None.
    """
    paper = paper_values(tables)
    out: dict[tuple[str, str, str], float | None] = {}
    for name, table in tables.items():
        cells = table_csvs.get(name)
        by_key = (
            {} if cells is None else {(r.row, r.column): r for r in cells.itertuples(index=False)}
        )
        for row in table["rows"]:
            for column in table["columns"]:
                key = (name, row["label"], column)
                if row["cited"]:
                    out[key] = paper[key]
                    continue
                cell = by_key.get((row["label"], column))
                if cells is not None and cell is None:
                    raise UserError(
                        f"table CSV of {name} has no cell [{row['label']}, {column}]; "
                        "render it again with this paper_tables.yaml"
                    )
                text = "" if cell is None else cell.reproduced
                try:
                    out[key] = float(text) if text not in ("", NOT_APPLICABLE) else None
                except ValueError:
                    out[key] = None  # text cells (table 7's image type) are never claimed
    return out


# --------------------------------------------------------------------------- rendering


def _values_text(claim: Claim, env: Mapping[str, object] | None) -> str:
    if env is None:
        return "not reproduced in this build"
    text = "; ".join(f"{ref.name} = {number_text(env[ref.name])}" for ref in claim.cells)
    comparison = explain(claim.tree, env)
    return f"{text}; {comparison}" if comparison else text


def check_claims(
    claims: Iterable[Claim],
    tables: Mapping[str, dict],
    table_csvs: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The claims table (CSV_COLUMNS): each claim's verdict on the paper's and the reproduced values."""
    paper = paper_values(tables)
    reproduced = reproduced_values(tables, table_csvs or {})
    records = []
    for claim in claims:
        paper_env = _environment(claim, paper)
        repro_env = _environment(claim, reproduced)
        paper_holds = evaluate_test(claim.tree, paper_env)
        repro_holds = None if repro_env is None else evaluate_test(claim.tree, repro_env)
        records.append(
            {
                "claim": claim.id,
                "sentence": claim.sentence,
                "quote": claim.quote,
                "where": claim.where,
                "cells": "; ".join(ref.text() for ref in claim.cells),
                "test": claim.test,
                "paper_values": _values_text(claim, paper_env),
                "paper_holds": HOLDS if paper_holds else FAILS,
                "reproduced_values": _values_text(claim, repro_env),
                "reproduced_holds": UNKNOWN
                if repro_holds is None
                else (HOLDS if repro_holds else FAILS),
                "note": claim.note,
            }
        )
    return pd.DataFrame(records, columns=CSV_COLUMNS)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(checked: pd.DataFrame, header_note: str | None) -> str:
    """The Markdown page of the claims table (deterministic)."""
    lines = ["# Claims: the paper's statements about its results, checked against its tables", ""]
    if header_note:
        lines += [f"> {header_note}", ""]
    lines += [
        "Each claim is a test on table cells. *Paper*: the test on the paper's printed values "
        "(**no** = the paper's own numbers contradict the claim). *Reproduced*: the test on "
        "this build's values (cited rows keep the paper's value; '-' = a cell is not reproduced "
        "in this build). Quoted words are the paper's own; a sentence without them is this "
        "project's statement of what the table is built to show (docs/paper.md records the "
        "paper's results text only in part).",
        "",
    ]
    contradicted = [
        f"`{r.claim}`" + ("" if r.quote else " (not quoted)")
        for r in checked.itertuples(index=False)
        if r.paper_holds == FAILS
    ]
    lines += [
        f"{len(checked)} claims; {len(contradicted)} contradicted by the paper's own numbers"
        + (": " + ", ".join(contradicted) if contradicted else "")
        + ".",
        "",
        "| # | claim | where | test | paper | reproduced |",
        "|---:|---|---|---|---|---|",
    ]
    for i, r in enumerate(checked.itertuples(index=False), start=1):
        if r.quote and r.quote == r.sentence:
            sentence = f'"{r.sentence}"'
        else:
            sentence = r.sentence + (f' ("{r.quote}")' if r.quote else "")
        paper = "**no**" if r.paper_holds == FAILS else r.paper_holds
        lines.append(
            f"| {i} | {_md(sentence)} | {_md(r.where)} | `{_md(r.test)}` | {paper} "
            f"| {r.reproduced_holds} |"
        )
    lines += ["", "## Cells and values", ""]
    for i, r in enumerate(checked.itertuples(index=False), start=1):
        lines += [
            f"- **{i}. `{r.claim}`**: {_md(r.sentence)}",
            f"  - cells: {_md(r.cells)}",
            f"  - paper: {_md(r.paper_values)} -> **{r.paper_holds}**",
            f"  - reproduced: {_md(r.reproduced_values)} -> **{r.reproduced_holds}**",
        ]
        if r.note:
            lines.append(f"  - note: {_md(r.note)}")
    lines.append("")
    return "\n".join(lines)


def render_claims(
    table_csvs: Iterable[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_md: str | os.PathLike,
    note: str | None = None,
    claims_path: str | os.PathLike | None = None,
    tables_path: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Check every claim on the paper's and the reproduced values; write CSV + Markdown."""
    tables = load_paper_tables(tables_path)
    claims = load_claims(claims_path, tables)
    given = read_table_csvs(table_csvs)
    unknown = sorted(set(given) - set(tables))
    if unknown:
        raise UserError(f"table CSV(s) of unknown table(s) {unknown}; known: {list(tables)}")
    absent = [t for t in dict.fromkeys(t for c in claims for t in c.tables) if t not in given]
    if absent:
        log.warning("no rendered CSV of %s: claims on them are not checked on reproduced values",
                    ", ".join(absent))  # fmt: skip
    checked = check_claims(claims, tables, given)
    write_table(out_csv, checked)
    write_text(out_md, render_markdown(checked, note))
    log.info(
        "checked %d claims (%d contradicted by the paper's values, %d checked on reproduced "
        "values) -> %s, %s",
        len(checked),
        int((checked["paper_holds"] == FAILS).sum()),
        int((checked["reproduced_holds"] != UNKNOWN).sum()),
        out_csv,
        out_md,
    )
    return checked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--table-csv",
        action="extend",
        nargs="+",
        default=[],
        metavar="CSV",
        help="rendered table CSV(s) (render-table) giving the reproduced values",
    )
    parser.add_argument("--out-csv", required=True, help="claims CSV to write")
    parser.add_argument("--out-md", required=True, help="claims Markdown to write")
    parser.add_argument("--note", help="header note shown above the claims (e.g. 'DEMO ...')")
    parser.add_argument("--claims", help="claims yaml (default: the packaged one)")
    parser.add_argument("--tables", help="paper-table yaml (default: the packaged one)")


def run(args: argparse.Namespace) -> int:
    render_claims(
        args.table_csv,
        args.out_csv,
        args.out_md,
        note=args.note,
        claims_path=args.claims,
        tables_path=args.tables,
    )
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    inputs = list(dict.fromkeys(args.table_csv))
    inputs += [str(args.claims or default_claims_path()), str(args.tables or default_tables_path())]
    return StepIO(inputs=inputs, outputs=[args.out_csv, args.out_md])
