"""The contracts: generated code imports, and the descriptor set Envoy transcodes with is complete."""

from __future__ import annotations

import hashlib
import importlib
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from protomesh.v1 import auth_pb2

from localmesh.testing import project_root
from protomesh._codegen import generate

ROOT = project_root()
DESCRIPTOR = ROOT / "gen" / "descriptors" / "protomesh.binpb"
SERVICES = {"acme.users.v1.UserService", "acme.orders.v1.OrderService",
            "acme.notifications.v1.NotificationService"}


def _descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())


def _contract_files() -> list[descriptor_pb2.FileDescriptorProto]:
    return [f for f in _descriptor_set().file if f.package.startswith("acme.")]


def _rpcs() -> list[tuple[str, descriptor_pb2.MethodDescriptorProto]]:
    return [(f"{f.package}.{s.name}", m) for f in _contract_files() for s in f.service for m in s.method]


def _http_rule(method: descriptor_pb2.MethodDescriptorProto) -> http_pb2.HttpRule:
    return method.options.Extensions[annotations_pb2.http]


def _generated_modules() -> list[str]:
    base = ROOT / "gen" / "python"
    return sorted(p.relative_to(base).with_suffix("").as_posix().replace("/", ".") for p in base.rglob("*.py"))


@pytest.mark.parametrize("module", _generated_modules())
def test_every_generated_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_stubs_import_by_their_package_path() -> None:
    from acme.users.v1 import users_service_pb2, users_service_pb2_grpc

    assert hasattr(users_service_pb2_grpc, "UserServiceStub")
    assert users_service_pb2.DESCRIPTOR.package == "acme.users.v1"


def test_descriptor_set_holds_the_three_services() -> None:
    names = {f"{f.package}.{s.name}" for f in _contract_files() for s in f.service}
    assert names == SERVICES


def test_descriptor_set_holds_the_rich_error_types_envoy_renders() -> None:
    files = {f.name: f for f in _descriptor_set().file}
    assert "google/rpc/status.proto" in files
    assert "BadRequest" in {m.name for m in files["google/rpc/error_details.proto"].message_type}


def test_descriptor_set_includes_every_import() -> None:
    files = _descriptor_set().file
    names = {f.name for f in files}
    missing = {dep for f in files for dep in f.dependency if dep not in names}
    assert not missing


def test_every_rpc_has_an_http_rule() -> None:
    missing = [f"{svc}.{m.name}" for svc, m in _rpcs() if not _http_rule(m).WhichOneof("pattern")]
    assert not missing


def auth_rule_problems(rpcs: list[tuple[str, descriptor_pb2.MethodDescriptorProto]]) -> list[str]:
    """One line per rpc whose (protomesh.v1.auth) option is missing, or both public and scoped."""
    problems = []
    for service, method in rpcs:
        name = f"{service}/{method.name}"
        if not method.options.HasExtension(auth_pb2.auth):
            problems.append(f"{name}: declares no (protomesh.v1.auth) option: "
                            "add {scopes: \"resource:action\"} or {public: true}")
            continue
        rule = method.options.Extensions[auth_pb2.auth]
        if rule.public == bool(rule.scopes):
            problems.append(f"{name}: (protomesh.v1.auth) must be either public or name its scopes")
        problems += [f"{name}: scope {scope!r} is not resource:action" for scope in rule.scopes
                     if not re.fullmatch(r"[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*", scope)]
    return problems


def test_every_rpc_declares_who_may_call_it() -> None:
    assert auth_rule_problems(_rpcs()) == []


def test_an_rpc_without_an_auth_rule_or_with_both_kinds_is_named() -> None:
    bare = descriptor_pb2.MethodDescriptorProto(name="Peek")
    both = descriptor_pb2.MethodDescriptorProto(name="Poke")
    both.options.Extensions[auth_pb2.auth].public = True
    both.options.Extensions[auth_pb2.auth].scopes.append("acme:write")
    odd = descriptor_pb2.MethodDescriptorProto(name="Prod")
    odd.options.Extensions[auth_pb2.auth].scopes.append("Admin")

    problems = auth_rule_problems([("acme.x.v1.XService", m) for m in (bare, both, odd)])

    assert [line.split(":")[0] for line in problems] == [
        "acme.x.v1.XService/Peek", "acme.x.v1.XService/Poke", "acme.x.v1.XService/Prod"]


def test_the_example_domain_has_a_public_rpc_and_reads_and_writes_per_resource() -> None:
    scopes = {scope for _, m in _rpcs() for scope in m.options.Extensions[auth_pb2.auth].scopes}
    public = [m.name for _, m in _rpcs() if m.options.Extensions[auth_pb2.auth].public]
    assert public == ["CreateUser"]
    assert scopes == {"users:read", "users:write", "orders:read", "orders:write", "notifications:read"}


def test_no_get_or_delete_rule_has_a_body() -> None:
    with_body = [f"{svc}.{m.name}" for svc, m in _rpcs()
                 if _http_rule(m).WhichOneof("pattern") in ("get", "delete") and _http_rule(m).body]
    assert not with_body


def test_every_service_name_ends_in_service() -> None:
    assert all(name.endswith("Service") for name in SERVICES)
    assert all(s.name.endswith("Service") for f in _contract_files() for s in f.service)


def test_every_package_ends_in_a_version() -> None:
    assert all(re.fullmatch(r"[a-z0-9_.]+\.v\d+((alpha|beta)\d*)?", f.package) for f in _contract_files())


def test_every_package_matches_its_directory() -> None:
    assert all(Path(f.name).parent.as_posix() == f.package.replace(".", "/") for f in _contract_files())


def test_generating_twice_gives_byte_identical_output(tmp_path: Path) -> None:
    def digest(run: str) -> dict[str, str]:
        out, descriptor = tmp_path / run / "python", tmp_path / run / "set.binpb"
        generate(ROOT / "protos", out, descriptor)
        files = [*sorted(out.rglob("*")), descriptor]
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}

    first, second = digest("first"), digest("second")
    assert first == second
    assert len(first) > 20


def test_make_protos_output_has_the_modes_of_any_new_file_so_an_image_user_can_read_it(tmp_path: Path) -> None:
    # The command `make protos` runs (and the image builds run as root); twice, the second over the first.
    out, descriptor = tmp_path / "gen" / "python", tmp_path / "gen" / "descriptors" / "protomesh.binpb"
    command = [sys.executable, "-m", "protomesh.cli", "protos", "--root", str(ROOT / "protos"),
               "--python-out", str(out), "--descriptor-out", str(descriptor)]
    for _ in range(2):
        subprocess.run(command, check=True, capture_output=True, umask=0o022, timeout=120)
        tree = [out, *out.rglob("*"), descriptor]
        modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in tree}
        wrong = {name: oct(mode) for name, mode in modes.items()
                 if mode != (0o755 if (tmp_path / name).is_dir() else 0o644)}
        assert not wrong
        assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["descriptors", "python"]
        assert [p.name for p in descriptor.parent.iterdir()] == [descriptor.name]
