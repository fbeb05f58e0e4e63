"""Reading ``.npy`` arrays with errors that name the file.

``np.load`` on a file that is not an ``.npy`` array (cut short, overwritten, another format)
raises numpy's own message ("Cannot load file containing pickled data when
allow_pickle=False", "No data left in file", "mmap length is greater than file size"),
which does not say which of a run's many arrays is at fault. :func:`load_npy` is the one
place the package loads an array from disk: it never unpickles and raises
:class:`~channel_ssl.errors.UserError` naming the file and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from channel_ssl.errors import UserError


def load_npy(
    path: str | os.PathLike, what: str = "array", mmap_mode: str | None = None
) -> np.ndarray:
    """The array in the ``.npy`` file ``path`` (memory-mapped with ``mmap_mode``).

    Args:
        path: the ``.npy`` file.
        what: what the array is, for messages ("features", "shard", "OpenCell images").
        mmap_mode: passed to :func:`numpy.load` (``"r"`` maps the file read-only).

    Raises:
        FileNotFoundError: the file does not exist.
        UserError: the file is not a single ``.npy`` array (truncated, empty, pickled
            objects, an ``.npz`` archive or another format); the message names it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(
            f"{what} {path} is not a readable .npy array ({exc}); it is cut short or another "
            "kind of file: delete it and rerun the step that writes it"
        ) from exc
    if not isinstance(array, np.ndarray):  # an .npz archive loads as a mapping of arrays
        names = list(getattr(array, "files", []))
        close = getattr(array, "close", None)
        if close is not None:
            close()
        raise UserError(
            f"{what} {path} is an .npz archive (arrays {names}), not one .npy array: "
            "delete it and rerun the step that writes it"
        )
    return array
