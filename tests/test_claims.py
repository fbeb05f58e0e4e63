"""render-claims: the paper's claims checked on its printed values and on rendered tables."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from channel_ssl.claims import (
    CSV_COLUMNS,
    check_claims,
    claim_tables,
    load_claims,
    render_claims,
)
from channel_ssl.cli import main as cli_main
from channel_ssl.errors import UserError
from channel_ssl.render_tables import CSV_COLUMNS as TABLE_COLUMNS
from channel_ssl.render_tables import load_paper_tables, render_table

# claims the paper's own printed numbers contradict (docs/paper.md section 6)
CONTRADICTED = {
    "t2-rare-gain-up-to-20",  # "up to 20 points": Budtip gains +30.0
    "t5-boc-aggregates",  # HPA printed 43.0, its task scores give 44.45
    "t6-boc-surpasses-channel-vit-on-hpa",  # "BoC surpasses Channel-ViT on HPA": 74.9 vs 76.7
    "t9-minus-opencell-printed-deltas",  # printed -0.2, 60.9 - 61.7 = -0.8
    "t10-channel-vit-same-as-table1",  # 39.5 vs 39.4
}


@pytest.fixture(scope="module")
def tables():
    return load_paper_tables()


def _paper_as_reproduced(tmp_path, tables, change=None) -> list[str]:
    """Rendered-table CSVs of every table whose reproduced values are the paper's; ``change``
    maps (table, row, column) to another reproduced text."""
    change = change or {}
    paths = []
    for name, table in tables.items():
        records = []
        for row in table["rows"]:
            for column, value in zip(table["columns"], row["values"], strict=True):
                text = "" if row["cited"] else str(value)
                if isinstance(value, float) and not row["cited"]:
                    text = f"{value:.1f}"
                text = change.get((name, row["label"], column), text)
                records.append(
                    {"table": name, "row": row["label"], "column": column, "reproduced": text}
                )
        cells = pd.DataFrame(records).reindex(columns=TABLE_COLUMNS, fill_value="")
        path = tmp_path / f"{name}.csv"
        cells.to_csv(path, index=False)
        paths.append(str(path))
    return paths


def test_every_claim_has_a_verdict_on_the_paper_values(tables):
    claims = load_claims(None, tables)
    assert len(claims) >= 10
    assert claim_tables() == [f"table{i}" for i in range(1, 13)]  # claims on tables 1-12
    checked = check_claims(claims, tables)
    assert list(checked.columns) == CSV_COLUMNS
    assert checked["claim"].is_unique
    assert set(checked["paper_holds"]) <= {"yes", "no"}
    assert (checked["reproduced_holds"] == "-").all()  # nothing rendered: nothing reproduced
    verdict = dict(zip(checked["claim"], checked["paper_holds"], strict=True))
    assert {c for c, v in verdict.items() if v == "no"} >= CONTRADICTED
    # the paper's own check of its aggregates (docs/paper.md section 4) holds for table 4
    assert verdict["t4-boc-aggregates"] == "yes"
    assert verdict["t11-boc-beats-state-of-the-art-all-channels"] == "yes"
    rare = checked.set_index("claim").loc["t2-rare-gain-up-to-20"]
    assert rare["quote"] == "up to 20 points"
    assert rare["paper_values"].endswith("30.0 <= 20.0")  # the largest printed gain: Budtip


def test_reproduced_values_equal_to_the_paper_give_the_paper_verdicts(tmp_path, tables):
    out_csv, out_md = tmp_path / "claims.csv", tmp_path / "claims.md"
    checked = render_claims(_paper_as_reproduced(tmp_path, tables), out_csv, out_md)
    assert (checked["reproduced_holds"] == checked["paper_holds"]).all()
    assert pd.read_csv(out_csv, dtype=str, keep_default_na=False).equals(checked)
    md = out_md.read_text()
    assert f"{len(checked)} claims; {(checked['paper_holds'] == 'no').sum()} contradicted" in md
    summary = next(line for line in md.splitlines() if "contradicted by the paper's" in line)
    assert all(f"`{c}`" in summary for c in CONTRADICTED)
    # reruns are byte-identical
    first = out_md.read_bytes(), out_csv.read_bytes()
    render_claims(_paper_as_reproduced(tmp_path, tables), out_csv, out_md)
    assert (out_md.read_bytes(), out_csv.read_bytes()) == first


def test_reproduced_verdicts_follow_the_reproduced_cells(tmp_path, tables):
    hpa = ("table6", "DINO BoC (Ours)", "HPA")
    paths = _paper_as_reproduced(
        tmp_path,
        tables,
        {hpa: "80.0", ("table8", "DINO Channel-ViT (HCS)", "Mean"): ""},  # '' = not reproduced
    )
    paths = [p for p in paths if not p.endswith("table3.csv")]  # table 3 not rendered
    checked = render_claims(paths, tmp_path / "c.csv", tmp_path / "c.md").set_index("claim")
    claim = checked.loc["t6-boc-surpasses-channel-vit-on-hpa"]
    assert (claim["paper_holds"], claim["reproduced_holds"]) == ("no", "yes")
    assert "boc = 80.0" in claim["reproduced_values"]
    assert checked.loc["t8-hcs-does-not-help-channel-vit", "reproduced_holds"] == "-"
    assert checked.loc["t3-boc-generalises-best", "reproduced_holds"] == "-"
    assert checked.loc["t3-boc-generalises-best", "reproduced_values"] == (
        "not reproduced in this build"
    )


def test_claims_read_render_table_output_and_cited_rows_keep_the_paper_value(tmp_path):
    """Table 2 rendered by render-table: Microsnoop is cited (never reproduced)."""
    scores = tmp_path / "cyclops.csv"
    names = ["Budtip 1.5 %", "Cell periphery 1.9%", "Budneck 2.4%", "Actin 3.8%", "All"]
    values = [45.0, 97.0, 60.0, 50.0, 80.0]  # gains 12.9, 0.6, 16.6, 2.0 over Microsnoop
    pd.DataFrame({"column": names, "value": values}).to_csv(scores, index=False)
    table2 = tmp_path / "table2.csv"
    render_table("table2", [f"DINO BoC={scores}"], table2, tmp_path / "table2.md")
    checked = render_claims([table2], tmp_path / "c.csv", tmp_path / "c.md").set_index("claim")
    rare = checked.loc["t2-rare-gain-up-to-20"]
    assert (rare["paper_holds"], rare["reproduced_holds"]) == ("no", "yes")
    assert "microsnoop = [32.1, 96.4, 43.4, 48.0]" in rare["reproduced_values"]
    assert checked.loc["t2-boc-beats-microsnoop", "reproduced_holds"] == "yes"
    assert (checked.drop(index=["t2-rare-gain-up-to-20", "t2-boc-beats-microsnoop"])[
        "reproduced_holds"
    ] == "-").all()  # fmt: skip


def _claims_file(tmp_path, **changes):
    entry = {
        "id": "bad-claim",
        "sentence": "BoC beats Channel-ViT on HPA.",
        "where": "table 6",
        "cells": {
            "boc": {"table": "table6", "row": "DINO BoC (Ours)", "column": "HPA"},
            "cvit": {"table": "table6", "row": "DINO Channel-ViT", "column": "HPA"},
        },
        "test": "boc > cvit",
    }
    cells = changes.pop("cells", {})
    entry["cells"]["boc"].update(cells)
    entry.update(changes)
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [entry]}))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cells": {"table": "table13"}}, r"cell 'boc': unknown table 'table13'"),
        ({"cells": {"row": "DINO BoCC"}}, r"cell 'boc': table6 has no row 'DINO BoCC'"),
        ({"cells": {"column": "HPA Task9"}}, r"cell 'boc': table6 has no column 'HPA Task9'"),
        (
            {
                "cells": {
                    "table": "table1",
                    "row": "CellDINOv2 (JUMP-CP)",
                    "column": "WTC F1 Cell cycle st.",
                }
            },
            r"is 'x' \(not applicable\) in the paper",
        ),
        (
            {"cells": {"table": "table7", "row": "WTC", "column": "Image type"}},
            r"column 'Image type' is text",
        ),
        ({"test": "boc > hyper"}, r"unknown name 'hyper'"),
        ({"test": "boc > cvit + 1 and cvit"}, r"not one true/false"),
        ({"test": "__import__('os').getcwd() and boc > cvit"}, r"unknown function"),
        ({"test": "boc.real > cvit"}, r"is not allowed in a claim test"),
        ({"test": "boc >"}, r"is not an expression"),
        ({"test": "boc > 3"}, r"cell\(s\) \['cvit'\] are not used"),
        ({"tset": "boc > cvit"}, r"unknown key\(s\) \['tset'\]"),
    ],
)
def test_a_bad_claim_is_an_error_naming_it(tmp_path, tables, changes, message):
    path = _claims_file(tmp_path, **changes)
    with pytest.raises(UserError, match=message) as err:
        load_claims(path, tables)
    assert "'bad-claim'" in str(err.value)


def test_vector_tests_need_all_or_any(tmp_path, tables):
    path = _claims_file(tmp_path)
    doc = yaml.safe_load(path.read_text())
    boc = doc["claims"][0]["cells"]["boc"]
    del boc["column"]
    boc["columns"] = ["HPA", "CP"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"wrap comparisons of vectors in all\(...\)"):
        load_claims(path, tables)
    doc["claims"][0]["test"] = "all(boc > cvit)"
    path.write_text(yaml.safe_dump(doc))
    (claim,) = load_claims(path, tables)
    # BoC [HPA 74.9, CP 39.7] vs Channel-ViT's HPA 76.7, element by element
    assert check_claims([claim], tables)["paper_holds"].item() == "no"


def test_cli_writes_claims_with_provenance_and_names_a_bad_claims_file(tmp_path, tables, capsys):
    out_csv, out_md = tmp_path / "claims.csv", tmp_path / "claims.md"
    argv = ["render-claims", "--table-csv", *_paper_as_reproduced(tmp_path, tables)]
    assert cli_main([*argv, "--out-csv", str(out_csv), "--out-md", str(out_md)]) == 0
    record = json.loads((tmp_path / "claims.csv.prov.json").read_text())
    inputs = [entry["path"] for entry in record["inputs"]]
    assert str(tmp_path / "table6.csv") in inputs
    assert any(p.endswith("claims.yaml") for p in inputs)
    assert [o["path"] for o in record["outputs"]] == [str(out_csv), str(out_md)]
    (tmp_path / "bad").mkdir()
    bad = _claims_file(tmp_path / "bad", cells={"row": "Nope"})
    code = cli_main(
        [*argv, "--claims", str(bad), "--out-csv", str(out_csv), "--out-md", str(out_md)]
    )
    assert code == 2
    assert "table6 has no row 'Nope'" in capsys.readouterr().err


def test_a_table_csv_given_twice_is_an_error(tmp_path, tables):
    paths = _paper_as_reproduced(tmp_path, tables)
    with pytest.raises(UserError, match=r"table table6 is given twice"):
        render_claims([*paths, paths[5]], tmp_path / "c.csv", tmp_path / "c.md")
