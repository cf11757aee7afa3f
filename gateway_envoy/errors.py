"""One error shape for REST clients: Envoy's own replies become JSON google.rpc.Status with a mapped status."""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from google.protobuf import struct_pb2
from google.protobuf.wrappers_pb2 import BoolValue

# The Lua filter marks REST (non-gRPC) requests with this dynamic metadata before the transcoder turns
# them into gRPC; Envoy's local replies to those get JSON bodies, native gRPC clients keep grpc-status.
REST_METADATA_NAMESPACE = "protomesh.gateway"
REST_METADATA_KEY = "rest"

# HTTP status of a local reply -> (google.rpc.Code, message). None keeps Envoy's text, which for these
# codes describes the client's own mistake (e.g. the transcoder's "Unexpected token" for bad JSON).
# Everything else gets a fixed text: Envoy's reasons ("upstream connect error ... reset reason: ...")
# are internal detail.
LOCAL_REPLY_STATUS: dict[int, tuple[int, str | None]] = {
    400: (3, None),                      # INVALID_ARGUMENT: malformed JSON, wrong type, unknown query param
    404: (5, None),                      # NOT_FOUND: no API method for this path and HTTP method
    405: (12, "method not allowed"),     # UNIMPLEMENTED
    408: (4, "request timeout"),         # DEADLINE_EXCEEDED: the client was too slow to send the request
    413: (3, "request body too large"),  # INVALID_ARGUMENT, with HTTP 413 kept
    429: (8, "too many requests"),       # RESOURCE_EXHAUSTED
    431: (3, "request headers too large"),
    500: (13, "internal error"),         # INTERNAL
    501: (12, None),                     # UNIMPLEMENTED: an API service this mesh does not serve (route's text)
    502: (14, "service unavailable"),    # UNAVAILABLE: bad answer from the instance, try again
    503: (14, "service unavailable"),    # UNAVAILABLE: no instance, or none reachable
    504: (4, "deadline exceeded"),       # DEADLINE_EXCEEDED: the route timeout passed
}
# Any other status a local reply may have: UNKNOWN, fixed text.
FALLBACK_STATUS = (2, "request failed")
# Native gRPC clients: Envoy derives grpc-status from the HTTP code (504 -> UNAVAILABLE); a timeout
# is DEADLINE_EXCEEDED (4) in gRPC terms.
GRPC_TIMEOUT_STATUS = "4"


def rest_request_matcher() -> metadata_pb2.MetadataMatcher:
    """Matches a request the Lua filter marked as REST (routes and local-reply mappers use it)."""
    return metadata_pb2.MetadataMatcher(
        filter=REST_METADATA_NAMESPACE,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=REST_METADATA_KEY)],
        value=value_pb2.ValueMatcher(bool_match=True))


def _rest_request() -> accesslog_pb2.AccessLogFilter:
    """A request the Lua filter marked REST, or one that never reached it and is not gRPC: Envoy answers
    431 (headers too large) and 408 (headers too slow) before any filter runs."""
    marked = accesslog_pb2.AccessLogFilter(metadata_filter=accesslog_pb2.MetadataFilter(
        matcher=rest_request_matcher(), match_if_key_not_found=BoolValue(value=False)))
    # A missing content-type counts as empty (not gRPC): without that, Envoy never matches a missing header,
    # inverted or not, and those early replies have no request headers at all.
    grpc_content = route_components_pb2.HeaderMatcher(
        name="content-type", string_match=string_pb2.StringMatcher(prefix="application/grpc"),
        treat_missing_header_as_empty=True)
    not_grpc = accesslog_pb2.AccessLogFilter(header_filter=accesslog_pb2.HeaderFilter(header=grpc_content))
    not_grpc.header_filter.header.invert_match = True
    return accesslog_pb2.AccessLogFilter(or_filter=accesslog_pb2.OrFilter(filters=[marked, not_grpc]))


def _status_is(code: int) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(status_code_filter=accesslog_pb2.StatusCodeFilter(
        comparison=accesslog_pb2.ComparisonFilter(
            op=accesslog_pb2.ComparisonFilter.EQ,
            value=base_pb2.RuntimeUInt32(default_value=code, runtime_key=f"protomesh.local_reply.{code}"))))


def _json_status(code: int, message: str | None) -> substitution_format_string_pb2.SubstitutionFormatString:
    body = struct_pb2.Struct()
    body.update({"code": code, "message": message if message is not None else "%LOCAL_REPLY_BODY%"})
    body.get_or_create_list("details")
    return substitution_format_string_pb2.SubstitutionFormatString(json_format=body,
                                                                   content_type="application/json")


def _rest_mapper(status: int, code: int, message: str | None) -> hcm.ResponseMapper:
    both = accesslog_pb2.AndFilter(filters=[_rest_request(), _status_is(status)])
    return hcm.ResponseMapper(filter=accesslog_pb2.AccessLogFilter(and_filter=both),
                              body_format_override=_json_status(code, message))


def _grpc_timeout_mapper() -> hcm.ResponseMapper:
    return hcm.ResponseMapper(
        filter=_status_is(504),
        headers_to_add=[base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="grpc-status", value=GRPC_TIMEOUT_STATUS),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)])


def build_local_reply_config() -> hcm.LocalReplyConfig:
    """Mappers: REST local replies by status -> JSON google.rpc.Status; gRPC timeouts -> DEADLINE_EXCEEDED."""
    mappers = [_rest_mapper(status, code, message) for status, (code, message) in LOCAL_REPLY_STATUS.items()]
    fallback = hcm.ResponseMapper(filter=_rest_request(), body_format_override=_json_status(*FALLBACK_STATUS))
    return hcm.LocalReplyConfig(mappers=[*mappers, fallback, _grpc_timeout_mapper()])
