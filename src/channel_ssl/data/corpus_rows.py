"""What every corpus row gets, whoever assembles the corpus (``corpus.py`` for plain corpora,
``extended_chammi.py`` for ExtendedCHAMMI): its sampling weight and where its shards are."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.errors import UserError

BALANCE_MODES = ("source", "none")


def relative_shard_dir(manifest_dir: Path, corpus_dir: Path) -> str:
    """The shard directory as the corpus stores it: relative to the corpus file's directory."""
    try:
        return os.path.relpath(manifest_dir.resolve(), corpus_dir.resolve())
    except ValueError:  # different drives (Windows): no relative path exists
        return str(manifest_dir.resolve())


def source_weights(sources: pd.Series, balance: str) -> np.ndarray:
    """Per-row weights: equal total per source (mean 1) for ``source``, all ones for ``none``."""
    if balance == "none":
        return np.ones(len(sources))
    if balance != "source":
        raise UserError(f"--balance must be one of {BALANCE_MODES}, got {balance!r}")
    counts = sources.map(sources.value_counts())
    n_sources = sources.nunique()
    return (len(sources) / (n_sources * counts)).to_numpy(dtype=np.float64)
