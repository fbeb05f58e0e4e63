"""atomic_path: permissions under the umask, cleanup on exceptions and on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from channel_ssl.atomic import atomic_path, current_umask, write_text


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_final_file_respects_umask(tmp_path, umask_022):
    out = tmp_path / "a.txt"
    write_text(out, "hello\n")
    mode = stat.S_IMODE(out.stat().st_mode)
    assert mode == 0o644
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH


def test_final_file_respects_a_stricter_umask(tmp_path):
    old = os.umask(0o077)
    try:
        assert current_umask() == 0o077
        write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


def test_temporary_removed_on_exception_and_old_file_kept(tmp_path):
    out = tmp_path / "c.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_fsync_before_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1]
    )
    write_text(tmp_path / "d.txt", "x")
    assert calls[:2] == ["fsync", "replace"]


_CHILD = """
import signal, sys, time
# as in a foreground process: a suite started in the background (nohup, &) inherits an
# ignored SIGINT, which atomic_path rightly leaves ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
from channel_ssl.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("partial")
    print(tmp, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_temporary_removed_when_writer_is_signalled(tmp_path, sig):
    out = tmp_path / "e.txt"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        tmp = child.stdout.readline().strip()
        assert tmp and os.path.exists(tmp)
        child.send_signal(sig)
        rc = child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    if sig == signal.SIGTERM:
        assert rc == -signal.SIGTERM  # the default behaviour of the signal is kept
    else:
        assert rc != 0  # KeyboardInterrupt
    time.sleep(0.05)
    assert not os.path.exists(tmp)
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_tree_of_outputs_is_group_readable_under_umask_022(tmp_path, umask_022):
    import numpy as np
    import pandas as pd

    from channel_ssl.atomic import save_npy, write_json, write_table

    out = tmp_path / "results"
    write_text(out / "tables" / "table1.md", "| a |\n")
    write_json(out / "runs" / "P-BoC-L" / "provenance.json", {"ok": True})
    save_npy(out / "features" / "HPA" / "cls1.npy", np.zeros((2, 3), dtype=np.float32))
    frame = pd.DataFrame({"a": [1, 2]})
    write_table(out / "scores" / "knn.csv", frame)
    write_table(out / "shards" / "manifest.parquet", frame)
    paths = [out, *out.rglob("*")]
    assert sum(p.is_file() for p in paths) == 5
    assert _leftovers(out) == [] and not [p for p in paths if ".tmp" in p.name]
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        if p.is_dir():
            assert mode == 0o755, p  # group and others may list and enter it
        else:
            assert mode == 0o644, p  # group and others may read it
