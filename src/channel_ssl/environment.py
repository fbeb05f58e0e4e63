"""The environment the workflow's rules run in.

The rules call ``channel-ssl``. :func:`put_interpreter_on_path` makes that the console script
of the Python environment running Snakemake, whether or not that environment is activated
(``.venv/bin/snakemake ...`` from a plain shell, or a cluster job started with a bare PATH):
it puts the interpreter's ``bin`` directory first on this process's PATH, which every shell
command Snakemake starts inherits. It changes no file.
"""

from __future__ import annotations

import os
import sys


def put_interpreter_on_path() -> str:
    """Prepend the directory of ``sys.executable`` to PATH (once); returns that directory."""
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if parts[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *[p for p in parts if p]])
    return bin_dir
