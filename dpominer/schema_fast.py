"""A fast yes/no for JSON Schema validity, for the keywords extraction schemas use most.

``jsonschema`` builds a validator object per node it descends into (~20 µs each): a 4 KB output
holding a 150-item list costs ~1 ms. Most candidates of a trained model pass, and a pass needs no
explanation, so ``compile_schema`` turns a Draft 2020-12 schema made only of the keywords below into
nested closures that answer valid/invalid; ``checks`` asks ``jsonschema`` itself (the validator of
record) only when this says invalid, for the why. A schema using any other keyword (``$ref``,
``anyOf``, ``format``, ``enum``, …) or another draft gets None here and is validated by ``jsonschema``
alone. Parity with ``jsonschema`` is tested on mutated instances (tests/test_checks.py).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

Validate = Callable[[Any], bool]
ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "examples", "default", "deprecated",
               "readOnly", "writeOnly"}
ASSERTIONS = {"type", "properties", "required", "additionalProperties", "items", "pattern", "minLength",
              "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems",
              "uniqueItems", "minProperties", "maxProperties"}
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


class Unsupported(Exception):
    pass


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    # as jsonschema's Draft 4+ type checker: 1.0 is an integer, True is not
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _frozen(value: Any) -> Any:
    """A hashable stand-in with jsonschema's equality: 1 == 1.0, but True != 1."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, dict):
        return ("object", frozenset((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(_frozen(v) for v in value))
    return ("value", value)


def _unique(v: Any) -> bool:
    if not isinstance(v, list):
        return True
    if all(type(x) is str for x in v):  # the common case: a set of the strings themselves
        return len(set(v)) == len(v)
    return len({_frozen(x) for x in v}) == len(v)


def _all_of(tests: list[Validate]) -> Validate:
    """One predicate true when every test is (chained `and`s: no generator per call)."""
    if not tests:
        return lambda v: True
    combined = tests[0]
    for test in tests[1:]:
        combined = (lambda a, b: lambda v: a(v) and b(v))(combined, test)
    return combined


def _node_tests(schema: dict[str, Any]) -> list[Validate]:
    """One predicate per assertion keyword about this node itself (not its members)."""
    tests: list[Validate] = []
    if schema.get("type") == "string" and set(schema) - ANNOTATIONS == {"type", "pattern"}:
        # the commonest leaf (a list of names, ids, dates): one call per item instead of three
        search = re.compile(schema["pattern"]).search
        return [lambda v: type(v) is str and search(v) is not None]
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        kinds = [TYPES[n] for n in names]
        tests.append(kinds[0] if len(kinds) == 1 else lambda v: any(k(v) for k in kinds))
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search
        tests.append(lambda v: not isinstance(v, str) or search(v) is not None)
    for key, op in (("minLength", operator.ge), ("maxLength", operator.le)):
        if key in schema:
            tests.append(lambda v, op=op, n=schema[key]: not isinstance(v, str) or op(len(v), n))
    for key, holds in (("minimum", operator.ge), ("maximum", operator.le),
                       ("exclusiveMinimum", operator.gt), ("exclusiveMaximum", operator.lt)):
        if key in schema:
            tests.append(lambda v, holds=holds, n=schema[key]: not _is_number(v) or holds(v, n))
    for key, container, op in (("minItems", list, operator.ge), ("maxItems", list, operator.le),
                               ("minProperties", dict, operator.ge), ("maxProperties", dict, operator.le)):
        if key in schema:
            tests.append(lambda v, c=container, op=op, n=schema[key]: not isinstance(v, c) or op(len(v), n))
    if schema.get("uniqueItems") is True:
        tests.append(_unique)
    if "required" in schema:
        required = list(schema["required"])
        tests.append(lambda v: not isinstance(v, dict) or all(k in v for k in required))
    return tests


class Node:
    """A compiled (sub)schema: its own tests, and the compiled schemas of its members."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.tests: list[Validate] = []
        self.properties: dict[str, Node] = {}
        self.additional: Node | None = None
        self.items: Node | None = None
        if isinstance(schema, bool):
            self.tests = [lambda v, ok=schema: ok]
            self.is_valid = self.tests[0]
            return
        if not isinstance(schema, dict):
            raise Unsupported(type(schema).__name__)
        unknown = set(schema) - ANNOTATIONS - ASSERTIONS
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        self.tests = _node_tests(schema)
        self.properties = {k: Node(s) for k, s in schema.get("properties", {}).items()}
        if "additionalProperties" in schema:
            self.additional = Node(schema["additionalProperties"])
        if "items" in schema:
            if not isinstance(schema["items"], (dict, bool)):
                raise Unsupported("items")
            self.items = Node(schema["items"])
        self.is_valid = self._compile()

    def _compile(self) -> Validate:
        """One closure for the whole subtree: the hot path, no generators or attribute lookups."""
        tests = list(self.tests)
        if self.properties or self.additional is not None:
            props = {k: n.is_valid for k, n in self.properties.items()}
            other = self.additional.is_valid if self.additional is not None else None

            def members_ok(v: Any) -> bool:
                if isinstance(v, dict):
                    for key, member in v.items():
                        sub = props.get(key, other)
                        if sub is not None and not sub(member):
                            return False
                return True

            tests.append(members_ok)
        if self.items is not None:
            item = self.items.is_valid
            tests.append(lambda v: not isinstance(v, list) or all(map(item, v)))
        return _all_of(tests)

    def members(self, value: Any):
        """(key or index, member value, its Node) for every member this schema constrains."""
        if isinstance(value, dict) and (self.properties or self.additional is not None):
            for key, member in value.items():
                sub = self.properties.get(key, self.additional)
                if sub is not None:
                    yield key, member, sub
        elif isinstance(value, list) and self.items is not None:
            for index, member in enumerate(value):
                yield index, member, self.items

    def locate(self, value: Any, path: tuple = ()) -> tuple[tuple, Any, Any] | None:
        """(path, subschema, subvalue) of the first failing node in document order; None when valid."""
        if not all(t(value) for t in self.tests):
            return path, self.schema, value
        for key, member, sub in self.members(value):
            if not sub.is_valid(member):
                if sub.schema is False:  # jsonschema reports a forbidden member on its parent (additionalProperties)
                    return path, self.schema, value
                return sub.locate(member, (*path, key))
        return None


def compile_schema(schema: Any) -> Node | None:
    """The schema compiled for a quick verdict (``is_valid``, agreeing with jsonschema) and the first
    failing node (``locate``), or None when the schema is outside this subset."""
    if isinstance(schema, dict) and schema.get("$schema", DRAFT_2020_12).rstrip("#") != DRAFT_2020_12:
        return None
    try:
        return Node(schema)
    except (Unsupported, re.error, TypeError, KeyError):
        return None
