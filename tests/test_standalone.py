"""The repository stands alone: no file points at references outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared|/work/shared|\bSPEC\b|DATASETS\.md")


def test_no_reference_outside_the_repository():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    files = [ROOT / name for name in tracked if Path(name).name != Path(__file__).name]
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not hits, "point at docs/ instead:\n" + "\n".join(hits)
