"""Pure builders for the filters in front of the transcoder, all native Envoy filters (no script runs per request).

- **Hygiene, for every caller:** x-envoy-* headers are the gateway's own, so none a client sends reaches a
  service and none a service sends reaches a client; a client's own x-protomesh-claims never reaches a service
  (only jwt_authn's verified payload does).
- **REST requests** (any content-type but gRPC's, none included) are the ones that match the route table's REST
  entry before the transcoder rewrites their path (routes.py); that route turns on three filters that are off for
  everything else, so a gRPC call never runs them:
  - the mark: dynamic metadata, so Envoy's local replies get a JSON body (errors.py) after the transcoder has
    turned the request into gRPC;
  - the buffer: the transcoder streams a body, so only buffering enforces the size limit (413);
  - JSON only: the response loses the grpc-* headers, a gRPC client's status that means nothing to a JSON one.
- **An oversized bearer token** (only when the gateway verifies tokens) is swapped for one that no issuer
  signed before jwt_authn sees it, so it is refused like every bad token: one 401, the client learns no more.
"""

from __future__ import annotations

from cel.expr import syntax_pb2 as cel_syntax_pb2
from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.http.composite.v3 import composite_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import UInt32Value
from xds.core.v3 import extension_pb2 as xds_extension_pb2
from xds.type.matcher.v3 import cel_pb2 as cel_matcher_pb2
from xds.type.matcher.v3 import http_inputs_pb2 as xds_inputs_pb2
from xds.type.matcher.v3 import matcher_pb2
from xds.type.v3 import cel_pb2

from gateway_envoy.errors import REST_MARK, REST_METADATA_KEY, REST_METADATA_NAMESPACE
from protomesh.auth import CLAIMS_KEY

HYGIENE_FILTER = "protomesh.hygiene"
REST_MARK_FILTER = "protomesh.rest.mark"
REST_BUFFER_FILTER = "protomesh.rest.buffer"
REST_JSON_FILTER = "protomesh.rest.json_only"
TOKEN_GUARD_FILTER = "protomesh.token_guard"
ENVOY_HEADER_PREFIX = "x-envoy-"
# A gRPC client's status headers; a JSON client has its status in the HTTP code and the body.
GRPC_RESPONSE_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-encoding",
                         "grpc-accept-encoding")
# A well-formed token that no issuer signed: jwt_authn rejects it like any other bad token.
UNVERIFIABLE_TOKEN = "Bearer e30.e30.oversized"


def packed(message: Message) -> AnyProto:
    """A message as the Any an Envoy typed_config holds (deterministic bytes, so versions stay stable)."""
    packed = AnyProto()
    packed.Pack(message, deterministic=True)
    return packed


def _extension(name: str, message: Message) -> extension_pb2.TypedExtensionConfig:
    return extension_pb2.TypedExtensionConfig(name=name, typed_config=packed(message))


def _matching(name: str, message: Message) -> xds_extension_pb2.TypedExtensionConfig:
    """An input or action of a matcher (xds's own extension type)."""
    return xds_extension_pb2.TypedExtensionConfig(name=name, typed_config=packed(message))


def _envoy_headers() -> mutation_rules_pb2.HeaderMutation:
    return mutation_rules_pb2.HeaderMutation(remove_on_match=mutation_rules_pb2.HeaderMutation.RemoveOnMatch(
        key_matcher={"prefix": ENVOY_HEADER_PREFIX}))


def _removed(*names: str) -> list[mutation_rules_pb2.HeaderMutation]:
    return [mutation_rules_pb2.HeaderMutation(remove=name) for name in names]


def hygiene_filter() -> hcm.HttpFilter:
    """First in the chain, so it sees requests as clients send them and responses as clients get them (local
    replies of every later filter included)."""
    mutations = header_mutation_pb2.Mutations(
        request_mutations=[_envoy_headers(), *_removed(CLAIMS_KEY)],
        response_mutations=[_envoy_headers()])
    return hcm.HttpFilter(name=HYGIENE_FILTER,
                          typed_config=packed(header_mutation_pb2.HeaderMutation(mutations=mutations)))


def _rest_mark() -> header_to_metadata_pb2.Config:
    """Whatever the request's content-type, or none, the request is marked REST."""
    mark = header_to_metadata_pb2.Config.KeyValuePair(
        metadata_namespace=REST_METADATA_NAMESPACE, key=REST_METADATA_KEY, value=REST_MARK,
        type=header_to_metadata_pb2.Config.STRING)
    return header_to_metadata_pb2.Config(request_rules=[header_to_metadata_pb2.Config.Rule(
        header="content-type", on_header_present=mark, on_header_missing=mark)])


def _buffer(max_request_bytes: int) -> buffer_pb2.Buffer:
    return buffer_pb2.Buffer(max_request_bytes=UInt32Value(value=max_request_bytes))


def rest_filters(max_request_bytes: int) -> list[hcm.HttpFilter]:
    """The REST branch's filters, off unless a route turns them on (rest_route_configs)."""
    json_only = header_mutation_pb2.HeaderMutation()
    return [hcm.HttpFilter(name=name, typed_config=packed(config), disabled=True) for name, config in (
        (REST_MARK_FILTER, _rest_mark()), (REST_BUFFER_FILTER, _buffer(max_request_bytes)),
        (REST_JSON_FILTER, json_only))]


def rest_route_configs(max_request_bytes: int) -> dict[str, Message]:
    """What the REST entry route sets for each REST filter (typed_per_filter_config): it turns them on."""
    json_only = header_mutation_pb2.HeaderMutationPerRoute(mutations=header_mutation_pb2.Mutations(
        response_mutations=_removed(*GRPC_RESPONSE_HEADERS)))
    return {REST_MARK_FILTER: _rest_mark(),
            REST_BUFFER_FILTER: buffer_pb2.BufferPerRoute(buffer=_buffer(max_request_bytes)),
            REST_JSON_FILTER: json_only}


def _composite(name: str, matcher: matcher_pb2.Matcher) -> hcm.HttpFilter:
    """A composite filter: the matcher, on the request headers, picks the filters this request runs (if any)."""
    wrapped = extension_matcher_pb2.ExtensionWithMatcher(
        xds_matcher=matcher, extension_config=_extension("composite", composite_pb2.Composite()))
    return hcm.HttpFilter(name=name, typed_config=packed(wrapped))


def _run(name: str, *filters: extension_pb2.TypedExtensionConfig) -> matcher_pb2.Matcher.OnMatch:
    action = composite_pb2.ExecuteFilterAction(
        filter_chain=composite_pb2.FilterChainConfiguration(typed_config=list(filters)))
    return matcher_pb2.Matcher.OnMatch(action=_matching(name, action))


def _call(function: str, *args: cel_syntax_pb2.Expr) -> cel_syntax_pb2.Expr:
    return cel_syntax_pb2.Expr(call_expr=cel_syntax_pb2.Expr.Call(function=function, args=list(args)))


def _longer_than(header: str, length: int) -> cel_syntax_pb2.Expr:
    """CEL `size(request.headers["<header>"]) > <length>`, parsed (Envoy takes no expression text); a request
    without the header does not match."""
    headers = cel_syntax_pb2.Expr(select_expr=cel_syntax_pb2.Expr.Select(
        operand=cel_syntax_pb2.Expr(ident_expr=cel_syntax_pb2.Expr.Ident(name="request")), field="headers"))
    value = _call("_[_]", headers, cel_syntax_pb2.Expr(const_expr=cel_syntax_pb2.Constant(string_value=header)))
    return _call("_>_", _call("size", value), cel_syntax_pb2.Expr(const_expr=cel_syntax_pb2.Constant(
        int64_value=length)))


def token_guard_filter(max_token_bytes: int) -> hcm.HttpFilter:
    """A bearer token longer than `max_token_bytes` is replaced before jwt_authn reads it (see the docstring).

    The verified payload travels to every service as x-protomesh-claims, which the runtime reads up to 8 KiB:
    forwarding a larger one would fail the call somewhere less clear."""
    too_long = _longer_than("authorization", max_token_bytes)
    predicate = matcher_pb2.Matcher.MatcherList.Predicate(
        single_predicate=matcher_pb2.Matcher.MatcherList.Predicate.SinglePredicate(
            input=_matching("request", xds_inputs_pb2.HttpAttributesCelMatchInput()),
            custom_match=_matching("size", cel_matcher_pb2.CelMatcher(
                expr_match=cel_pb2.CelExpression(cel_expr_parsed=cel_syntax_pb2.ParsedExpr(expr=too_long))))))
    replace = header_mutation_pb2.HeaderMutation(mutations=header_mutation_pb2.Mutations(request_mutations=[
        mutation_rules_pb2.HeaderMutation(append=base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="authorization", value=UNVERIFIABLE_TOKEN),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))]))
    matcher = matcher_pb2.Matcher(matcher_list=matcher_pb2.Matcher.MatcherList(matchers=[
        matcher_pb2.Matcher.MatcherList.FieldMatcher(predicate=predicate,
                                                     on_match=_run("unverifiable", _extension("replace", replace)))]))
    return _composite(TOKEN_GUARD_FILTER, matcher)
