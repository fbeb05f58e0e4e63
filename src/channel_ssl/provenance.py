"""Provenance records: what made each output, from which inputs, with which code and config.

Every ``channel-ssl`` step that writes files leaves, beside each of its main outputs, a record
``<output>.prov.json``::

    step          command name (``extract``, ``eval-chammi``, ...)
    argv          the full command line
    params        the step's parameters (its parsed arguments)
    config        the configuration that matters to the step (run config for pretraining,
                  otherwise its non-path parameters); ``config_hash`` is its sha256
    seeds         every seed among the parameters
    inputs        [{path, sha256, size, record}] -- an input that has its own record is not
                  hashed again: its sha256 is taken from that record (``record`` points to it)
    outputs       [{path, sha256, size, mtime_ns}] the main outputs (each has this record)
    members       [{path, sha256, size, mtime_ns}] other files the step wrote (images, shards)
    git           {commit, dirty} of the code that ran
    versions      python, channel_ssl, torch, CUDA, timm, faiss, numpy, snakemake, ...
    host, gpu     machine and GPU model (if a GPU was used)
    job           SLURM job id / array task / node list (or null when run locally)
    process       {pid, warm_server}: the step's process id, and the ``channel-ssl warm``
                  server's that forked it (null when it started cold)
    start, end    UTC timestamps
    record_hash   sha256 of the record without this field

Paths are stored as given on the command line (relative to the workflow's directory).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from channel_ssl import warm_client
from channel_ssl.atomic import write_json

SUFFIX = ".prov.json"
_HASH_CHUNK = 1 << 20
_VERSION_PACKAGES = (
    "channel-ssl",
    "torch",
    "torchvision",
    "timm",
    "faiss-cpu",
    "faiss-gpu-cu12",
    "numpy",
    "pandas",
    "scikit-learn",
    "umap-learn",
    "snakemake",
    "snakemake-executor-plugin-slurm",
)
# Parameters that are plumbing, not configuration: they never change a result.
_NON_CONFIG_PARAMS = {"log", "threads", "device", "_module", "command"}


def record_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}{SUFFIX}")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def canonical_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def read_record(path: str | os.PathLike) -> dict | None:
    """The record beside ``path`` (or ``path`` itself if it is a record), or None."""
    p = Path(path)
    rp = p if p.name.endswith(SUFFIX) else record_path(p)
    if not rp.exists():
        return None
    with open(rp) as fh:
        return json.load(fh)


def _file_entry(path: str | os.PathLike, with_mtime: bool = False) -> dict:
    st = os.stat(path)
    entry = {"path": str(path), "sha256": sha256_file(path), "size": st.st_size}
    if with_mtime:
        entry["mtime_ns"] = st.st_mtime_ns
    return entry


def input_entry(path: str | os.PathLike) -> dict:
    """Describe an input: from its own record if it has one, else by hashing it."""
    rec = read_record(path)
    if rec is not None:
        for out in rec.get("outputs", []):
            if os.path.normpath(out["path"]) == os.path.normpath(str(path)):
                return {
                    "path": str(path),
                    "sha256": out["sha256"],
                    "size": out["size"],
                    "record": str(record_path(path)),
                    "record_hash": rec.get("record_hash"),
                }
    entry = _file_entry(path)
    entry["record"] = None
    return entry


def git_state() -> dict:
    """Commit and dirtiness of the code that ran (null outside git).

    The package's own checkout when installed in editable mode; otherwise (an installed copy,
    as in the conda environments) the workflow directory the job runs in.
    """
    for repo in (Path(__file__).resolve().parents[2], Path.cwd()):
        try:
            commit = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            status = subprocess.run(
                ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        return {"commit": commit, "dirty": bool(status.strip())}
    return {"commit": None, "dirty": None}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in _VERSION_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = torch.version.cuda
    return out


def gpu_model() -> str | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken driver must not fail the step
        return None
    return None


def slurm_job() -> dict | None:
    if "SLURM_JOB_ID" not in os.environ:
        return None
    keys = (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_JOB_NODELIST",
        "SLURM_NNODES",
    )
    return {k.lower(): os.environ[k] for k in keys if k in os.environ}


@dataclass
class StepIO:
    """What a step read and wrote, declared by its command module's ``step_io(args)``.

    ``outputs`` get a record each; ``members`` are hashed into those records; ``config``
    overrides the step's configuration (default: its non-path parameters).
    """

    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    config: dict | None = None


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def step_params(args) -> dict:
    return {k: _jsonable(v) for k, v in sorted(vars(args).items()) if not k.startswith("_")}


def default_config(params: dict, io: StepIO) -> dict:
    """A step's configuration: its parameters that are neither plumbing nor file paths."""
    paths = {os.path.normpath(p) for p in (*io.inputs, *io.outputs)}
    config = {}
    for key, value in params.items():
        if key in _NON_CONFIG_PARAMS:
            continue
        if isinstance(value, str) and (
            os.path.normpath(value) in paths or key.endswith(("dir", "root", "out"))
        ):
            continue
        if key in {
            "checkpoint",
            "manifest",
            "metadata",
            "corpus",
            "features",
            "row",
            "out_csv",
            "out_md",
        }:
            continue
        config[key] = value
    return config


def seeds_of(params: dict, config: dict) -> dict:
    seeds = {k: v for k, v in params.items() if "seed" in k}
    if isinstance(config, dict) and "seed" in config:
        seeds.setdefault("seed", config["seed"])
    return seeds


def write_records(command: str, argv: list[str], args, io: StepIO, start: str) -> list[Path]:
    """Write the record of a finished step beside each of its outputs; return their paths."""
    params = step_params(args)
    config = io.config if io.config is not None else default_config(params, io)
    record = {
        "step": command,
        "argv": ["channel-ssl", *argv],
        "cwd": os.getcwd(),
        "params": params,
        "config": config,
        "config_hash": canonical_hash(config),
        "seeds": seeds_of(params, config),
        "inputs": [input_entry(p) for p in io.inputs],
        "outputs": [_file_entry(p, with_mtime=True) for p in io.outputs],
        "members": [_file_entry(p, with_mtime=True) for p in io.members],
        "git": git_state(),
        "versions": versions(),
        "host": socket.gethostname(),
        "gpu": gpu_model(),
        "job": slurm_job(),
        "process": {"pid": os.getpid(), "warm_server": warm_client.SERVER_PID},
        "start": start,
        "end": now(),
    }
    record["record_hash"] = canonical_hash(record)
    written = []
    for out in io.outputs:
        rp = record_path(out)
        write_json(rp, record)
        written.append(rp)
    return written


def output_matches_record(path: str | os.PathLike) -> bool | None:
    """Does ``path`` still hold what its record says was written? None if it has no record.

    Size and mtime are compared first; the file is hashed only when they differ, so the
    check costs a stat per file in the common case.
    """
    rec = read_record(path)
    if rec is None or not os.path.exists(path):
        return None
    for out in rec.get("outputs", []):
        if os.path.normpath(out["path"]) != os.path.normpath(str(path)):
            continue
        st = os.stat(path)
        if st.st_size == out["size"] and st.st_mtime_ns == out.get("mtime_ns"):
            return True
        return st.st_size == out["size"] and sha256_file(path) == out["sha256"]
    return None
