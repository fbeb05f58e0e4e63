"""Stopping a pretraining run cleanly when the cluster asks (time limit, preemption).

SLURM sends SIGUSR1 ahead of a job's time limit when the job asks for it (the SLURM profile
gives pretraining jobs ``--signal=USR1@300``: without ``B:`` the signal reaches the job steps,
which is where ``srun`` runs the training processes; with ``B:`` only the batch shell would get
it), and SIGTERM on preemption or ``scancel``. Inside :class:`GracefulStop` either signal only
sets a flag: the iteration in progress (and a checkpoint being written) completes, the loop
writes a checkpoint at that iteration and ends the process with :data:`REQUEUE_EXIT`. The job
fails with that status, Snakemake resubmits it (the profile's ``retries``), and the new job
resumes from the checkpoint, bit-identical to a run that was never stopped.

The handler is marked ``graceful``, so :mod:`channel_ssl.atomic` leaves it in place (its own
handler, which deletes temporaries and ends the process at once, is for code that does not
stop by itself).
"""

from __future__ import annotations

import logging
import signal
import threading

import torch
import torch.distributed as dist

log = logging.getLogger("channel_ssl.pretrain")

REQUEUE_EXIT = 75  # EX_TEMPFAIL: stopped on request, checkpoint written, resubmit to resume
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopRequested(SystemExit):
    """Raised after the stop checkpoint is written; its exit status is REQUEUE_EXIT."""

    def __init__(self, iteration: int, signum: int):
        super().__init__(REQUEUE_EXIT)
        self.iteration = iteration
        self.signum = signum


class GracefulStop:
    """Context manager: SIGUSR1/SIGTERM set :attr:`signum` instead of ending the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread

        def handle(signum, frame):
            if self.signum is None:
                log.warning(
                    "received %s: stopping after this iteration with a checkpoint",
                    signal.Signals(signum).name,
                )
            self.signum = signum

        handle.graceful = True  # channel_ssl.atomic keeps a graceful handler installed
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def requested(self, device: torch.device | None = None) -> bool:
        """Whether any process was asked to stop (all processes agree, under DDP)."""
        flag = self.signum is not None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = torch.tensor([int(self.signum or 0)], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            if int(t) and self.signum is None:
                self.signum = int(t)
            flag = bool(int(t))
        return flag
