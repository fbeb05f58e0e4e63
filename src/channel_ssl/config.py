"""Workflow configuration: load a YAML file, fill defaults and validate it against the schema.

The schema (``workflow/schemas/config.schema.yaml``) is the single description of every key,
its default and its meaning. Snakemake validates the same file with the same schema in
``workflow/rules/common.smk``; this module lets a person check a config by hand
(``channel-ssl check-config config/paper.yaml``) and gives tests the resolved values.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path

import jsonschema
import yaml

from channel_ssl.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


def load_schema() -> dict:
    """The workflow's schema: beside the package's checkout, or in the workflow directory."""
    for path in (SCHEMA_PATH, Path.cwd() / "workflow" / "schemas" / "config.schema.yaml"):
        if path.exists():
            with open(path) as fh:
                return yaml.safe_load(fh)
    raise FileNotFoundError(
        f"config schema not found at {SCHEMA_PATH}; run from the workflow's directory"
    )


def _with_defaults(validator_class):
    """A validator class that fills ``default`` values of missing properties before descending."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if name not in instance and isinstance(sub, dict) and "default" in sub:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _error_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _known_paths(schema: dict, prefix: str = "") -> list[str]:
    """Every key path the schema names (``pretrain``, ``pretrain.lr``, ...)."""
    paths = []
    for name, sub in (schema.get("properties") or {}).items():
        paths.append(prefix + name)
        if isinstance(sub, dict):
            paths += _known_paths(sub, f"{prefix}{name}.")
    return paths


def _unknown(instance, schema: dict, prefix: str, everywhere: list[str], out: list[str]) -> None:
    if isinstance(instance, list) and isinstance(schema, dict):
        # a list of objects (user_datasets): each item by its index, user_datasets[0].name
        for index, item in enumerate(instance):
            _unknown(item, schema.get("items"), f"{prefix[:-1]}[{index}].", everywhere, out)
        return
    if not isinstance(instance, dict) or not isinstance(schema, dict):
        return
    props = schema.get("properties") or {}
    patterns = schema.get("patternProperties") or {}
    additional = schema.get("additionalProperties", True)
    for key, value in instance.items():
        key = str(key)
        path = prefix + key
        if key in props:
            _unknown(value, props[key], path + ".", everywhere, out)
            continue
        matched = [sub for pattern, sub in patterns.items() if re.search(pattern, key)]
        if matched:
            for sub in matched:
                _unknown(value, sub, path + ".", everywhere, out)
            continue
        if isinstance(additional, dict):
            _unknown(value, additional, path + ".", everywhere, out)
            continue
        if additional is not False:
            continue
        close = difflib.get_close_matches(key, list(props), n=1)
        if close:
            hint = f"did you mean '{prefix}{close[0]}'?"
        else:
            # the right key in the wrong section (``lr`` at the top instead of ``pretrain.lr``)
            leaves = {p.rsplit(".", 1)[-1]: p for p in reversed(everywhere)}
            elsewhere = difflib.get_close_matches(key, list(leaves), n=1)
            valid = sorted(props) + [f"keys matching {p}" for p in patterns]
            hint = (
                f"did you mean '{leaves[elsewhere[0]]}'?"
                if elsewhere
                else f"valid keys {'here' if prefix else 'at the top level'}: {', '.join(valid)}"
            )
        out.append(f"unknown key '{path}': {hint}")


def unknown_keys(config: dict, schema: dict | None = None) -> list[str]:
    """One line per key of ``config`` the schema does not allow, with the closest valid key.

    Objects with ``additionalProperties: false`` are checked at every depth; a key is named
    by its path (``pretrain.lrr``).
    """
    schema = load_schema() if schema is None else schema
    out: list[str] = []
    _unknown(config or {}, schema, "", _known_paths(schema), out)
    return out


def check_unknown_keys(
    config: dict,
    source: str = "the workflow config (--configfile, --config)",
    schema: dict | None = None,
) -> None:
    """Raise UserError listing every unknown key (one per line) before schema validation.

    ``workflow/rules/common.smk`` calls it ahead of Snakemake's ``validate``, whose message
    for an unknown key is the whole schema.
    """
    lines = unknown_keys(config, schema)
    if lines:
        raise UserError(
            "\n".join([f"{source}: unknown configuration key(s):"] + [f"  {x}" for x in lines])
        )


def validate_config(config: dict, source: str = "<config>") -> dict:
    """Return a copy of ``config`` with defaults filled; raise UserError naming the bad key."""
    schema = load_schema()
    check_unknown_keys(config or {}, source, schema)
    resolved = copy.deepcopy(config or {})
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{source}: invalid configuration:"]
        for err in errors:
            lines.append(f"  at '{_error_path(err)}': {err.message}")
        raise UserError("\n".join(lines))
    return resolved


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read a YAML config, merge ``overrides`` on top (deeply) and validate it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path) as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise UserError(
            f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}"
        )
    return validate_config(deep_merge(raw, overrides or {}), source=str(path))


def deep_merge(base: dict, override: dict) -> dict:
    """Merge ``override`` into a copy of ``base``; nested mappings merge key by key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def add_arguments(parser) -> None:
    parser.add_argument("configfile", help="YAML configuration file")


def run(args) -> int:
    from channel_ssl.user_data import register

    config = load_config(args.configfile)
    # user_datasets / user_runs: their tables, columns and names, as the workflow checks them
    register(config)
    print(yaml.safe_dump(config, sort_keys=True), end="")
    return 0
