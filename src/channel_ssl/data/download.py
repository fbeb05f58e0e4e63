"""Download CHAMMI from Zenodo, verified against the record's own file listing.

``channel-ssl download-chammi --out ROOT --record-url https://zenodo.org/api/records/7988357
[--files NAME ...] [--keep-archives] [--retry-budget SECONDS] [--max-retries N] [--timeout SECONDS]``

1. Fetch the record JSON and list its files (key, size, ``md5:`` checksum, download link).
   Both Zenodo API shapes are understood: ``files`` as a list of ``{key, size, checksum,
   links: {self}}`` (legacy) and ``files.entries`` / ``entries`` (a list or a mapping) whose
   links carry ``content``; a record that only links its files listing is followed once.
2. Download each file to ``ROOT/<key>.part``. Whatever stops a transfer early (a connection
   reset, a stall past ``--timeout``, a clean close before ``Content-Length`` bytes, HTTP
   408/425/429/500/502/503/504) is retried, resuming from the bytes already on disk with an
   HTTP ``Range`` request (a server that ignores ``Range`` is read from the start again). The
   record listing is retried the same way. Then size and md5 are checked; a mismatch deletes
   the partial file and raises, naming the file, the expected and the actual value; only
   verified bytes are ever renamed to ``ROOT/<key>``.
3. Retries (:class:`RetryPolicy`): exponential back-off (1 s, 2 s, 4 s ... capped at 60 s)
   with jitter (each wait is 50-100 % of its step), and at least what a ``Retry-After``
   header asks (seconds or an HTTP date, capped at 300 s). A file, or the record listing,
   gives up after ``--max-retries`` failed attempts in a row or when the next wait would
   take it past ``--retry-budget`` seconds since its first failure; both count again from
   zero whenever bytes arrive, so a long transfer over a flaky link keeps going as long as it
   moves. Giving up keeps the ``.part`` file: rerunning the command resumes it.
4. Archives (zip/tar) are unpacked into a staging directory ``ROOT/.unpack-<key>/`` (member
   paths may not escape it, links are refused); the directory holding ``Allen/``, ``HPA/``,
   ``CP/`` (the archive has them under ``CHAMMI/``) is moved up, and the result is merged
   into ROOT, replacing files of the same name, so the layout is
   ``ROOT/{Allen,HPA,CP}/enriched_meta.csv``. Archives are deleted afterwards unless
   ``--keep-archives``.
5. ``ROOT/.download-state.json`` records, per file of the record, its md5 and every file it
   put on disk (path relative to ROOT and size), written only after those files were checked
   on disk. Every run checks the recorded files against the disk again: a file whose
   recorded outputs are all present with their sizes is skipped; one with a missing or
   changed output is unpacked again from the kept archive (its md5 checked first) or
   downloaded again. A state file of an older format, or unreadable, counts as absent.
   ``ROOT/.download-complete.json`` (files with size and md5) is written last, atomically.

Only the standard library's urllib is used. :data:`_sleep`, :data:`_clock` and
:data:`_jitter` are the module's only ways to wait, read the time and draw jitter, so tests
replace them to run retries without waiting. Step 3's policy and back-off are
:mod:`channel_ssl.data.retry`, step 4 :mod:`channel_ssl.data.archives`, step 5's state file
:mod:`channel_ssl.data.download_state`.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import random
import re
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urljoin

from channel_ssl.atomic import write_json
from channel_ssl.data.archives import STAGING_PREFIX, is_archive, unpack_into
from channel_ssl.data.download_state import (
    STATE_NAME,
    disk_problems,
    load_state,
    save_state,
    summary_of,
)
from channel_ssl.data.readers.chammi import DATASETS, METADATA_NAME
from channel_ssl.data.retry import (
    Retrier,
    RetryPolicy,
    Transient,
    close_error,
    transient_of,
)
from channel_ssl.errors import UserError
from channel_ssl.progress import ProgressLogger
from channel_ssl.provenance import StepIO
from channel_ssl.step_io import chammi_metadata

log = logging.getLogger("channel_ssl.download")

DEFAULT_RECORD_URL = "https://zenodo.org/api/records/7988357"
COMPLETE_NAME = ".download-complete.json"
CHUNK = 1 << 20
USER_AGENT = "channel-ssl/0.1 (+urllib)"

# The module's clock, sleep and jitter source (tests replace them; see the module docstring).
_sleep = time.sleep
_clock = time.monotonic
_jitter = random.random


def _retrier(policy: RetryPolicy) -> Retrier:
    """A retrier on the module's clock, sleep and jitter, looked up at each use."""
    return Retrier(policy, lambda: _clock(), lambda s: _sleep(s), lambda: _jitter())


@dataclass(frozen=True)
class RemoteFile:
    key: str
    size: int
    md5: str
    url: str


def _open(url: str, start: int = 0, timeout: float = 60.0):
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _get_json(url: str, policy: RetryPolicy | None = None) -> dict:
    """The JSON at ``url``, retried under ``policy`` while the server fails transiently."""
    policy = policy or RetryPolicy()
    retrier = _retrier(policy)
    while True:
        try:
            with _open(url, timeout=policy.timeout) as resp:
                body = resp.read()  # raises IncompleteRead on a short body
            break
        except (OSError, http.client.HTTPException) as exc:
            close_error(exc)
            transient = transient_of(exc)
            if transient is None:
                raise UserError(
                    f"cannot read Zenodo record {url}: {exc}; check --record-url"
                ) from exc
            stop = retrier.wait(transient)
            if stop:
                raise UserError(
                    f"cannot read Zenodo record {url}: {stop}. Nothing was downloaded; "
                    "rerun later, or raise --retry-budget / --max-retries"
                ) from exc
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(
            f"Zenodo record {url} is not JSON ({exc}; it starts with {body[:80]!r}); "
            "check --record-url"
        ) from exc
    if not isinstance(data, dict):
        raise UserError(f"Zenodo record {url} is JSON but not an object; check --record-url")
    return data


def _entries(data: dict) -> list[dict] | None:
    """File entries of a record/listing JSON in either Zenodo shape, or None if absent."""
    candidates = [data.get("files"), data.get("entries")]
    files = data.get("files")
    if isinstance(files, dict):
        candidates.insert(0, files.get("entries"))
    for c in candidates:
        if isinstance(c, list):
            return c
        if isinstance(c, dict) and c and all(isinstance(v, dict) for v in c.values()):
            return [{"key": k, **v} for k, v in c.items()]
    return None


def _safe_key(key: str) -> bool:
    parts = Path(key).parts
    return bool(parts) and not Path(key).is_absolute() and ".." not in parts


def parse_record(
    data: dict, record_url: str, policy: RetryPolicy | None = None
) -> list[RemoteFile]:
    """List the files of a Zenodo record JSON (see module docstring for the shapes)."""
    entries = _entries(data)
    if entries is None:
        listing = (data.get("links") or {}).get("files")
        if not listing:
            raise UserError(f"Zenodo record {record_url} lists no files")
        url = urljoin(record_url, listing)
        entries = _entries(_get_json(url, policy)) or []
        record_url = url
    files = []
    for e in entries:
        key = e.get("key") or e.get("filename")
        checksum = str(e.get("checksum", ""))
        algo, _, digest = checksum.partition(":")
        if not key or algo != "md5" or not digest:
            raise UserError(
                f"Zenodo record {record_url}: entry {e!r} lacks a key or an md5 checksum"
            )
        if not _safe_key(key) or key.startswith((STAGING_PREFIX, ".download-")):
            raise UserError(f"Zenodo record {record_url}: file name {key!r} is not a safe path")
        links = e.get("links") or {}
        # legacy shape: links.self is the content; newer: links.self is metadata, links.content the bytes
        link = links.get("content") or links.get("download") or links.get("self")
        if not link:
            raise UserError(f"Zenodo record {record_url}: file {key!r} has no download link")
        files.append(
            RemoteFile(
                key=key,
                size=int(e.get("size", e.get("filesize", -1))),
                md5=digest.lower(),
                url=urljoin(record_url, link),
            )
        )
    if not files:
        raise UserError(f"Zenodo record {record_url} lists no files")
    return files


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _download_once(
    remote: RemoteFile, part: Path, start: int, timeout: float, got: list[int]
) -> None:
    """One request for the bytes of ``remote`` from ``start`` on, appended to ``part``.

    ``got[0]`` counts the bytes written. Raises :class:`Transient` when the response ends
    before the bytes it announced (or before the record's size).
    """
    with _open(remote.url, start, timeout) as resp:
        resumed = start > 0 and resp.status == 206
        if resumed:
            m = re.match(r"\s*bytes\s+(\d+)-", resp.headers.get("Content-Range") or "")
            if m and int(m.group(1)) != start:
                part.unlink()
                raise Transient(
                    f"{remote.key}: asked for bytes {start}- but the server sent "
                    f"{resp.headers.get('Content-Range')}; starting again from byte 0"
                )
        elif start:
            log.info("%s: server ignored the Range request; restarting", remote.key)
        done = start if resumed else 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if remote.size >= 0 and (expected is None or done + expected < remote.size):
            expected = remote.size - done  # a body shorter than the record's size is short
        total_mb = max(1, ((expected or CHUNK) + CHUNK - 1) // CHUNK)
        progress = ProgressLogger(total_mb, every=256, unit="MB", logger=log)
        received = 0
        with open(part, "ab" if resumed else "wb") as f:
            # read1: whatever has arrived (up to CHUNK), so a reset or a stall loses nothing
            for block in iter(lambda: resp.read1(CHUNK), b""):
                f.write(block)
                mb_before = received // CHUNK
                received += len(block)
                got[0] += len(block)
                for mb in range(mb_before, received // CHUNK):
                    progress.step(min(mb, total_mb - 1))
        if expected is not None and received < expected:
            raise Transient(
                f"{remote.key}: the server closed the connection after {done + received} "
                f"of {done + expected} bytes"
            )


def _download(remote: RemoteFile, part: Path, policy: RetryPolicy) -> None:
    """Bring ``part`` to the full remote size, resuming with Range requests (module step 2)."""
    retrier = _retrier(policy)
    while True:
        start = _size(part)
        if remote.size >= 0 and start > remote.size:
            part.unlink()  # longer than the file: cannot be a prefix of it
            start = 0
        if remote.size >= 0 and start == remote.size and part.exists():
            return
        got = [0]
        try:
            _download_once(remote, part, start, policy.timeout, got)
            return
        except (OSError, http.client.HTTPException, Transient) as exc:
            close_error(exc)
            if isinstance(exc, urllib.error.HTTPError) and exc.code == 416 and start:
                part.unlink()
                raise UserError(
                    f"{remote.key}: size mismatch: the server refused bytes {start}- of a file "
                    f"the record lists as {remote.size} bytes (HTTP 416); the partial file "
                    "was deleted; rerun to download it again"
                ) from exc
            transient = transient_of(exc)
            if transient is None:
                raise UserError(
                    f"download of {remote.key} from {remote.url} failed: {exc}; "
                    "check --record-url (the partial file, if any, is kept for a rerun)"
                ) from exc
            if got[0]:
                retrier.progressed()  # bytes arrived: the failures count from zero again
            stop = retrier.wait(transient)
            if stop:
                raise UserError(
                    f"download of {remote.key} from {remote.url} failed: {stop}. "
                    f"{_size(part)} bytes are kept in {part}; rerun the same command to resume "
                    "(raise --retry-budget / --max-retries for a slow server)"
                ) from exc


def fetch_verified(remote: RemoteFile, root: Path, policy: RetryPolicy | None = None) -> Path:
    """Download ``remote`` to ``root/<key>`` (resuming) and verify size and md5."""
    final = root / remote.key
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        if (remote.size < 0 or final.stat().st_size == remote.size) and md5_of(final) == remote.md5:
            log.info("%s: already present and verified", remote.key)
            return final
        log.warning("%s: present but does not match the record; downloading again", remote.key)
        final.unlink()
    part = final.with_name(final.name + ".part")
    _download(remote, part, policy or RetryPolicy())
    size = part.stat().st_size
    if remote.size >= 0 and size != remote.size:
        part.unlink()
        raise UserError(
            f"{remote.key}: size mismatch: expected {remote.size} bytes, got {size}; "
            "the partial file was deleted; rerun to download it again"
        )
    actual = md5_of(part)
    if actual != remote.md5:
        part.unlink()  # a bad prefix would poison every later resume
        raise UserError(
            f"{remote.key}: md5 mismatch: expected {remote.md5}, got {actual}; the partial file "
            "was deleted; rerun to download it again (if it fails the same way, the server "
            "does not serve what the record lists)"
        )
    os.replace(part, final)
    log.info("%s: verified (%d bytes, md5 %s)", remote.key, size, actual)
    return final


def _is_done(root: Path, remote: RemoteFile, entry: dict | None) -> bool:
    """True if ``entry`` (from the state) is ``remote`` and everything it lists is on disk."""
    if not entry or entry.get("md5") != remote.md5 or not isinstance(entry.get("files"), dict):
        return False
    if not entry["files"]:
        return False
    problems = disk_problems(root, entry["files"])
    if not problems:
        log.info(
            "%s: done in an earlier run (md5 %s) and its %d file(s) are on disk; skipping",
            remote.key,
            remote.md5,
            len(entry["files"]),
        )
        return True
    kept = (root / remote.key).exists()
    log.warning(
        "%s: %s since an earlier run; %s",
        remote.key,
        summary_of(problems),
        "unpacking the kept archive again"
        if kept and entry.get("archive")
        else "fetching it again",
    )
    return False


def download_chammi(
    root: str | os.PathLike,
    record_url: str = DEFAULT_RECORD_URL,
    names: list[str] | None = None,
    keep_archives: bool = False,
    policy: RetryPolicy | None = None,
) -> list[RemoteFile]:
    """Download, verify and unpack the record's files into ``root``; returns the files handled."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    policy = policy or RetryPolicy()
    files = parse_record(_get_json(record_url, policy), record_url, policy)
    if names:
        by_key = {f.key: f for f in files}
        unknown = [n for n in names if n not in by_key]
        if unknown:
            raise UserError(
                f"--files {unknown} not in record {record_url}; it lists {sorted(by_key)}"
            )
        files = [by_key[n] for n in names]
    state = load_state(root)
    for remote in files:
        if _is_done(root, remote, state.get(remote.key)):
            continue
        if state.pop(remote.key, None) is not None:
            save_state(root, state)  # no longer trusted: a crash from here on redoes it
        (root / COMPLETE_NAME).unlink(missing_ok=True)
        path = fetch_verified(remote, root, policy)
        archive = is_archive(remote.key)
        if archive:
            listing = unpack_into(path, root)
            if not listing:
                raise UserError(f"{path} holds no files; delete it and rerun to download it again")
            if not keep_archives:
                path.unlink()
        else:
            listing = {remote.key: path.stat().st_size}
        problems = disk_problems(root, listing)
        if problems:
            raise UserError(
                f"{remote.key}: right after {'unpacking' if archive else 'downloading'}, "
                f"{summary_of(problems)} under {root}; something else is writing there. "
                "Stop it and rerun"
            )
        state[remote.key] = {
            "md5": remote.md5,
            "size": remote.size,
            "archive": archive,
            "files": listing,
        }
        save_state(root, state)
    missing = [d for d in DATASETS if not (root / d / METADATA_NAME).exists()]
    if missing and not names:
        raise UserError(
            f"after downloading {record_url}, {root} lacks "
            f"{[f'{d}/{METADATA_NAME}' for d in missing]}: the record's files do not unpack to "
            "CHAMMI's layout. Check --record-url; to start over, delete "
            f"{root / STATE_NAME} and rerun"
        )
    write_json(
        root / COMPLETE_NAME, {"record_url": record_url, "files": [asdict(f) for f in files]}
    )
    return files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = RetryPolicy()
    parser.add_argument("--out", required=True, help="CHAMMI root to create (Allen/, HPA/, CP/)")
    parser.add_argument("--record-url", default=DEFAULT_RECORD_URL, help="Zenodo records API URL")
    parser.add_argument(
        "--files", nargs="+", metavar="NAME", help="only these file keys of the record"
    )
    parser.add_argument(
        "--keep-archives", action="store_true", help="keep archives after unpacking"
    )
    parser.add_argument(
        "--retry-budget",
        type=float,
        default=defaults.budget,
        metavar="SECONDS",
        help="give a file (or the record listing) up when retrying it would take longer than "
        "this since its first failure, counted again whenever bytes arrive (default: %(default)g)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=defaults.max_retries,
        metavar="N",
        help="failed attempts in a row, without a byte arriving, before giving a file up "
        "(default: %(default)d)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        metavar="SECONDS",
        help="seconds a connection may stay silent before the attempt is retried "
        "(default: %(default)g)",
    )


def policy_of(args: argparse.Namespace) -> RetryPolicy:
    if args.retry_budget < 0 or args.max_retries < 0 or args.timeout <= 0:
        raise UserError("--retry-budget and --max-retries must be >= 0 and --timeout > 0")
    return RetryPolicy(max_retries=args.max_retries, budget=args.retry_budget, timeout=args.timeout)


def run(args: argparse.Namespace) -> int:
    download_chammi(args.out, args.record_url, args.files, args.keep_archives, policy_of(args))
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    # The archives' md5 were checked against Zenodo's listing; the completion file holds them,
    # so the images are not hashed a second time.
    complete = os.path.join(args.out, ".download-complete.json")
    return StepIO(
        inputs=[],
        outputs=chammi_metadata(args.out),
        members=[complete] if os.path.exists(complete) else [],
        config={"record_url": args.record_url, "files": args.files},
    )
