"""The paper's printed tables (``resources/paper_tables.yaml``): loading and checking them.

:func:`load_paper_tables` reads the yaml (its schema is in the file) and checks every table:
its kind (:data:`KINDS`), that each row has one value per column (a number, a text in a text
column, or :data:`NOT_APPLICABLE`), that cited rows name their source, and for ``composition``
tables (table 7) that the columns are :data:`COMPOSITION_FIELDS` and each row names one
``summary_source``. Used by ``render-table``, ``render-claims`` and the workflow.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml

from channel_ssl.errors import UserError

KINDS = ("chammi", "columns", "composition")
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
