"""Reading the gateway's OpenAPI document in tests: where it is, an operation's schemas, and a strict validator."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from localmesh.testing import project_root

Json = dict[str, Any]

DOCUMENT = project_root() / "gen" / "openapi" / "protomesh.swagger.json"
# RFC 3339 as proto3 JSON prints a Timestamp: always UTC ("Z"), 0, 3, 6 or 9 fractional digits.
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6}|\.\d{9})?Z$")
LOWER_CAMEL = re.compile(r"^(@type|[a-z][a-zA-Z0-9]*)$")


def load_document(path: Path = DOCUMENT) -> Json:
    assert path.is_file(), f"{path} is missing: run `make openapi`"
    document: Json = json.loads(path.read_text())
    return document


def response_schema(document: Json, method: str, path: str, status: int) -> Json:
    """The schema the document gives for an answer: the 200 one, or the default (error) one."""
    responses = document["paths"][path][method.lower()]["responses"]
    schema: Json = responses[str(status)]["schema"] if str(status) in responses else responses["default"]["schema"]
    return schema


def operations(document: Json) -> Iterator[tuple[str, str, Json]]:
    """Every operation of the document: (HTTP method in capitals, path template, the operation object)."""
    for template, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), template, operation


def required_scopes(document: Json, operation: Json) -> frozenset[str] | None:
    """What the document says an operation needs: None when it is public (`security: []`), else the scopes of
    its `x-scopes` (empty: any valid token), with a bearer token."""
    security = operation.get("security", document.get("security", []))
    if not security:
        return None
    return frozenset(operation.get("x-scopes", ()))


def problems(value: object, schema: Json, document: Json, where: str = "$") -> list[str]:
    """Where value breaks schema; stricter than JSON Schema in one way: a field the schema does not name is a
    problem (unless it allows additional properties), so a snake_case name cannot slip through."""
    if "$ref" in schema:
        return problems(value, document["definitions"][schema["$ref"].removeprefix("#/definitions/")], document,
                        where)
    kind = schema.get("type")
    if kind == "object":
        return _object_problems(value, schema, document, where)
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not an array"]
        return [p for i, item in enumerate(value) for p in problems(item, schema["items"], document, f"{where}[{i}]")]
    if kind == "string":
        return _string_problems(value, schema, where)
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool) and \
            schema.get("minimum", value) <= value <= schema.get("maximum", value)
        return [] if ok else [f"{where}: {value!r} is not an integer in range"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a boolean"]
    return []


def _object_problems(value: object, schema: Json, document: Json, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not an object"]
    properties = schema.get("properties", {})
    found = [f"{where}: {name} is missing" for name in schema.get("required", []) if name not in value]
    for name, item in value.items():
        if name in properties:
            found += problems(item, properties[name], document, f"{where}.{name}")
        elif schema.get("additionalProperties") is not True:
            found.append(f"{where}: {name} is not a field of the schema")
    return found


def _string_problems(value: object, schema: Json, where: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{where}: {value!r} is not a string"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return [f"{where}: {value!r} does not match {schema['pattern']}"]
    if schema.get("format") == "date-time" and not RFC3339.match(value):
        return [f"{where}: {value!r} is not an RFC 3339 timestamp"]
    return []


def field_names(value: object) -> set[str]:
    """Every object key in a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | {name for item in value.values() for name in field_names(item)}
    if isinstance(value, list):
        return {name for item in value for name in field_names(item)}
    return set()
