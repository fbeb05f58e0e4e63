"""download-chammi against a local HTTP server: md5 check, resume, unpacking, idempotence.

The server (:class:`_Server`) injects faults per path: HTTP error statuses with
``Retry-After``, connection resets, clean short reads, stalls and ignored ``Range`` headers.
Every test runs on a fake clock: ``download._sleep`` records the waits asked for instead of
sleeping (fixture ``waits``), so retries cost no time.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import random
import socket
import struct
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from channel_ssl.cli import main
from channel_ssl.data import download
from channel_ssl.data.demo.chammi import DemoParams, generate_demo
from channel_ssl.data.download import (
    COMPLETE_NAME,
    STATE_NAME,
    RetryPolicy,
    download_chammi,
    parse_record,
)
from channel_ssl.data.readers.chammi import DATASETS, read_metadata
from channel_ssl.errors import UserError

ZIP = "/api/files/CHAMMI.zip/content"
RECORD = "/api/records/7988357"


class _Server:
    """Serves ``files`` (path -> bytes) with Range support; logs (path, Range header).

    ``faults[path]`` is a queue of faults, one used per request to ``path`` (then normal
    service): ``("status", code, retry_after or None)``, ``("short", n)`` (announce the full
    length, send n bytes, close cleanly), ``("reset", n)`` (send n bytes, then a TCP reset),
    ``("stall", n, seconds)`` (send n bytes, then go silent) and ``("ignore_range",)``.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.faults: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                queue = server.faults[self.path]
                fault = queue.popleft() if queue else ("none",)
                if fault[0] == "status":
                    self.send_response(fault[1])
                    if fault[2] is not None:
                        self.send_header("Retry-After", str(fault[2]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                rng = None if fault[0] == "ignore_range" else self.headers.get("Range")
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if fault[0] in ("short", "reset", "stall"):
                    self.wfile.write(body[start : start + fault[1]])
                    self.wfile.flush()
                    if fault[0] == "stall":
                        time.sleep(fault[2])
                    if fault[0] == "reset":
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def archive_gets(self):
        return [r for r in self.requests if r[0].endswith("/content")]

    def gets(self, path):
        return [r for r in self.requests if r[0] == path]


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    """Replace the module's sleep and clock: waits are recorded and advance a fake clock."""
    now = [0.0]
    slept: list[float] = []

    def fake_sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(download, "_sleep", fake_sleep, raising=False)
    monkeypatch.setattr(download, "_clock", lambda: now[0], raising=False)
    monkeypatch.setattr(download, "_jitter", random.Random(0).random, raising=False)
    return slept


@pytest.fixture(scope="module")
def chammi_zip(tmp_path_factory):
    """A CHAMMI-like archive: demo content nested under ``CHAMMI/`` as the real one."""
    src = tmp_path_factory.mktemp("src")
    generate_demo(src, DemoParams(seed=0, scale=0.03))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, "CHAMMI/" + str(p.relative_to(src)))
    return buf.getvalue()


@pytest.fixture()
def server(chammi_zip):
    s = _Server()
    s.files["/api/files/CHAMMI.zip/content"] = chammi_zip
    s.files["/api/files/README.txt/content"] = b"CHAMMI readme\n"
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _record(server, md5=None, shape="entries"):
    z = server.files["/api/files/CHAMMI.zip/content"]
    r = server.files["/api/files/README.txt/content"]
    entries = [
        {
            "key": "CHAMMI.zip",
            "size": len(z),
            "checksum": "md5:" + (md5 or hashlib.md5(z).hexdigest()),
            "links": {
                "self": f"{server.url}/api/files/CHAMMI.zip",
                "content": f"{server.url}/api/files/CHAMMI.zip/content",
            },
        },
        {
            "key": "README.txt",
            "size": len(r),
            "checksum": "md5:" + hashlib.md5(r).hexdigest(),
            "links": {"content": "/api/files/README.txt/content"},
        },  # relative link
    ]
    data = (
        {"files": {"enabled": True, "entries": {e["key"]: e for e in entries}}}
        if shape == "entries"
        else {"files": [{**e, "links": {"self": e["links"]["content"]}} for e in entries]}
    )
    server.files["/api/records/7988357"] = json.dumps(data).encode()
    return f"{server.url}/api/records/7988357"


def test_parse_record_understands_both_zenodo_shapes(server):
    for shape in ("entries", "legacy"):
        url = _record(server, shape=shape)
        files = parse_record(json.loads(server.files["/api/records/7988357"]), url)
        assert [f.key for f in files] == ["CHAMMI.zip", "README.txt"]
        assert files[0].url == f"{server.url}/api/files/CHAMMI.zip/content"
        assert files[1].url == f"{server.url}/api/files/README.txt/content"
        assert len(files[0].md5) == 32


def test_download_unpacks_flattens_and_is_idempotent(server, tmp_path):
    url = _record(server)
    download_chammi(tmp_path, url)
    for dataset in DATASETS:
        assert len(read_metadata(tmp_path, dataset)) > 0
    assert not (tmp_path / "CHAMMI").exists()
    assert not (tmp_path / "CHAMMI.zip").exists()  # archives removed unless --keep-archives
    assert (tmp_path / "README.txt").read_bytes() == b"CHAMMI readme\n"
    marker = json.loads((tmp_path / COMPLETE_NAME).read_text())
    assert [f["key"] for f in marker["files"]] == ["CHAMMI.zip", "README.txt"]
    assert (
        marker["files"][0]["md5"]
        == hashlib.md5(server.files["/api/files/CHAMMI.zip/content"]).hexdigest()
    )
    assert len(server.archive_gets()) == 2
    download_chammi(tmp_path, url)  # rerun: verified files are not fetched again
    assert len(server.archive_gets()) == 2


def test_md5_mismatch_is_rejected_and_not_kept(server, tmp_path):
    url = _record(server, md5="0" * 32)
    actual = hashlib.md5(server.files["/api/files/CHAMMI.zip/content"]).hexdigest()
    with pytest.raises(
        UserError, match=f"CHAMMI.zip: md5 mismatch: expected {'0' * 32}, got {actual}"
    ):
        download_chammi(tmp_path, url, ["CHAMMI.zip"])
    assert not (tmp_path / "CHAMMI.zip").exists()
    assert not (tmp_path / "CHAMMI.zip.part").exists()
    assert not (tmp_path / COMPLETE_NAME).exists()


def test_partial_download_is_resumed_with_range(server, tmp_path):
    url = _record(server)
    body = server.files["/api/files/CHAMMI.zip/content"]
    half = len(body) // 2
    (tmp_path / "CHAMMI.zip.part").write_bytes(body[:half])
    download_chammi(tmp_path, url, ["CHAMMI.zip"], keep_archives=True)
    assert server.archive_gets() == [("/api/files/CHAMMI.zip/content", f"bytes={half}-")]
    assert (tmp_path / "CHAMMI.zip").read_bytes() == body
    assert (tmp_path / "Allen" / "enriched_meta.csv").exists()


def test_unknown_file_name_is_rejected(server, tmp_path):
    with pytest.raises(UserError, match=r"\['nope.zip'\] not in record"):
        download_chammi(tmp_path, _record(server), ["nope.zip"])


# ------------------------------------------------------------------ retries, back-off, budget
def _zip(server):
    return server.files[ZIP]


def test_retry_after_is_honoured_and_waits_back_off(server, tmp_path, waits):
    url = _record(server)
    server.faults[ZIP].extend(
        [
            ("status", 429, 3),
            ("status", 503, 7),
            ("status", 503, None),
            ("status", 503, None),
            ("status", 500, None),
        ]
    )
    download_chammi(tmp_path, url, ["CHAMMI.zip"], keep_archives=True)
    assert (tmp_path / "CHAMMI.zip").read_bytes() == _zip(server)
    assert len(server.gets(ZIP)) == 6
    assert len(waits) == 5
    assert waits[0] >= 3 and waits[1] >= 7  # at least what Retry-After asked
    # without Retry-After: back-off steps 4 s, 8 s, 16 s (base 1 s doubling), jitter 50-100 %
    for wait, step in zip(waits[2:], (4, 8, 16), strict=True):
        assert step / 2 <= wait <= step
    assert waits[2] <= waits[3] <= waits[4]


def test_retry_after_is_capped_and_the_budget_ends_retries(server, tmp_path, waits):
    url = _record(server)
    server.faults[ZIP].extend([("status", 503, 99999)] * 20)
    policy = RetryPolicy(budget=1000, retry_after_cap=300)
    with pytest.raises(UserError) as err:
        download_chammi(tmp_path, url, ["CHAMMI.zip"], policy=policy)
    assert waits == [300, 300, 300]  # a fourth wait would end past the 1000 s budget
    msg = str(err.value)
    assert "--retry-budget 1000" in msg and "HTTP 503" in msg
    assert "rerun the same command to resume" in msg
    assert len(server.gets(ZIP)) == 4


def test_max_retries_ends_retries(server, tmp_path, waits):
    url = _record(server)
    server.faults[ZIP].extend([("status", 502, None)] * 20)
    with pytest.raises(UserError, match=r"3 failed attempts in a row \(--max-retries 2\)"):
        download_chammi(tmp_path, url, ["CHAMMI.zip"], policy=RetryPolicy(max_retries=2))
    assert len(waits) == 2 and len(server.gets(ZIP)) == 3


def test_retry_options_on_the_command_line(server, tmp_path, waits, capsys, root_logging):
    url = _record(server)
    server.faults[ZIP].extend([("status", 503, 40)] * 20)
    argv = ["download-chammi", "--out", str(tmp_path), "--record-url", url]
    argv += ["--files", "CHAMMI.zip", "--retry-budget", "100", "--max-retries", "50"]
    assert main(argv) == 2
    assert waits == [40, 40]
    assert "--retry-budget 100" in capsys.readouterr().err


def test_record_listing_is_retried(server, tmp_path, waits):
    url = _record(server)
    n = len(server.files[RECORD])
    server.faults[RECORD].extend([("status", 503, 5), ("short", n // 2), ("reset", 10)])
    download_chammi(tmp_path, url, ["README.txt"])
    assert (tmp_path / "README.txt").read_bytes() == b"CHAMMI readme\n"
    assert len(server.gets(RECORD)) == 4
    assert len(waits) == 3 and waits[0] >= 5


def test_record_listing_gives_up_with_advice(server, tmp_path, waits):
    url = _record(server)
    server.faults[RECORD].extend([("status", 503, None)] * 20)
    with pytest.raises(UserError, match=r"cannot read Zenodo record .*--max-retries 3"):
        download_chammi(tmp_path, url, policy=RetryPolicy(max_retries=3))
    assert len(waits) == 3


def test_missing_record_is_not_retried(server, tmp_path, waits):
    with pytest.raises(UserError, match=r"cannot read Zenodo record .*404.*check --record-url"):
        download_chammi(tmp_path, f"{server.url}/api/records/nope")
    assert waits == []


# ------------------------------------------------------------------ short reads, resets, stalls
def test_clean_short_read_is_resumed_with_range(server, tmp_path):
    url = _record(server)
    body = _zip(server)
    cut = len(body) // 3
    server.faults[ZIP].append(("short", cut))
    download_chammi(tmp_path, url, ["CHAMMI.zip"], keep_archives=True)
    assert server.archive_gets() == [(ZIP, None), (ZIP, f"bytes={cut}-")]
    assert (tmp_path / "CHAMMI.zip").read_bytes() == body
    assert not (tmp_path / "CHAMMI.zip.part").exists()
    assert (tmp_path / "Allen" / "enriched_meta.csv").exists()


def test_failures_with_progress_do_not_use_up_the_retries(server, tmp_path, waits):
    url = _record(server)
    body = _zip(server)
    step = len(body) // 8
    server.faults[ZIP].extend([("short", step)] * 6)  # six short reads, each one moves on
    download_chammi(tmp_path, url, ["CHAMMI.zip"], True, RetryPolicy(max_retries=1))
    ranges = [r for _, r in server.archive_gets()]
    assert ranges == [None] + [f"bytes={k * step}-" for k in range(1, 7)]
    assert (tmp_path / "CHAMMI.zip").read_bytes() == body
    assert all(w <= 1 for w in waits)  # the back-off starts again after every byte received


def test_short_read_then_bad_bytes_fail_md5_and_drop_the_partial_file(server, tmp_path):
    url = _record(server)
    body = _zip(server)
    server.faults[ZIP].append(("short", 100))
    server.files[ZIP] = body[:100] + bytes(len(body) - 100)  # the rest arrives corrupted
    with pytest.raises(UserError, match=r"CHAMMI.zip: md5 mismatch.*rerun to download it again"):
        download_chammi(tmp_path, url, ["CHAMMI.zip"])
    assert not (tmp_path / "CHAMMI.zip.part").exists()


def test_connection_reset_is_resumed(server, tmp_path):
    url = _record(server)
    half = len(_zip(server)) // 2
    server.faults[ZIP].append(("reset", half))
    download_chammi(tmp_path, url, ["CHAMMI.zip"], keep_archives=True)
    assert (tmp_path / "CHAMMI.zip").read_bytes() == _zip(server)
    assert server.archive_gets() == [(ZIP, None), (ZIP, f"bytes={half}-")]


def test_stall_is_resumed_after_the_timeout(server, tmp_path):
    url = _record(server)
    cut = len(_zip(server)) // 4
    server.faults[ZIP].append(("stall", cut, 2.0))
    t0 = time.monotonic()
    download_chammi(tmp_path, url, ["CHAMMI.zip"], True, RetryPolicy(timeout=0.3))
    assert time.monotonic() - t0 < 2.0
    assert server.archive_gets() == [(ZIP, None), (ZIP, f"bytes={cut}-")]
    assert (tmp_path / "CHAMMI.zip").read_bytes() == _zip(server)


def test_server_ignoring_range_is_read_from_the_start(server, tmp_path):
    url = _record(server)
    body = _zip(server)
    (tmp_path / "CHAMMI.zip.part").write_bytes(body[:1000])
    server.faults[ZIP].append(("ignore_range",))
    download_chammi(tmp_path, url, ["CHAMMI.zip"], keep_archives=True)
    assert (tmp_path / "CHAMMI.zip").read_bytes() == body
    assert server.archive_gets() == [(ZIP, "bytes=1000-")]


def test_giving_up_keeps_the_partial_file_for_a_rerun(server, tmp_path):
    url = _record(server)
    body = _zip(server)
    server.faults[ZIP].extend([("short", 500)] + [("status", 503, None)] * 5)
    with pytest.raises(UserError, match=r"500 bytes are kept in .*CHAMMI.zip.part; rerun"):
        download_chammi(tmp_path, url, ["CHAMMI.zip"], policy=RetryPolicy(max_retries=2))
    assert (tmp_path / "CHAMMI.zip.part").read_bytes() == body[:500]
    server.faults[ZIP].clear()
    download_chammi(tmp_path, url, ["CHAMMI.zip"])
    assert server.archive_gets()[-1] == (ZIP, "bytes=500-")
    assert (tmp_path / "Allen" / "enriched_meta.csv").exists()


# ------------------------------------------------------------------ state checked against disk
def _state(root):
    return json.loads((root / STATE_NAME).read_text())["files"]


def test_state_lists_the_unpacked_files_with_sizes(server, tmp_path):
    download_chammi(tmp_path, _record(server))
    files = _state(tmp_path)["CHAMMI.zip"]["files"]
    meta = "Allen/enriched_meta.csv"
    assert files[meta] == (tmp_path / meta).stat().st_size
    assert all((tmp_path / rel).stat().st_size == size for rel, size in files.items())
    assert _state(tmp_path)["README.txt"]["files"] == {"README.txt": 14}
    assert not any(p.name.startswith(".unpack-") for p in tmp_path.iterdir())


def test_removed_unpacked_files_are_fetched_again(server, tmp_path):
    url = _record(server)
    download_chammi(tmp_path, url)
    # what Snakemake does after a failed job: it deletes the job's outputs
    for d in DATASETS:
        (tmp_path / d / "enriched_meta.csv").unlink()
    download_chammi(tmp_path, url)  # the archive was deleted, so it is downloaded again
    for d in DATASETS:
        assert len(read_metadata(tmp_path, d)) > 0
    assert len(server.archive_gets()) == 3  # CHAMMI.zip twice, README.txt once
    download_chammi(tmp_path, url)
    assert len(server.archive_gets()) == 3


def test_changed_unpacked_file_is_unpacked_again_from_the_kept_archive(server, tmp_path):
    url = _record(server)
    download_chammi(tmp_path, url, keep_archives=True)
    image = next(p for p in sorted((tmp_path / "HPA").rglob("*.png")))
    good = image.read_bytes()
    image.write_bytes(good[:10])
    (tmp_path / "CP" / "enriched_meta.csv").unlink()
    gets = len(server.archive_gets())
    download_chammi(tmp_path, url, keep_archives=True)
    assert len(server.archive_gets()) == gets  # no download: the kept archive is unpacked
    assert image.read_bytes() == good
    assert (tmp_path / "CP" / "enriched_meta.csv").exists()


def test_removed_plain_file_is_downloaded_again(server, tmp_path):
    url = _record(server)
    download_chammi(tmp_path, url)
    (tmp_path / "README.txt").unlink()
    download_chammi(tmp_path, url)
    assert (tmp_path / "README.txt").read_bytes() == b"CHAMMI readme\n"
    assert len(server.gets("/api/files/README.txt/content")) == 2


def test_state_of_the_older_format_is_checked_again(server, tmp_path):
    url = _record(server)
    md5 = hashlib.md5(_zip(server)).hexdigest()
    (tmp_path / STATE_NAME).write_text(
        json.dumps({"CHAMMI.zip": {"md5": md5, "size": len(_zip(server)), "unpacked": True}})
    )
    download_chammi(tmp_path, url, ["CHAMMI.zip"])  # it lists no files: not trusted
    assert len(server.archive_gets()) == 1
    assert (tmp_path / "Allen" / "enriched_meta.csv").exists()
    assert "files" in _state(tmp_path)["CHAMMI.zip"]


def test_leftover_staging_directory_is_replaced(server, tmp_path):
    url = _record(server)
    stale = tmp_path / ".unpack-CHAMMI.zip" / "CHAMMI" / "Allen"
    stale.mkdir(parents=True)
    (stale / "junk.txt").write_text("from a killed run")
    download_chammi(tmp_path, url)
    assert not (tmp_path / ".unpack-CHAMMI.zip").exists()
    assert not (tmp_path / "Allen" / "junk.txt").exists()
    assert (tmp_path / COMPLETE_NAME).exists()
