"""A test-only service to look through the gateway with: what a service receives, how often a handler runs, and a
stream that outlives the route timeout. Its contract is compiled by the test; nothing of it is in protos/."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google.api
import grpc
import grpc.aio
import grpc_tools
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from protomesh import Binding
from protomesh._codegen import EXTRA_DESCRIPTOR_FILES, contract_files

PACKAGE = "protomeshtest.probe.v1"
SERVICE = f"{PACKAGE}.ProbeService"
PROTO = """
syntax = "proto3";
package protomeshtest.probe.v1;
import "google/api/annotations.proto";

service ProbeService {
  rpc Inspect(InspectRequest) returns (InspectResponse) {option (google.api.http) = {get: "/v1/probe:inspect"};}
  rpc Fail(FailRequest) returns (FailResponse) {option (google.api.http) = {post: "/v1/probe:fail" body: "*"};}
  rpc FailRead(FailRequest) returns (FailResponse) {
    option (google.api.http) = {get: "/v1/probe:failRead"};
    option idempotency_level = NO_SIDE_EFFECTS;
  }
  rpc Ticks(TicksRequest) returns (stream Tick) {option (google.api.http) = {get: "/v1/probe:ticks"};}
}
message InspectRequest {}
message InspectResponse {
  repeated string header_names = 1;
  bool has_deadline = 2;
  double deadline_s = 3;
}
message FailRequest {string key = 1;}
message FailResponse {}
message TicksRequest {
  int32 count = 1;
  int32 interval_ms = 2;
}
message Tick {int32 n = 1;}
"""


def compile_probe(workdir: Path, project_protos: Path) -> Path:
    """The project's descriptor set with the probe contract added: what the gateway under test transcodes."""
    return descriptor_set_with(workdir, project_protos, "protomeshtest/probe/v1/probe.proto", PROTO)


def descriptor_set_with(workdir: Path, project_protos: Path, proto_path: str, proto: str) -> Path:
    """The project's contracts plus one test contract (`proto` written at `proto_path`), as a descriptor set."""
    root = workdir / f"{Path(proto_path).stem}-protos"
    path = root / proto_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(proto)
    includes = [f"-I{project_protos}", f"-I{root}", f"-I{Path(next(iter(google.api.__path__))).parent.parent}",
                f"-I{Path(grpc_tools.__file__).parent / '_proto'}"]
    out = workdir / f"with-{Path(proto_path).stem}.binpb"
    files = [*contract_files(project_protos), proto_path, *EXTRA_DESCRIPTOR_FILES]
    assert protoc.main(["protoc", *includes, "--include_imports", f"--descriptor_set_out={out}", *files]) == 0
    return out


@dataclass
class Probe:
    """The probe's message classes (built from the descriptor set) and what its handlers counted."""

    pool: descriptor_pool.DescriptorPool
    messages: dict[str, Any]
    calls: Counter[str]

    @classmethod
    def load(cls, descriptor: Path) -> Probe:
        pool = descriptor_pool.DescriptorPool()
        for file in descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file:
            pool.Add(file)
        names = ("InspectRequest", "InspectResponse", "FailRequest", "FailResponse", "TicksRequest", "Tick")
        messages = {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
                    for name in names}
        return cls(pool, messages, Counter())

    def binding(self) -> Binding:
        """The probe for the runtime's Server: generic handlers under the service the descriptor names."""
        unary, stream = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
        generic = grpc.method_handlers_generic_handler(SERVICE, {
            "Inspect": unary(self.inspect, *self._codec("InspectRequest", "InspectResponse")),
            "Fail": unary(self.fail, *self._codec("FailRequest", "FailResponse")),
            "FailRead": unary(self.fail, *self._codec("FailRequest", "FailResponse")),
            "Ticks": stream(self.ticks, *self._codec("TicksRequest", "Tick")),
        })
        return Binding(self.pool.FindServiceByName(SERVICE), generic,
                       lambda handler, server: server.add_generic_rpc_handlers([handler]))

    def _codec(self, request: str, response: str) -> tuple[Any, Any]:
        return self.messages[request].FromString, self.messages[response].SerializeToString

    async def inspect(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        remaining = context.time_remaining()
        names = sorted({key for key, _ in context.invocation_metadata() or ()})
        return self.messages["InspectResponse"](header_names=names, has_deadline=remaining is not None,
                                                deadline_s=remaining or 0.0)

    async def fail(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.calls[request.key] += 1
        # As the runtime's concurrency bound answers (protomesh._overload): UNAVAILABLE, with when to come back.
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the probe is always unavailable",
                            trailing_metadata=(("retry-after", "1"),))

    async def ticks(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        for n in range(request.count):
            await asyncio.sleep(request.interval_ms / 1000)
            yield self.messages["Tick"](n=n)
