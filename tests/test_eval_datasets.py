"""Readers of the evaluation-only sources (JUMP-CP, Cyclops, Meter-ML) on their demo copies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from channel_ssl.data.demo import jumpcp as jumpcp_demo
from channel_ssl.data.demo import meterml as meterml_demo
from channel_ssl.data.demo.sources import DEMOS, make_demo_source
from channel_ssl.data.preprocess import square_resize, to_uint8
from channel_ssl.data.readers import cyclops, jumpcp, meterml
from channel_ssl.data.shards import ShardStore
from channel_ssl.data.sources import READERS, reader_of
from channel_ssl.errors import UserError

SIZE = 16


def _images(out_dir: Path, manifest: pd.DataFrame) -> np.ndarray:
    store = ShardStore(out_dir)
    return np.stack([store.get(r.shard, r.offset) for r in manifest.itertuples()])


def _factors(manifest: pd.DataFrame) -> list[dict]:
    return [json.loads(f) for f in manifest["factors"]]


def test_sources_are_registered():
    for name in (
        "jumpcp",
        "jumpcp_5ch",
        "cyclops",
        "meterml_naip",
        "meterml_naip_s2",
        "meterml_all",
    ):
        assert name in READERS and name in DEMOS


# --------------------------------------------------------------------------- JUMP-CP


@pytest.fixture(scope="module")
def jump(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jump")
    make_demo_source("jumpcp", tmp / "raw", seed=0, scale=0.5)
    m8 = reader_of("jumpcp")(tmp / "raw", tmp / "s8", SIZE, 50)
    m5 = reader_of("jumpcp_5ch")(tmp / "raw", tmp / "s5", SIZE, 50)
    return tmp, m8, m5


def test_jump_native_layout(jump):
    tmp, _, _ = jump
    root = tmp / "raw" / "jumpcp"
    cells = pd.read_parquet(root / "BR00116991.pq")
    assert list(cells.columns) == ["ID", "well_loc", "path", "plate_id"]
    first = cells.iloc[0]
    assert (
        first["path"]
        == f"s3://insitro-research-2023-context-vit/jumpcp/BR00116991/{first['ID']}.npy"
    )
    array = np.load(root / "BR00116991" / f"{first['ID']}.npy")
    assert array.shape == (8, 32, 32)
    # the .tsv platemap and metadata are parquet files, as ChannelViT reads them
    platemap = pd.read_parquet(
        root / "platemap_and_metadata" / "JUMP-Target-1_compound_platemap.tsv"
    )
    metadata = pd.read_parquet(
        root / "platemap_and_metadata" / "JUMP-Target-1_compound_metadata.tsv"
    )
    assert list(platemap.columns) == ["well_position", "broad_sample", "solvent"]
    assert list(metadata.columns) == list(jumpcp.METADATA_COLUMNS)


def test_jump_shapes_and_channel_views(jump):
    tmp, m8, m5 = jump
    assert m8["channels"].iloc[0] == "Mito|AGP|RNA|ER|DNA|HighZBF|LowZBF|Brightfield"
    assert m5["channels"].iloc[0] == "Mito|AGP|RNA|ER|DNA"
    images8, images5 = _images(tmp / "s8", m8), _images(tmp / "s5", m5)
    assert images8.shape == (len(m8), 8, SIZE, SIZE) and images8.dtype == np.uint8
    np.testing.assert_array_equal(images5, images8[:, :5])  # the 5-channel view = fluorescence
    assert list(m8["row"]) == list(range(len(m8)))
    # channels keep their order: the DNA channel of a cell is the resized DNA plane of its .npy
    raw = np.load(tmp / "raw" / "jumpcp" / "BR00116991" / f"{m8['image_id'].iloc[0]}.npy")
    np.testing.assert_array_equal(images8[0, 4], square_resize(raw[4:5], SIZE)[0])


def test_jump_labels_follow_channelvit_factorisation(jump):
    tmp, m8, _ = jump
    root = tmp / "raw" / "jumpcp"
    platemap = pd.read_parquet(
        root / "platemap_and_metadata" / "JUMP-Target-1_compound_platemap.tsv"
    )
    metadata = pd.read_parquet(
        root / "platemap_and_metadata" / "JUMP-Target-1_compound_metadata.tsv"
    )
    # independent reference: ids by first appearance of the target in metadata order, DMSO = 0
    order = [t for t in dict.fromkeys(metadata["target"]) if not pd.isna(t)]
    sample_target = dict(
        zip(metadata["broad_sample"].dropna(), metadata["target"].dropna(), strict=True)
    )
    factors = _factors(m8)
    for row, f in zip(m8.itertuples(), factors, strict=True):
        sample = platemap.loc[platemap["well_position"] == f["well"], "broad_sample"].item()
        target = None if pd.isna(sample) else sample_target[sample]  # DMSO: no broad_sample
        expected = 0 if target is None else order.index(target) + 1
        assert f["label_id"] == expected
        assert row.label == ("DMSO" if target is None else target)
    assert order[:3] == ["CACNB4", "CACNA2D3", "AKR1C1"]
    assert sum(f["label_id"] == 0 for f in factors) > 0
    # the well imaged but absent from the platemap is dropped
    cells = pd.read_parquet(root / "BR00116991.pq")
    assert (cells["well_loc"] == jumpcp_demo.DEMO_UNMAPPED_WELL).sum() > 0
    assert jumpcp_demo.DEMO_UNMAPPED_WELL not in {f["well"] for f in factors}
    assert len(m8) == int((cells["well_loc"] != jumpcp_demo.DEMO_UNMAPPED_WELL).sum())


def test_jump_label_map_gives_161_classes_at_paper_scale(tmp_path):
    """384 wells: 160 targets x 2 compounds (one well each) + 64 DMSO wells -> 161 classes."""
    wells = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]
    samples = [f"BRD-{i:04d}" for i in range(320)]
    metadata = pd.DataFrame(
        {"broad_sample": [None, *samples], "target": [None] + [f"T{i // 2}" for i in range(320)]}
    )
    platemap = pd.DataFrame({"well_position": wells, "broad_sample": [None] * 64 + samples})
    meta_dir = tmp_path / "jumpcp" / "platemap_and_metadata"
    meta_dir.mkdir(parents=True)
    metadata.to_parquet(meta_dir / jumpcp.METADATA_NAME)
    platemap.to_parquet(meta_dir / jumpcp.PLATEMAP_NAME)
    labels, names = jumpcp.well_labels(tmp_path / "jumpcp")
    assert len(names) == 161 and len(set(labels.values())) == 161
    assert labels["A01"] == 0 and labels[wells[64]] == 1 and labels[wells[-1]] == 160


def test_jump_split_is_channelvit_60_20_20(jump):
    tmp, m8, _ = jump
    cells = pd.read_parquet(tmp / "raw" / "jumpcp" / "BR00116991.pq")
    # ChannelViT's own calls, on the global legacy generator: the independent reference
    np.random.seed(0)  # noqa: NPY002
    perm = np.random.permutation(cells.index)  # noqa: NPY002
    n = len(cells)
    train_end = int(0.6 * n)
    val_end = train_end + int(0.2 * n)
    expected = {}
    for name, part in (
        ("train", perm[:train_end]),
        ("val", perm[train_end:val_end]),
        ("test", perm[val_end:]),
    ):
        expected.update(dict.fromkeys(cells["ID"].iloc[part], name))
    assert dict(zip(m8["image_id"], m8["split"], strict=True)) == {
        i: expected[i] for i in m8["image_id"]
    }
    np.testing.assert_array_equal(jumpcp.channelvit_split(n), jumpcp.channelvit_split(n))


def test_jump_path_mapping_and_missing_file(tmp_path, jump):
    root = Path("/data/jumpcp")
    uri = "s3://insitro-research-2023-context-vit/jumpcp/BR00116991/BR00116991_A01_1_12.npy"
    assert jumpcp.local_cell_path(root, uri) == root / "BR00116991" / "BR00116991_A01_1_12.npy"
    assert jumpcp.local_cell_path(root, "BR00116991/x.npy") == root / "BR00116991" / "x.npy"
    assert jumpcp.local_cell_path(root, "/abs/x.npy") == Path("/abs/x.npy")
    jumpcp_demo.make_demo(tmp_path / "raw", seed=1, scale=0.25)
    victim = sorted((tmp_path / "raw" / "jumpcp" / "BR00116991").glob("*_A01_1_0.npy"))[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match="BR00116991_A01_1_0"):
        jumpcp.prepare(tmp_path / "raw", tmp_path / "out", SIZE, 50)


# --------------------------------------------------------------------------- Cyclops


@pytest.fixture(scope="module")
def cyc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cyclops")
    make_demo_source("cyclops", tmp / "raw", seed=0, scale=1.0)
    manifest = reader_of("cyclops")(tmp / "raw", tmp / "out", SIZE, 128)
    return tmp, manifest


def test_cyclops_layout_and_merge(cyc):
    tmp, manifest = cyc
    root = tmp / "raw" / "cyclops"
    folders = sorted(p.name for p in root.iterdir())
    assert folders == sorted(cyclops.FOLDERS) and len(folders) == 17
    assert (root / "CYTOPLASM" / "CYTOPLASM_1_gfp.tif").exists()
    assert manifest["label"].nunique() == 16
    assert "SPINDLEPOLE" not in set(manifest["label"])
    folder = np.array([f["folder"] for f in _factors(manifest)])
    assert set(manifest.loc[folder == "SPINDLEPOLE", "label"]) == {"SPINDLE"}
    assert set(manifest.loc[folder == "SPINDLE", "label"]) == {"SPINDLE"}
    n_files = sum(1 for _ in root.rglob("*.tif"))
    assert n_files == 2 * len(manifest)


def test_cyclops_class_frequencies(cyc):
    _, manifest = cyc
    counts = manifest["label"].value_counts()
    assert tuple(counts.sort_values(kind="stable").index[:4]) == cyclops.RARE_CLASSES
    n = len(manifest)
    for cls, percent in zip(cyclops.RARE_CLASSES, (1.5, 1.9, 2.4, 3.8), strict=True):
        assert abs(counts[cls] - percent / 100 * n) <= 1.0, (cls, counts[cls], n)


def test_cyclops_channels_and_order(cyc):
    tmp, manifest = cyc
    assert set(manifest["channels"]) == {"gfp|rfp"}
    images = _images(tmp / "out", manifest)
    assert images.shape == (len(manifest), 2, SIZE, SIZE)
    item = manifest.iloc[5]
    base = tmp / "raw" / "cyclops" / item["image_id"]
    for k, channel in enumerate(("gfp", "rfp")):
        plane = tifffile.imread(f"{base}_{channel}.tif")
        np.testing.assert_array_equal(images[5, k], square_resize(to_uint8(plane)[None], SIZE)[0])


def test_cyclops_split_is_stratified_and_reproducible(cyc):
    tmp, manifest = cyc
    table = pd.crosstab(manifest["label"], manifest["split"])
    # every class, even the rarest, in train and test
    assert (table[["train", "test"]] > 0).all().all()
    shares = manifest["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.02) and shares["test"] == pytest.approx(
        0.2, abs=0.02
    )
    again = cyclops.list_images(tmp / "raw")
    assert list(again["split"]) == list(manifest["split"])


def test_cyclops_missing_partner_is_named(tmp_path):
    folder = tmp_path / "cyclops" / "ER"
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "ER_1_gfp.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(UserError, match="ER_1_rfp"):
        cyclops.list_images(tmp_path)


# --------------------------------------------------------------------------- Meter-ML


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("meterml")
    make_demo_source("meterml_all", tmp / "raw", seed=0, scale=0.5)
    manifests = {s: reader_of(s)(tmp / "raw", tmp / s, SIZE, 64) for s in meterml.BAND_SETS}
    return tmp, manifests


def test_meterml_native_layout(meter):
    tmp, _ = meter
    raw = tmp / "raw"
    doc = json.loads((raw / "train_dataset.geojson").read_text())
    props = doc["features"][0]["properties"]
    assert set(props) == {"Image_Folder", "Type"} and props["Image_Folder"].startswith(
        "train_images/"
    )
    name = Path(props["Image_Folder"]).name
    folders = list((raw / "train_images").glob(f"train_images_*/{name}"))
    assert len(folders) == 1
    naip = np.asarray(Image.open(folders[0] / "naip.png"))
    assert naip.shape == (48, 48, 4)
    for product, bands in (
        ("sentinel-2-10m", 4),
        ("sentinel-2-20m", 6),
        ("sentinel-2-60m", 3),
        ("sentinel-1", 2),
    ):
        assert np.load(folders[0] / f"{product}.npy").shape[2] == bands


def test_meterml_band_stacking(meter):
    tmp, manifests = meter
    n_channels = {s: int(m["n_channels"].iloc[0]) for s, m in manifests.items()}
    assert n_channels == {"meterml_naip": 4, "meterml_naip_s2": 8, "meterml_all": 19}
    channels = manifests["meterml_all"]["channels"].iloc[0].split("|")
    assert channels[:8] == [
        "NAIP:Red",
        "NAIP:Green",
        "NAIP:Blue",
        "NAIP:NIR",
        "S2:Red",
        "S2:Green",
        "S2:Blue",
        "S2:NIR",
    ]
    assert channels[-2:] == ["S1:VV", "S1:VH"]
    images = {s: _images(tmp / s, m) for s, m in manifests.items()}
    np.testing.assert_array_equal(images["meterml_all"][:, :8], images["meterml_naip_s2"])
    np.testing.assert_array_equal(images["meterml_naip_s2"][:, :4], images["meterml_naip"])


def test_meterml_sentinel_band_window_and_naip_grid(tmp_path):
    """A Sentinel band at its mean maps to mid-grey, resized to the NAIP grid."""
    folder = tmp_path / "f"
    folder.mkdir()
    Image.fromarray(np.full((20, 20, 4), 7, np.uint8), mode="RGBA").save(folder / "naip.png")
    mean, std = (np.asarray(v) for v in meterml.SENTINEL_STATS["sentinel-2-10m"])
    s2 = np.zeros((5, 5, 4), np.uint16)
    s2[..., 0] = round(mean[0])
    s2[..., 1] = round(mean[1] + 2 * std[1]) + 10  # above the window: saturates
    np.save(folder / "sentinel-2-10m.npy", s2)
    stack = meterml.load_bands(folder, ("naip", "sentinel-2-10m"))
    assert stack.shape == (8, 20, 20)
    assert np.all(stack[:4] == 7)
    assert np.all(np.abs(stack[4].astype(int) - 128) <= 1)
    assert np.all(stack[5] == 255) and np.all(stack[6] == 0)


def test_meterml_multi_hot_labels_and_splits(meter):
    tmp, manifests = meter
    manifest = manifests["meterml_all"]
    types = []
    for split in ("train", "val", "test"):
        doc = json.loads((tmp / "raw" / f"{split}_dataset.geojson").read_text())
        types += [
            (split, f["properties"]["Image_Folder"], f["properties"]["Type"])
            for f in doc["features"]
        ]
    assert list(zip(manifest["split"], manifest["image_id"], strict=True)) == [
        (s, i) for s, i, _ in types
    ]
    for label, (_, _, type_string) in zip(manifest["label"], types, strict=True):
        expected = [] if type_string == "Negative" else type_string.split("-")
        got = label.split("|") if label else []
        assert got == sorted(expected, key=meterml.CLASSES.index)
    assert meterml.parse_type("Landfills-CAFOs", "t") == ["CAFOs", "Landfills"]
    assert meterml.parse_type("Roundabout", "t") == []
    np.testing.assert_array_equal(meterml.multi_hot(["CAFOs", "Mines"]), [1, 0, 0, 0, 1, 0])
    with pytest.raises(UserError, match="Airports"):
        meterml.parse_type("Airports", "somewhere")
    assert "" in set(manifest["label"])  # negatives are kept, with no class


def test_meterml_folder_without_s1_is_skipped_only_when_needed(tmp_path):
    raw = tmp_path / "raw"
    meterml_demo.make_demo(raw, seed=3, scale=0.1)
    doc = json.loads((raw / "val_dataset.geojson").read_text())
    victim = raw / doc["features"][0]["properties"]["Image_Folder"]
    (victim / "sentinel-1.npy").unlink()
    n_all = len(meterml.prepare_all(raw, tmp_path / "all", SIZE, 64))
    n_naip = len(meterml.prepare_naip(raw, tmp_path / "naip", SIZE, 64))
    assert n_naip == n_all + 1
