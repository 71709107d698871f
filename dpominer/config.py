"""Build a command's pydantic config from an optional TOML/JSON file plus command-line flags.

Flags win over the file; a flag left out keeps the file's value (or the default). Validation errors
name the flag (``--min-margin: ...``) or the file and key (``cfg.toml: policy.min_margin: ...``).
"""

from __future__ import annotations

import functools
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import orjson
from pydantic import BaseModel, ValidationError

from .jsonl import InputError, first_error

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
        key = next((k for k in flags if dotted == k or dotted.startswith(k + ".")), None)
        name, value = flags[key] if key is not None else (None, None)
        if name is not None and value is not None:
            index = dotted[len(key) + 1:].partition(".")[0]
            if isinstance(value, list) and index.isdigit():  # one value of a repeated flag: name that one
                raise InputError(f"{name} {value[int(index)]}: {message}") from None
            raise InputError(f"{name}: {message} (got {value!r})") from None
        where = f"{file}: " if file is not None else ""
        raise InputError(f"{where}{dotted}: {message}") from None


# ------------------------------------------------------------------------------- flags, declared once


@dataclass(frozen=True)
class Opt:
    """One command-line option: the dotted config key it sets and its flag names. Its type, and its help
    unless given here, come from the config field it sets."""

    key: str
    decls: tuple[str, ...]
    help: str | None = None
    min: float | None = None  # typer's range check: a value outside is refused before the config is built
    max: float | None = None

    @property
    def flag(self) -> str:
        """The name errors use: the first long name (``--reject-worse`` of ``--reject-worse/--no-…``)."""
        return next((d for d in self.decls if d.startswith("--")), self.decls[0]).split("/")[0]

    @property
    def param(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def opt(key: str, *decls: str, help: str | None = None, min: float | None = None,
        max: float | None = None) -> Opt:
    """One table row: ``key`` set by ``decls`` (default ``--last-key-part``); ``min``/``max`` as typer's."""
    return Opt(key, decls or (f"--{key.rsplit('.', 1)[-1].replace('_', '-')}",), help, min, max)


class Flags(dict):
    """Dotted config key → (flag name, value given or None), as :func:`build_config` takes them."""

    def section(self, prefix: str) -> Flags:
        """The flags under ``prefix.``, keyed without it."""
        return Flags({k.removeprefix(prefix + "."): v for k, v in self.items() if k.startswith(prefix + ".")})

    def outside(self, prefix: str) -> Flags:
        """The flags not under ``prefix.``."""
        return Flags({k: v for k, v in self.items() if not k.startswith(prefix + ".")})

    def value(self, key: str) -> Any:
        return self[key][1]


def _field(models: dict[str, type[BaseModel]], key: str):
    """The pydantic field a dotted key names; ``models`` maps a first key part to its model ("" = the rest)."""
    head, _, rest = key.partition(".")
    model, parts = (models[head], rest.split(".")) if head in models and rest else (models[""], key.split("."))
    for part in parts[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[parts[-1]]


def _flag_type(annotation: Any) -> Any:
    """The type typer parses a flag as: Optional and Literal unwrapped (pydantic checks the value); a list
    or tuple field is a repeatable flag, of strings where its items are models (which parse their string
    form, as ``CheckSpec`` does)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return type(args[0])
    if get_origin(annotation) in (list, tuple):
        item = args[0]
        return list[str] if isinstance(item, type) and issubclass(item, BaseModel) else list[_flag_type(item)]
    if args:
        return _flag_type(args[0])
    return annotation


def with_options(table: tuple[Opt, ...], **models: type[BaseModel]):
    """Give a typer command the options of ``table``; it receives them as ``flags: Flags``.

    ``models`` are the configs the keys belong to (``config=`` for plain keys, a name for keys under that
    prefix), so a flag's type and default help are those of its config field: declared once.
    """
    import typer

    models = {"": models.pop("config"), **models}

    def wrap(command):
        signature = inspect.signature(command, eval_str=True)
        fixed = [p for name, p in signature.parameters.items() if name != "flags"]
        added = []
        for option in table:
            field = _field(models, option.key)
            description = field.description and field.description[0].upper() + field.description[1:] + "."
            info = typer.Option(None, *option.decls, help=option.help or description, min=option.min, max=option.max)
            added.append(inspect.Parameter(option.param, inspect.Parameter.KEYWORD_ONLY, default=info,
                                           annotation=_flag_type(field.annotation) | None))

        @functools.wraps(command)
        def run(**kwargs):
            flags = Flags({o.key: (o.flag, kwargs.pop(o.param)) for o in table})
            return command(**kwargs, flags=flags)

        run.__signature__ = signature.replace(parameters=fixed + added)
        run.__annotations__ = {p.name: p.annotation for p in fixed + added}
        return run

    return wrap
