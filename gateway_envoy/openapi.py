"""Turns protoc-gen-openapiv2's document into one that says what this gateway's transcoder really sends and accepts.

    python -m gateway_envoy.openapi RAW.swagger.json gen/descriptors/protomesh.binpb gen/openapi/protomesh.swagger.json

The generator writes what grpc-gateway would serve; Envoy differs in a few ways, each fixed here from the
descriptor set the gateway transcodes with (see `describe`).
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor as MessageDescriptor
from google.protobuf.descriptor import MethodDescriptor

from gateway_envoy.listener import PRINT_OPTIONS

Json = dict[str, Any]

DEFAULT_TITLE = "protomesh REST API"
DESCRIPTION = ("The REST surface of the protomesh gateway: Envoy transcodes each call to gRPC. JSON is the proto3 "
               "mapping (lowerCamelCase names, int64 as strings, enums as names, RFC 3339 timestamps); every "
               "error is a google.rpc.Status.")
# Request bodies get their own copy of a message's schema: in a request every field is optional, while in a
# response the fields the gateway always prints are required.
INPUT_SUFFIX = "Input"
# What the proto3 JSON parser accepts for integers that JSON numbers carry (int32) or strings (int64).
INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1)}
INT_PATTERNS = {"int64": "^-?[0-9]+$", "uint64": "^[0-9]+$"}
FIELD_MASK = "google.protobuf.FieldMask"
_TEMPLATE = re.compile(r"\{([^}]+)\}")


def load_pool(descriptor_set: bytes) -> descriptor_pool.DescriptorPool:
    """A pool of every file of a descriptor set written with its imports (dependencies come first)."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file:
        pool.Add(file)
    return pool


def rpc_methods(descriptor_set: bytes, pool: descriptor_pool.DescriptorPool) -> dict[str, MethodDescriptor]:
    """Every rpc of the set by the operationId the generator gives it (`<Service>_<Method>`)."""
    methods = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file:
        for service in file.service:
            found = pool.FindServiceByName(f"{file.package}.{service.name}" if file.package else service.name)
            methods.update({f"{service.name}_{method.name}": method for method in found.methods})
    return methods


def describe(document: Json, descriptor_set: bytes, *, version: str, title: str = DEFAULT_TITLE) -> Json:
    """The generator's document made to match the transcoder (pure; the input is not changed).

    - `{user.userId}` path templates become `{userId}` and share the path item of the same URL (OpenAPI
      forbids two templates of one URL, and tools such as schemathesis cannot fill dotted names);
    - a FieldMask that is neither in the path nor in the body is a query parameter (Envoy reads
      `?updateMask=displayName`; grpc-gateway fills it from the body instead, so the generator leaves it out);
    - a server stream is its messages as Envoy prints them (one JSON object per line, or one JSON array),
      not grpc-gateway's `{"result": ...}` wrappers;
    - fields the gateway always prints (`always_print_primitive_fields`) are required in responses;
    - integers carry the bounds and int64 strings the digits the JSON parser accepts;
    - an answer holding one resource (`{"user": {"userId": ...}}`) links to the operations whose path takes its id
      (`x-links`, Swagger 2's spelling of OpenAPI 3 links), so stateful tools call them with real ids.
    """
    doc, pool = copy.deepcopy(document), load_pool(descriptor_set)
    doc["info"] = {"title": title, "version": version, "description": DESCRIPTION}
    merge_dotted_templates(doc)
    for operation, method in operations(doc, rpc_methods(descriptor_set, pool)):
        bind_field_masks(operation, method.input_type)
        if method.server_streaming:
            describe_stream(operation, method.output_type)
    split_request_schemas(doc, pool)
    if PRINT_OPTIONS.always_print_primitive_fields:
        require_printed_fields(doc, pool)
    for schema in schemas(doc):
        bound_integers(schema)
    link_resources(doc)
    return doc


def merge_dotted_templates(doc: Json) -> None:
    """`/v1/users/{user.userId}` -> `/v1/users/{userId}`, merged into that path item if it exists."""
    merged: Json = {}
    for path, item in doc["paths"].items():
        names = {name: name.rsplit(".", 1)[-1] for name in _TEMPLATE.findall(path)}
        new_path = _TEMPLATE.sub(lambda match: "{" + match[1].rsplit(".", 1)[-1] + "}", path)
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path":
                    parameter["name"] = names.get(parameter["name"], parameter["name"])
            if method in merged.setdefault(new_path, {}):
                raise ValueError(f"{method.upper()} {path} and {method.upper()} {new_path} are the same URL")
            merged[new_path][method] = operation
    doc["paths"] = merged


def operations(doc: Json, methods: dict[str, MethodDescriptor]) -> Iterator[tuple[Json, MethodDescriptor]]:
    """Every operation with the rpc it transcodes to."""
    for operation in _all_operations(doc):
        method = methods.get(operation.get("operationId", ""))
        if method is not None:
            yield operation, method


def bind_field_masks(operation: Json, request: MessageDescriptor) -> None:
    """A FieldMask the path and body leave unbound is a query parameter: comma-separated lowerCamelCase paths."""
    parameters = operation.setdefault("parameters", [])
    bound = {parameter["name"].split(".")[0] for parameter in parameters}
    for parameter in parameters:
        if parameter.get("in") == "body" and parameter["name"] == "body":  # body: "*" holds the unbound fields
            bound.update(parameter["schema"].get("properties", {}))
    for field in request.fields:
        if field.message_type is not None and field.message_type.full_name == FIELD_MASK and \
                field.json_name not in bound:
            parameters.append({"name": field.json_name, "in": "query", "required": False, "type": "string",
                               "description": "Fields to change, comma-separated in lowerCamelCase "
                                              "(e.g. `displayName`); empty changes every mutable field."})


def describe_stream(operation: Json, message: MessageDescriptor) -> None:
    """What Envoy sends for a server stream, by the gateway's print option: each message on a line of its own
    (Swagger 2 cannot say "newline-delimited", so the schema is one line's), or one JSON array of them."""
    response = operation["responses"]["200"]
    if PRINT_OPTIONS.stream_newline_delimited:
        response["description"] = "A stream: each message as one JSON object on a line of its own, as it comes."
        response["schema"] = {"$ref": _ref(message.full_name)}
    else:
        response["description"] = "A stream: one JSON array of the messages, sent as they come."
        response["schema"] = {"type": "array", "items": {"$ref": _ref(message.full_name)}}


def split_request_schemas(doc: Json, pool: descriptor_pool.DescriptorPool) -> None:
    """Request bodies refer to `<Message>Input` copies, which stay free of the response-only `required`."""
    for operation in _all_operations(doc):
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "body":
                parameter["schema"] = _as_input(parameter["schema"], doc["definitions"], pool)


def _as_input(schema: Json, definitions: Json, pool: descriptor_pool.DescriptorPool) -> Json:
    schema = copy.deepcopy(schema)
    for node in _nodes(schema):
        name = _ref_name(node)
        if name is None or definitions[name].get("type") != "object" or name.startswith("google.protobuf."):
            continue
        if _message(pool, name) is None:  # a body the generator made up: only requests use it
            definitions[name] = _as_input(definitions[name], definitions, pool)
            continue
        copy_name = name + INPUT_SUFFIX
        if _message(pool, copy_name) is not None:
            raise ValueError(f"{name}'s request copy would be called {copy_name}, a message of the API")
        if copy_name not in definitions:
            definitions[copy_name] = {}  # reserved first: a message that contains itself ends here
            definitions[copy_name] = _as_input(definitions[name], definitions, pool)
        node["$ref"] = _ref(copy_name)
    return schema


def require_printed_fields(doc: Json, pool: descriptor_pool.DescriptorPool) -> None:
    """Response messages: the fields without presence are always printed (`"nextPageToken": ""`, `[]`)."""
    for name, schema in doc["definitions"].items():
        message = _message(pool, name)
        if message is None or name.startswith("google.protobuf."):
            continue
        printed = [field.json_name for field in message.fields if not field.has_presence]
        if printed:
            schema["required"] = printed


def _message(pool: descriptor_pool.DescriptorPool, name: str) -> MessageDescriptor | None:
    try:
        return pool.FindMessageTypeByName(name)
    except KeyError:
        return None  # a body the generator made up (`OrderService.CancelOrderBody`), or an Input copy


def bound_integers(schema: Json) -> None:
    if schema.get("type") == "integer" and schema.get("format") in INT_BOUNDS:
        schema["minimum"], schema["maximum"] = INT_BOUNDS[schema["format"]]
    elif schema.get("type") == "string" and schema.get("format") in INT_PATTERNS:
        schema["pattern"] = INT_PATTERNS[schema["format"]]


def link_resources(doc: Json) -> None:
    """`CreateUser` -> `GetUser`, `UpdateUser`, `DeleteUser`, ... with `userId` taken from the answer's `user`."""
    by_id: dict[str, list[str]] = {}
    for operation in _all_operations(doc):
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "path":
                by_id.setdefault(parameter["name"], []).append(operation["operationId"])
    for operation in _all_operations(doc):
        response = operation["responses"].get("200", {})
        name = _ref_name(response.get("schema", {}))
        properties = doc["definitions"][name].get("properties", {}) if name else {}
        if len(properties) != 1:
            continue
        (field, schema), = properties.items()
        resource = doc["definitions"].get(_ref_name(schema) or "", {}).get("properties", {})
        key = field + "Id"
        targets = [target for target in by_id.get(key, []) if target != operation["operationId"]]
        if key in resource and targets:
            value = f"$response.body#/{field}/{key}"
            response["x-links"] = {target: {"operationId": target, "parameters": {key: value}}
                                   for target in sorted(targets)}


def schemas(doc: Json) -> Iterator[Json]:
    """Every schema object of the document: definitions, their properties and items, and non-body parameters."""
    yield from _nodes(doc["definitions"])
    for operation in _all_operations(doc):
        for parameter in operation.get("parameters", []):
            yield from _nodes(parameter)


def _all_operations(doc: Json) -> Iterator[Json]:
    for item in doc["paths"].values():
        yield from item.values()


def _nodes(value: object) -> Iterator[Json]:
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from _nodes(child)
    elif isinstance(value, list):
        for child in value:
            yield from _nodes(child)


def _ref(name: str) -> str:
    return f"#/definitions/{name}"


def _ref_name(node: Json) -> str | None:
    ref = node.get("$ref")
    return ref.removeprefix("#/definitions/") if isinstance(ref, str) else None


def write_atomically(path: Path, text: str) -> None:
    """A running control plane serves the file: it must never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(staging, 0o644)
    os.replace(staging, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway_envoy.openapi", description=__doc__.splitlines()[0])
    parser.add_argument("generated", type=Path, help="protoc-gen-openapiv2's merged document")
    parser.add_argument("descriptor", type=Path, help="the descriptor set the gateway transcodes with")
    parser.add_argument("out", type=Path, help="where the gateway's document goes")
    parser.add_argument("--version", default=importlib.metadata.version("protomesh"), help="info.version")
    args = parser.parse_args(argv)
    doc = describe(json.loads(args.generated.read_text()), args.descriptor.read_bytes(), version=args.version)
    doc["definitions"] = dict(sorted(doc["definitions"].items()))
    write_atomically(args.out, json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
