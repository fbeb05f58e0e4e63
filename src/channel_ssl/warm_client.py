"""The job's side of ``channel-ssl warm`` (see ``channel_ssl.warm``): hand a ``channel-ssl``
command to the warm server and stand in for the child it forks, or say that it must run cold.

Kept apart from the server so that a cold ``channel-ssl`` (``--help``, a job without a server)
imports only this small module, and so that ``cli`` and the server do not import each other.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

# the server's address, in the environment of COMMAND and of everything it starts
ADDRESS_ENV = "CHANNEL_SSL_WARM"
# variables read when modules are imported or libraries loaded: they must be the server's
IMPORT_TIME_PREFIXES = (
    "PYTHON",
    "OMP_",
    "GOMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "NUMBA_",
    "TORCH",
    "PYTORCH_",
    "LD_",
    "MALLOC_",
    "ARROW_",
    "MPL",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
)
# thread counts Snakemake sets per job (``threads:``): applied in the job's child at run time
# (threadpoolctl for OpenMP and BLAS, torch.set_num_threads), as the libraries would read them
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# SIGUSR1 included: it is the preemption signal pretraining checkpoints on (exit 75)
FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
# commands that never go through the server: ``warm`` itself starts one
COLD_COMMANDS = frozenset({"warm"})
_HEADER = struct.Struct("!I")
# in a job forked by the server: the server's process id (recorded in provenance records)
SERVER_PID: int | None = None


def identity() -> dict:
    """What must be equal between the server and a job for the job to run in the server."""
    import channel_ssl

    try:
        with open("/proc/self/cgroup") as fh:
            cgroup = fh.read()
    except OSError:
        cgroup = None
    return {
        "executable": os.path.realpath(sys.executable),
        "package": os.path.dirname(os.path.realpath(channel_ssl.__file__)),
        # sys.path[0] is the started script's folder (the child takes the job's, see below)
        "path": [os.path.realpath(p) if p else p for p in sys.path[1:]],
        "script_dir": sys.path[0] if sys.path else "",
        "import_env": import_time_env(os.environ),
        "thread_vars": {k: os.environ[k] for k in THREAD_VARS if k in os.environ},
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "cgroup": cgroup,
        "uid": os.getuid(),
    }


def import_time_env(env) -> dict[str, str]:
    """The variables of ``env`` read at import or library-load time (thread counts aside)."""
    return {
        k: v for k, v in env.items() if k.startswith(IMPORT_TIME_PREFIXES) and k not in THREAD_VARS
    }


def _difference(mine: dict, theirs: dict) -> str | None:
    """None when the two identities agree, else what differs (for the server's summary)."""
    for key in mine:
        if key == "script_dir":
            continue
        if key == "thread_vars":
            # the server, started without them, applies a job's; one started with them cannot
            if mine[key] and mine[key] != theirs.get(key):
                return "environment variable " + ", ".join(sorted(mine[key]))
            continue
        if key == "import_env":
            ours, job = mine[key], theirs.get(key, {})
            names = sorted(k for k in ours.keys() | job.keys() if ours.get(k) != job.get(k))
            if names:
                return "environment variable " + ", ".join(names)
        elif mine[key] != theirs.get(key):
            return key
    return None


def forward(argv: list[str]) -> int | None:
    """Run ``channel-ssl argv`` in the warm server when there is a usable one.

    Returns the command's exit status, or None when the caller should run it itself (no
    server, a server of another Python, stdio not open).
    """
    address = os.environ.get(ADDRESS_ENV)
    if not address or (argv and argv[0] in COLD_COMMANDS):
        return None
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address)
    except OSError:
        return None
    with sock:
        request = {
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "identity": identity(),
        }
        payload = json.dumps(request).encode()
        try:
            socket.send_fds(sock, [_HEADER.pack(len(payload)) + payload], [0, 1, 2])
            replies = sock.makefile("r")
            first = json.loads(replies.readline() or "{}")
        except (OSError, ValueError):
            return None
        if "pid" not in first:
            return None  # refused (another Python) or the server is stopping: run here
        child = int(first["pid"])

        def pass_on(signum, _frame):
            try:
                os.killpg(child, signum)
            except ProcessLookupError:
                pass

        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, pass_on)
        try:
            last = json.loads(replies.readline() or "{}")
        except (OSError, ValueError):
            last = {}
    if "exit" not in last:
        print(
            f"channel-ssl {argv[0] if argv else ''}: error: the warm server ({address}) "
            f"stopped while running this command (pid {child})",
            file=sys.stderr,
        )
        return 1
    code = int(last["exit"])
    if code < 0:
        # the child died of a signal: die of the same one, so the caller sees what it would
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code
