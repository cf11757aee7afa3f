"""Test-only services behind a secured gateway: mTLS ports that require a certificate from the mesh CA and echo
what reached them (the claims header, whether a token came along, the caller certificate's URI SANs).

Their contract is compiled by the test and carries `(protomesh.v1.auth)` rules; nothing of it is in protos/.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from probe_service import descriptor_set_with

from protomesh.consul import ConsulClient
from protomesh.identity import IdentityFolder

PACKAGE = "protomeshtest.secure.v1"
SECURE = f"{PACKAGE}.SecureService"
FOREIGN = f"{PACKAGE}.ForeignService"
IMPOSTOR = f"{PACKAGE}.ImpostorService"
PROTO = """
syntax = "proto3";
package protomeshtest.secure.v1;
import "google/api/annotations.proto";
import "protomesh/v1/auth.proto";

// Rules declared in the contract.
service SecureService {
  rpc Hello(EchoRequest) returns (EchoResponse) {
    option (google.api.http) = {get: "/v1/secure:hello"};
    option (protomesh.v1.auth) = {public: true};
  }
  rpc Read(EchoRequest) returns (EchoResponse) {
    option (google.api.http) = {get: "/v1/secure:read"};
    option (protomesh.v1.auth) = {scopes: "secure:read"};
  }
  rpc Write(EchoRequest) returns (EchoResponse) {
    option (google.api.http) = {post: "/v1/secure:write" body: "*"};
    option (protomesh.v1.auth) = {scopes: ["secure:write", "secure:admin"]};
  }
  rpc Plain(EchoRequest) returns (EchoResponse) {option (google.api.http) = {get: "/v1/secure:plain"};}
  rpc Limited(EchoRequest) returns (EchoResponse) {
    option (google.api.http) = {get: "/v1/secure:limited"};
    option (protomesh.v1.auth) = {public: true};
  }
}
// A contract the project does not own: its rules come from the policy in Consul.
service ForeignService {
  rpc Open(EchoRequest) returns (EchoResponse) {option (google.api.http) = {get: "/v1/foreign:open"};}
  rpc Guarded(EchoRequest) returns (EchoResponse) {option (google.api.http) = {get: "/v1/foreign:guarded"};}
}
// Served by an instance holding another service's certificate.
service ImpostorService {
  rpc Hello(EchoRequest) returns (EchoResponse) {
    option (google.api.http) = {get: "/v1/impostor:hello"};
    option (protomesh.v1.auth) = {public: true};
  }
}
message EchoRequest {string note = 1;}
message EchoResponse {
  string claims = 1;
  bool authorization = 2;
  repeated string peer_uris = 3;
  repeated string header_names = 4;
  string peer_serial = 5;
  string instance = 6;
}
"""
METHODS = {SECURE: ("Hello", "Read", "Write", "Plain", "Limited"), FOREIGN: ("Open", "Guarded"),
           IMPOSTOR: ("Hello",)}


def compile_secure(workdir: Path, project_protos: Path) -> Path:
    """The project's descriptor set with the secure contract added: what the gateway under test serves."""
    return descriptor_set_with(workdir, project_protos, "protomeshtest/secure/v1/secure.proto", PROTO)


@dataclass
class Messages:
    """EchoRequest and EchoResponse, built from the compiled descriptor set."""

    request: Any
    response: Any

    @classmethod
    def load(cls, descriptor: Path) -> Messages:
        pool = descriptor_pool.DescriptorPool()
        for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file:
            pool.Add(file)
        get = message_factory.GetMessageClass
        return cls(get(pool.FindMessageTypeByName(f"{PACKAGE}.EchoRequest")),
                   get(pool.FindMessageTypeByName(f"{PACKAGE}.EchoResponse")))

    def stub(self, channel: grpc.aio.Channel, service: str, method: str) -> Any:
        return channel.unary_unary(f"/{service}/{method}", request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=self.response.FromString)


def peer_certificate(context: grpc.aio.ServicerContext[Any, Any]) -> x509.Certificate | None:
    """The caller's certificate, as the handshake delivered it."""
    pems = context.auth_context().get("x509_pem_cert") or []
    return x509.load_pem_x509_certificate(pems[0]) if pems else None


def peer_uris(cert: x509.Certificate | None) -> list[str]:
    """The URI SANs of the caller's certificate (its SPIFFE id)."""
    if cert is None:
        return []
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(uri) for uri in names.get_values_for_type(x509.UniformResourceIdentifier)]


@dataclass
class Backend:
    """One mTLS instance serving the given gRPC services, registered in Consul under `name` (a TTL check set
    passing: Consul's own gRPC check would need the agent's certificate)."""

    name: str
    identity: IdentityFolder
    messages: Messages
    services: tuple[str, ...]
    calls: Counter[str] = field(default_factory=Counter)
    server: grpc.aio.Server | None = None
    port: int = 0

    @property
    def instance_id(self) -> str:
        return f"{self.name}-{self.port}"

    async def start(self, consul: ConsulClient) -> None:
        self.server = grpc.aio.server()
        for service in self.services:
            handlers = {method: grpc.unary_unary_rpc_method_handler(
                self._echo(f"/{service}/{method}"), request_deserializer=self.messages.request.FromString,
                response_serializer=self.messages.response.SerializeToString) for method in METHODS[service]}
            self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
        self.port = self.server.add_secure_port("127.0.0.1:0", self.identity.server_credentials())
        await self.server.start()
        await consul.register(name=self.name, service_id=self.instance_id, address="127.0.0.1",
                              port=self.port, meta={"grpc_services": ",".join(self.services)},
                              check={"TTL": "600s", "Status": "passing"})

    def _echo(self, path: str) -> Any:
        async def echo(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self.calls[path] += 1
            metadata = dict(context.invocation_metadata() or ())
            cert = peer_certificate(context)
            return self.messages.response(claims=str(metadata.get("x-protomesh-claims", "")),
                                          authorization="authorization" in metadata, peer_uris=peer_uris(cert),
                                          header_names=sorted(metadata),
                                          peer_serial=f"{cert.serial_number:x}" if cert is not None else "",
                                          instance=self.instance_id)
        return echo

    async def stop(self, consul: ConsulClient) -> None:
        await consul.deregister(self.instance_id)
        if self.server is not None:
            await self.server.stop(0)
