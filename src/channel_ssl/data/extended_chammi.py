"""ExtendedCHAMMI: the pretraining corpus of the paper, assembled under its exclusion rules.

The paper (appendix B.2, table 7) builds ExtendedCHAMMI from five sources and removes
everything that would make CHAMMI's test tasks less out-of-distribution:

=================  =============  ===========================  ==============================================
source             kept / total   discarded factors            matched on (manifest factor)
=================  =============  ===========================  ==============================================
HPA single cell    296670/839612  cell line HEK 293;           ``cell_type``; ``protein_location`` (list)
                                  localisations cytosol, ER,
                                  nucleoplasm
WTC-11             179994/214037  structures centrioles,       ``structure`` (tagged structure name)
                                  tight junctions, actin bundles
OpenCell           1134592/1134592 none
Cell Painting      6103565/8423455 plates SQ00015125,          ``plate``; ``data_source``; ``treatment``
                                  SQ00015168, SQ00015221;
                                  source BBBC022; treatments
                                  BRD-K11129031, BRD-K62310379,
                                  BRD-K77947974
HPA FOV            33841/102190   as HPA single cell           ``cell_type``; ``protein_location`` (list)
=================  =============  ===========================  ==============================================

The kept counts sum to the paper's 7,748,662 images: ExtendedCHAMMI is these five sources only
(CHAMMI's own Train images are already inside them). :data:`RULES` holds these rules as data.

Matching. Factor values are compared after normalisation (lower case, letters and digits only:
``HEK 293`` = ``HEK-293`` = ``hek293``). A list factor (``protein_location``) matches when ANY of
its entries is discarded: an image showing cytosol and Golgi still shows cytosol. That reading
fits the paper's counts: only about a third of the HPA images survive, and nucleoplasm and
cytosol are the two most frequent HPA localisations.

IID-task removal. The images of CHAMMI's IID tasks (``Task_one`` of Allen, HPA, CP) are removed
from the sources they were cut from, and HPA-FOV images that contain an HPA ``Task_one`` cell.
The Task_one identities are read from a CHAMMI root (``enriched_meta.csv``) and matched by name:

* WTC: CHAMMI Allen ``file_path`` stem (``Allen/crops/230741.ome.tiff`` -> ``230741``) = the
  WTC ``CellId`` (factor ``cell_id``). CellId 230741 is both a CHAMMI file name and a WTC cell
  (stage M4M5) in public documentation.
* HPA single cell: CHAMMI HPA stem (``16666_164_D11_2_8``, antibody_plate_well_site_cell) = the
  single-cell id (factor ``cell_id``). ASSUMED: the Cell-DINO single-cell files are named this way.
* HPA FOV: the CHAMMI HPA stem without its last ``_cell`` part (``16666_164_D11_2``) = the FOV
  ``ID`` (factor ``fov_id``), the HPA-website image id. FOVs with Kaggle-2019 UUID ids cannot be
  matched by name (no id map is public); they are kept.
* Cell Painting: the CHAMMI CP path below ``CP/crops/`` without ``.png``
  (``LINCS/SQ00015116/L08/4/0@195.15x948.43``) = ``{data source}/{Image_Name without .png}`` of
  cpg0019 (factor ``cell_key``), with the collection folder ``BBBC036`` read as ``CDRP``.

The CHAMMI benchmark datasets themselves (``Allen``, ``HPA``, ``CP`` manifests, used by the demo
corpus) keep their ``Train`` split only and go through the same discards.

Output: ``corpus.parquet`` (manifest columns + ``shard_dir`` + ``weight``, as
:func:`channel_ssl.data.corpus.assemble_corpus`) and ``<stem>.summary.json`` beside it, from
which table 7 is rendered::

    {"mode": "extended_chammi", "balance": ..., "leave_out": [...], "chammi_root": ...,
     "total_kept": int,
     "sources": {<source>: {"title", "image_type", "n_channels", "total", "kept", "left_out",
                            "paper": {"kept", "total"} | null,
                            "discarded": [{"factor", "name", "values", "found", "removed"}],
                            "iid": {"chammi_dataset", "task", "applied", "removed"} | null}}}

``found`` lists the discarded values actually present in the data (as spelled there) and
``removed`` the rows that rule removed (rules apply in order; a row counts for the first rule
that removes it).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import write_json, write_table
from channel_ssl.errors import UserError

log = logging.getLogger("channel_ssl.extended_chammi")

IID_TASK = "Task_one"
HPA_HELDOUT_LOCALISATIONS = ("cytosol", "endoplasmic reticulum", "nucleoplasm")
CP_HELDOUT_PLATES = ("SQ00015125", "SQ00015168", "SQ00015221")
CP_HELDOUT_TREATMENTS = ("BRD-K11129031", "BRD-K62310379", "BRD-K77947974")
WTC_HELDOUT_STRUCTURES = ("centrioles", "tight junctions", "actin bundles")
# cpg0019 collection folder -> data source name as CHAMMI spells it
CP_COLLECTION_ALIASES = {"BBBC036": "CDRP", "BBBC037": "TA-ORF", "BBBC043": "cpg0031"}


@dataclass(frozen=True)
class Discard:
    """Drop rows whose factor ``factor`` (text or list) takes one of ``values``."""

    factor: str
    name: str  # as table 7 words it
    values: tuple[str, ...]


@dataclass(frozen=True)
class SourceRules:
    """How one source enters ExtendedCHAMMI."""

    title: str
    image_type: str
    discards: tuple[Discard, ...] = ()
    chammi_dataset: str | None = None  # CHAMMI dataset whose Task_one images leave this source
    identity_factor: str | None = None  # manifest factor matched against CHAMMI identities
    splits: tuple[str, ...] | None = None  # None: every split of the source
    paper: tuple[int, int] | None = None  # (kept, total) printed in table 7


def _stem(file_path: str) -> str:
    return Path(str(file_path)).name.split(".")[0]


def chammi_cell_identity(dataset: str, file_path: str) -> str:
    """Identity of a CHAMMI image as its source names it (see module docstring)."""
    if dataset == "CP":
        key = str(file_path).removeprefix("CP/crops/").removesuffix(".png")
        collection, sep, rest = key.partition("/")
        return f"{CP_COLLECTION_ALIASES.get(collection, collection)}{sep}{rest}"
    return _stem(file_path)


def hpa_fov_of_cell(cell_id: str) -> str:
    """HPA cell id ``antibody_plate_well_site_cell`` -> FOV id ``antibody_plate_well_site``."""
    return str(cell_id).rsplit("_", 1)[0]


HPA_DISCARDS = (
    Discard("cell_type", "cell line", ("HEK 293",)),
    Discard("protein_location", "protein localization", HPA_HELDOUT_LOCALISATIONS),
)

RULES: dict[str, SourceRules] = {
    "hpa_single_cell": SourceRules(
        "HPA Single Cell", "One cell", HPA_DISCARDS, "HPA", "cell_id", paper=(296_670, 839_612)
    ),
    "wtc": SourceRules(
        "WTC-11",
        "One cell",
        (Discard("structure", "tagged structure", WTC_HELDOUT_STRUCTURES),),
        "Allen",
        "cell_id",
        paper=(179_994, 214_037),
    ),
    "opencell": SourceRules("OpenCell", "Cropped FOV", paper=(1_134_592, 1_134_592)),
    "cellpainting": SourceRules(
        "Cell Painting",
        "Cropped FOV",
        (
            Discard("plate", "plates", CP_HELDOUT_PLATES),
            Discard("data_source", "data source", ("BBBC022",)),
            Discard("treatment", "treatments", CP_HELDOUT_TREATMENTS),
        ),
        "CP",
        "cell_key",
        paper=(6_103_565, 8_423_455),
    ),
    "hpa_fov": SourceRules(
        "HPA FOV", "FOV", HPA_DISCARDS, "HPA", "fov_id", paper=(33_841, 102_190)
    ),
    # CHAMMI benchmark datasets (demo corpus): the Train split, same discards as their sources
    "Allen": SourceRules(
        "CHAMMI WTC-11 (Train)",
        "One cell",
        (Discard("Structure", "tagged structure", WTC_HELDOUT_STRUCTURES),),
        splits=("Train",),
    ),
    "HPA": SourceRules(
        "CHAMMI HPA (Train)",
        "One cell",
        (
            Discard("cell_type", "cell line", ("HEK 293",)),
            Discard("label", "protein localization", HPA_HELDOUT_LOCALISATIONS),
        ),
        splits=("Train",),
    ),
    "CP": SourceRules(
        "CHAMMI Cell Painting (Train)",
        "Cropped FOV",
        (
            Discard("Plate", "plates", CP_HELDOUT_PLATES),
            Discard("source", "data source", ("BBBC022",)),
            Discard("label", "treatments", CP_HELDOUT_TREATMENTS),
        ),
        splits=("Train",),
    ),
}

# table 9 leave-one-source-out names -> the sources they remove
LEAVE_OUT_GROUPS: dict[str, tuple[str, ...]] = {
    "wtc": ("wtc", "Allen"),
    "cellpainting": ("cellpainting", "CP"),
    "hpa": ("hpa_fov", "hpa_single_cell", "HPA"),
    "opencell": ("opencell",),
}


def leave_out_sources(names: Iterable[str] | None) -> set[str]:
    """Table 9 names (``wtc``, ``cellpainting``, ``hpa``, ``opencell``) or source names -> sources."""
    out: set[str] = set()
    for name in names or ():
        name = name.strip()
        if name in LEAVE_OUT_GROUPS:
            out.update(LEAVE_OUT_GROUPS[name])
        elif name in RULES:
            out.add(name)
        else:
            raise UserError(
                f"--leave-out {name!r}: expected one of {sorted(LEAVE_OUT_GROUPS)} or a source "
                f"name {sorted(RULES)}"
            )
    return out


def normalise(value) -> str:
    """Comparison form of a factor value: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", str(value).lower())


def _factor_hits(values: pd.Series, discarded: tuple[str, ...]) -> tuple[np.ndarray, set[str]]:
    """Rows whose factor (text or list) takes a discarded value, and the spellings found."""
    wanted = {normalise(v) for v in discarded}
    hits = np.zeros(len(values), dtype=bool)
    found: set[str] = set()
    for i, value in enumerate(values):
        items = value if isinstance(value, list) else ([] if value is None else [value])
        matched = [str(v) for v in items if normalise(v) in wanted]
        if matched:
            hits[i] = True
            found.update(matched)
    return hits, found


def chammi_iid_identities(chammi_root: str | os.PathLike) -> dict[str, set[str]]:
    """Identities of CHAMMI's IID-task images, keyed by the ExtendedCHAMMI source they leave.

    Returns ``{"wtc": CellIds, "hpa_single_cell": cell ids, "hpa_fov": FOV ids,
    "cellpainting": cell keys}`` read from ``<chammi_root>/{Allen,HPA,CP}/enriched_meta.csv``.
    """
    from channel_ssl.data.readers.chammi import read_metadata

    task_rows = {}
    for dataset in ("Allen", "HPA", "CP"):
        meta = read_metadata(chammi_root, dataset)
        rows = meta[meta["train_test_split"] == IID_TASK]
        task_rows[dataset] = [chammi_cell_identity(dataset, p) for p in rows["file_path"]]
    return {
        "wtc": set(task_rows["Allen"]),
        "hpa_single_cell": set(task_rows["HPA"]),
        "hpa_fov": {hpa_fov_of_cell(c) for c in task_rows["HPA"]},
        "cellpainting": set(task_rows["CP"]),
    }


def _read_manifests(paths: str | os.PathLike | list, out: Path) -> pd.DataFrame:
    from channel_ssl.data.corpus_rows import relative_shard_dir
    from channel_ssl.data.shards import MANIFEST_NAME, load_manifest

    frames = []
    for m in paths if isinstance(paths, list | tuple) else [paths]:
        path = Path(m)
        manifest_file, manifest_dir = (
            (path, path.parent) if path.suffix == ".parquet" else (path / MANIFEST_NAME, path)
        )
        df = load_manifest(manifest_file)
        df["shard_dir"] = relative_shard_dir(manifest_dir, out.parent)
        df.attrs["path"] = str(manifest_file)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _apply_rules(
    source: str, df: pd.DataFrame, rules: SourceRules, iid: dict[str, set[str]] | None
) -> tuple[pd.DataFrame, dict]:
    factors = df["factors"].map(lambda s: json.loads(s) if s else {})
    keep = np.ones(len(df), dtype=bool)
    if rules.splits is not None:
        keep &= df["split"].isin(rules.splits).to_numpy()
    discarded = []
    for rule in rules.discards:
        # a manifest column (CHAMMI ``label``) or a factor
        values = (
            df[rule.factor]
            if rule.factor in df.columns
            else factors.map(lambda f, k=rule.factor: f.get(k))
        )
        hits, _ = _factor_hits(values, rule.values)
        _, found = _factor_hits(values[keep & hits], rule.values)
        removed = int((keep & hits).sum())
        keep &= ~hits
        discarded.append(
            {
                "factor": rule.factor,
                "name": rule.name,
                "values": list(rule.values),
                "found": sorted(found),
                "removed": removed,
            }
        )
    iid_summary = None
    if rules.chammi_dataset is not None:
        iid_summary = {
            "chammi_dataset": rules.chammi_dataset,
            "task": IID_TASK,
            "applied": iid is not None,
            "removed": 0,
        }
        if iid is not None:
            keys = factors.map(lambda f: f.get(rules.identity_factor))
            if keys.isna().any():
                i = int(np.flatnonzero(keys.isna().to_numpy())[0])
                raise UserError(
                    f"{source} manifest {df.attrs.get('path', '')}: row {i} "
                    f"({df['image_id'].iloc[i]!r}) has no factor {rules.identity_factor!r} to match "
                    "CHAMMI's IID-task images against"
                )
            hits = keys.astype(str).isin(iid[source]).to_numpy()
            iid_summary["removed"] = int((keep & hits).sum())
            keep &= ~hits
    return df[keep], {"discarded": discarded, "iid": iid_summary}


def assemble_extended_chammi(
    manifests: dict[str, str | os.PathLike | list],
    out: str | os.PathLike,
    chammi_root: str | os.PathLike | None = None,
    leave_out: Iterable[str] | None = None,
    balance: str = "source",
) -> tuple[pd.DataFrame, dict]:
    """Assemble ExtendedCHAMMI from per-source manifests and write corpus + summary.

    Args:
        manifests: source name (a key of :data:`RULES`) -> preprocessed directory or manifest
            file, or a list of them (e.g. CHAMMI and its extra demo images, both ``HPA``).
        out: corpus ``.parquet`` to write; the summary goes to ``<stem>.summary.json``.
        chammi_root: CHAMMI root whose ``Task_one`` images are removed from their sources;
            ``None`` skips that removal (logged, recorded as ``applied: false``).
        leave_out: table 9 names (``wtc``, ``cellpainting``, ``hpa``, ``opencell``) or source
            names whose images are left out entirely.
        balance: ``source`` (equal total weight per source, weights average 1) or ``none``.

    Returns:
        ``(corpus, summary)``.

    Raises:
        UserError: unknown source, a manifest holding rows of another source, a missing
            identity factor, an unknown leave-out name, or an empty corpus.
    """
    from channel_ssl.data.corpus_rows import source_weights

    out = Path(out)
    dropped = leave_out_sources(leave_out)
    unknown = [s for s in manifests if s not in RULES]
    if unknown:
        raise UserError(
            f"ExtendedCHAMMI has no rules for source(s) {unknown}; known: {sorted(RULES)}"
        )
    iid = chammi_iid_identities(chammi_root) if chammi_root is not None else None
    if iid is None:
        log.warning("no --chammi-root: CHAMMI's IID-task images are NOT removed")

    kept_frames, sources = [], {}
    for source, paths in manifests.items():
        rules = RULES[source]
        df = _read_manifests(paths, out)
        foreign = sorted(set(df["source"]) - {source})
        if foreign:
            raise UserError(
                f"manifest(s) {paths} given as source {source!r} hold rows of source(s) {foreign}"
            )
        entry = {
            "title": rules.title,
            "image_type": rules.image_type,
            "n_channels": int(df["n_channels"].mode().iloc[0]) if len(df) else 0,
            "total": len(df),
            "left_out": source in dropped,
            "paper": {"kept": rules.paper[0], "total": rules.paper[1]} if rules.paper else None,
        }
        if source in dropped:
            kept, details = (
                df.iloc[:0],
                {
                    "discarded": [
                        {
                            "factor": d.factor,
                            "name": d.name,
                            "values": list(d.values),
                            "found": [],
                            "removed": 0,
                        }
                        for d in rules.discards
                    ],
                    "iid": None,
                },
            )
        else:
            kept, details = _apply_rules(source, df, rules, iid)
        entry.update(details, kept=len(kept))
        sources[source] = entry
        log.info(
            "%s: kept %d / %d%s",
            source,
            len(kept),
            len(df),
            " (left out)" if source in dropped else "",
        )
        kept_frames.append(kept)

    corpus = pd.concat(kept_frames, ignore_index=True) if kept_frames else pd.DataFrame()
    if corpus.empty:
        raise UserError(f"ExtendedCHAMMI corpus {out} would be empty (leave out {sorted(dropped)})")
    corpus["weight"] = source_weights(corpus["source"], balance)
    summary = {
        "mode": "extended_chammi",
        "balance": balance,
        "leave_out": sorted(dropped),
        "chammi_root": str(chammi_root) if chammi_root is not None else None,
        "total_kept": len(corpus),
        "sources": sources,
    }
    write_table(out, corpus)
    write_json(summary_path(out), summary)
    return corpus, summary


def summary_path(corpus: str | os.PathLike) -> Path:
    """``<dir>/<stem>.summary.json`` beside a corpus file."""
    corpus = Path(corpus)
    return corpus.with_name(corpus.stem + ".summary.json")


def group_manifests_by_source(paths: Iterable[str | os.PathLike]) -> dict[str, list[str]]:
    """Map each manifest (directory or file) to the one source its rows belong to."""
    from channel_ssl.data.shards import load_manifest

    grouped: dict[str, list[str]] = {}
    for p in paths:
        names = sorted(set(load_manifest(p)["source"]))
        if len(names) != 1:
            raise UserError(
                f"manifest {p} holds {len(names)} sources {names}; expected exactly one"
            )
        grouped.setdefault(names[0], []).append(str(p))
    return grouped


def discarded_factors_text(rules: SourceRules, found: list[dict] | None = None) -> str:
    """``'Cell line (HEK 293); protein localization (cytosol, ...)'`` or ``'None'``."""
    parts = []
    for i, d in enumerate(rules.discards):
        values = found[i]["found"] if found is not None else list(d.values)
        if values:
            parts.append(f"{d.name[0].upper()}{d.name[1:]} ({', '.join(values)})")
    return "; ".join(parts) or "None"
