"""Your own datasets in the workflow: config ``user_datasets`` and ``user_runs``.

A ``user_datasets`` entry is a folder of multichannel images and a CSV table, imported by
``channel-ssl import-images`` into ``<results>/shards/<name>/`` (the same place and format as
the paper's sources, so a corpus reads it like theirs) and scored by
``channel-ssl evaluate-features`` for every run its ``evaluate.runs`` lists (target
``evaluate_<name>``). A ``user_runs`` entry is a pretraining run declared in the config: its
``corpus`` lists sources by name, paper sources (``hpa_fov``, ``wtc``, ...) and user datasets
alike. :func:`register` checks both against the registry and the tables, and adds the runs and
their corpora to :mod:`channel_ssl.registry`, so the workflow's ``assemble_corpus``, ``pretrain``
and ``use_pretrained`` rules (and ``channel-ssl plan``) treat them like the paper's.

Every check runs when the workflow reads its config, before any job, and names the key
(``user_datasets[1].columns.label``) and the file.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from channel_ssl import registry
from channel_ssl.errors import UserError

# the pretraining split of an imported dataset (import-images writes train / val / test)
PRETRAIN_SPLITS = ("train",)
# a corpus of user runs: this prefix + its sources joined by '-' (source names have no '-')
CORPUS_PREFIX = "user-"
# evaluate-features outputs a target evaluate_<name> lists per run (<results>/user/<name>/<run>/)
EVALUATION_FILES = ("scores.csv", "report.md")


@dataclass(frozen=True)
class UserDataset:
    """One resolved ``user_datasets`` entry (schema defaults filled in)."""

    name: str
    key: str  # where it is in the config, for messages: user_datasets[0]
    directory: str
    table: str
    path_columns: tuple[str, ...]
    label_columns: tuple[str, ...]
    group_column: str | None
    split_column: str | None
    channels: tuple[str, ...]
    image_size: int | None
    channel_axis: int | None
    channel_width: int | None
    split: dict
    skip_bad: bool
    evaluate: dict
    runs: tuple[str, ...]  # runs evaluate_<name> scores (resolved evaluate.runs)

    def import_args(self) -> str:
        """The ``import-images`` flags of this entry (not --images/--table/--out)."""
        args = [f"--path-column {shlex.quote(c)}" for c in self.path_columns]
        args += [f"--label-column {shlex.quote(c)}" for c in self.label_columns]
        args.append(f"--channels {shlex.quote(','.join(self.channels))}")
        if self.group_column:
            args.append(f"--group-column {shlex.quote(self.group_column)}")
        if self.split_column:
            args.append(f"--split-column {shlex.quote(self.split_column)}")
        else:
            args.append(f"--split {self.split['method']}")
        args.append(f"--val-fraction {self.split['val_fraction']}")
        args.append(f"--test-fraction {self.split['test_fraction']}")
        args.append(f"--seed {self.split['seed']}")
        for flag, value in (
            ("--image-size", self.image_size),
            ("--channel-axis", self.channel_axis),
            ("--channel-width", self.channel_width),
        ):
            if value is not None:
                args.append(f"{flag} {value}")
        if self.skip_bad:
            args.append("--skip-bad")
        return " ".join(args)

    def evaluation_files(self, results_dir: str) -> list[str]:
        """What ``evaluate_<name>`` builds: ``scores.csv`` and ``report.md`` per run scored."""
        return [
            os.path.join(results_dir, "user", self.name, run, name)
            for run in self.runs
            for name in EVALUATION_FILES
        ]

    def evaluate_args(self) -> str:
        """The ``evaluate-features`` flags of ``evaluate`` (not the probe sweep's)."""
        e = self.evaluate
        args = [
            f"--knn {','.join(str(k) for k in e['knn'])}",
            f"--recipe {e['recipe']}",
            f"--normalisation {e['normalisation']}",
        ]
        if e["leave_group_out"]:
            args.append("--knn-leave-group-out")
        return " ".join(args)


def _as_list(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _paper_names() -> set[str]:
    """Names a user dataset may not take: the paper's sources, CHAMMI and its datasets."""
    return {*registry.SOURCES, "chammi", *registry.CHAMMI_DATASETS}


def _table_columns(key: str, table: str) -> list[str]:
    path = Path(table)
    if not path.is_file():
        raise UserError(f"config {key}.table: {table} does not exist (or is not a file)")
    try:
        header = pd.read_csv(path, nrows=0, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"config {key}.table: {table} is not a readable CSV file: {exc}") from None
    return [str(c) for c in header.columns]


def _dataset(index: int, entry: dict) -> UserDataset:
    key = f"user_datasets[{index}]"
    name = entry["name"]
    if name in _paper_names():
        raise UserError(
            f"config {key}.name: {name!r} is the name of a paper source; choose another "
            f"(taken: {', '.join(sorted(_paper_names()))})"
        )
    if not Path(entry["directory"]).is_dir():
        raise UserError(f"config {key}.directory: {entry['directory']} is not a directory")
    known = _table_columns(key, entry["table"])
    cols = entry["columns"]
    wanted = {
        "path": _as_list(cols["path"]),
        "label": _as_list(cols["label"]),
        "group": _as_list(cols["group"]) if cols["group"] else (),
        "split": _as_list(cols["split"]) if cols["split"] else (),
    }
    for role, names in wanted.items():
        for column in names:
            if column not in known:
                raise UserError(
                    f"config {key}.columns.{role}: table {entry['table']} has no column "
                    f"{column!r}; its columns are: {', '.join(repr(c) for c in known)}"
                )
    channels = tuple(entry["channels"])
    if len(wanted["path"]) > 1 and len(wanted["path"]) != len(channels):
        raise UserError(
            f"config {key}.channels: {len(channels)} channel(s) but columns.path lists "
            f"{len(wanted['path'])} (one file per channel)"
        )
    split = dict(entry["split"])
    if split["method"] == "group" and not cols["group"] and not cols["split"]:
        raise UserError(f"config {key}.split.method: 'group' needs columns.group")
    if split["val_fraction"] + split["test_fraction"] >= 1:
        raise UserError(
            f"config {key}.split: val_fraction + test_fraction must leave images to train (< 1)"
        )
    evaluate = dict(entry["evaluate"])
    if evaluate["leave_group_out"] and not cols["group"]:
        raise UserError(f"config {key}.evaluate.leave_group_out: needs columns.group")
    return UserDataset(
        name=name,
        key=key,
        directory=entry["directory"],
        table=entry["table"],
        path_columns=wanted["path"],
        label_columns=wanted["label"],
        group_column=cols["group"],
        split_column=cols["split"],
        channels=channels,
        image_size=entry["image_size"],
        channel_axis=entry["channel_axis"],
        channel_width=entry["channel_width"],
        split=split,
        skip_bad=entry["skip_bad"],
        evaluate=evaluate,
        runs=(),
    )


def user_datasets(config: dict) -> dict[str, UserDataset]:
    """The config's ``user_datasets`` by name, checked (runs to evaluate not yet resolved)."""
    out: dict[str, UserDataset] = {}
    for index, entry in enumerate(config["user_datasets"]):
        if entry["name"] in out:
            raise UserError(
                f"config user_datasets[{index}].name: {entry['name']!r} is already the name of "
                f"{out[entry['name']].key}; every user dataset needs its own name"
            )
        out[entry["name"]] = _dataset(index, entry)
    return out


def corpus_name(sources: tuple[str, ...]) -> str:
    return CORPUS_PREFIX + "-".join(sources)


def user_runs(
    config: dict, datasets: dict[str, UserDataset]
) -> tuple[dict[str, registry.Run], dict[str, registry.Corpus]]:
    """The config's ``user_runs`` as registry runs, and the corpora they pretrain on."""
    runs: dict[str, registry.Run] = {}
    corpora: dict[str, registry.Corpus] = {}
    for name, spec in config["user_runs"].items():
        key = f"user_runs.{name}"
        sources = tuple(spec["corpus"])
        for source in sources:
            if source not in datasets and source not in registry.SOURCES:
                raise UserError(
                    f"config {key}.corpus: unknown source {source!r}; a corpus lists user "
                    f"datasets ({', '.join(datasets) or 'none declared'}) or paper sources "
                    f"({', '.join(registry.SOURCES)})"
                )
        channels = {len(datasets[s].channels) for s in sources if s in datasets}
        k_max = spec["k_max"]
        if spec["family"] in ("cvit", "ha"):
            k_max = k_max or config["pretrain"]["k_max"]
            if channels and max(channels) > k_max:
                raise UserError(
                    f"config {key}.k_max: {k_max} channel embeddings, but its corpus has "
                    f"images of {max(channels)} channels"
                )
        in_chans = 1
        if spec["family"] == "fixed":
            if len(channels) != 1 or any(s not in datasets for s in sources):
                raise UserError(
                    f"config {key}.family: a fixed-channel run needs a corpus of user datasets "
                    f"with one channel count (found {sorted(channels) or 'none'})"
                )
            in_chans = channels.pop()
        corpus = registry.Corpus(
            corpus_name(sources),
            sources,
            PRETRAIN_SPLITS,
            description=f"train split of {', '.join(sources)} (config user_runs)",
        )
        corpora[corpus.name] = corpus
        run = registry.Run(
            name,
            spec["family"],
            spec["size"],
            corpus.name,
            objective=spec["objective"],
            channel_sampling=spec["channel_sampling"],
            k_max=spec["k_max"],
            in_chans=in_chans,
            description=spec["description"] or f"config user_runs: {name}",
        )
        # a name the registry already declares; the same run registered before is no clash
        if registry.RUNS.get(name, run) != run or name in registry.REFERENCE_RUNS:
            raise UserError(f"config {key}: {name!r} is the name of a registry run; choose another")
        runs[name] = run
    return runs, corpora


def _with_runs(
    dataset: UserDataset, runs: dict[str, registry.Run], corpora: dict[str, registry.Corpus]
) -> UserDataset:
    """``dataset`` with ``runs`` resolved: ``evaluate.runs``, or the user runs pretraining on it."""
    listed = dataset.evaluate["runs"]
    if listed is None:
        chosen = tuple(r for r, run in runs.items() if dataset.name in corpora[run.corpus].sources)
    else:
        chosen = tuple(listed)
        known = {*registry.RUNS, *registry.REFERENCE_RUNS, *runs}
        for run in chosen:
            if run not in known:
                raise UserError(
                    f"config {dataset.key}.evaluate.runs: unknown run {run!r}; runs: registry "
                    f"runs, reference runs ({', '.join(registry.REFERENCE_RUNS)}) or user_runs"
                )
    return replace(dataset, runs=chosen)


def register(config: dict) -> dict[str, UserDataset]:
    """Check ``user_datasets`` and ``user_runs``, add the runs, corpora and sources to the
    registry, and return the datasets by name (with the runs each ``evaluate_<name>`` scores)."""
    datasets = user_datasets(config)
    runs, corpora = user_runs(config, datasets)
    registry.add_user_data(
        {name: d.channels for name, d in datasets.items()}, corpora=corpora, runs=runs
    )
    return {name: _with_runs(d, runs, corpora) for name, d in datasets.items()}
