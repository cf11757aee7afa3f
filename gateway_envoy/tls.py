"""TLS for the gateway: the secrets the control plane serves over SDS, and the transport sockets that name them.

Three secrets travel over the ADS stream (type `envoy.extensions.transport_sockets.tls.v3.Secret`):

    edge      the listener's certificate (from --edge-identity-dir): what HTTPS and gRPC+TLS clients see
    mesh      the gateway's workload identity, spiffe://<trust domain>/service/gateway (from --identity-dir)
    mesh-ca   the trust bundle of that folder: what a service's certificate must chain to

Listeners and clusters only name them, so a rotated certificate is a new secret and nothing else: Envoy serves
it from the next handshake on, and no listener drains and no cluster is rebuilt.
"""

from __future__ import annotations

import ipaddress

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import Message

from protomesh.identity import Credentials, Workload, service_host_name

EDGE_SECRET = "edge"
MESH_SECRET = "mesh"
MESH_CA_SECRET = "mesh-ca"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
# One port for REST (HTTP/1.1) and gRPC (HTTP/2): the client says which in the handshake.
EDGE_ALPN = ("h2", "http/1.1")
# Services are gRPC servers: HTTP/2 only.
MESH_ALPN = ("h2",)
# TLS 1.0 and 1.1 are deprecated (RFC 8996); every client that speaks HTTP/2 has 1.2.
MIN_TLS_VERSION = common_pb2.TlsParameters.TLSv1_2


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=_ads())


def _socket(context: Message) -> base_pb2.TransportSocket:
    packed = AnyProto()
    packed.Pack(context, deterministic=True)
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=packed)


def certificate_secret(name: str, credentials: Credentials) -> secret_pb2.Secret:
    """A certificate with its key, inline (Envoy's config dump shows the key as [redacted])."""
    return secret_pb2.Secret(name=name, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=credentials.certificate_chain),
        private_key=base_pb2.DataSource(inline_bytes=credentials.private_key)))


def trust_secret(name: str, credentials: Credentials) -> secret_pb2.Secret:
    return secret_pb2.Secret(name=name, validation_context=common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=credentials.trust_bundle)))


def build_secrets(edge: Credentials | None, mesh: Credentials | None) -> dict[str, secret_pb2.Secret]:
    """The secrets for the folders given (none for a plaintext gateway without a mesh identity)."""
    secrets = {}
    if edge is not None:
        secrets[EDGE_SECRET] = certificate_secret(EDGE_SECRET, edge)
    if mesh is not None:
        secrets[MESH_SECRET] = certificate_secret(MESH_SECRET, mesh)
        secrets[MESH_CA_SECRET] = trust_secret(MESH_CA_SECRET, mesh)
    return secrets


def edge_transport_socket() -> base_pb2.TransportSocket:
    """The listener's TLS: the `edge` certificate, ALPN h2 and http/1.1, TLS 1.2 or newer, no client certificate."""
    return _socket(tls_pb2.DownstreamTlsContext(common_tls_context=tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=MIN_TLS_VERSION),
        tls_certificate_sds_secret_configs=[_sds(EDGE_SECRET)],
        alpn_protocols=list(EDGE_ALPN))))


def mesh_transport_socket(service: str, trust_domain: str) -> base_pb2.TransportSocket:
    """mTLS to an instance of `service`: present `mesh`, accept only a certificate from `mesh-ca` whose URI SAN is
    exactly the service's SPIFFE id (an instance holding another service's certificate is refused), and ask for
    the service's host name by SNI."""
    expected = Workload.service(service, trust_domain).spiffe_id
    validation = common_pb2.CertificateValidationContext(match_typed_subject_alt_names=[
        common_pb2.SubjectAltNameMatcher(san_type=common_pb2.SubjectAltNameMatcher.URI,
                                         matcher=string_pb2.StringMatcher(exact=expected))])
    common = tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=MIN_TLS_VERSION),
        tls_certificate_sds_secret_configs=[_sds(MESH_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=validation, validation_context_sds_secret_config=_sds(MESH_CA_SECRET)),
        alpn_protocols=list(MESH_ALPN))
    return _socket(tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=service_host_name(service, trust_domain)))


def public_transport_socket(host: str, ca_pem: bytes) -> base_pb2.TransportSocket:
    """TLS to an endpoint outside the mesh (a remote JWKS): its certificate must chain to ca_pem (the system roots
    when empty) and name host, a DNS name (also sent by SNI) or an IP address."""
    try:
        ipaddress.ip_address(host)
        san_type, sni = common_pb2.SubjectAltNameMatcher.IP_ADDRESS, ""
    except ValueError:
        san_type, sni = common_pb2.SubjectAltNameMatcher.DNS, host
    validation = common_pb2.CertificateValidationContext(match_typed_subject_alt_names=[
        common_pb2.SubjectAltNameMatcher(san_type=san_type, matcher=string_pb2.StringMatcher(exact=host))])
    if ca_pem:
        validation.trusted_ca.inline_bytes = ca_pem
    else:
        validation.system_root_certs.SetInParent()
    return _socket(tls_pb2.UpstreamTlsContext(sni=sni, common_tls_context=tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=MIN_TLS_VERSION),
        validation_context=validation)))
