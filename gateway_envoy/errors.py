"""One error shape for REST clients: Envoy's own replies become JSON google.rpc.Status with a mapped status."""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from google.protobuf import struct_pb2
from google.protobuf.wrappers_pb2 import BoolValue, UInt32Value

# The REST branch (front_filters.py) marks REST (non-gRPC) requests with this dynamic metadata before the
# transcoder turns them into gRPC; Envoy's local replies to those get JSON bodies, gRPC clients keep grpc-status.
# The same namespace holds a limited route's bucket and Retry-After (routes.RATE_LIMIT_METADATA).
REST_METADATA_NAMESPACE = "protomesh.gateway"
REST_METADATA_KEY = "rest"
REST_MARK = "true"
# A rate-limited method's routes carry, at this key of their metadata, the most seconds an emptied bucket takes to
# have a call again (routes.py): the 429's Retry-After. A gateway's own 503 (a service over its circuit breaker)
# says 1 s; a service's own UNAVAILABLE keeps the retry-after it sent (the runtime's concurrency bound sends 1).
RETRY_AFTER_METADATA_KEY = "retry_after"
RATE_LIMITED_RETRY_AFTER = f"%METADATA(ROUTE:{REST_METADATA_NAMESPACE}:{RETRY_AFTER_METADATA_KEY})%"
SHED_RETRY_AFTER_S = "1"

# What a refused caller is told, the same however its token failed; no more is said (the reason is the issuer's
# business, and a hint helps only someone probing).
AUTHENTICATION_REQUIRED = "authentication required"
PERMISSION_DENIED = "permission denied"
TOO_MANY_REQUESTS = "too many requests"
INTERNAL_ERROR = "internal error"
SERVICE_UNAVAILABLE = "service unavailable"
DEADLINE_EXCEEDED = "deadline exceeded"
# HTTP status of a local reply -> (google.rpc.Code, message). None keeps Envoy's text, which for these
# codes describes the client's own mistake (e.g. the transcoder's "Unexpected token" for bad JSON).
# Everything else gets a fixed text: Envoy's reasons ("upstream connect error ... reset reason: ...")
# are internal detail.
LOCAL_REPLY_STATUS: dict[int, tuple[int, str | None]] = {
    400: (3, None),                      # INVALID_ARGUMENT: malformed JSON, wrong type, unknown query param
    401: (16, AUTHENTICATION_REQUIRED),  # UNAUTHENTICATED: no token, or one that failed (never says why)
    403: (7, PERMISSION_DENIED),         # PERMISSION_DENIED: the token lacks a scope of the rpc
    404: (5, None),                      # NOT_FOUND: no API method for this path and HTTP method
    405: (12, "method not allowed"),     # UNIMPLEMENTED
    408: (4, "request timeout"),         # DEADLINE_EXCEEDED: the client was too slow to send the request
    413: (3, "request body too large"),  # INVALID_ARGUMENT, with HTTP 413 kept
    429: (8, TOO_MANY_REQUESTS),         # RESOURCE_EXHAUSTED
    431: (3, "request headers too large"),
    500: (13, INTERNAL_ERROR),           # INTERNAL
    501: (12, None),                     # UNIMPLEMENTED: an API service this mesh does not serve (route's text)
    502: (14, SERVICE_UNAVAILABLE),      # UNAVAILABLE: bad answer from the instance, try again
    503: (14, SERVICE_UNAVAILABLE),      # UNAVAILABLE: no instance, none reachable, or none with the right identity
    504: (4, DEADLINE_EXCEEDED),         # DEADLINE_EXCEEDED: the route timeout passed
}
# Any other status a local reply may have: UNKNOWN, fixed text.
FALLBACK_STATUS = (2, "request failed")
# Native gRPC clients: Envoy derives grpc-status from the HTTP code (504 -> UNAVAILABLE); a timeout
# is DEADLINE_EXCEEDED (4) in gRPC terms.
GRPC_TIMEOUT_STATUS = "4"
# Local replies whose text native gRPC clients get as grpc-message instead of Envoy's ("Jwt is expired", "RBAC:
# access denied", "local_rate_limited", "upstream connect error or disconnect/reset before headers. ...").
GRPC_MESSAGES = {401: AUTHENTICATION_REQUIRED, 403: PERMISSION_DENIED, 429: TOO_MANY_REQUESTS, 500: INTERNAL_ERROR,
                 502: SERVICE_UNAVAILABLE, 503: SERVICE_UNAVAILABLE}
# jwt_authn writes why it refused a token into its dynamic metadata at this key (failed_status_in_metadata): every
# such refusal becomes one 401, whatever Envoy answered (it answers 403 for a token of another audience).
JWT_METADATA_NAMESPACE = "envoy.filters.http.jwt_authn"
JWT_FAILURE_KEY = "jwt_failure"
# jwt_authn's challenge names the request URL and, for a token it rejected, `error="invalid_token"`; every 401
# carries this one instead, the same whether a token was missing, expired or forged (RFC 6750 section 3).
WWW_AUTHENTICATE = 'Bearer realm="protomesh"'


def rest_request_matcher() -> metadata_pb2.MetadataMatcher:
    """Matches a request the REST branch marked as REST (routes and local-reply mappers use it)."""
    return metadata_pb2.MetadataMatcher(
        filter=REST_METADATA_NAMESPACE,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=REST_METADATA_KEY)],
        value=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=REST_MARK)))


def _rest_request() -> accesslog_pb2.AccessLogFilter:
    """A request the REST branch marked REST, or one that never reached it and is not gRPC: Envoy answers
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


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value),
                                      append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)


def _headers_for(status: int) -> list[base_pb2.HeaderValueOption]:
    """A refused caller learns how to authenticate; a limited or shed one when to come back."""
    headers = {401: [_header("www-authenticate", WWW_AUTHENTICATE)],
               429: [_header("retry-after", RATE_LIMITED_RETRY_AFTER)],
               503: [_header("retry-after", SHED_RETRY_AFTER_S)]}
    return headers.get(status, [])


def _rest_mapper(status: int, code: int, message: str | None) -> hcm.ResponseMapper:
    both = accesslog_pb2.AndFilter(filters=[_rest_request(), _status_is(status)])
    return hcm.ResponseMapper(filter=accesslog_pb2.AccessLogFilter(and_filter=both),
                              body_format_override=_json_status(code, message), headers_to_add=_headers_for(status))


def _text(message: str) -> substitution_format_string_pb2.SubstitutionFormatString:
    return substitution_format_string_pb2.SubstitutionFormatString(
        text_format_source=base_pb2.DataSource(inline_string=message))


def _grpc_message_mapper(status: int, message: str) -> hcm.ResponseMapper:
    """For a gRPC caller the body is the grpc-message (the status comes from the HTTP code)."""
    return hcm.ResponseMapper(filter=_status_is(status), headers_to_add=_headers_for(status),
                              body_format_override=_text(message))


def _token_refused() -> accesslog_pb2.AccessLogFilter:
    """jwt_authn's own refusal: its failure is in the metadata (also when it let a missing token pass on a public
    rpc, so a later 429 is not one) and it answered 401 or 403."""
    failed = accesslog_pb2.AccessLogFilter(metadata_filter=accesslog_pb2.MetadataFilter(
        matcher=metadata_pb2.MetadataMatcher(
            filter=JWT_METADATA_NAMESPACE, path=[metadata_pb2.MetadataMatcher.PathSegment(key=JWT_FAILURE_KEY)],
            value=value_pb2.ValueMatcher(present_match=True)),
        match_if_key_not_found=BoolValue(value=False)))
    refused = accesslog_pb2.AccessLogFilter(or_filter=accesslog_pb2.OrFilter(filters=[_status_is(401),
                                                                                      _status_is(403)]))
    return accesslog_pb2.AccessLogFilter(and_filter=accesslog_pb2.AndFilter(filters=[failed, refused]))


def _token_refused_mappers() -> list[hcm.ResponseMapper]:
    """Any token jwt_authn refused: 401 with the same body and challenge, REST and gRPC alike."""
    rest = accesslog_pb2.AccessLogFilter(and_filter=accesslog_pb2.AndFilter(filters=[_token_refused(),
                                                                                       _rest_request()]))
    unauthenticated = UInt32Value(value=401)
    return [hcm.ResponseMapper(filter=rest, status_code=unauthenticated, headers_to_add=_headers_for(401),
                               body_format_override=_json_status(16, AUTHENTICATION_REQUIRED)),
            hcm.ResponseMapper(filter=_token_refused(), status_code=unauthenticated, headers_to_add=_headers_for(401),
                               body_format_override=_text(AUTHENTICATION_REQUIRED))]


def _grpc_timeout_mapper() -> hcm.ResponseMapper:
    return hcm.ResponseMapper(filter=_status_is(504), headers_to_add=[_header("grpc-status", GRPC_TIMEOUT_STATUS)],
                              body_format_override=_text(DEADLINE_EXCEEDED))


def build_local_reply_config() -> hcm.LocalReplyConfig:
    """Mappers, the first that matches applies: a refused token is 401 for everyone; REST local replies by
    status -> JSON google.rpc.Status; then, for the gRPC callers left, fixed messages for 401/403/429/5xx and
    DEADLINE_EXCEEDED for timeouts (404 and 501 keep the route's own text: "unknown service ...")."""
    mappers = [_rest_mapper(status, code, message) for status, (code, message) in LOCAL_REPLY_STATUS.items()]
    fallback = hcm.ResponseMapper(filter=_rest_request(), body_format_override=_json_status(*FALLBACK_STATUS))
    grpc = [_grpc_message_mapper(status, message) for status, message in GRPC_MESSAGES.items()]
    return hcm.LocalReplyConfig(mappers=[*_token_refused_mappers(), *mappers, fallback, *grpc,
                                         _grpc_timeout_mapper()])
