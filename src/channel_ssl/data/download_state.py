"""The download's state on disk (step 5 of :mod:`channel_ssl.data.download`).

``ROOT/.download-state.json`` records, per file of the record, its md5 and every file it put
on disk (path relative to ROOT and size); a state of an older format, or unreadable, counts
as absent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from channel_ssl.atomic import write_json

log = logging.getLogger("channel_ssl.download")

STATE_NAME = ".download-state.json"
STATE_VERSION = 2


def load_state(root: Path) -> dict[str, dict]:
    """Per record file: ``{md5, size, archive, files: {relative path: size}}``; {} if unusable."""
    path = root / STATE_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s is unreadable (%s); every file is checked again", path, exc)
        return {}
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        log.warning(
            "%s is of an older format that does not list the unpacked files; "
            "every file is checked again",
            path,
        )
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def save_state(root: Path, state: dict[str, dict]) -> None:
    write_json(root / STATE_NAME, {"version": STATE_VERSION, "files": state})


def disk_problems(root: Path, files: dict[str, int]) -> list[str]:
    """How the files recorded in the state differ from the disk (empty: they match)."""
    problems = []
    for rel, size in files.items():
        path = root / rel
        try:
            actual = path.stat().st_size if path.is_file() else None
        except OSError:
            actual = None
        if actual is None:
            problems.append(f"{rel} is missing")
        elif actual != size:
            problems.append(f"{rel} has {actual} bytes instead of {size}")
    return problems


def summary_of(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more
