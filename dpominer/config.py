"""Build a command's pydantic config from an optional TOML/JSON file plus command-line flags.

Flags win over the file; a flag left out keeps the file's value (or the default). Validation errors
name the flag (``--min-margin: ...``) or the file and key (``cfg.toml: policy.min_margin: ...``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from .records import InputError, first_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

C = TypeVar("C", bound=BaseModel)


def load_file(path: Path, what: str = "config", label: str | None = None) -> dict[str, Any]:
    """A settings table from TOML, JSON (``.json``) or YAML (``.yaml``/``.yml``, needs pyyaml).

    Errors read ``LABEL: cannot read WHAT: …`` / ``LABEL: invalid WHAT: …``; LABEL defaults to the path.
    """
    label = label or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{label}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        if path.suffix in {".yaml", ".yml"}:
            try:
                import yaml  # optional: only for YAML files
            except ImportError:
                raise InputError(f"{label}: YAML needs pyyaml (pip install pyyaml), or write it as TOML") from None
            data = yaml.safe_load(raw)
        elif path.suffix == ".json":
            data = orjson.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except InputError:
        raise
    except (ValueError, tomllib.TOMLDecodeError) as exc:  # JSON, TOML, UTF-8 and YAML errors are ValueErrors
        raise InputError(f"{label}: invalid {what}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{label}: a {what} file holds a table of settings")
    return data


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[leaf] = value


def build_config(model: type[C], file: Path | None, flags: dict[str, tuple[str, Any]]) -> C:
    """``flags`` maps a dotted config key to (flag name, value); None values are left out."""
    data = load_file(file) if file is not None else {}
    for dotted, (_, value) in flags.items():
        if value is not None:
            _set(data, dotted, value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        dotted, message = first_error(exc)
        flag = flags.get(dotted, (None, None))
        if flag[0] is not None and flag[1] is not None:
            raise InputError(f"{flag[0]}: {message} (got {flag[1]!r})") from None
        where = f"{file}: " if file is not None else ""
        raise InputError(f"{where}{dotted}: {message}") from None
