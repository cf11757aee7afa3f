"""The OpenAPI post-processor: protoc-gen-openapiv2's document, made to match Envoy's transcoder (pure logic)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway_envoy.listener import PRINT_OPTIONS
from gateway_envoy.openapi import INPUT_SUFFIX, describe

Json = dict[str, Any]


def ref(name: str) -> Json:
    return {"$ref": f"#/definitions/{name}"}


USER = {"type": "object", "properties": {
    "userId": {"type": "string"}, "email": {"type": "string"}, "displayName": {"type": "string"},
    "createTime": {"type": "string", "format": "date-time"}, "updateTime": {"type": "string", "format": "date-time"}}}
# What the generator writes for a few of the contracts' operations (shortened to what the post-processor reads).
GENERATED: Json = {
    "swagger": "2.0", "info": {"title": "acme/users/v1/users.proto", "version": "version not set"},
    "paths": {
        "/v1/users": {
            "get": {"operationId": "UserService_ListUsers",
                    "responses": {"200": {"schema": ref("acme.users.v1.ListUsersResponse")}},
                    "parameters": [{"name": "pageSize", "in": "query", "type": "integer", "format": "int32"}]},
            "post": {"operationId": "UserService_CreateUser",
                     "responses": {"200": {"schema": ref("acme.users.v1.CreateUserResponse")}},
                     "parameters": [{"name": "user", "in": "body", "schema": ref("acme.users.v1.User")}]},
        },
        "/v1/users/{userId}": {"get": {"operationId": "UserService_GetUser", "responses": {},
                                       "parameters": [{"name": "userId", "in": "path", "type": "string"}]}},
        "/v1/users/{user.userId}": {"patch": {"operationId": "UserService_UpdateUser", "responses": {}, "parameters": [
            {"name": "user.userId", "in": "path", "type": "string"},
            {"name": "user", "in": "body", "schema": {"type": "object", "properties": {"email": {"type": "string"}}}},
        ]}},
        "/v1/users/{userId}/notifications:watch": {"get": {
            "operationId": "NotificationService_WatchNotifications",
            "responses": {"200": {"schema": {"type": "object", "properties": {
                "result": ref("acme.notifications.v1.WatchNotificationsResponse"),
                "error": ref("google.rpc.Status")}}}},
            "parameters": [{"name": "userId", "in": "path", "type": "string"}]}},
        "/v1/orders": {"post": {
            "operationId": "OrderService_CreateOrder", "responses": {},
            "parameters": [{"name": "order", "in": "body", "schema": ref("acme.orders.v1.Order")}]}},
    },
    "definitions": {
        "acme.users.v1.User": USER,
        "acme.users.v1.CreateUserResponse": {"type": "object", "properties": {"user": ref("acme.users.v1.User")}},
        "acme.users.v1.ListUsersResponse": {"type": "object", "properties": {
            "users": {"type": "array", "items": ref("acme.users.v1.User")}, "nextPageToken": {"type": "string"}}},
        "acme.notifications.v1.WatchNotificationsResponse": {"type": "object", "properties": {}},
        "acme.orders.v1.Order": {"type": "object", "properties": {
            "lineItems": {"type": "array", "items": ref("acme.orders.v1.LineItem")},
            "totalCents": {"type": "string", "format": "int64"}, "state": ref("acme.orders.v1.OrderState")}},
        "acme.orders.v1.LineItem": {"type": "object", "properties": {
            "quantity": {"type": "integer", "format": "int32"},
            "unitPriceCents": {"type": "string", "format": "int64"}}},
        "acme.orders.v1.OrderState": {"type": "string", "enum": ["ORDER_STATE_UNSPECIFIED", "ORDER_STATE_CREATED"]},
        "google.rpc.Status": {"type": "object", "properties": {
            "code": {"type": "integer", "format": "int32"}, "message": {"type": "string"},
            "details": {"type": "array", "items": ref("google.protobuf.Any")}}},
        "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def described(gateway_descriptor: Path) -> Json:
    return describe(GENERATED, gateway_descriptor.read_bytes(), version="1.2.3")


def test_the_input_document_is_left_as_it_was(gateway_descriptor: Path) -> None:
    before = copy.deepcopy(GENERATED)
    describe(GENERATED, gateway_descriptor.read_bytes(), version="1")
    assert before == GENERATED


def test_the_document_is_titled_for_the_gateway_with_the_given_version(described: Json) -> None:
    assert described["info"]["title"] == "protomesh REST API"
    assert described["info"]["version"] == "1.2.3"


def test_a_dotted_path_template_shares_the_path_item_of_the_same_url(described: Json) -> None:
    assert "/v1/users/{user.userId}" not in described["paths"]
    item = described["paths"]["/v1/users/{userId}"]
    assert set(item) == {"get", "patch"}
    assert item["patch"]["parameters"][0] == {"name": "userId", "in": "path", "type": "string"}


def test_an_unbound_field_mask_becomes_the_update_mask_query_parameter(described: Json) -> None:
    parameters = described["paths"]["/v1/users/{userId}"]["patch"]["parameters"]
    mask = [p for p in parameters if p["name"] == "updateMask"]
    assert len(mask) == 1
    assert (mask[0]["in"], mask[0]["type"]) == ("query", "string")


def test_a_server_stream_is_described_as_the_gateway_prints_it(described: Json) -> None:
    schema = described["paths"]["/v1/users/{userId}/notifications:watch"]["get"]["responses"]["200"]["schema"]
    message = ref("acme.notifications.v1.WatchNotificationsResponse")
    if PRINT_OPTIONS.stream_newline_delimited:
        assert schema == message  # each line is one message, not grpc-gateway's {"result": ...} wrapper
    else:
        assert schema == {"type": "array", "items": message}


def test_responses_require_every_field_the_gateway_always_prints(described: Json) -> None:
    definitions = described["definitions"]
    assert definitions["acme.users.v1.ListUsersResponse"]["required"] == ["users", "nextPageToken"]
    # Message fields (user, createTime) are printed only when set; scalars, enums and lists always.
    assert definitions["acme.users.v1.User"]["required"] == ["userId", "email", "displayName"]
    assert "required" not in definitions["acme.users.v1.CreateUserResponse"]
    assert definitions["google.rpc.Status"]["required"] == ["code", "message", "details"]


def test_request_bodies_use_copies_in_which_no_field_is_required(described: Json) -> None:
    definitions = described["definitions"]
    body = described["paths"]["/v1/users"]["post"]["parameters"][0]["schema"]
    assert body == ref("acme.users.v1.User" + INPUT_SUFFIX)
    assert "required" not in definitions["acme.users.v1.User" + INPUT_SUFFIX]
    order = definitions["acme.orders.v1.Order" + INPUT_SUFFIX]
    assert order["properties"]["lineItems"]["items"] == ref("acme.orders.v1.LineItem" + INPUT_SUFFIX)
    assert order["properties"]["state"] == ref("acme.orders.v1.OrderState")  # an enum needs no copy


def test_integers_carry_the_bounds_and_digits_the_json_parser_accepts(described: Json) -> None:
    line = described["definitions"]["acme.orders.v1.LineItem"]["properties"]
    assert (line["quantity"]["minimum"], line["quantity"]["maximum"]) == (-(2**31), 2**31 - 1)
    assert line["unitPriceCents"]["pattern"] == "^-?[0-9]+$"
    page_size = described["paths"]["/v1/users"]["get"]["parameters"][0]
    assert page_size["maximum"] == 2**31 - 1


def test_two_operations_on_one_url_after_merging_templates_are_refused(gateway_descriptor: Path) -> None:
    doc = copy.deepcopy(GENERATED)
    doc["paths"]["/v1/users/{user.userId}"]["get"] = doc["paths"]["/v1/users/{userId}"]["get"]
    with pytest.raises(ValueError, match="same URL"):
        describe(doc, gateway_descriptor.read_bytes(), version="1")


def test_an_answer_holding_a_resource_links_to_the_operations_that_take_its_id(described: Json) -> None:
    links = described["paths"]["/v1/users"]["post"]["responses"]["200"]["x-links"]
    assert links["UserService_GetUser"] == {"operationId": "UserService_GetUser",
                                            "parameters": {"userId": "$response.body#/user/userId"}}
    assert set(links) == {"UserService_GetUser", "UserService_UpdateUser",
                          "NotificationService_WatchNotifications"}
    assert "x-links" not in described["paths"]["/v1/users"]["get"]["responses"]["200"]  # a list holds no one id
