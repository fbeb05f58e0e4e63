"""Error messages that name the file at fault and say what to do.

Empty CHAMMI metadata, unreadable ``.npy`` arrays, and ``locate-source`` for raw directories
that several sources share.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from channel_ssl import registry
from channel_ssl.cli import main
from channel_ssl.data.locate_source import DOC_SECTIONS, locate_source, obtain_hint
from channel_ssl.data.preprocess import preprocess_dataset
from channel_ssl.data.readers.chammi import METADATA_NAME, read_metadata, required_columns
from channel_ssl.data.shards import ShardStore
from channel_ssl.errors import UserError
from channel_ssl.npy import load_npy

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- empty CHAMMI metadata
def _meta(tmp_path, text):
    path = tmp_path / "Allen" / METADATA_NAME
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_empty_metadata_is_named(tmp_path):
    path = _meta(tmp_path, "")
    with pytest.raises(UserError, match=rf"{re.escape(str(path))} is empty") as err:
        read_metadata(tmp_path, "Allen")
    assert "No columns to parse" not in str(err.value)


def test_header_only_metadata_is_named_not_a_manifest_error(tmp_path):
    path = _meta(tmp_path, ",".join(required_columns("Allen")) + "\n")
    with pytest.raises(UserError, match=rf"{re.escape(str(path))} has a header but no rows"):
        read_metadata(tmp_path, "Allen")
    with pytest.raises(UserError, match=r"has a header but no rows") as err:
        preprocess_dataset(tmp_path, "Allen", tmp_path / "out", image_size=8)
    assert "manifest" not in str(err.value)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_preprocess_command_names_the_empty_metadata(tmp_path, capsys, root_logging):
    path = _meta(tmp_path, "")
    argv = ["preprocess", "--chammi-root", str(tmp_path), "--dataset", "Allen"]
    assert main(argv + ["--out-dir", str(tmp_path / "o"), "--image-size", "8"]) == 2
    assert f"{path} is empty" in capsys.readouterr().err


# ---------------------------------------------------------------- unreadable .npy arrays
@pytest.mark.parametrize(
    "content",
    [
        b"",  # empty
        b"this is not an array at all\n" * 4,  # garbage: numpy would speak of pickles
        None,  # a real array cut short
        "npz",
        "pickled",
    ],
    ids=["empty", "garbage", "truncated", "npz", "pickled"],
)
@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_unreadable_npy_is_named(tmp_path, content, mmap_mode):
    path = tmp_path / "feats.npy"
    if content is None:
        np.save(path, np.arange(1000, dtype=np.float32).reshape(100, 10))
        path.write_bytes(path.read_bytes()[:300])
    elif content == "npz":
        with open(path, "wb") as f:
            np.savez(f, a=np.zeros(3))
    elif content == "pickled":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_npy(path, "features", mmap_mode=mmap_mode)
    msg = str(err.value)
    assert msg.startswith(f"features {path} ") and "delete it and rerun" in msg


def test_load_npy_reads_good_arrays_and_names_missing_ones(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.eye(3))
    np.testing.assert_array_equal(load_npy(path), np.eye(3))
    assert isinstance(load_npy(path, mmap_mode="r"), np.memmap)
    with pytest.raises(FileNotFoundError, match=r"OpenCell images .*nope.npy does not exist"):
        load_npy(tmp_path / "nope.npy", "OpenCell images")


def test_garbage_shard_is_named(tmp_path):
    (tmp_path / "shard-00000.npy").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match=r"shard .*shard-00000.npy is not a readable .npy"):
        ShardStore(tmp_path).get("shard-00000.npy", 0)


# ---------------------------------------------------------------- locate-source
def test_locate_source_names_every_source_of_a_shared_raw_directory(tmp_path):
    with pytest.raises(UserError) as err:
        locate_source("jumpcp", "", tmp_path / "loc.json")
    msg = str(err.value)
    assert "jumpcp (JUMP-CP, 8 channels) and jumpcp_5ch" in msg
    assert "as jumpcp" not in msg and "insitro-research-2023-context-vit S3" in msg
    assert 'docs/datasets.md, section "6. JUMP-CP' in msg
    assert "sources: raw_dirs: jumpcp: <dir>" in msg

    msg = obtain_hint("meterml")
    assert "meterml_naip (" in msg and "meterml_naip_s2 (" in msg and "meterml_all (" in msg
    assert "as meterml_naip" not in msg and "Meter-ML project page" in msg
    assert 'section "8. METER-ML' in msg


def test_locate_source_command(tmp_path, capsys, root_logging):
    out = tmp_path / "loc.json"
    assert main(["locate-source", "--source", "meterml", "--raw-dir", "", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "meterml_naip_s2" in err and "(as meterml_naip)" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["locate-source", "--source", "jumpcp", "--raw-dir", str(empty), "--out", str(out)])
        == 2
    )
    assert f"{empty} does not exist or is empty" in capsys.readouterr().err
    (empty / "plate.csv").write_text("x\n")
    assert (
        main(["locate-source", "--source", "jumpcp", "--raw-dir", str(empty), "--out", str(out)])
        == 0
    )
    assert '"files": 1' in out.read_text()
    assert main(["locate-source", "--source", "jump", "--raw-dir", "", "--out", str(out)]) == 2
    assert "known raw directories" in capsys.readouterr().err


def test_every_raw_directory_has_its_documentation_section():
    raws = {s.raw for s in registry.SOURCES.values()}
    assert raws == set(DOC_SECTIONS)
    headings = (REPO / "docs" / "datasets.md").read_text().splitlines()
    for raw, section in DOC_SECTIONS.items():
        assert f"## {section}" in headings, raw


def test_reliability_doc_names_tests_that_exist():
    text = (REPO / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", text))
    assert len(named) > 30
    for file, test in sorted(named):
        assert f"def {test}(" in (REPO / file).read_text(), f"{file}::{test}"


def test_garbage_feature_file_is_named_by_the_evaluation_and_the_figures(tmp_path):
    from channel_ssl.eval.eval_chammi import load_features
    from channel_ssl.figures import load_features as load_figure_features

    bad = tmp_path / "feats" / "Allen" / "cls1.npy"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x93NUMPY garbage that is not an array")
    with pytest.raises(UserError, match=re.escape(str(bad))):
        load_features(tmp_path / "feats", "Allen", "cls1.npy")
    with pytest.raises(UserError, match=re.escape(str(bad))):
        load_figure_features(bad, n_rows=3)


def test_empty_metadata_is_named_by_the_evaluation_and_the_extraction(tmp_path):
    from channel_ssl.eval.eval_chammi import read_metadata
    from channel_ssl.eval.extract import count_metadata_rows

    empty = tmp_path / "enriched_meta.csv"
    empty.write_text("")
    with pytest.raises(UserError, match=re.escape(f"{empty} is empty")):
        read_metadata(empty)
    with pytest.raises(UserError, match=re.escape(f"{empty} is empty")):
        count_metadata_rows(empty)
    empty.write_text("file_path,Label,train_test_split\n")
    with pytest.raises(UserError, match="header but no rows"):
        read_metadata(empty)
