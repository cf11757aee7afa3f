"""Generates Python stubs and the gateway's descriptor set from the contracts in one protoc pass."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

# google/rpc protos are not imported by any contract, but Envoy needs them in the descriptor pool to
# render rich errors (google.rpc.Status + BadRequest) as JSON for REST clients.
EXTRA_DESCRIPTOR_FILES = ("google/rpc/status.proto", "google/rpc/error_details.proto")


class CodegenError(RuntimeError):
    """protoc rejected the contracts; the message holds its output."""


def contract_files(proto_root: Path) -> list[str]:
    """Every contract under proto_root, relative and sorted so that output is byte-identical."""
    return sorted(
        p.relative_to(proto_root).as_posix()
        for p in proto_root.rglob("*.proto")
        if "third_party" not in p.relative_to(proto_root).parts
    )


def shadowing(files: list[str], python_out: Path) -> list[str]:
    """One line per contract whose generated package an installed module would hide: protos/grpc/testing/x.proto
    generates `grpc.testing`, but `import grpc.testing` finds grpcio's own `grpc` first. Only folders that are
    nobody else's package are safe (a namespace package such as `acme`, made by these stubs, is)."""
    problems = []
    for name in files:
        parts = Path(name).parent.parts
        for depth in range(1, len(parts) + 1):
            package = ".".join(parts[:depth])
            try:
                spec = importlib.util.find_spec(package)
            except (ImportError, ValueError):
                break  # nothing installed under this name: the generated package is the only one
            if spec is None:
                break
            origin = Path(spec.origin) if spec.origin else None
            if origin is not None and not origin.is_relative_to(python_out.resolve()):
                problems.append(f"{name} generates the Python package {'.'.join(parts)}, but {package} is the "
                                f"installed module {origin.parent if origin.name == '__init__.py' else origin}, "
                                "which wins; put the contract under a package of your own (e.g. protos/acme/...)")
                break
    return problems


def _googleapis_include() -> str:
    import google.api  # googleapis-common-protos ships google/api/*.proto and google/rpc/*.proto

    return str(Path(next(iter(google.api.__path__))).parent.parent)


def _grpc_tools_include() -> str:
    import grpc_tools

    return str(Path(grpc_tools.__file__).parent / "_proto")


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc

    if protoc.main(["protoc", *args]) != 0:
        raise CodegenError("protoc failed: " + " ".join(args))


def generate(proto_root: Path, python_out: Path, descriptor_out: Path) -> list[str]:
    """Regenerate stubs into python_out and write the descriptor set atomically; returns the files."""
    files = contract_files(proto_root)
    if problems := shadowing(files, python_out):
        raise CodegenError("\n".join(problems))
    includes = [f"-I{proto_root}", f"-I{_googleapis_include()}", f"-I{_grpc_tools_include()}"]
    staging = Path(tempfile.mkdtemp(prefix="protomesh-gen-"))
    try:
        _protoc([*includes, f"--python_out={staging}", f"--pyi_out={staging}",
                 f"--grpc_python_out={staging}", *files])
        descriptor_tmp = staging / "descriptor.binpb"
        _protoc([*includes, "--include_imports", f"--descriptor_set_out={descriptor_tmp}",
                 *files, *EXTRA_DESCRIPTOR_FILES])
        descriptor_out.parent.mkdir(parents=True, exist_ok=True)
        _replace_tree(staging, python_out, exclude={descriptor_tmp.name})
        # Atomic rename: a control plane watching this file never reads half of it.
        os.replace(descriptor_tmp, descriptor_out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return files


def _replace_tree(staging: Path, target: Path, *, exclude: set[str]) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(staging, target, ignore=lambda _d, names: [n for n in names if n in exclude])
