"""``channel-ssl use-checkpoint``: a given checkpoint stands for a registry run (config
``pretrained``); see :func:`channel_ssl.own_data.import_weights.use_checkpoint`."""

from __future__ import annotations

import argparse
import json

from channel_ssl.own_data.import_weights import add_use_arguments as add_arguments
from channel_ssl.own_data.import_weights import use_checkpoint
from channel_ssl.provenance import StepIO

__all__ = ["add_arguments", "run", "step_io"]


def run(args: argparse.Namespace) -> int:
    use_checkpoint(args.checkpoint, json.loads(args.run_config), args.out)
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    return StepIO(inputs=[args.checkpoint], outputs=[args.out], config=json.loads(args.run_config))
