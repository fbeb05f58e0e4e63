"""Demo CHAMMI: determinism, on-disk format, task semantics, learnability."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from channel_ssl.data.demo import chammi as demo
from channel_ssl.data.demo.chammi import DemoParams, generate_demo
from channel_ssl.data.readers.chammi import (
    CHANNELS,
    DATASETS,
    TASKS,
    fold_channels,
    load_image,
    read_metadata,
    unfold_channels,
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    generate_demo(root, DemoParams(seed=0, scale=0.5))
    return root


@pytest.fixture(scope="module")
def extra(tmp_path_factory):
    root = tmp_path_factory.mktemp("extra")
    generate_demo(root, DemoParams(seed=0, variant="extra", scale=0.25))
    return root


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(tmp_path):
    params = DemoParams(seed=3, scale=0.05)
    generate_demo(tmp_path / "a", params)
    generate_demo(tmp_path / "b", params)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 40
    assert all(a[k] == b[k] for k in a)
    generate_demo(tmp_path / "c", DemoParams(seed=4, scale=0.05))
    c = _files(tmp_path / "c")
    tiffs = [k for k in a if k.suffix == ".tiff" and k in c]
    assert any(a[k] != c[k] for k in tiffs) or a.keys() != c.keys()


def test_format_columns_paths_and_channel_counts(bench):
    for dataset in DATASETS:
        df = read_metadata(bench, dataset)
        assert set(df["train_test_split"]) == {"Train", *TASKS[dataset]}
        for task in TASKS[dataset]:
            assert df[task].dtype == bool
            assert (df[task] == (df["train_test_split"] == task)).all()
        assert df["file_path"].str.startswith(f"{dataset}/crops/").all()
        assert df["file_path"].is_unique
        suffix = ".ome.tiff" if dataset == "Allen" else ".png"
        assert df["file_path"].str.endswith(suffix).all()
        for _, row in df.head(5).iterrows():
            stack = load_image(bench, row)
            assert stack.dtype == np.uint8
            assert stack.shape[0] == len(CHANNELS[dataset])
            assert stack.shape[2] == row["channel_width"]
    raw = read_metadata(bench, "CP")
    assert {"Plate", "Well", "source", "Key"} <= set(raw.columns)
    assert (
        raw["file_path"]
        .str.match(r"CP/crops/(LINCS|CDRP|BBBC022)/[^/]+/[A-P]\d\d/\d/\d+@[\d.]+x[\d.]+\.png")
        .all()
    )
    assert {"ID", "FOVId", "PlateId", "WellId", "InstrumentId", "Structure"} <= set(
        read_metadata(bench, "Allen").columns
    )


def test_allen_is_ome_tiff_and_png_is_grayscale(bench):
    df = read_metadata(bench, "Allen")
    with tifffile.TiffFile(bench / df["file_path"][0]) as tif:
        assert tif.is_ome
        image = tif.asarray()
    assert image.shape == (24, 36 * 3) and image.dtype == np.uint8
    hpa = read_metadata(bench, "HPA")
    with Image.open(bench / hpa["file_path"][0]) as im:
        assert im.mode == "L" and im.size == (32 * 4, 32)
        assert "tIME" not in im.info and "timestamp" not in im.info


def test_fold_unfold_round_trip_matches_side_by_side_layout():
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    unfolded = unfold_channels(stack)
    assert unfolded.shape == (7, 20)
    for k in range(5):  # channel k occupies columns [4k, 4k+4)
        np.testing.assert_array_equal(unfolded[:, 4 * k : 4 * k + 4], stack[k])
    np.testing.assert_array_equal(fold_channels(unfolded, 4), stack)
    # the CHAMMI reference folds with a column-major reshape to (H, channel_width, K)
    reference = np.reshape(unfolded, (7, 4, 5), order="F")
    np.testing.assert_array_equal(np.moveaxis(reference, -1, 0), stack)


def _groups(df, split, column):
    return set(df.loc[df["train_test_split"] == split, column])


def test_allen_task_two_holds_out_structures(bench):
    df = read_metadata(bench, "Allen")
    train = _groups(df, "Train", "Structure")
    assert train == set(demo.ALLEN_TRAIN_STRUCTURES)
    assert _groups(df, "Task_one", "Structure") <= train
    assert _groups(df, "Task_two", "Structure") == set(demo.ALLEN_HELDOUT_STRUCTURES)
    assert _groups(df, "Task_two", "Label") <= _groups(df, "Train", "Label")


def test_hpa_tasks_hold_out_cell_line_and_labels(bench):
    df = read_metadata(bench, "HPA")
    assert "HEK 293" not in _groups(df, "Train", "cell_type")
    assert _groups(df, "Task_two", "cell_type") == {"HEK 293"}
    assert _groups(df, "Task_two", "Label") <= _groups(df, "Train", "Label")
    t3 = df[df["train_test_split"] == "Task_three"]
    assert set(t3["Label"]) == {"cytosol", "endoplasmic reticulum", "nucleoplasm"}
    assert not set(t3["Label"]) & _groups(df, "Train", "Label")
    assert set(t3["cell_type"]) <= _groups(df, "Train", "cell_type")
    # leave-one-cell-line-out needs every cell line to carry every held-out label
    assert (t3.groupby("cell_type")["Label"].nunique() == 3).all()


def test_cp_tasks_hold_out_plates_source_and_treatments(bench):
    df = read_metadata(bench, "CP")
    train_plates = _groups(df, "Train", "Plate")
    assert _groups(df, "Task_one", "Plate") <= train_plates
    assert _groups(df, "Task_two", "Plate") == {"SQ00015125", "SQ00015168", "SQ00015221"}
    assert not _groups(df, "Task_two", "Plate") & train_plates
    assert _groups(df, "Task_three", "source") == {"BBBC022"}
    assert "BBBC022" not in _groups(df, "Train", "source")
    assert not _groups(df, "Task_three", "Plate") & train_plates
    novel = {"BRD-K11129031", "BRD-K62310379", "BRD-K77947974"}
    assert _groups(df, "Task_four", "Label") == novel
    assert not novel & _groups(df, "Train", "Label")
    assert "DMSO" in _groups(df, "Train", "Label")
    t4 = df[df["train_test_split"] == "Task_four"]
    assert t4["Plate"].nunique() >= 2 and (t4.groupby("Plate")["Label"].nunique() == 3).all()


def test_extra_variant_uses_only_train_visible_factors(bench, extra):
    for dataset in DATASETS:
        df = read_metadata(extra, dataset)
        ref = read_metadata(bench, dataset)
        assert (df["train_test_split"] == "Train").all()
        assert (df["Label"] == "").all()
        assert len(df) == round(240 * 2 * 0.25)
        assert not set(df["file_path"]) & set(ref["file_path"])
    allen = read_metadata(extra, "Allen")
    assert set(allen["Structure"]) <= set(demo.ALLEN_TRAIN_STRUCTURES)
    hpa = read_metadata(extra, "HPA")
    assert "HEK 293" not in set(hpa["cell_type"])
    cp = read_metadata(extra, "CP")
    assert set(cp["Plate"]) <= {p for _, p in demo.CP_TRAIN_PLATES}
    assert set(cp["source"]) <= {"LINCS", "CDRP"}


def test_extra_images_never_draw_held_out_labels():
    # the unlabelled extra rows are rendered from the plan's labels: those must be Train labels
    params = DemoParams(seed=0, variant="extra", scale=0.25)
    assert {r["Label"] for r in demo.plan_hpa(params)} <= set(demo.HPA_TRAIN_LABELS)
    assert {r["Label"] for r in demo.plan_cp(params)} <= set(demo.CP_TRAIN_TREATMENTS)


def _histogram_features(stack):
    feats = []
    for ch in stack.astype(np.float32) / 255:
        feats += list(np.histogram(ch, bins=8, range=(0, 1))[0] / ch.size) + [ch.mean(), ch.std()]
    return feats


def test_labels_are_learnable_from_pixels(bench):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    for dataset in DATASETS:
        df = read_metadata(bench, dataset)
        x = np.array([_histogram_features(load_image(bench, r)) for _, r in df.iterrows()])
        y = df["Label"].to_numpy()
        train = (df["train_test_split"] == "Train").to_numpy()
        clf = LogisticRegression(max_iter=3000, C=10).fit(x[train], y[train])
        test = df["Task_one"].to_numpy()
        score = f1_score(y[test], clf.predict(x[test]), average="macro")
        chance = 1 / len(set(y[test]))
        assert score > 1.6 * chance, (dataset, score)


def test_generation_is_fast(tmp_path):
    import time

    t0 = time.perf_counter()
    generate_demo(tmp_path, DemoParams(seed=1, scale=0.2))
    assert time.perf_counter() - t0 < 20 * 0.2 * 2


def test_cli_writes_demo(tmp_path):
    from channel_ssl.cli import main

    assert main(["make-demo-chammi", "--out", str(tmp_path), "--seed", "0", "--scale", "0.05"]) == 0
    assert all((tmp_path / d / "enriched_meta.csv").exists() for d in DATASETS)
    assert main(["make-demo-chammi", "--out", str(tmp_path), "--scale", "0"]) == 2
