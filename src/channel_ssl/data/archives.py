"""Unpacking a downloaded archive into a CHAMMI root (step 4 of :mod:`channel_ssl.data.download`).

Archives (zip/tar) are unpacked into a staging directory ``ROOT/.unpack-<key>/`` (member paths
may not escape it, links are refused); the directory holding ``Allen/``, ``HPA/``, ``CP/`` is
moved up, and the result is merged into ROOT, replacing files of the same name.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from channel_ssl.data.readers.chammi import DATASETS, METADATA_NAME
from channel_ssl.errors import UserError

log = logging.getLogger("channel_ssl.download")

STAGING_PREFIX = ".unpack-"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(archive: Path, root: Path) -> None:
    """Unpack a zip/tar archive into ``root``; refuses members that would land outside it."""
    root_resolved = root.resolve()
    log.info("unpacking %s into %s", archive, root)
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                target = (root / name).resolve()
                if not target.is_relative_to(root_resolved):
                    raise UserError(f"{archive}: member {name!r} would be written outside {root}")
            zf.extractall(root)
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                target = (root / member.name).resolve()
                if not target.is_relative_to(root_resolved) or member.issym() or member.islnk():
                    raise UserError(
                        f"{archive}: member {member.name!r} is a link or escapes {root}"
                    )
            tf.extractall(root, filter="data")


def flatten_chammi(root: Path) -> None:
    """Move the directory holding ``<dataset>/enriched_meta.csv`` up to ``root`` (e.g. ``root/CHAMMI``)."""
    if any((root / d / METADATA_NAME).exists() for d in DATASETS):
        return
    found = sorted(
        {
            p.parent.parent
            for d in DATASETS
            for pattern in (f"*/{d}/{METADATA_NAME}", f"*/*/{d}/{METADATA_NAME}")
            for p in root.glob(pattern)
        }
    )
    if not found:
        return
    inner = found[0]
    log.info("moving the contents of %s up to %s", inner, root)
    for child in inner.iterdir():
        dest = root / child.name
        if dest.exists():
            raise UserError(f"cannot move {child} to {dest}: it already exists")
        shutil.move(str(child), str(dest))
    # remove the now empty nesting directories up to root
    d = inner
    while d != root and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


def merge_tree(src: Path, dst: Path) -> None:
    """Move the tree ``src`` into ``dst``; files of the same name in ``dst`` are replaced."""
    dst.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        dest = dst / child.name
        if child.is_dir() and dest.is_dir() and not dest.is_symlink():
            merge_tree(child, dest)
            continue
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.is_symlink() or (child.is_dir() and dest.exists()):
            dest.unlink()
        os.replace(child, dest)
    src.rmdir()


def unpack_into(archive: Path, root: Path) -> dict[str, int]:
    """Unpack ``archive`` via a staging directory into ``root`` (module step 4).

    Returns every file it put under ``root`` (path relative to ``root`` -> size).
    """
    staging = root / f"{STAGING_PREFIX}{archive.name}"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    staging.mkdir(parents=True)
    try:
        try:
            unpack(archive, staging)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise UserError(
                f"cannot unpack {archive}: {exc}. Delete {archive} and rerun to download it again"
            ) from exc
        flatten_chammi(staging)
        listing = {
            p.relative_to(staging).as_posix(): p.stat().st_size
            for p in sorted(staging.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }
        merge_tree(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return listing
