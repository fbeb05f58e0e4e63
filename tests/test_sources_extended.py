"""Readers of the ExtendedCHAMMI sources on their demo copies (native layouts -> shards + manifest)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from channel_ssl.data.demo import opencell as opencell_demo
from channel_ssl.data.demo.sources import make_demo_source
from channel_ssl.data.preprocess import square_resize
from channel_ssl.data.readers import cellpainting, hpa, opencell, wtc
from channel_ssl.data.shards import ShardStore, load_manifest
from channel_ssl.data.sources import channels_to_uint8, reader_of
from channel_ssl.errors import UserError

SIZE = 16
SOURCES = ("hpa_fov", "hpa_single_cell", "wtc", "opencell", "cellpainting")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    out = {}
    for source in SOURCES:
        meta = make_demo_source(source, base / "raw" / source, seed=3, scale=0.5)
        manifest = reader_of(source)(base / "raw" / source, base / "shards" / source, SIZE, 16)
        out[source] = (base / "raw" / source, base / "shards" / source, meta, manifest)
    return out


def _images(shard_dir: Path, manifest: pd.DataFrame) -> np.ndarray:
    store = ShardStore(shard_dir)
    return np.stack([store.get(r.shard, r.offset) for r in manifest.itertuples()])


def _factors(manifest):
    return [json.loads(f) for f in manifest["factors"]]


def test_manifests_are_valid_and_match_shards(prepared):
    expected_k = {"hpa_fov": 4, "hpa_single_cell": 4, "wtc": 3, "opencell": 2, "cellpainting": 5}
    for source, (_, shard_dir, _, manifest) in prepared.items():
        assert (load_manifest(shard_dir)["image_id"] == manifest["image_id"]).all()
        assert (manifest["source"] == source).all()
        assert (manifest["n_channels"] == expected_k[source]).all()
        assert manifest["channels"].map(lambda c: len(c.split("|"))).eq(expected_k[source]).all()
        images = _images(shard_dir, manifest)
        assert images.shape == (len(manifest), expected_k[source], SIZE, SIZE)
        assert images.dtype == np.uint8 and images.max() > 100  # real content, not blank
        assert manifest["image_id"].is_unique


def test_hpa_fov_labels_channels_and_pixels(prepared):
    raw, shard_dir, meta, manifest = prepared["hpa_fov"]
    train = pd.read_csv(raw / hpa.FOV_CSVS["train"], dtype=str, keep_default_na=False)
    test = pd.read_csv(raw / hpa.FOV_CSVS["test"], dtype=str, keep_default_na=False)
    assert len(manifest) == len(train) + len(test) == len(meta)
    assert manifest["split"].tolist() == ["train"] * len(train) + ["test"] * len(test)
    assert manifest["channels"].iloc[0] == "nucleus|protein|microtubules|er"
    rows = pd.concat([train, test], ignore_index=True)
    for (_, row), m, f in zip(
        rows.iterrows(), manifest.itertuples(), _factors(manifest), strict=True
    ):
        true = [c for c in hpa.LOCALISATIONS if row[c] == "True"]
        assert m.label == "|".join(true) and m.image_id == row["ID"]
        assert f["cell_type"] == row["cell_type"] and f["fov_id"] == row["ID"]
        assert set(f["protein_location"]) == set(true)
    # pixels: the PNG's RGBA planes, in order, resized like CHAMMI preprocessing
    first = rows.iloc[0]
    with Image.open(raw / "512_whole_images" / f"{first['ID']}.png") as im:
        planes = np.moveaxis(np.asarray(im), -1, 0)
    np.testing.assert_array_equal(
        _images(shard_dir, manifest.iloc[:1])[0], square_resize(planes, SIZE)
    )
    assert any("|" in label for label in manifest["label"])  # multi-label rows exist


def test_hpa_single_cell_ids_and_factors(prepared):
    raw, _, meta, manifest = prepared["hpa_single_cell"]
    assert set(manifest["split"]) == {"pretrain", "evaluation"}
    assert len(manifest) == len(meta)
    factors = _factors(manifest)
    for m, f in zip(manifest.itertuples(), factors, strict=True):
        assert f["cell_id"] == m.image_id and f["fov_id"] == m.image_id.rsplit("_", 1)[0]
        assert len(f["protein_location"]) == 1 and m.label == f["protein_location"][0]
    assert "HEK 293" in {f["cell_type"] for f in factors}


def test_wtc_drops_outliers_max_projects_and_splits(prepared):
    raw, shard_dir, meta, manifest = prepared["wtc"]
    kept = meta[meta["outlier"] == "No"].reset_index(drop=True)
    assert (meta["outlier"] == "Yes").any() and len(manifest) == len(kept)
    assert manifest["image_id"].tolist() == kept["CellId"].astype(str).tolist()
    assert manifest["label"].tolist() == kept["cell_stage"].tolist()
    assert manifest["channels"].iloc[0] == "dna|membrane|structure"
    counts = manifest["split"].value_counts()
    n = len(manifest)
    assert counts["val"] == round(0.1 * n) and counts["train"] == round(0.8 * n)
    f = _factors(manifest)[0]
    assert (
        f["structure"] == wtc.structure_of(kept["structure_name"][0])
        and f["cell_id"] == kept["CellId"][0]
    )
    volume = tifffile.imread(raw / kept["crop_raw"][0])  # (Z, C, Y, X) uint16
    assert volume.ndim == 4 and volume.shape[1] == 3 and volume.dtype == np.uint16
    expected = square_resize(channels_to_uint8(volume.max(axis=0)), SIZE)
    np.testing.assert_array_equal(_images(shard_dir, manifest.iloc[:1])[0], expected)


def test_wtc_crop_drops_brightfield(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 1000, (4, 4, 8, 8), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "c.ome.tif",
        volume,
        ome=True,
        metadata={"axes": "ZCYX", "Channel": {"Name": ["bf", "dna", "membrane", "structure"]}},
    )
    stack, names = wtc.read_crop(tmp_path / "c.ome.tif")
    assert names == ["dna", "membrane", "structure"]
    np.testing.assert_array_equal(stack, volume[:, 1:].max(axis=0))


def test_opencell_keeps_protein_and_nucleus(prepared):
    raw, shard_dir, _, manifest = prepared["opencell"]
    arrays = [np.load(p) for p in sorted(raw.glob("Image_data*.npy"))]
    labels = pd.concat(
        [
            pd.read_csv(p, dtype=str, keep_default_na=False)
            for p in sorted(raw.glob("Label_data*.csv"))
        ]
    )
    assert arrays[0].ndim == 4 and arrays[0].shape[-1] == 4
    assert len(manifest) == sum(len(a) for a in arrays) == len(labels)
    assert manifest["channels"].iloc[0] == "protein|nucleus"
    assert manifest["label"].tolist() == labels["loc_grade3"].tolist()
    first = np.moveaxis(arrays[0][0][..., :2], -1, 0)
    expected = square_resize(channels_to_uint8(first), SIZE)
    np.testing.assert_array_equal(_images(shard_dir, manifest.iloc[:1])[0], expected)


def test_opencell_rejects_misaligned_labels(tmp_path):
    opencell_demo.make_demo(tmp_path, seed=0, n_images=6, n_files=1, image_size=8)
    table = pd.read_csv(tmp_path / "Label_data00.csv")
    table.iloc[:-1].to_csv(tmp_path / "Label_data00.csv", index=False)
    with pytest.raises(
        UserError, match="Label_data00.csv has 5 rows but .*Image_data00.npy holds 6"
    ):
        opencell.prepare(tmp_path, tmp_path / "out", 8, 4)


def test_cellpainting_drops_mask_and_names_sources(prepared):
    raw, shard_dir, meta, manifest = prepared["cellpainting"]
    assert len(manifest) == len(meta)
    assert manifest["channels"].iloc[0] == "dna|rna|er|agp|mito"
    factors = _factors(manifest)
    assert {f["collection"] for f in factors} == {"LINCS", "BBBC036", "BBBC022"}
    for f, m, row in zip(factors, manifest.itertuples(), meta.itertuples(), strict=True):
        assert f["data_source"] == {"BBBC036": "CDRP"}.get(row.Collection, row.Collection)
        assert f["plate"] == row.Metadata_Plate and m.label == row.Treatment == f["treatment"]
        assert f["cell_key"] == f"{f['data_source']}/{row.Image_Name[:-4]}"
    widths = {}
    for row in meta.itertuples():
        with Image.open(raw / "training_images" / row.Collection / row.Image_Name) as im:
            widths[row.Collection] = im.size[0] // im.size[1]
    assert widths == {"LINCS": 6, "BBBC036": 6, "BBBC022": 5}  # mask tile present / absent
    row = meta.iloc[0]
    with Image.open(raw / "training_images" / row["Collection"] / row["Image_Name"]) as im:
        tape = np.asarray(im)
    box = tape.shape[0]
    expected = np.stack([tape[:, k * box : (k + 1) * box] for k in range(5)])
    np.testing.assert_array_equal(
        _images(shard_dir, manifest.iloc[:1])[0], square_resize(expected, SIZE)
    )


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_demo_copies_are_deterministic(tmp_path):
    for source in SOURCES:
        make_demo_source(source, tmp_path / "a" / source, seed=1, scale=0.2)
        make_demo_source(source, tmp_path / "b" / source, seed=1, scale=0.2)
        assert _tree_digest(tmp_path / "a" / source) == _tree_digest(tmp_path / "b" / source), (
            source
        )
    make_demo_source("wtc", tmp_path / "c", seed=2, scale=0.2)
    assert _tree_digest(tmp_path / "c") != _tree_digest(tmp_path / "a" / "wtc")


def test_cli_and_bad_input(tmp_path):
    from channel_ssl.cli import main

    raw = tmp_path / "raw"
    assert (
        main(
            [
                "make-demo-source",
                "--source",
                "hpa_fov",
                "--out",
                str(raw),
                "--seed",
                "0",
                "--scale",
                "0.2",
            ]
        )
        == 0
    )
    args = [
        "prepare-source",
        "--source",
        "hpa_fov",
        "--raw-dir",
        str(raw),
        "--out-dir",
        str(tmp_path / "s"),
    ]
    assert main(args + ["--image-size", "8", "--shard-size", "5"]) == 0
    assert np.load(tmp_path / "s" / "shard-00000.npy").shape[1:] == (4, 8, 8)
    # a corrupted boolean and a missing column are named
    csv = raw / hpa.FOV_CSVS["train"]
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[0, "cytosol"] = "maybe"
    df.to_csv(csv, index=False)
    with pytest.raises(UserError, match="column 'cytosol' has 'maybe'"):
        hpa.prepare_fov(raw, tmp_path / "s2", 8, 5)
    df.drop(columns=["cell_type"]).to_csv(csv, index=False)
    with pytest.raises(UserError, match=r"missing column\(s\) \['cell_type'\]"):
        hpa.prepare_fov(raw, tmp_path / "s2", 8, 5)
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        wtc.prepare(tmp_path / "nowhere", tmp_path / "s3", 8, 5)
    with pytest.raises(FileNotFoundError, match="sc-metadata.csv"):
        cellpainting.prepare(tmp_path / "nowhere", tmp_path / "s3", 8, 5)
