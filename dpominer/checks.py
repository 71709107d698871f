"""Failure checks beyond loops: does a candidate meet the output's format rules?

A check is declared as a SPEC string (``--check SPEC`` or ``[[checks]]`` in a config file) and kept
as plain data (:class:`CheckSpec`), so a config pickles to worker processes unchanged; each process
builds the callables once (:func:`compiled`). Built-ins:

* ``json`` — the output, or its first fenced ```json block, parses as JSON (strict: no NaN/Infinity);
* ``json-schema:FILE`` — that JSON validates against the schema in FILE (``jsonschema``); the why
  names the first failing path and rule;
* ``regex-forbid:PATTERN`` / ``regex-require:PATTERN`` — Python ``re.search``;
* ``max-length-ratio:R`` — stripped length ≤ R × the reference's (not applied without a reference);
* ``py:MODULE:FUNCTION`` — the user's ``f(text, document) -> str | None``: None passes, a string is
  the reason it fails; the module is imported once per process (the working folder is importable).

Any other NAME (or ``NAME:ARG``) is looked up in the entry-point group ``dpominer.checks``: the entry
point loads a check function, or with ``:ARG`` a factory called once with ARG that returns one.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .jsonl import InputError
from .records import CheckResult
from .schema_fast import compile_schema

CheckFn = Callable[[str, dict[str, Any]], "str | None"]
BUILTINS = ("json", "json-schema", "regex-forbid", "regex-require", "max-length-ratio", "py")
NEEDS_ARG = {"json-schema": "FILE", "regex-forbid": "PATTERN", "regex-require": "PATTERN",
             "max-length-ratio": "R", "py": "MODULE:FUNCTION"}
ENTRY_POINT_GROUP = "dpominer.checks"


class CheckSpec(BaseModel):
    """One check as the user wrote it: ``spec`` is ``KIND`` or ``KIND:ARG``; ``name`` labels its results."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    spec: str = Field(..., min_length=1, description="json | json-schema:FILE | regex-forbid:PATTERN | "
                      "regex-require:PATTERN | max-length-ratio:R | py:MODULE:FUNCTION | an entry point NAME[:ARG]")
    name: str | None = Field(None, description="label of this check's results (default: the kind)")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"spec": data} if isinstance(data, str) else data

    @property
    def kind(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def arg(self) -> str | None:
        parts = self.spec.split(":", 1)
        return parts[1] if len(parts) == 2 else None

    @field_validator("spec")
    @classmethod
    def _syntax(cls, spec: str) -> str:
        """What can be told without I/O: arguments present, numbers and patterns well formed."""
        kind, _, arg = spec.partition(":")
        if kind in NEEDS_ARG and not arg:
            raise ValueError(f"'{kind}' needs an argument: {kind}:{NEEDS_ARG[kind]}")
        if kind == "json" and arg:
            raise ValueError("'json' takes no argument (use json-schema:FILE for a schema)")
        if kind in ("regex-forbid", "regex-require"):
            try:
                re.compile(arg)
            except re.error as exc:
                raise ValueError(f"{kind}: bad pattern {arg!r}: {exc}") from None
        if kind == "max-length-ratio":
            try:
                ratio = float(arg)
            except ValueError:
                raise ValueError(f"max-length-ratio: {arg!r} is not a number") from None
            if not ratio > 0 or ratio == float("inf"):
                raise ValueError(f"max-length-ratio: the ratio must be a positive number (got {arg})")
        if kind == "py" and (arg.count(":") != 1 or not all(arg.split(":"))):
            raise ValueError(f"py: expected py:MODULE:FUNCTION (got {spec!r})")
        return spec


def resolve_names(specs: list[CheckSpec]) -> list[str]:
    """Each check's result name: its ``name``, else its kind; a kind used twice is named by its full spec."""
    default = [s.name or (s.spec if s.kind == "py" else s.kind) for s in specs]
    names = [d if s.name or default.count(d) == 1 else s.spec for s, d in zip(specs, default, strict=True)]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValueError(f"two checks named {name!r}; give one a 'name' in [[checks]]")
    return names


@dataclass(frozen=True)
class Check:
    name: str
    fn: CheckFn
    user: bool  # the user's code: its exceptions are reported with the document line
    needs_reference: bool = False  # left out for documents without one


class CheckError(Exception):
    """A user check raised or returned something other than None or a string."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"check {name}: {message}")
        self.name = name


# --------------------------------------------------------------------------------------------- built-ins

FENCE_OPEN = re.compile(r"```[ \t]*json[^\n]*\n", re.IGNORECASE)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(body: str) -> tuple[Any, str | None]:
    try:
        return _DECODER.decode(body), None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        return None, str(exc)
    except RecursionError:
        return None, "nested too deeply to parse"


def parse_json(text: str) -> tuple[Any, str | None]:
    """(value, None) when the whole text, or else its first fenced ```json block, parses as strict JSON
    (no NaN/Infinity); (None, why) when neither does."""
    if not text.strip():
        return None, "empty output"
    value, error = _loads(text)
    if error is None:
        return value, None
    opening = FENCE_OPEN.search(text)
    if opening is None:
        return None, _short(f"not JSON and no ```json block: {error}", 300)
    end = text.find("```", opening.end())
    if end < 0:
        return None, "the ```json block is not closed"
    value, block_error = _loads(text[opening.end():end])
    return (value, None) if block_error is None else (None, _short(f"```json block is not JSON: {block_error}", 300))


def _json_check(text: str, document: dict[str, Any]) -> str | None:
    return parse_json(text)[1]


def _short(value: str, limit: int = 160) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _schema_check(path: str) -> CheckFn:
    import jsonschema

    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ValueError(f"cannot read schema {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"schema {path} is not JSON: {exc}") from None
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"schema {path} is not a valid JSON Schema: {_short(exc.message)}") from None
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    fast = compile_schema(schema)  # the common keywords, compiled: a quick verdict and where it fails

    def check(text: str, document: dict[str, Any]) -> str | None:
        value, why = parse_json(text)
        if why is not None:
            return why
        try:
            return _explain(value)
        except RecursionError:  # a value nested hundreds deep, as json.loads allows
            return "nested too deeply to validate"

    def _explain(value: Any) -> str | None:
        prefix: tuple = ()
        judge, instance = validator, value
        if fast is not None:
            found = fast.locate(value)
            if found is None:
                return None
            # jsonschema, the validator of record, explains the failing node only (not the whole output)
            prefix, subschema, instance = found
            judge = validator.evolve(schema=subschema)
        error = next(judge.iter_errors(instance), None)  # the first, lazily: later ones cost time unread
        if error is None:
            return None
        return f"{_json_path((*prefix, *error.absolute_path))}: {error.validator} — {_short(error.message)}"

    return check


def _json_path(parts: tuple) -> str:
    """JSONPath as jsonschema writes it: $.key[0].other."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _regex_check(kind: str, pattern: str) -> CheckFn:
    compiled_pattern = re.compile(pattern)

    def forbid(text: str, document: dict[str, Any]) -> str | None:
        found = compiled_pattern.search(text)
        if found is None:
            return None
        return f"forbidden /{pattern}/ at char {found.start()}: {_short(found.group(0), 60)!r}"

    def require(text: str, document: dict[str, Any]) -> str | None:
        return None if compiled_pattern.search(text) else f"required /{pattern}/ not found"

    return forbid if kind == "regex-forbid" else require


def _length_check(ratio: float) -> CheckFn:
    def check(text: str, document: dict[str, Any]) -> str | None:
        reference = (document.get("reference") or "").strip()
        length = len(text.strip())
        if length <= ratio * len(reference):
            return None
        return f"{length} chars > {ratio:g} × the reference's {len(reference)}"

    return check


def _import_target(arg: str) -> Any:
    module_name, attr = arg.split(":")
    if os.getcwd() not in sys.path:  # a check module beside the data, as `python -m` would find it
        sys.path.append(os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 — any failure while importing the user's module
        raise ValueError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{module_name}:{attr} is not callable (a {type(target).__name__})")
    return target


def _entry_point(kind: str, arg: str | None) -> CheckFn:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == kind]
    if not found:
        known = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
        plugins = f"; entry points ({ENTRY_POINT_GROUP}): {', '.join(known)}" if known else ""
        raise ValueError(f"unknown check {kind!r} (built-ins: json, json-schema:FILE, regex-forbid:PATTERN, "
                         f"regex-require:PATTERN, max-length-ratio:R, py:MODULE:FUNCTION{plugins})")
    try:
        target = found[0].load()
        if arg is not None:
            target = target(arg)  # a factory: called once with the argument, returns the check
    except Exception as exc:  # noqa: BLE001 — the plugin's own failure, reported as bad input
        raise ValueError(f"entry point {kind!r} ({found[0].value}): {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise ValueError(f"entry point {kind!r} ({found[0].value}) did not give a callable")
    return target


def _build_one(spec: CheckSpec) -> tuple[CheckFn, bool]:
    kind, arg = spec.kind, spec.arg
    if kind == "json":
        return _json_check, False
    if kind == "json-schema":
        return _schema_check(arg or ""), False
    if kind in ("regex-forbid", "regex-require"):
        return _regex_check(kind, arg or ""), False
    if kind == "max-length-ratio":
        return _length_check(float(arg or 0)), False
    if kind == "py":
        return _import_target(arg or ""), True
    return _entry_point(kind, arg), True


@functools.lru_cache(maxsize=16)
def compiled(specs: tuple[CheckSpec, ...]) -> tuple[Check, ...]:
    """The callables for these specs, built once per process (schemas read, modules imported).

    Raises ValueError naming the spec when one cannot be built."""
    checks = []
    for spec, name in zip(specs, resolve_names(list(specs)), strict=True):
        try:
            fn, user = _build_one(spec)
        except ValueError as exc:
            raise ValueError(f"{spec.spec}: {exc}") from None
        checks.append(Check(name, fn, user, needs_reference=spec.kind == "max-length-ratio"))
    return tuple(checks)


def validate(specs: list[CheckSpec], where: str) -> None:
    """Build every check now, before any work; a failure is one line naming ``where`` (the flag or file)."""
    try:
        compiled(tuple(specs))
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None


def parse_specs(values: list[str], where: str = "--check") -> list[CheckSpec]:
    """``--check`` values → specs; a malformed one is an InputError naming the flag."""
    specs = []
    for value in values:
        try:
            specs.append(CheckSpec(spec=value))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            first = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
            raise InputError(f"{where} {value}: {first.removeprefix('Value error, ')}") from None
    try:
        resolve_names(specs)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    return specs


def run_checks(checks: tuple[Check, ...], text: str, document: dict[str, Any]) -> list[CheckResult]:
    """[{name, passed, why?}] for one candidate; a check that does not apply (length without a
    reference) is left out. A user check's exception becomes a CheckError naming the check."""
    results = []
    for check in checks:
        if check.needs_reference and not (document.get("reference") or "").strip():
            continue
        try:
            why = check.fn(text, document)
        except Exception as exc:  # noqa: BLE001 — the user's code: reported with the document line
            if not check.user:
                raise
            raise CheckError(check.name, f"{type(exc).__name__}: {exc}") from exc
        if why is not None and not isinstance(why, str):
            raise CheckError(check.name, f"returned {type(why).__name__}; expected None (pass) or a reason (str)")
        failed = why is not None
        results.append(CheckResult(name=check.name, passed=not failed,
                                   why=(why or "failed (no reason given)") if failed else None))
    return results
