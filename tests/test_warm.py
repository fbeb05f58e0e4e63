"""``channel-ssl warm``: jobs forked from a server with the imports done behave as cold jobs.

Checked against the same command run cold (its own interpreter): output, exit status, error
text, trained weights; signals reach the job; a job the server must not run (another
import-time environment) runs cold; a killed job's child does not outlive it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_pretrain import corpus_path, tiny_config  # noqa: F401 (fixture)

from channel_ssl import warm_client
from channel_ssl.provenance import read_record
from channel_ssl.train.checkpoint import load_checkpoint

BIN = Path(sys.executable).parent
CLI = str(BIN / "channel-ssl")
# a job's shell: wait for the server's socket, as a Snakemake job started late would find it
WAIT = 'while [ ! -S "$CHANNEL_SSL_WARM" ]; do sleep 0.1; done; '


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != warm_client.ADDRESS_ENV}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _under_warm(script: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "warm", "--verbose", "--", "bash", "-c", WAIT + script],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_jobs_run_warm_with_the_cold_output_status_and_errors(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    config = repo / "config" / "demo.yaml"
    cold_ok = subprocess.run(
        [CLI, "check-config", str(config)], capture_output=True, text=True, env=_env()
    )
    cold_bad = subprocess.run(
        [CLI, "check-config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert cold_ok.returncode == 0 and cold_bad.returncode == 2
    script = (
        f"{CLI} check-config {config} > ok.out; echo $? > ok.rc; "
        f"{CLI} check-config {tmp_path / 'missing.yaml'} 2> bad.err; echo $? > bad.rc"
    )
    done = _under_warm(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ok.out").read_text() == cold_ok.stdout
    assert (tmp_path / "ok.rc").read_text().strip() == "0"
    assert (tmp_path / "bad.rc").read_text().strip() == "2"
    assert (tmp_path / "bad.err").read_text() == cold_bad.stderr
    assert "missing.yaml" in cold_bad.stderr
    # both ran in the server, and it says so
    assert done.stderr.count(": channel-ssl check-config") == 2
    assert "2 jobs started warm" in done.stderr


def test_a_warm_training_run_gives_the_cold_weights(corpus_path, tmp_path):  # noqa: F811
    config = json.dumps(tiny_config("boc", iterations=3, checkpoint_every=3, log_every=1))
    argv = f"pretrain --corpus {corpus_path} --run-config '{config}' --threads 1"
    cold = subprocess.run(
        f"{CLI} {argv} --out-dir cold", shell=True, cwd=tmp_path, env=_env(), capture_output=True
    )
    assert cold.returncode == 0, cold.stderr
    # Snakemake sets OMP_NUM_THREADS etc. per job: the child applies them (not a reason to
    # run cold)
    done = _under_warm(f"{CLI} {argv} --out-dir warm", tmp_path, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr
    assert "1 jobs started warm" in done.stderr
    a = load_checkpoint(tmp_path / "cold" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "warm" / "checkpoint.pt")
    for key in ("student", "teacher", "student_dino_head", "teacher_dino_head", "losses"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    # the provenance records say which process made each, and whether it was forked warm
    cold_rec = read_record(tmp_path / "cold" / "checkpoint.pt")["process"]
    warm_rec = read_record(tmp_path / "warm" / "checkpoint.pt")["process"]
    assert cold_rec["warm_server"] is None and isinstance(warm_rec["warm_server"], int)
    assert warm_rec["pid"] != warm_rec["warm_server"]


def test_a_job_with_another_import_time_environment_runs_cold(tmp_path):
    done = _under_warm(
        f"{CLI} check-config --help > /dev/null; "
        f"PYTHONHASHSEED=7 {CLI} check-config --help > out.txt; echo $? > rc",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rc").read_text().strip() == "0"
    assert "usage: channel-ssl check-config" in (tmp_path / "out.txt").read_text()
    assert "1 jobs started warm; run cold: 1 (environment variable PYTHONHASHSEED)" in done.stderr


def test_a_command_that_cannot_run_is_named(tmp_path):
    done = subprocess.run(
        [CLI, "warm", "--", "no-such-command-here"], capture_output=True, text=True, env=_env()
    )
    assert done.returncode == 127
    assert "cannot run 'no-such-command-here'" in done.stderr


def test_no_server_means_the_job_runs_itself(tmp_path, monkeypatch):
    monkeypatch.setenv(warm_client.ADDRESS_ENV, str(tmp_path / "no-such.sock"))
    assert warm_client.forward(["check-config", "--help"]) is None
    assert warm_client.forward(["warm", "--", "true"]) is None  # never nested through a server


# A server whose "command" sleeps, reports its thread counts, or fails: started in its own
# process as `channel-ssl warm` starts it.
_SERVER = textwrap.dedent(
    """
    import json, os, sys, time
    from channel_ssl import warm

    def main(argv):
        if argv[0] == "sleep":
            print(f"child {os.getpid()}", flush=True)
            time.sleep(float(argv[1]))
            return 0
        if argv[0] == "preempted":  # as pretraining does: checkpoint and exit 75 on SIGUSR1
            import signal
            signal.signal(signal.SIGUSR1, lambda *_: sys.exit(75))
            print(f"child {os.getpid()}", flush=True)
            time.sleep(60)
            return 0
        if argv[0] == "threads":
            import torch
            from threadpoolctl import threadpool_info
            print(json.dumps({"torch": torch.get_num_threads(),
                              "openmp": sorted({i["num_threads"] for i in threadpool_info()
                                                if i["user_api"] == "openmp"})}))
            return 0
        raise RuntimeError("boom")

    warm._Server(sys.argv[1], True, main=main).serve()
    """
)
_CLIENT = (
    "import sys; from channel_ssl import warm_client; sys.exit(warm_client.forward(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("warm")
    address = str(folder / "s.sock")
    log = open(folder / "server.log", "w")  # noqa: SIM115 (the server's life)
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, address], stderr=log, env=_env())
    deadline = time.monotonic() + 60
    while not os.path.exists(address):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    yield address
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _client(address, *argv, **env):
    return subprocess.Popen(
        [sys.executable, "-c", _CLIENT, *argv],
        env=_env(**{warm_client.ADDRESS_ENV: address}, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for the server to reap it is dead too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_signals_reach_the_child_and_its_status_comes_back(server):
    address = server
    client = _client(address, "sleep", "61")
    assert client.stdout.readline().startswith("child ")
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == -signal.SIGTERM  # as a cold process killed so would

    preempted = _client(address, "preempted")
    assert preempted.stdout.readline().startswith("child ")
    preempted.send_signal(signal.SIGUSR1)
    assert preempted.wait(timeout=30) == 75  # the job's handler ran, in the child

    failing = _client(address, "boom")
    out, err = failing.communicate(timeout=30)
    assert failing.returncode == 1 and "RuntimeError: boom" in err


def test_thread_counts_from_the_job_environment_are_applied(server):
    address = server
    client = _client(address, "threads", OMP_NUM_THREADS="1")
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, err
    assert json.loads(out) == {"torch": 1, "openmp": [1]}


def test_a_killed_job_does_not_leave_its_child_running(server):
    address = server
    client = _client(address, "sleep", "62")
    child = int(client.stdout.readline().split()[1])
    assert _alive(child)
    client.kill()  # no chance to pass anything on: the server sees the connection close
    client.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
