"""Warm start for short jobs: ``channel-ssl warm -- COMMAND`` runs COMMAND (e.g. snakemake)
with a fork server whose interpreter has already imported torch, timm, numpy, pandas, faiss and
this package's commands.

Why: a demo job trains or scores for about 2 s but spends about 4 s importing torch and timm
(timm imports torchvision). Under ``warm`` every ``channel-ssl`` started by COMMAND, directly
or by Snakemake's jobs, hands its arguments, working directory, environment and its stdin,
stdout and stderr to the server, which forks a child that runs the command as the process
itself would have. The job's own process waits, passes signals on to the child, and exits with
the child's status, so Snakemake sees an ordinary job. Results are the same as a cold start:
the server imports modules but runs no computation, so no random generator, thread pool or
allocator state differs (``make demo``'s outputs are byte-identical warm and cold).

A job runs cold (imports in its own process, as without ``warm``) when there is no server yet
or any more, or when the server is not the same Python as the job's: another interpreter or
package directory (e.g. a Snakemake ``--use-conda`` environment), another value of a variable
read at import time (``PYTHON*``, ``OMP_*``, ``MKL_*``, ``LD_*``, ...), or another cgroup or
SLURM job (a cluster job must run inside its own allocation, never in the server's).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

from channel_ssl import warm_client
from channel_ssl.warm_client import (
    _HEADER,
    ADDRESS_ENV,
    FORWARDED_SIGNALS,
    _difference,
    identity,
    import_time_env,
)


def preload() -> list[str]:
    """Import what the commands need (no computation); returns the modules imported."""
    import importlib

    from channel_ssl import cli

    names = ["numpy", "pandas", "torch", "timm", "faiss", "tifffile", "threadpoolctl"]
    names += sorted({module for module, _help in cli.COMMANDS.values()} - {"channel_ssl.warm"})
    for name in names:
        importlib.import_module(name)
    return names


def _as_after_imports(job: dict, added_env: dict) -> dict:
    """A job's identity as it would be after its own imports (they setdefault ``added_env``)."""
    return {**job, "import_env": {**import_time_env(added_env), **job.get("import_env", {})}}


def _apply_thread_counts(env: dict) -> None:
    """Thread counts from the job's environment, as the libraries would have read them when
    they were loaded: OpenMP from OMP_NUM_THREADS, OpenBLAS and MKL from their own variable
    or OMP_NUM_THREADS, torch's intra-op threads from OMP_NUM_THREADS or MKL_NUM_THREADS."""

    def count(*names: str) -> int | None:
        for name in names:
            try:
                return max(1, int(env[name]))
            except (KeyError, ValueError):
                continue
        return None

    limits = {
        "openmp": count("OMP_NUM_THREADS"),
        "openblas": count("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"),
        "mkl": count("MKL_NUM_THREADS", "OMP_NUM_THREADS"),
    }
    limits = {api: n for api, n in limits.items() if n is not None}
    if not limits:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=limits)
    torch_threads = count("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    if torch_threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(torch_threads)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(10)
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < _HEADER.size:
        raise ValueError("short request")
    (size,) = _HEADER.unpack(data[: _HEADER.size])
    body = data[_HEADER.size :]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    conn.settimeout(None)
    return json.loads(body), fds


def _run_child(request: dict, fds: list[int], main) -> None:
    """In the forked child: become the job's process, run ``main(argv)``, never return."""
    import atexit
    import io

    code = 1
    try:
        os.setpgid(0, 0)  # the job's process forwards signals to this group
        for signum in (*FORWARDED_SIGNALS, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for target, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
            raw = io.FileIO(target, mode, closefd=False)
            stream = io.TextIOWrapper(
                io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw),
                line_buffering=(name == "stderr" or os.isatty(target)),
                errors="backslashreplace" if name == "stderr" else None,
            )
            setattr(sys, name, stream)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["channel-ssl", *request["argv"]]
        sys.path[0] = request["identity"]["script_dir"]
        _apply_thread_counts(os.environ)
        warm_client.SERVER_PID = os.getppid()
        if "numpy" in sys.modules:
            # numpy's global generator, seeded from the OS as in a new process (Python's
            # ``random`` reseeds itself after a fork); torch's default generator is untouched
            # in the server, so it starts from its fixed default seed as in a new process
            sys.modules["numpy"].random.seed()  # noqa: NPY002
        try:
            code = main(list(request["argv"]))
        except SystemExit as exc:  # argparse's errors and --help, as the console script
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
        except BaseException:  # noqa: BLE001 - reported as the interpreter would
            import traceback

            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()  # what a normal interpreter exit runs (log handlers flush)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code if isinstance(code, int) else 1)


class _Server:
    def __init__(self, address: str, verbose: bool, main=None) -> None:
        """``main(argv) -> int`` runs a job's command in its child (default: ``cli.main``)."""
        if main is None:
            from channel_ssl.cli import main
        self.main = main
        self.address = address
        self.verbose = verbose
        self.me: dict = {}  # set by serve() once the imports are done
        self.added_env: dict[str, str] = {}
        self.jobs: dict[int, socket.socket | None] = {}  # child pid -> its job's connection
        self.forked = 0
        self.refused: dict[str, int] = {}
        self.stopping = False

    def say(self, message: str) -> None:
        print(f"channel-ssl warm: {message}", file=sys.stderr, flush=True)

    def serve(self) -> None:
        started = time.perf_counter()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the jobs, not the server
        wake_r, wake_w = self.wake = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        before = dict(os.environ)
        modules = preload()
        # variables the imports set (torch sets KMP_*, e.g.): a cold job would have them too
        self.added_env = {k: v for k, v in os.environ.items() if before.get(k) != v}
        self.me = identity()  # now with what the imports set, as a job's would be after them
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.address)
        listener.listen(128)
        # from here a SIGTERM stops the server in order (its jobs first); before, while it
        # imports, the default action ends it at once (nothing to clean up yet)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        self.say(f"ready in {time.perf_counter() - started:.1f} s ({len(modules)} modules)")
        parent = os.getppid()
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        self.listener = listener
        try:
            while not self.stopping and os.getppid() == parent:
                for key, _ in self.selector.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        try:
                            os.read(wake_r, 512)
                        except BlockingIOError:
                            pass
                    else:
                        self._job_closed(key.fileobj, key.data)
                self._reap()
        finally:
            self._stop()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            request, fds = _receive(conn)
            why = _difference(self.me, _as_after_imports(request["identity"], self.added_env))
            if why is None and len(fds) != 3:
                why = "stdio not passed"
        except (OSError, ValueError, KeyError) as exc:
            request, why = {}, f"bad request ({exc})"
        if why is not None:
            self.refused[why] = self.refused.get(why, 0) + 1
            for fd in fds:
                os.close(fd)
            self._send(conn, {"refused": why})
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            self.selector.close()
            for fd in (self.listener.fileno(), *self.wake):
                os.close(fd)
            for other in self.jobs.values():
                if other is not None:
                    other.close()
            conn.close()
            request["env"] = {**self.added_env, **request["env"]}
            _run_child(request, fds, self.main)
        try:
            os.setpgid(pid, pid)  # also done by the child: whichever runs first
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        self.forked += 1
        self.jobs[pid] = conn
        if self.verbose:
            self.say(f"pid {pid}: channel-ssl {' '.join(request['argv'])}")
        self._send(conn, {"pid": pid})
        self.selector.register(conn, selectors.EVENT_READ, pid)

    def _send(self, conn: socket.socket, message: dict) -> None:
        try:
            conn.sendall((json.dumps(message) + "\n").encode())
        except OSError:
            pass

    def _job_closed(self, conn: socket.socket, pid: int) -> None:
        """The job's process went away (killed) before its child finished: stop the child."""
        self.selector.unregister(conn)
        conn.close()
        self.jobs[pid] = None
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        while self.jobs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.jobs.pop(pid, None)
            if conn is not None:
                self.selector.unregister(conn)
                self._send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()

    def _stop(self) -> None:
        self.listener.close()
        try:
            os.unlink(self.address)
        except OSError:
            pass
        for pid in list(self.jobs):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.jobs and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        cold = ", ".join(f"{n} ({why})" for why, n in sorted(self.refused.items()))
        self.say(f"{self.forked} jobs started warm" + (f"; run cold: {cold}" if cold else ""))


# ---------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose", action="store_true", help="print a line for every job the server starts"
    )
    parser.add_argument(
        "command_line",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND",
        help="the command to run, e.g. -- snakemake --profile profiles/local",
    )


def _cannot_run(command: list[str], exc: OSError) -> int:
    print(f"channel-ssl warm: error: cannot run {command[0]!r}: {exc}", file=sys.stderr)
    return 127  # as a shell reports a command it cannot find


def run(args: argparse.Namespace) -> int:
    command = list(args.command_line)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print(
            "channel-ssl warm: error: no command given (channel-ssl warm -- COMMAND)",
            file=sys.stderr,
        )
        return 2
    if not sys.platform.startswith("linux"):
        # forking a process that has loaded torch is only known to be safe on Linux (macOS's
        # system libraries, e.g., are not fork-safe once initialised): run COMMAND plainly
        print("channel-ssl warm: not on Linux, jobs start cold", file=sys.stderr)
        try:
            return subprocess.call(command)
        except OSError as exc:
            return _cannot_run(command, exc)
    with tempfile.TemporaryDirectory(prefix="channel-ssl-warm-") as folder:
        address = os.path.join(folder, "server.sock")  # the folder is the user's only (0700)
        server = subprocess.Popen(
            [sys.executable, "-m", "channel_ssl.warm", address]
            + (["--verbose"] if args.verbose else [])
        )
        env = {**os.environ, ADDRESS_ENV: address}
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is COMMAND's to handle
        try:
            try:
                job = subprocess.Popen(command, env=env)
            except OSError as exc:
                return _cannot_run(command, exc)
            signal.signal(signal.SIGTERM, lambda signum, _frame: job.send_signal(signum))
            status = job.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    return status if status >= 0 else 128 - status


def _serve_main() -> None:
    parser = argparse.ArgumentParser(prog="python -m channel_ssl.warm")
    parser.add_argument("address")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    _Server(args.address, args.verbose).serve()


if __name__ == "__main__":
    _serve_main()
