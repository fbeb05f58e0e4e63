"""render-table: paper values as printed, rendered cells, cited rows, flags, determinism, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from channel_ssl.cli import main as cli_main
from channel_ssl.errors import UserError
from channel_ssl.render_tables import load_paper_tables, render_table

# task F1 (fractions) of a made-up reproduction
TASKS = {
    ("Allen", "Task_one"): 0.80,
    ("Allen", "Task_two"): 0.70,
    ("HPA", "Task_one"): 0.90,
    ("HPA", "Task_two"): 0.60,
    ("HPA", "Task_three"): 0.30,
    ("CP", "Task_one"): 0.95,
    ("CP", "Task_two"): 0.60,
    ("CP", "Task_three"): 0.20,
    ("CP", "Task_four"): 0.10,
}


@pytest.fixture
def scores_csv(tmp_path):
    path = tmp_path / "scores.csv"
    rows = [
        {"dataset": d, "task": t, "classifier": "knn", "accuracy": 0.5, "f1_score_macro": v}
        for (d, t), v in TASKS.items()
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _row(tables, table, label):
    row = next(r for r in tables[table]["rows"] if r["label"] == label)
    return dict(zip(tables[table]["columns"], row["values"], strict=True)), row


def test_yaml_matches_printed_numbers():
    tables = load_paper_tables()
    boc4, _ = _row(tables, "table4", "DINO BoC (Ours)")
    assert (boc4["Mean"], boc4["HPA"], boc4["HPA Task2"], boc4["CP Task4"]) == (
        48.8,
        43.3,
        56.4,
        16.3,
    )
    boc5, _ = _row(tables, "table5", "DINO BoC (Ours)")
    assert (boc5["Mean"], boc5["HPA"], boc5["HPA Task2"], boc5["HPA Task3"]) == (
        51.6,
        43.0,
        59.3,
        29.6,
    )
    ha6, _ = _row(tables, "table6", "DINO HA (Ours)")
    assert ha6["Mean"] == 62.7 and ha6["CP Task3"] == 27.5
    hcs, row = _row(tables, "table8", "DINO Channel-ViT (HCS)")
    assert hcs["Mean"] == 39.9 and row["attributes"]["HCS"] == "yes"
    boc_d, row = _row(tables, "table12", "DINO BoC (D)")
    assert boc_d["WTC"] == 86.7 and row["attributes"]["Feature dimension"] == "D"
    boc_kd, _ = _row(tables, "table12", "DINO BoC (KD)")
    assert boc_kd == _row(tables, "table6", "DINO BoC (Ours)")[0]
    # cited rows: the CHAMMI supervised baselines, HyperNet in tables 4, 5, 6
    cited4 = [r["label"] for r in tables["table4"]["rows"] if r["cited"]]
    assert cited4 == [
        "FixedChannels",
        "Depthwise",
        "TargetParam",
        "SliceParam",
        "HyperNet",
        "Template mixing",
    ]
    for t in ("table5", "table6"):
        assert [r["label"] for r in tables[t]["rows"] if r["cited"]] == ["HyperNet"]
    assert "not stated" in _row(tables, "table6", "HyperNet")[1]["source"]


def test_rendered_cell_cited_rows_and_flag(tmp_path, scores_csv):
    out_csv, out_md = tmp_path / "t5.csv", tmp_path / "t5.md"
    cells = render_table(
        "table5", [f"DINO BoC (Ours)={scores_csv}"], out_csv, out_md, note="DEMO: toy numbers"
    )
    written = pd.read_csv(out_csv, dtype=str, keep_default_na=False)
    assert list(written.columns) == [
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
    pd.testing.assert_frame_equal(written, cells)
    cell = written[(written.row == "DINO BoC (Ours)") & (written.column == "HPA")].iloc[0]
    # HPA = mean(60, 30) = 45.0; paper 43.0
    assert (cell.reproduced, cell.paper, cell.difference, cell.cited) == (
        "45.0",
        "43.0",
        "2.0",
        "false",
    )
    assert "44.45" in cell.note
    mean = written[(written.row == "DINO BoC (Ours)") & (written.column == "Mean")].iloc[0]
    # Mean = (70 + 45 + 30) / 3 = 48.33 -> 48.3; paper 51.6
    assert (mean.reproduced, mean.difference) == ("48.3", "-3.3")
    hyper = written[written.row == "HyperNet"]
    assert (
        (hyper.reproduced == "").all()
        and (hyper.cited == "true").all()
        and hyper.source_file.str.contains("CHAMMI").all()
    )
    cvit = written[written.row == "DINO Channel-ViT"]
    assert (cvit.reproduced == "").all() and (cvit.paper != "").all()

    md = out_md.read_text()
    assert md.splitlines()[2] == "> DEMO: toy numbers"
    boc_line = next(line for line in md.splitlines() if line.startswith("| DINO BoC (Ours)"))
    assert "| 45.0 / 43.0 (+2.0) [2] |" in boc_line
    assert "| 48.3 / 51.6 (-3.3) [1] |" in boc_line
    assert "| HyperNet (cited) | 53.7 | 66.1 |" in md
    assert "- [2] Printed 43.0, but this row's own task scores give (59.3 + 29.6) / 2 = 44.45" in md


def test_reference_row_is_ours_alone_and_marked_not_the_papers(tmp_path, scores_csv):
    from channel_ssl import registry

    label = registry.table("table5").reference.label
    assert label == registry.RANDOM_INIT_LABEL and "not in the paper" in label
    out_csv, out_md = tmp_path / "t5.csv", tmp_path / "t5.md"
    cells = render_table(
        "table5",
        [f"DINO BoC (Ours)={scores_csv}"],
        out_csv,
        out_md,
        reference=[f"{label}={scores_csv}"],
    )
    ref = cells[cells.row == label]
    assert len(ref) == len(cells[cells.row == "DINO BoC (Ours)"])
    assert (ref.paper == "").all() and (ref.difference == "").all() and (ref.cited == "false").all()
    assert ref.set_index("column").loc["HPA", "reproduced"] == "45.0"
    assert ref.note.str.startswith("reference row, not in the paper").all()
    md = out_md.read_text().splitlines()
    line = next(x for x in md if x.startswith(f"| {label}"))
    assert "| 45.0 |" in line and "/" not in line.split("|", 2)[2]
    # after the paper's rows, and explained in the notes
    assert md.index(line) > md.index(next(x for x in md if x.startswith("| DINO BoC (Ours)")))
    assert any(x.startswith(f"- {label}: the network at initialisation") for x in md)
    with pytest.raises(UserError, match="already has a row"):
        render_table("table5", [], out_csv, out_md, reference=[f"DINO BoC (Ours)={scores_csv}"])


def test_every_chammi_table_has_the_random_init_reference_declared_once():
    from channel_ssl import registry

    with_reference = [n for n, t in registry.TABLES.items() if t.reference]
    assert with_reference == ["table4", "table5", "table6", "table8", "table12"]
    assert {registry.TABLES[n].reference.run for n in with_reference} == set(
        registry.REFERENCE_RUNS
    )
    assert all(r.random_init for r in registry.REFERENCE_RUNS.values())


def test_byte_identical_rerun(tmp_path, scores_csv):
    outs = []
    for i in range(2):
        csv, md = tmp_path / f"a{i}.csv", tmp_path / f"a{i}.md"
        argv = ["render-table", "--table", "table12", "--row", f"DINO BoC (D)={scores_csv}"]
        assert cli_main(argv + ["--out-csv", str(csv), "--out-md", str(md), "--note", "DEMO"]) == 0
        outs.append((csv.read_bytes(), md.read_bytes()))
    assert outs[0] == outs[1]
    assert b"Printed with feature dimension KD" in outs[0][1]


def test_unknown_row_lists_valid_labels(tmp_path, scores_csv, capsys):
    argv = ["render-table", "--table", "table6", "--row", f"DINO BoC={scores_csv}"]
    assert (
        cli_main(argv + ["--out-csv", str(tmp_path / "x.csv"), "--out-md", str(tmp_path / "x.md")])
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "'DINO BoC' is not a row of table6" in err
        and "'DINO BoC (Ours)'" in err
        and "'DINO HA (Ours)'" in err
    )
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(UserError, match="cites this row"):
        render_table("table6", [f"HyperNet={scores_csv}"], tmp_path / "y.csv", tmp_path / "y.md")


def test_incomplete_score_file_rejected(tmp_path, scores_csv):
    partial = tmp_path / "partial.csv"
    pd.read_csv(scores_csv).iloc[:-1].to_csv(partial, index=False)
    with pytest.raises(UserError, match="partial.csv.*CP task Task_four"):
        render_table(
            "table4", [f"DINO BoC (Ours)={partial}"], tmp_path / "z.csv", tmp_path / "z.md"
        )


# ----------------------------------------------------------------- tables 1-3, 7, 9-11 (as printed)

PROBE_COLUMNS = [
    "HPA-FOV F1 Protein loc.",
    "HPA-FOV F1 Cell type",
    "JUMP-CP Accuracy",
    "WTC F1 Cell cycle st.",
]


def test_table1_values_attributes_and_printed_deltas():
    tables = load_paper_tables()
    t1 = tables["table1"]
    assert t1["columns"] == PROBE_COLUMNS and t1["kind"] == "columns"
    assert [r["label"] for r in t1["rows"]] == [
        "CellDINOv2 (HPA-FOV)",
        "CellDINOv2 (JUMP-CP)",
        "CellDINOv1 (WTC)",
        "Channel-ViT",
        "BoC MAE ViT-L",
        "BoC DINOv2 ViT-S",
        "BoC DINOv2 ViT-L",
    ]
    assert not any(r["cited"] for r in t1["rows"])  # CellDINO baselines are reproduced
    hpa, _ = _row(tables, "table1", "CellDINOv2 (HPA-FOV)")
    assert list(hpa.values()) == [65.0, 89.3, "x", "x"]
    _, boc_s = _row(tables, "table1", "BoC DINOv2 ViT-S")
    assert boc_s["attributes"] == {
        "SSL method": "DINOv2",
        "Network size": "ViT-S",
        "Channel invariant": "✓",
        "Training set": "ExtendedCHAMMI",
    }
    # the superscripts as printed, checked against main value - CellDINO baseline of the column
    baseline = [65.0, 89.3, 44.3, 82.3]
    printed_deltas = {
        "Channel-ViT": [-7.6, 1.1, -4.9, 4.9],
        "BoC MAE ViT-L": [-11.0, 1.5, -5.0, 7.1],
        "BoC DINOv2 ViT-S": [-9.4, 1.4, 0.2, 8.7],
        "BoC DINOv2 ViT-L": [-3.3, 1.8, 0.9, 8.2],
    }
    for label, deltas in printed_deltas.items():
        values = list(_row(tables, "table1", label)[0].values())
        assert [round(v - b, 1) for v, b in zip(values, baseline, strict=True)] == deltas
    assert any("superscript" in n for n in t1["notes"])
    cvit, row = _row(tables, "table1", "Channel-ViT")
    assert cvit["JUMP-CP Accuracy"] == 39.4 and "39.5" in row["notes"]["JUMP-CP Accuracy"]


def test_tables_2_3_9_10_11_as_printed():
    tables = load_paper_tables()
    t2 = tables["table2"]
    assert t2["columns"] == [
        "Budtip 1.5 %",
        "Cell periphery 1.9%",
        "Budneck 2.4%",
        "Actin 3.8%",
        "All",
    ]
    micro, row = _row(tables, "table2", "Microsnoop")
    assert row["cited"] and "Xun et al. (2024)" in row["source"]
    assert list(micro.values()) == [32.1, 96.4, 43.4, 48.0, 75.9]
    assert list(_row(tables, "table2", "DINO BoC")[0].values()) == [62.1, 97.5, 72.6, 63.7, 83.1]

    t3 = tables["table3"]
    assert t3["columns"] == PROBE_COLUMNS and t3["row_attributes"] == ["Training set"]
    assert [r["label"] for r in t3["rows"]] == [
        "DINO Channel-ViT (HPA-FOV)",
        "DINO HA (HPA-FOV)",
        "DINO BoC (HPA-FOV)",
        "DINO Channel-ViT (JUMP-CP)",
        "DINO HA (JUMP-CP)",
        "DINO BoC (JUMP-CP)",
    ]
    boc_jump, row = _row(tables, "table3", "DINO BoC (JUMP-CP)")
    assert list(boc_jump.values()) == [31.6, 85.0, 41.3, 90.5]
    assert row["attributes"] == {"Training set": "JUMP-CP"}
    assert any("gray" in n for n in t3["notes"])

    # table 9: every printed delta equals value - ExtendedCHAMMI, except the flagged one
    assert tables["table9"]["columns"] == PROBE_COLUMNS
    full = list(_row(tables, "table9", "ExtendedCHAMMI")[0].values())
    assert full == list(_row(tables, "table1", "BoC DINOv2 ViT-L")[0].values())
    printed = {
        "minus WTC": [-1.3, 0.0, -1.5, 0.4],
        "minus Cell painting": [-1.5, 0.0, -1.1, -0.7],
        "minus HPA (FOV, single cell)": [-20.0, -1.2, 1.7, 1.8],
        "minus OpenCell": [-0.2, -0.1, -1.0, -0.5],
    }
    mismatches = []
    for label, deltas in printed.items():
        values, row = _row(tables, "table9", label)
        for column, v, f, d in zip(PROBE_COLUMNS, values.values(), full, deltas, strict=True):
            if round(v - f, 1) != d:
                mismatches.append((label, column))
                assert "-0.8" in row["notes"][column]
    assert mismatches == [("minus OpenCell", "HPA-FOV F1 Protein loc.")]
    assert any("Accuracy on JUMP-CP" in n for n in tables["table9"]["notes"])

    cvit10, row = _row(tables, "table10", "Channel ViT")
    assert list(cvit10.values()) == [39.5, "x"] and "39.4" in row["notes"]["JUMP-CP 5 channels"]
    assert _row(tables, "table10", "DINO BoC")[0] == {
        "JUMP-CP 5 channels": 45.2,
        "JUMP-CP 8 channels": 51.6,
    }

    t11 = tables["table11"]
    assert t11["columns"] == ["mAP"]
    assert t11["row_attributes"] == [
        "Approach",
        "Architecture",
        "Test dataset",
        "Pre-training dataset",
    ]
    cited = [r["label"] for r in t11["rows"] if r["cited"]]
    assert cited == [
        "Meter-ML (NAIP, S2, S1)",
        "LHRS-bot",
        "VHM",
        "Meter-ML (NAIP)",
        "Supervised ViT-L (fMoW Sentinel)",
        "SatMAE",
        "ScaleMAE",
        "USatMAE",
    ]
    ours = {r["label"]: r["values"][0] for r in t11["rows"] if not r["cited"]}
    assert ours == {
        "DINO BoC (NAIP+S1+S2 test, NAIP+S1+S2 pretraining)": 76.6,
        "DINO BoC (NAIP test, NAIP+S1+S2 pretraining)": 76.5,
        "DINO BoC (NAIP test, NAIP+S2 pretraining)": 81.9,
        "DINO BoC (NAIP test, NAIP pretraining)": 82.2,
    }
    assert any("AUROC" in n for n in t11["notes"])


def test_table7_matches_extended_chammi_rules():
    from channel_ssl.data.extended_chammi import RULES

    tables = load_paper_tables()
    t7 = tables["table7"]
    assert t7["kind"] == "composition"
    assert t7["columns"] == ["Image type", "Kept", "Total", "Channels", "Discarded factors"]
    kept_sum = 0
    for row in t7["rows"]:
        values = dict(zip(t7["columns"], row["values"], strict=True))
        rules = RULES[row["summary_source"]]
        # two independent transcriptions of table 7 agree
        assert (values["Kept"], values["Total"]) == rules.paper
        assert values["Image type"] == rules.image_type
        kept_sum += values["Kept"]
    assert kept_sum == 7_748_662
    opencell = dict(zip(t7["columns"], t7["rows"][2]["values"], strict=True))
    assert opencell["Discarded factors"] == "None" and opencell["Channels"] == 2


def test_bad_composition_yaml_rejected(tmp_path):
    doc = {
        "tables": {
            "t": {
                "title": "T",
                "kind": "composition",
                "columns": ["Kept", "Image type"],
                "text_columns": ["Image type"],
                "rows": [{"label": "A", "summary_source": "wtc", "values": [3, 4]}],
            }
        }
    }
    import yaml

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match="row 'A' column 'Image type': text column value 4"):
        load_paper_tables(path)
    doc["tables"]["t"]["rows"][0]["values"] = ["3", "One cell"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match="value '3' is neither a number"):
        load_paper_tables(path)
    doc["tables"]["t"]["kind"] = "columns"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match="text_columns are only allowed in composition"):
        load_paper_tables(path)


# ------------------------------------------------------------------ rows merged from task files


def _columns_csv(path, values: dict[str, float]):
    pd.DataFrame(
        {"column": list(values), "value": list(values.values()), "metric": "macro_f1"}
    ).to_csv(path, index=False)
    return path


def _cells(df, row):
    return df[df.row == row].set_index("column")


def test_row_merged_from_task_files(tmp_path):
    hpa = _columns_csv(
        tmp_path / "hpa.csv", {"HPA-FOV F1 Protein loc.": 60.04, "HPA-FOV F1 Cell type": 92.0}
    )
    jump = _columns_csv(tmp_path / "jump.csv", {"JUMP-CP Accuracy": 40.0})
    base = _columns_csv(tmp_path / "base.csv", {"HPA-FOV F1 Protein loc.": 66.0})
    out_csv, out_md = tmp_path / "t1.csv", tmp_path / "t1.md"
    cells = render_table(
        "table1",
        [f"BoC DINOv2 ViT-L={hpa}", f"BoC DINOv2 ViT-L={jump}", f"CellDINOv2 (HPA-FOV)={base}"],
        out_csv,
        out_md,
    )
    pd.testing.assert_frame_equal(pd.read_csv(out_csv, dtype=str, keep_default_na=False), cells)
    boc = _cells(cells, "BoC DINOv2 ViT-L")
    assert list(boc.reproduced) == ["60.0", "92.0", "40.0", ""]
    assert list(boc.difference) == ["-1.7", "0.9", "-5.2", ""]
    # each cell points at the file that gave THAT column; the missing column at none
    assert list(boc.source_file) == [str(hpa), str(hpa), str(jump), ""]
    celldino = _cells(cells, "CellDINOv2 (HPA-FOV)")
    assert list(celldino.reproduced) == ["66.0", "", "", ""]
    assert list(celldino.paper) == ["65.0", "89.3", "x", "x"]

    md = out_md.read_text()
    boc_line = next(line for line in md.splitlines() if line.startswith("| BoC DINOv2 ViT-L |"))
    assert boc_line.endswith(
        "| 60.0 / 61.7 (-1.7) | 92.0 / 91.1 (+0.9) | 40.0 / 45.2 (-5.2) | - / 90.5 |"
    )
    base_line = next(
        line for line in md.splitlines() if line.startswith("| CellDINOv2 (HPA-FOV) |")
    )
    # the paper's cross, nothing reproduced: not applicable
    assert base_line.endswith("| 66.0 / 65.0 (+1.0) | - / 89.3 | x | x |")
    cvit_line = next(line for line in md.splitlines() if line.startswith("| Channel-ViT |"))
    assert "| - / 39.4 [1] |" in cvit_line
    assert (
        f"- BoC DINOv2 ViT-L: `{hpa}` (HPA-FOV F1 Protein loc., HPA-FOV F1 Cell type); "
        f"`{jump}` (JUMP-CP Accuracy)" in md
    )


def test_column_from_two_files_names_both(tmp_path):
    a = _columns_csv(tmp_path / "a.csv", {"JUMP-CP Accuracy": 40.0})
    b = _columns_csv(tmp_path / "b.csv", {"JUMP-CP Accuracy": 41.0, "WTC F1 Cell cycle st.": 9.0})
    with pytest.raises(
        UserError, match=r"'JUMP-CP Accuracy' is given by both .*a\.csv and .*b\.csv"
    ):
        render_table(
            "table9", [f"minus WTC={a}", f"minus WTC={b}"], tmp_path / "o.csv", tmp_path / "o.md"
        )
    assert not (tmp_path / "o.csv").exists()
    # a column the table does not have (the paper's own wording of table 9's header) is an error
    wrong = _columns_csv(tmp_path / "w.csv", {"Accuracy on JUMP-CP": 40.0})
    with pytest.raises(UserError, match=r"w\.csv.*'Accuracy on JUMP-CP'.*valid columns"):
        render_table("table9", [f"minus WTC={wrong}"], tmp_path / "o.csv", tmp_path / "o.md")
    empty = tmp_path / "e.csv"
    empty.write_text("column,value\nJUMP-CP Accuracy,\n")
    with pytest.raises(UserError, match=r"e\.csv: column 'JUMP-CP Accuracy' has no numeric value"):
        render_table("table9", [f"minus WTC={empty}"], tmp_path / "o.csv", tmp_path / "o.md")


def test_not_applicable_cell(tmp_path, capsys):
    five = _columns_csv(tmp_path / "five.csv", {"JUMP-CP 5 channels": 38.0})
    eight = _columns_csv(
        tmp_path / "eight.csv", {"JUMP-CP 5 channels": 44.0, "JUMP-CP 8 channels": 50.0}
    )
    out_csv, out_md = tmp_path / "t10.csv", tmp_path / "t10.md"
    argv = [
        "render-table",
        "--table",
        "table10",
        "--row",
        f"Channel ViT={five}",
        "--na",
        "Channel ViT=JUMP-CP 8 channels",
        "--row",
        f"DINO BoC={eight}",
        "--out-csv",
        str(out_csv),
        "--out-md",
        str(out_md),
    ]
    assert cli_main(argv) == 0
    cells = pd.read_csv(out_csv, dtype=str, keep_default_na=False)
    cvit = _cells(cells, "Channel ViT")
    assert list(cvit.reproduced) == ["38.0", "x"] and list(cvit.paper) == ["39.5", "x"]
    assert list(cvit.difference) == ["-1.5", ""]
    md = out_md.read_text()
    assert "| Channel ViT | 38.0 / 39.5 (-1.5) [1] | x |" in md
    assert "| DINO BoC | 44.0 / 45.2 (-1.2) | 50.0 / 51.6 (-1.6) |" in md
    assert "| DINO HA | - / 45.2 | - / 51.4 |" in md
    assert "- Not applicable in this build: Channel ViT, JUMP-CP 8 channels." in md

    # --na on a cell a score file gives, or on an unknown column: rejected, naming the culprit
    with pytest.raises(UserError, match=r"--na DINO BoC=JUMP-CP 8 channels.*eight\.csv"):
        render_table(
            "table10",
            [f"DINO BoC={eight}"],
            tmp_path / "n.csv",
            tmp_path / "n.md",
            na=["DINO BoC=JUMP-CP 8 channels"],
        )
    with pytest.raises(UserError, match=r"'8 channels' is not a column of table10"):
        render_table(
            "table10", [], tmp_path / "n.csv", tmp_path / "n.md", na=["DINO BoC=8 channels"]
        )
    with pytest.raises(UserError, match="cites this row"):
        render_table("table11", [], tmp_path / "n.csv", tmp_path / "n.md", na=["SatMAE=mAP"])


# ------------------------------------------------------------------ table 7 from the corpus summary


def _manifest(path, source, rows):
    """A manifest of ``rows`` = [(n_channels, factors dict)] (no shards needed to assemble)."""
    from channel_ssl.data.shards import write_manifest

    write_manifest(
        path / "manifest.parquet",
        [
            {
                "source": source,
                "image_id": f"{source}-{i}",
                "row": i,
                "channels": "|".join(f"c{k}" for k in range(k_channels)),
                "n_channels": k_channels,
                "height": 8,
                "width": 8,
                "label": "",
                "split": "unlabelled",
                "tasks": "",
                "factors": json.dumps(factors),
                "shard": "shard-00000.npy",
                "offset": i,
            }
            for i, (k_channels, factors) in enumerate(rows)
        ],
    )
    return path


@pytest.fixture
def corpus_summary(tmp_path):
    from channel_ssl.data.extended_chammi import assemble_extended_chammi, summary_path

    hpa = [
        (4, {"cell_type": "HEK-293", "protein_location": ["Golgi apparatus"]}),
        (4, {"cell_type": "U2OS", "protein_location": ["Nucleoplasm", "Golgi apparatus"]}),
        (4, {"cell_type": "U2OS", "protein_location": ["Cytosol"]}),
        (4, {"cell_type": "U2OS", "protein_location": ["Golgi apparatus"]}),
        (4, {"cell_type": "A-431", "protein_location": ["Mitochondria"]}),
    ]
    wtc = [(3, {"structure": "nucleoli"})] * 3 + [(3, {"structure": "tight junctions"})]
    opencell = [(2, {})] * 2
    manifests = {
        "hpa_single_cell": _manifest(tmp_path / "hpa", "hpa_single_cell", hpa),
        "wtc": _manifest(tmp_path / "wtc", "wtc", wtc),
        "opencell": _manifest(tmp_path / "opencell", "opencell", opencell),
    }
    corpus = tmp_path / "corpus" / "corpus.parquet"
    assemble_extended_chammi(manifests, corpus)
    return summary_path(corpus)


def test_table7_from_corpus_summary(tmp_path, corpus_summary):
    out_csv, out_md = tmp_path / "t7.csv", tmp_path / "t7.md"
    argv = ["render-table", "--table", "table7", "--summary", str(corpus_summary)]
    assert cli_main(argv + ["--out-csv", str(out_csv), "--out-md", str(out_md)]) == 0
    cells = pd.read_csv(out_csv, dtype=str, keep_default_na=False)
    hpa = _cells(cells, "HPA Single Cell")
    # kept: U2OS/Golgi and A-431/Mitochondria; found values in the paper's order (cytosol first)
    assert hpa.loc["Kept", ["reproduced", "paper", "difference"]].tolist() == [
        "2",
        "296670",
        "-296668",
    ]
    assert hpa.loc["Total", "reproduced"] == "5" and hpa.loc["Channels", "difference"] == "0"
    assert hpa.loc["Image type", ["reproduced", "difference"]].tolist() == ["One cell", ""]
    assert hpa.loc["Discarded factors", "reproduced"] == (
        "Cell line (HEK-293); Protein localization (Cytosol, Nucleoplasm)"
    )
    assert (hpa.source_file == str(corpus_summary)).all()
    wtc = _cells(cells, "WTC")
    assert wtc.loc[["Kept", "Total", "Channels"], "reproduced"].tolist() == ["3", "4", "3"]
    assert wtc.loc["Discarded factors", "reproduced"] == "Tagged structure (tight junctions)"
    assert _cells(cells, "OpenCell").loc["Discarded factors", "reproduced"] == "None"
    # sources absent from the summary: not reproduced
    assert (_cells(cells, "Cell Painting").reproduced == "").all()
    md = out_md.read_text()
    assert "| Dataset | Image type | Kept | Total | Channels | Discarded factors |" in md
    assert "| OpenCell | Cropped FOV / Cropped FOV | 2 / 1134592 (-1134590) |" in md
    assert "| HPA FOV | - / FOV | - / 33841 |" in md

    # table 7 takes --summary only; the other tables never do
    with pytest.raises(UserError, match="composition table: give --summary"):
        render_table("table7", [f"WTC={corpus_summary}"], tmp_path / "e.csv", tmp_path / "e.md")
    with pytest.raises(UserError, match="--summary is for composition tables"):
        render_table("table10", [], tmp_path / "e.csv", tmp_path / "e.md", summary=corpus_summary)
    not_extended = tmp_path / "other.summary.json"
    not_extended.write_text(json.dumps({"mode": "corpus", "sources": {}}))
    with pytest.raises(UserError, match=r"other\.summary\.json is not an ExtendedCHAMMI summary"):
        render_table("table7", [], tmp_path / "e.csv", tmp_path / "e.md", summary=not_extended)


def test_new_tables_byte_identical(tmp_path, corpus_summary):
    hpa = _columns_csv(tmp_path / "hpa.csv", {"HPA-FOV F1 Protein loc.": 50.0})
    jump = _columns_csv(tmp_path / "jump.csv", {"JUMP-CP Accuracy": 40.0})
    outs = []
    for i in range(2):
        a = render_table(
            "table3",
            [f"DINO HA (JUMP-CP)={jump}", f"DINO HA (JUMP-CP)={hpa}"],
            tmp_path / f"a{i}.csv",
            tmp_path / f"a{i}.md",
        )
        render_table(
            "table7", [], tmp_path / f"b{i}.csv", tmp_path / f"b{i}.md", summary=corpus_summary
        )
        outs.append([(tmp_path / f"{s}{i}.{e}").read_bytes() for s in "ab" for e in ("csv", "md")])
    assert outs[0] == outs[1]
    assert list(_cells(a, "DINO HA (JUMP-CP)").source_file)[:3] == [str(hpa), "", str(jump)]


def test_source_selector_keeps_one_sources_rows(tmp_path):
    """A run's score file holds every probed source; ``path@SOURCE`` picks one (table 11)."""
    scores = tmp_path / "run.csv"
    scores.write_text("column,value,source\nmAP,70.0,meterml_all\nmAP,60.0,meterml_naip\n")
    label_all = "DINO BoC (NAIP+S1+S2 test, NAIP+S1+S2 pretraining)"
    label_naip = "DINO BoC (NAIP test, NAIP+S1+S2 pretraining)"
    cells = render_table(
        "table11",
        [f"{label_all}={scores}@meterml_all", f"{label_naip}={scores}@meterml_naip"],
        tmp_path / "o.csv",
        tmp_path / "o.md",
    )
    got = cells[cells["reproduced"] != ""].set_index("row")
    assert got.loc[label_all, "reproduced"] == "70.0"
    assert got.loc[label_naip, "reproduced"] == "60.0"
    # the audit follows a plain path
    assert set(got["source_file"]) == {str(scores)}
    with pytest.raises(UserError, match="no rows of source 'cyclops'"):
        render_table(
            "table11", [f"{label_all}={scores}@cyclops"], tmp_path / "p.csv", tmp_path / "p.md"
        )


def test_table12_kd_boc_row_marked_inferred():
    """Table 12's fourth row is in one text extraction only and equals table 6's BoC row."""
    tables = load_paper_tables()
    row = tables["table12"]["rows"][3]
    assert row["label"] == "DINO BoC (KD)"
    boc6 = next(r for r in tables["table6"]["rows"] if r["label"] == "DINO BoC (Ours)")
    assert row["values"] == boc6["values"]
    note = " ".join(row["notes"].values())
    assert note.startswith("Inferred") and "one of the paper's two text extractions" in note


def test_a_tables_title_is_declared_once_in_the_paper_tables():
    import dataclasses

    from channel_ssl import registry

    assert "title" not in {f.name for f in dataclasses.fields(registry.Table)}
    tables = load_paper_tables()
    assert set(registry.TABLES) <= set(tables)
    assert all(tables[name]["title"] for name in registry.TABLES)
