"""Distributed set-up: torchrun or SLURM tasks -> torch.distributed (NCCL on CUDA, Gloo on
CPU); one process otherwise.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger("channel_ssl.pretrain")


# ------------------------------------------------------------------------------ distributed
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistInfo:
    """Start torch.distributed when launched by torchrun (WORLD_SIZE) or by SLURM (SLURM_NTASKS).

    Single process otherwise. Backend NCCL on CUDA, Gloo on CPU.
    """
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) > 1:
        info = DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        info = DistInfo(
            int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0"))
        )
        env.setdefault("RANK", str(info.rank))
        env.setdefault("WORLD_SIZE", str(info.world_size))
        env.setdefault("LOCAL_RANK", str(info.local_rank))
        if "MASTER_ADDR" not in env:
            # the first node of the allocation hosts the rendezvous
            hosts = subprocess.run(
                ["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            env["MASTER_ADDR"] = hosts[0]
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    else:
        return DistInfo()
    if device_kind == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group("nccl" if device_kind == "cuda" else "gloo", init_method="env://")
    return info
