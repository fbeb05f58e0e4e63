"""Atomic file output: write to a temporary name in the target directory, then rename.

A crash or a kill never leaves a half-written file under the final name, and an
existing file is replaced only once the new content is complete.

Guarantees of :func:`atomic_path` (and the helpers built on it):

* the final file gets the permissions a plain ``open(path, "w")`` would give
  (``0o666`` less the process umask), not the ``0600`` of :func:`tempfile.mkstemp`;
* the content is ``fsync``-ed before the rename, and the directory after it
  (best effort), so a power loss leaves either the old or the new file;
* the temporary file is removed when the block raises, and when the process is
  stopped by SIGTERM or SIGINT: live temporaries are kept in a registry that a
  signal handler empties before it hands the signal on to the handler that was
  installed before (the default one ends the process as the signal would have).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_live: set[Path] = set()
_lock = threading.RLock()  # reentrant: the signal handler may run while it is held
_previous: dict[int, Any] = {}


def current_umask() -> int:
    """The process umask, read without changing it where ``/proc`` allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def remove_live_temporaries() -> None:
    """Delete every temporary file of an :func:`atomic_path` block still in progress."""
    with _lock:
        paths = list(_live)
        _live.clear()
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def _on_signal(signum: int, frame) -> None:
    remove_live_temporaries()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. Python's SIGINT handler raises KeyboardInterrupt
        return
    if previous == signal.SIG_IGN:
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # end the process as the signal itself would have


def _install_handlers() -> None:
    """Install the cleanup handler once, from the main thread only (a signal rule)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in CLEANUP_SIGNALS:
        current = signal.getsignal(sig)
        if current is _on_signal or current is None:
            continue  # None: installed from outside Python; leave it alone
        if getattr(current, "graceful", False):
            continue  # a handler that lets the write finish and stops the program itself
        if current == signal.SIG_IGN:
            continue  # an ignored signal stays ignored
        _previous[sig] = current
        signal.signal(sig, _on_signal)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system allows syncing a directory
        _fsync_path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary file keeps the final suffix so libraries that dispatch on the
    extension (numpy, pandas, PIL) behave as for the final name.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _install_handlers()
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=f".tmp{final.suffix}", dir=final.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    with _lock:
        _live.add(tmp_path)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        _fsync_path(tmp_path)
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)
    finally:
        with _lock:
            _live.discard(tmp_path)
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def write_table(path: str | os.PathLike, df) -> None:
    """Write a pandas DataFrame as CSV or parquet, chosen by the path's suffix."""
    suffix = Path(path).suffix
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif suffix == ".csv":
            df.to_csv(tmp, index=False, lineterminator="\n")
        else:
            raise ValueError(f"{path}: unsupported table suffix {suffix!r} (use .csv or .parquet)")
