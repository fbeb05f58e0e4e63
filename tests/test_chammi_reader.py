"""CHAMMI reader: validation errors name what is wrong; images fold per channel_width."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from channel_ssl.data.demo.chammi import DemoParams, generate_demo
from channel_ssl.data.readers.chammi import (
    group_column,
    leave_out_task,
    load_image,
    read_metadata,
    tasks_of,
)
from channel_ssl.errors import UserError


@pytest.fixture()
def root(tmp_path):
    generate_demo(tmp_path, DemoParams(seed=0, scale=0.05, datasets=("Allen", "CP")))
    return tmp_path


def _rewrite(root, dataset, fn):
    path = root / dataset / "enriched_meta.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)
    return path


def test_missing_columns_are_all_named(root):
    path = _rewrite(root, "CP", lambda df: df.drop(columns=["Label", "Plate"]))
    with pytest.raises(UserError, match=r"enriched_meta.csv.*'Label'.*'Plate'"):
        read_metadata(root, "CP")
    assert str(path) in str(pytest.raises(UserError, read_metadata, root, "CP").value)


def test_string_booleans_are_tolerated(root):
    def lower(df):
        for t in tasks_of("CP"):
            df[t] = df[t].map({"True": "true", "False": "0"})
        return df

    _rewrite(root, "CP", lower)
    df = read_metadata(root, "CP")
    assert df["Task_four"].dtype == bool
    assert (df["Task_four"] == (df["train_test_split"] == "Task_four")).all()


def test_task_column_disagreeing_with_split_is_rejected(root):
    def flip(df):
        df.loc[3, "Task_one"] = "True" if df.loc[3, "Task_one"] == "False" else "False"
        return df

    _rewrite(root, "Allen", flip)
    with pytest.raises(UserError, match="row 3: column Task_one"):
        read_metadata(root, "Allen")


def test_unknown_split_and_missing_task_column(root):
    _rewrite(
        root,
        "Allen",
        lambda df: df.assign(train_test_split=["Task_three"] + list(df["train_test_split"][1:])),
    )
    with pytest.raises(UserError, match="row 0 has train_test_split 'Task_three'"):
        read_metadata(root, "Allen")
    generate_demo(root, DemoParams(seed=0, scale=0.05, datasets=("Allen",)))
    _rewrite(root, "Allen", lambda df: df.drop(columns=["Task_two"]))
    with pytest.raises(UserError, match="boolean column 'Task_two' is missing"):
        read_metadata(root, "Allen")


def test_load_image_folds_channels(root):
    df = read_metadata(root, "CP")
    stack = load_image(root, df.iloc[0], n_channels=5)
    assert stack.shape == (5, 24, 24)
    from PIL import Image

    raw = np.asarray(Image.open(root / df["file_path"][0]))
    np.testing.assert_array_equal(stack[2], raw[:, 48:72])


def test_wrong_channel_width_is_rejected_with_path(root):
    df = read_metadata(root, "CP")
    row = df.iloc[1].copy()
    row["channel_width"] = 25  # 120 is not a multiple of 25
    with pytest.raises(UserError, match=rf"{row['file_path']}.*row 1.*channel_width 25"):
        load_image(root, row)
    row["channel_width"] = 40  # folds, but into 3 channels instead of 5
    with pytest.raises(UserError, match="3 channels.*expected 5"):
        load_image(root, row, n_channels=5)


def test_missing_and_corrupt_images(root):
    df = read_metadata(root, "Allen")
    (root / df["file_path"][0]).unlink()
    with pytest.raises(FileNotFoundError, match=df["file_path"][0]):
        load_image(root, df.iloc[0])
    (root / df["file_path"][1]).write_bytes(b"not a tiff")
    with pytest.raises(
        UserError, match=rf"cannot read CHAMMI image .*{df['file_path'][1]} \(row 1\)"
    ):
        load_image(root, df.iloc[1])


def test_missing_metadata_and_unknown_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="HPA/enriched_meta.csv"):
        read_metadata(tmp_path, "HPA")
    with pytest.raises(UserError, match="unknown CHAMMI dataset 'WTC'"):
        read_metadata(tmp_path, "WTC")


def test_leave_out_groups():
    assert (leave_out_task("HPA"), group_column("HPA")) == ("Task_three", "cell_type")
    assert (leave_out_task("CP"), group_column("CP")) == ("Task_four", "Plate")
    assert group_column("Allen") is None and leave_out_task("Allen") is None
