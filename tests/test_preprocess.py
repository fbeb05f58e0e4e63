"""preprocess (CHAMMI -> shards + manifest) and assemble-corpus (manifests -> weighted corpus)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from channel_ssl.data.corpus import assemble_corpus, parse_exclusion
from channel_ssl.data.demo.chammi import DemoParams, generate_demo
from channel_ssl.data.preprocess import pad_to_square, preprocess_dataset, square_resize
from channel_ssl.data.readers.chammi import load_image, read_metadata
from channel_ssl.data.shards import ShardStore, load_manifest
from channel_ssl.errors import UserError


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    base = tmp_path_factory.mktemp("pre")
    root = base / "chammi"
    generate_demo(root, DemoParams(seed=0, scale=0.1))
    for dataset in ("Allen", "HPA", "CP"):
        preprocess_dataset(
            root, dataset, base / "shards" / dataset, image_size=16, shard_size=10, workers=1
        )
    return base


def test_pad_to_square_keeps_the_whole_cell_centred():
    image = np.zeros((4, 10), np.uint8)
    image[:, 0] = 200
    image[:, 9] = 100
    square = pad_to_square(image)
    assert square.shape == (10, 10)
    np.testing.assert_array_equal(square[3:7], image)  # (10 - 4) / 2 = 3 rows above
    assert square[:3].sum() == 0 and square[7:].sum() == 0
    # resizing to the padded size is the padding itself; shrinking keeps both ends of the cell
    np.testing.assert_array_equal(square_resize(image[None], 10)[0], square)
    small = square_resize(image[None], 5)[0]
    assert small.dtype == np.uint8 and small[:, 0].max() > 0 and small[:, -1].max() > 0


def test_manifest_rows_follow_metadata_and_shards_hold_the_images(shards):
    root = shards / "chammi"
    for dataset, k in (("Allen", 3), ("HPA", 4), ("CP", 5)):
        meta = read_metadata(root, dataset)
        man = load_manifest(shards / "shards" / dataset)
        assert len(man) == len(meta)
        assert list(man["image_id"]) == list(meta["file_path"])
        assert list(man["row"]) == list(range(len(meta)))
        assert (man["label"] == meta["Label"]).all() and (
            man["split"] == meta["train_test_split"]
        ).all()
        assert (man["n_channels"] == k).all() and (man["height"] == 16).all()
        shard_files = sorted((shards / "shards" / dataset).glob("shard-*.npy"))
        assert len(shard_files) == math.ceil(len(meta) / 10) == man["shard"].nunique()
        store = ShardStore(shards / "shards" / dataset)
        for i in (0, len(meta) - 1):
            expected = square_resize(load_image(root, meta.iloc[i]), 16)
            np.testing.assert_array_equal(
                store.get(man["shard"][i], int(man["offset"][i])), expected
            )
        for i, row in man.iterrows():
            expected_tasks = (
                meta.loc[i, "train_test_split"]
                if meta.loc[i, "train_test_split"] != "Train"
                else ""
            )
            assert row["tasks"] == expected_tasks
    cp = load_manifest(shards / "shards" / "CP")
    factors = json.loads(cp["factors"][0])
    assert set(factors) == {"Plate", "source"}
    assert cp["channels"][0] == "dna|er|rna|agp|mito"


def test_parallel_preprocess_gives_identical_shards(shards, tmp_path):
    preprocess_dataset(shards / "chammi", "CP", tmp_path, image_size=16, shard_size=10, workers=2)
    serial = shards / "shards" / "CP"
    for f in sorted(serial.glob("shard-*.npy")):
        np.testing.assert_array_equal(np.load(f), np.load(tmp_path / f.name))
    pd.testing.assert_frame_equal(load_manifest(serial), load_manifest(tmp_path))


def test_corpus_weights_balance_sources_and_exclusions(shards, tmp_path):
    manifests = [shards / "shards" / d for d in ("Allen", "HPA", "CP")]
    out = tmp_path / "corpus" / "corpus.parquet"
    corpus, summary = assemble_corpus(
        manifests, out, ["Train", "Task_two"], [parse_exclusion("cell_type=HEK 293")], "source"
    )
    assert set(corpus["split"]) == {"Train", "Task_two"}
    assert not corpus["factors"].str.contains("HEK 293").any()
    totals = corpus.groupby("source")["weight"].sum()
    np.testing.assert_allclose(totals.to_numpy(), totals.iloc[0])
    assert corpus["weight"].mean() == pytest.approx(1.0)
    assert summary["HPA"]["kept"] == summary["HPA"]["in_splits"] - sum(
        1 for f in load_manifest(manifests[1])["factors"] if "HEK 293" in f
    )
    # shard_dir is relative to the corpus file and points at the manifest directory
    for d, path in zip(corpus["shard_dir"].unique(), manifests, strict=True):
        assert not Path(d).is_absolute()
        assert (out.parent / d).resolve() == path.resolve()
    written = pd.read_parquet(out)
    assert len(written) == len(corpus)
    assert (
        json.loads((out.parent / "corpus.summary.json").read_text())["sources"]["HPA"]
        == summary["HPA"]
    )

    flat, _ = assemble_corpus(manifests, tmp_path / "flat.parquet", ["Train"], [], "none")
    assert (flat["weight"] == 1).all()
    assert (flat["split"] == "Train").all()


def test_corpus_errors(shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        assemble_corpus([tmp_path / "nowhere"], tmp_path / "c.parquet", ["Train"])
    with pytest.raises(UserError, match="'colour' is neither a manifest column nor a factor"):
        assemble_corpus(
            [shards / "shards" / "CP"], tmp_path / "c.parquet", ["Train"], [("colour", "red")]
        )
    with pytest.raises(UserError, match="expected COLUMN=VALUE"):
        parse_exclusion("Plate")
    assert not (tmp_path / "c.parquet").exists()


def test_cli_preprocess_and_corpus(shards, tmp_path):
    from channel_ssl.cli import main

    args = [
        "preprocess",
        "--chammi-root",
        str(shards / "chammi"),
        "--dataset",
        "HPA",
        "--out-dir",
        str(tmp_path / "HPA"),
        "--image-size",
        "8",
        "--shard-size",
        "1000",
    ]
    assert main(args) == 0
    assert np.load(tmp_path / "HPA" / "shard-00000.npy").shape[1:] == (4, 8, 8)
    assert (
        main(
            [
                "assemble-corpus",
                "--manifest",
                str(tmp_path / "HPA"),
                "--splits",
                "Train",
                "--exclude",
                "Plate=1",
                "--out",
                str(tmp_path / "c.parquet"),
            ]
        )
        == 2
    )
