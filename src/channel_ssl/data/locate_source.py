"""``channel-ssl locate-source``: record where a source's real data lies (paper scale).

``channel-ssl locate-source --source RAW --raw-dir DIR --out SOURCE_LOCATION.json``

``RAW`` names a raw directory (``registry.Source.raw``), which several sources may share:
the 5- and 8-channel views of JUMP-CP read one copy, the three Meter-ML views another. The
real data cannot be downloaded by the workflow (credentials, size, hosts without an API);
the user puts it in its native layout and names the directory in the config
(``sources.raw_dirs.<raw>``). An unset or empty directory stops with a message naming every
source that reads the directory, how to obtain it and the section of ``docs/datasets.md``
that describes its layout.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

from channel_ssl.atomic import write_json
from channel_ssl.errors import UserError
from channel_ssl.provenance import StepIO

log = logging.getLogger("channel_ssl.sources")

DATASETS_DOC = "docs/datasets.md"
# raw directory -> the heading of its section in docs/datasets.md (tests check they exist)
DOC_SECTIONS: dict[str, str] = {
    "hpa_fov": "1. HPA FOV",
    "hpa_single_cell": "2. HPA single cell",
    "wtc": "3. WTC-11 hiPSC single-cell image dataset v1 (Viana et al. 2023)",
    "opencell": "4. OpenCell / cytoself (Kobayashi et al. 2022)",
    "cellpainting": "5. Cell Painting: LINCS, CDRP/BBBC036, BBBC022, TA-ORF/BBBC037 "
    "(Moshkov et al. 2024; Doron et al.)",
    "jumpcp": "6. JUMP-CP as used by ChannelViT (Bao et al. 2024) / ContextViT",
    "cyclops": "7. CYCLoPs yeast as used by Microsnoop (Xun et al.)",
    "meterml": "8. METER-ML (Zhu et al. 2022)",
}


def _sources() -> list:
    from channel_ssl import registry

    return list(registry.SOURCES.values())


def sources_reading(raw: str) -> list:
    """The registry's sources that read raw directory ``raw``, in declaration order."""
    return [s for s in _sources() if s.raw == raw]


def _obtain(source, by_name: dict) -> str:
    """``source.obtain``, following an ``as <other source>`` reference."""
    seen = set()
    while True:
        m = re.fullmatch(r"\s*as\s+(\w+)\s*", source.obtain or "")
        if not m or m.group(1) not in by_name or m.group(1) in seen:
            return source.obtain
        seen.add(m.group(1))
        source = by_name[m.group(1)]


def obtain_hint(raw: str) -> str:
    """Which sources read ``raw``, how to obtain it and where its layout is documented."""
    readers = sources_reading(raw)
    if not readers:
        known = sorted({s.raw for s in _sources()})
        raise UserError(f"unknown source {raw!r}; known raw directories: {known}")
    by_name = {s.name: s for s in _sources()}
    names = [f"{s.name} ({s.description})" for s in readers]
    who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    ways = list(dict.fromkeys(o for o in (_obtain(s, by_name) for s in readers) if o))
    section = DOC_SECTIONS.get(raw)
    doc = f'{DATASETS_DOC}, section "{section}"' if section else DATASETS_DOC
    how = f"Obtain it: {'; '.join(ways)}. " if ways else ""
    return f"It is read by {who}. {how}Its layout: {doc}."


def locate_source(raw: str, raw_dir: str, out: str | os.PathLike) -> dict:
    """Check that ``raw_dir`` holds the real data of raw directory ``raw``; record it in ``out``."""
    hint = obtain_hint(raw)
    if not raw_dir:
        raise UserError(
            f"raw data directory {raw!r}: no directory configured. {hint} "
            f"Then set 'sources: raw_dirs: {raw}: <dir>' in the config."
        )
    path = Path(raw_dir)
    if not path.is_dir() or not any(path.iterdir()):
        raise UserError(
            f"raw data directory {raw!r}: the configured directory {path} does not exist or is "
            f"empty. {hint} Put it there, or correct 'sources: raw_dirs: {raw}' in the config."
        )
    n_files = sum(1 for p in path.rglob("*") if p.is_file())
    record = {"source": raw, "raw_dir": str(path.resolve()), "files": n_files, "demo": False}
    write_json(out, record)
    log.info("source %s: %d files under %s", raw, n_files, path)
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        required=True,
        help="raw data directory name (hpa_fov, jumpcp, meterml, ...; registry Source.raw)",
    )
    parser.add_argument(
        "--raw-dir", required=True, help="directory with the source in its native layout"
    )
    parser.add_argument("--out", required=True, help="location record (JSON) to write")


def run(args: argparse.Namespace) -> int:
    locate_source(args.source, args.raw_dir, args.out)
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    # The real data is the user's: its location is recorded, its files are not hashed here.
    return StepIO(outputs=[args.out], config={"source": args.source, "raw_dir": args.raw_dir})
