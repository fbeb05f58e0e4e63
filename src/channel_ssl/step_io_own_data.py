"""What the ``own_data`` commands read and write, for their provenance records.

The other commands declare theirs in their own modules (``step_io(args)``, see
:mod:`channel_ssl.step_io`); these four are declared here, once, until they move into their
modules under ``own_data/`` like the others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pandas as pd

from channel_ssl.provenance import StepIO
from channel_ssl.step_io import shards_of


def import_images(args) -> StepIO:
    from dataclasses import asdict

    from channel_ssl.own_data.import_images import options_from_args

    # Inputs: the table and every image file the manifest was made from.
    manifest = os.path.join(args.out, "manifest.parquet")
    images = []
    if os.path.exists(manifest):
        for image_id in pd.read_parquet(manifest, columns=["image_id"])["image_id"]:
            images.extend(os.path.join(args.images, p) for p in image_id.split("|"))
    members = shards_of(manifest)
    members += [
        os.path.join(args.out, name)
        for name in ("dataset.json", "skipped.csv")
        if os.path.exists(os.path.join(args.out, name))
    ]
    return StepIO(
        inputs=[args.table, *images],
        outputs=[manifest],
        members=members,
        config=asdict(options_from_args(args)),
    )


def evaluate_features(args) -> StepIO:
    from channel_ssl.own_data.evaluate_features import output_files

    return StepIO(**output_files(args))


def import_weights(args) -> StepIO:
    return StepIO(inputs=[args.checkpoint], outputs=[args.out])


def use_checkpoint(args) -> StepIO:
    return StepIO(inputs=[args.checkpoint], outputs=[args.out], config=json.loads(args.run_config))


OWN_DATA_STEP_IO: dict[str, Callable[..., StepIO]] = {
    "import-images": import_images,
    "evaluate-features": evaluate_features,
    "import-weights": import_weights,
    "use-checkpoint": use_checkpoint,
}
