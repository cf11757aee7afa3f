"""The interop contracts: grpc-go's descriptors, stubs importable as `interop.grpc_testing`, the gateway's set."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2
from interop.grpc_testing import messages_pb2, test_pb2
from interop_build import build_contracts, merge_descriptor_sets, rename_files

from gateway_envoy.descriptor import read_descriptor
from localmesh.testing import project_root


def _file(name: str, package: str, *deps: str) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto(name=name, package=package, dependency=list(deps))


def _set(*files: descriptor_pb2.FileDescriptorProto) -> bytes:
    return descriptor_pb2.FileDescriptorSet(file=files).SerializeToString()


def test_renaming_moves_only_grpc_testing_file_paths_and_keeps_proto_packages() -> None:
    files = descriptor_pb2.FileDescriptorSet(file=[
        _file("grpc/testing/messages.proto", "grpc.testing"),
        _file("grpc/testing/test.proto", "grpc.testing", "grpc/testing/messages.proto", "google/protobuf/empty.proto"),
        _file("xds/service/orca/v3/orca.proto", "xds.service.orca.v3", "google/protobuf/duration.proto"),
    ])

    renamed = rename_files(files)

    assert [(f.name, f.package, list(f.dependency)) for f in renamed.file] == [
        ("interop/grpc_testing/messages.proto", "grpc.testing", []),
        ("interop/grpc_testing/test.proto", "grpc.testing",
         ["interop/grpc_testing/messages.proto", "google/protobuf/empty.proto"]),
        ("xds/service/orca/v3/orca.proto", "xds.service.orca.v3", ["google/protobuf/duration.proto"]),
    ]
    assert files.file[0].name == "grpc/testing/messages.proto"  # the input is left alone


def test_the_stubs_import_as_interop_grpc_testing_with_the_wire_names_of_grpc_testing() -> None:
    assert test_pb2.__name__ == "interop.grpc_testing.test_pb2"
    assert test_pb2.DESCRIPTOR.services_by_name["TestService"].full_name == "grpc.testing.TestService"
    assert messages_pb2.SimpleRequest.DESCRIPTOR.full_name == "grpc.testing.SimpleRequest"


def test_merging_keeps_the_first_sets_copy_of_a_file_both_hold(tmp_path: Path) -> None:
    first, second = tmp_path / "first.binpb", tmp_path / "second.binpb"
    first.write_bytes(_set(_file("google/protobuf/descriptor.proto", "google.protobuf"), _file("acme/a.proto", "acme")))
    second.write_bytes(_set(_file("google/protobuf/descriptor.proto", "other"),
                            _file("grpc/testing/test.proto", "grpc.testing")))

    merged = descriptor_pb2.FileDescriptorSet()
    merged.ParseFromString(merge_descriptor_sets(first, second, tmp_path / "merged.binpb").read_bytes())

    assert [(f.name, f.package) for f in merged.file] == [
        ("google/protobuf/descriptor.proto", "google.protobuf"), ("acme/a.proto", "acme"),
        ("grpc/testing/test.proto", "grpc.testing")]


def test_the_gateway_set_holds_the_projects_services_test_service_and_orca(tmp_path: Path) -> None:
    project_set = project_root() / "gen" / "descriptors" / "protomesh.binpb"
    merged = merge_descriptor_sets(project_set, build_contracts(), tmp_path / "gateway.binpb")

    services = read_descriptor(merged).services

    assert {"acme.users.v1.UserService", "grpc.testing.TestService", "grpc.testing.UnimplementedService",
            "xds.service.orca.v3.OpenRcaService"} <= set(services)
