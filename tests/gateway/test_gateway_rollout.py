"""API rollout through the running gateway: a new contract goes live, a broken descriptor set is rejected."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import google.api
import grpc_tools
import pytest
from gateway_support import Stack, rest, step
from google.protobuf import descriptor_pb2

from localmesh.testing import ManagedProcess, project_root
from protomesh._codegen import EXTRA_DESCRIPTOR_FILES, contract_files
from protomesh.aio import poll_until

pytestmark = pytest.mark.slow

WIDGETS_PROTO = """syntax = "proto3";

package protomeshtest.widgets.v1;

import "google/api/annotations.proto";

// A test-only contract: never part of protos/.
service WidgetService {
  // Returns one widget.
  rpc GetWidget(GetWidgetRequest) returns (GetWidgetResponse) {
    option (google.api.http) = {get: "/v1/widgets/{widget_id}"};
  }
}

// Input of GetWidget.
message GetWidgetRequest {
  // Id of the widget.
  string widget_id = 1;
}

// Output of GetWidget.
message GetWidgetResponse {
  // Id of the widget.
  string widget_id = 1;
  // Its label.
  string label = 2;
}
"""
# A rollout is picked up by a 0.5 s poll, then pushed; generous for a loaded machine, still a real bound.
ROLLOUT_WITHIN_S = 10.0


def replace_atomically(path: Path, data: bytes) -> None:
    """Like `make protos`: write beside, then rename over the watched file."""
    staging = path.with_suffix(".tmp")
    staging.write_bytes(data)
    os.replace(staging, path)


def without_service(descriptor: bytes, full_name: str) -> bytes:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor)
    for proto in files.file:
        kept = [s for s in proto.service if f"{proto.package}.{s.name}" != full_name]
        del proto.service[:]
        proto.service.extend(kept)
    return files.SerializeToString()


def generate_widgets(workdir: Path) -> tuple[bytes, Path]:
    """protoc over protos/ plus the widgets contract: a descriptor set for the gateway, stubs for the instance."""
    from grpc_tools import protoc

    proto_root, python_out = workdir / "protos", workdir / "python"
    widgets = proto_root / "protomeshtest" / "widgets" / "v1" / "widgets.proto"
    widgets.parent.mkdir(parents=True)
    python_out.mkdir()
    widgets.write_text(WIDGETS_PROTO)
    repo_protos = project_root() / "protos"
    includes = [f"-I{repo_protos}", f"-I{proto_root}", f"-I{Path(next(iter(google.api.__path__))).parent.parent}",
                f"-I{Path(grpc_tools.__file__).parent / '_proto'}"]
    descriptor = workdir / "with-widgets.binpb"
    rel = str(widgets.relative_to(proto_root))
    assert protoc.main(["protoc", *includes, "--include_imports", f"--descriptor_set_out={descriptor}",
                        *contract_files(repo_protos), rel, *EXTRA_DESCRIPTOR_FILES]) == 0
    assert protoc.main(["protoc", *includes, f"--python_out={python_out}", f"--grpc_python_out={python_out}",
                        rel]) == 0
    return descriptor.read_bytes(), python_out


async def test_a_descriptor_missing_a_deployed_service_is_nacked_and_previous_routes_keep_serving(
        stack: Stack) -> None:
    original = stack.descriptor.read_bytes()
    nacks_before = int(stack.gateway.status()["nacks_total"])  # type: ignore[call-overload]
    replace_atomically(stack.descriptor, without_service(original, "acme.users.v1.UserService"))
    await poll_until(lambda: int(stack.gateway.status()["nacks_total"]) > nacks_before,  # type: ignore[call-overload]
                     timeout=10, what="a NACK from Envoy")
    status = stack.gateway.status()
    step("the control plane counted the NACK and logged Envoy's reason: %s", status["last_nack"])
    assert "acme.users.v1.UserService" in str(status["last_nack"])
    step("Envoy counts the rejected route update too")
    assert stack.gateway.stat("http.gateway.rds.protomesh.update_rejected") >= 1
    reply = await rest(stack.gateway.url, "GET", "/v1/users?pageSize=1")
    step("the users REST route keeps serving from the last accepted routes")
    assert reply.status == 200
    replace_atomically(stack.descriptor, original)


async def test_a_new_contract_and_instance_answer_rest_through_the_running_gateway(
        stack: Stack, tmp_path: Path) -> None:
    pids = (stack.gateway.control_plane.pid, stack.gateway.envoy.pid)
    listener_updates = stack.gateway.stat("listener_manager.lds.update_success")
    before = await rest(stack.gateway.url, "GET", "/v1/widgets/w-1")
    step("before the rollout /v1/widgets is an unknown path")
    assert before.status == 404
    descriptor, python_out = generate_widgets(tmp_path)
    replace_atomically(stack.descriptor, descriptor)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(python_out), os.environ.get("PYTHONPATH", "")]))
    instance = ManagedProcess("widgets", [sys.executable, str(Path(__file__).parent / "widget_backend.py"),
                                          "--consul", stack.consul.address], log_dir=tmp_path, env=env)
    started = time.monotonic()
    instance.start()
    stack.extra.append(instance)

    async def answers() -> bool:
        instance.ensure_alive()
        return (await rest(stack.gateway.url, "GET", "/v1/widgets/w-1")).status == 200

    await poll_until(answers, timeout=ROLLOUT_WITHIN_S, what="GET /v1/widgets/w-1 answering", interval=0.05)
    reply = await rest(stack.gateway.url, "GET", "/v1/widgets/w-1")
    elapsed = time.monotonic() - started
    step("GET /v1/widgets/w-1 answers %s, %.2f s after the instance was started", reply.body, elapsed)
    assert reply.body == {"widgetId": "w-1", "label": "widget w-1"}
    step("the contract arrived as a route update: the listener (and its open streams) was left alone")
    assert stack.gateway.stat("listener_manager.lds.update_success") == listener_updates
    assert stack.gateway.stat("listener_manager.total_listeners_draining") == 0
    step("neither the control plane nor Envoy was restarted")
    assert (stack.gateway.control_plane.pid, stack.gateway.envoy.pid) == pids
    assert stack.gateway.control_plane.running()
    assert stack.gateway.envoy.running()
