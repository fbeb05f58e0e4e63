"""data/: readers of native layouts never import the demo generators."""

from __future__ import annotations

import ast
from pathlib import Path

READERS = Path(__file__).resolve().parents[1] / "src" / "channel_ssl" / "data" / "readers"


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_reader_imports_a_demo_generator():
    readers = sorted(READERS.glob("*.py"))
    assert len(readers) > 1
    offending = {
        p.name: sorted(m for m in _imported_modules(p) if m.startswith("channel_ssl.data.demo"))
        for p in readers
    }
    assert {k: v for k, v in offending.items() if v} == {}
