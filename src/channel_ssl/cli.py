"""The ``channel-ssl`` command: one subcommand per workflow step.

Every command is declared once, in ``COMMANDS`` below (name, module, one-line help); its
module defines ``add_arguments(parser)``, ``run(args) -> int`` and, when it writes files,
``step_io(args)``: what it read and wrote, for the outputs' provenance records. Modules are imported lazily
so ``channel-ssl --help`` does not pay for importing torch (nor numpy and pandas).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from channel_ssl.errors import UserError
from channel_ssl.progress import setup_logging

if TYPE_CHECKING:
    from channel_ssl.provenance import StepIO

# command name -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": (
        "channel_ssl.config",
        "validate a workflow config file and print it with defaults",
    ),
    "make-demo-chammi": ("channel_ssl.data.demo.chammi", "generate the demo CHAMMI dataset"),
    "download-chammi": ("channel_ssl.data.download", "download and verify CHAMMI from Zenodo"),
    "preprocess": ("channel_ssl.data.preprocess", "turn a source into shards + manifest"),
    "make-demo-source": (
        "channel_ssl.data.demo.sources",
        "generate a demo copy of a source in its native layout",
    ),
    "prepare-source": (
        "channel_ssl.data.sources",
        "turn a non-CHAMMI source into shards + manifest",
    ),
    "locate-source": (
        "channel_ssl.data.locate_source",
        "record where a source's real data lies (paper scale)",
    ),
    "assemble-corpus": ("channel_ssl.data.corpus", "assemble a pretraining corpus from manifests"),
    "pretrain": ("channel_ssl.train.pretrain", "self-supervised pretraining of one run"),
    "extract": ("channel_ssl.eval.extract", "extract embeddings of a dataset with a checkpoint"),
    "eval-chammi": ("channel_ssl.eval.eval_chammi", "CHAMMI 1-NN evaluation (drop-in for MorphEm)"),
    "linear-probe": ("channel_ssl.eval.linear_probe", "linear-probe sweep on extracted features"),
    "evaluate-run": (
        "channel_ssl.eval.evaluate_run",
        "extract the features a run is probed on and run the probes",
    ),
    "probe-dataset": (
        "channel_ssl.eval.dataset_probe",
        "linear probe of one task of a non-CHAMMI dataset",
    ),
    "render-table": ("channel_ssl.render_tables", "render a paper table beside the paper's values"),
    "render-claims": (
        "channel_ssl.claims",
        "check the paper's claims against its tables and the reproduced values",
    ),
    "audit": (
        "channel_ssl.audit",
        "print the lineage of a table cell or output; --verify re-hashes it",
    ),
    "repair": (
        "channel_ssl.repair",
        "set aside outputs changed after they were made (and what used them) to re-make them",
    ),
    "render-figure": ("channel_ssl.figures", "render a paper figure (UMAP)"),
    "import-images": (
        "channel_ssl.own_data.import_images",
        "turn a folder of multichannel images + a CSV table into shards + manifest",
    ),
    "evaluate-features": (
        "channel_ssl.own_data.evaluate_features",
        "features of an imported dataset, scored by k-NN and linear probe against two references",
    ),
    "plan": (
        "channel_ssl.plan",
        "per pretraining run: nodes, GPUs, iterations, GPU-hours, checkpoint disk, and totals",
    ),
    "rehearse": (
        "channel_ssl.rehearse",
        "run the paper configuration's code paths at the paper's sizes on this machine",
    ),
    "import-weights": (
        "channel_ssl.own_data.import_weights",
        "import a DINOv2-format checkpoint (e.g. the released BoC weights) as this project's",
    ),
    "use-checkpoint": (
        "channel_ssl.own_data.use_checkpoint",
        "use a given checkpoint as a registry run's (config 'pretrained')",
    ),
    "learning-check": (
        "channel_ssl.learning_check",
        "pretrain every family at CPU scale and score it against random init",
    ),
    "warm": (
        "channel_ssl.warm",
        "run a command (e.g. snakemake) whose channel-ssl jobs start with their imports done",
    ),
}


def declaration_of(command: str, module) -> Callable[..., StepIO] | None:
    """``command``'s ``step_io(args)`` (what it read and wrote), declared by its module; None
    for a command that writes no record."""
    return getattr(module, "step_io", None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="channel-ssl",
        description="Reproduce 'Scaling channel-invariant self-supervised learning for microscopy images'.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--log", help="also write the log to this file")
        if name == command:
            importlib.import_module(module_name).add_arguments(p)
        p.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # under ``channel-ssl warm``: run in its fork server (torch etc. already imported)
        from channel_ssl import warm_client

        status = warm_client.forward(sys.argv[1:])
        if status is not None:
            return status
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(command).parse_args(argv)
    setup_logging(args.log)
    # imported after parsing: ``--help`` needs neither (they load numpy and pandas)
    from channel_ssl.provenance import now, write_records

    module = importlib.import_module(args._module)
    start = now()
    try:
        status = int(module.run(args) or 0)
        declare = declaration_of(args.command, module)
        if status == 0 and declare is not None:
            # Every output gets a provenance record beside it (channel_ssl.provenance), made
            # from what the command declares it read and wrote.
            write_records(args.command, argv, args, declare(args), start)
        return status
    except (UserError, FileNotFoundError, ValueError, KeyError) as exc:
        # Errors about the user's input name the file/row/key; no traceback needed.
        logging.getLogger("channel_ssl").debug("error", exc_info=True)
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"channel-ssl {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
