"""Builds the interop contracts on demand: grpc-go's descriptors, `interop.grpc_testing` stubs, the gateway's set."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from google.protobuf import descriptor_pb2

from localmesh.testing import MissingComponentError, project_root

# The Go program that writes grpc-go's own descriptors (see its main.go for why they come from there).
PROGRAM_DIR = Path(__file__).with_name("descriptors")
PROGRAM_FILES = ("main.go", "go.mod", "go.sum")
# A first `go run` compiles the program and may fetch its modules (bootstrap's `interop` step prefetches).
GO_RUN_TIMEOUT_S = 300
# grpc.testing's files move under this path, so protoc names their Python modules `interop.grpc_testing.*`:
# under `grpc/testing/` they would be `grpc.testing.*`, which grpcio's own `grpc` package shadows.
# Proto package names (and so every wire name) stay `grpc.testing`.
SOURCE_PREFIX = "grpc/testing/"
PYTHON_PREFIX = "interop/grpc_testing/"
# Only grpc.testing gets Python stubs. ORCA's messages come from xds-protos (already a pinned dependency):
# a second copy of them, or of `validate`, under another file name would clash in protobuf's default pool.
PYTHON_FILES = ("empty.proto", "messages.proto", "test.proto")
GRPC_GO_SET = "grpc-go.binpb"


def output_dir(root: Path | None = None) -> Path:
    """gen/interop: importable through the venv's .pth (bootstrap), git-ignored like the rest of gen/."""
    return (root or project_root()) / "gen" / "interop"


def build_contracts(root: Path | None = None) -> Path:
    """Make gen/interop current and return grpc-go's descriptor set (original file names) written there.

    Fast when up to date: a stamp holds the hash of everything the output is made from.
    """
    out = output_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    stamp, want = out / ".stamp", _inputs_digest()
    with _locked(out / ".lock"):
        if stamp.is_file() and stamp.read_text() == want and (out / GRPC_GO_SET).is_file() \
                and all((out / PYTHON_PREFIX / name.replace(".proto", "_pb2.py")).is_file() for name in PYTHON_FILES):
            return out / GRPC_GO_SET
        staging = Path(tempfile.mkdtemp(prefix="interop-gen-", dir=out))
        try:
            original = staging / GRPC_GO_SET
            _run_descriptor_program(original)
            renamed = staging / "python.binpb"
            renamed.write_bytes(rename_files(_read_set(original)).SerializeToString())
            _compile_python(renamed, staging / "python")
            shutil.rmtree(out / "interop", ignore_errors=True)
            os.replace(staging / "python" / "interop", out / "interop")
            os.replace(original, out / GRPC_GO_SET)
            stamp.write_text(want)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out / GRPC_GO_SET


def merge_descriptor_sets(first: Path, second: Path, out: Path) -> Path:
    """first's files, then second's that first lacks (a file name twice would make Envoy's pool fail)."""
    merged = _read_set(first)
    names = {f.name for f in merged.file}
    merged.file.extend(f for f in _read_set(second).file if f.name not in names)
    out.write_bytes(merged.SerializeToString())
    return out


def rename_files(files: descriptor_pb2.FileDescriptorSet) -> descriptor_pb2.FileDescriptorSet:
    """The same set with grpc.testing's file paths (and the imports naming them) under PYTHON_PREFIX."""
    renamed = descriptor_pb2.FileDescriptorSet()
    renamed.CopyFrom(files)
    for proto in renamed.file:
        proto.name = _python_path(proto.name)
        proto.dependency[:] = [_python_path(dep) for dep in proto.dependency]
    return renamed


def _python_path(name: str) -> str:
    return PYTHON_PREFIX + name.removeprefix(SOURCE_PREFIX) if name.startswith(SOURCE_PREFIX) else name


def _inputs_digest() -> str:
    hasher = hashlib.sha256()
    for path in (*(PROGRAM_DIR / name for name in PROGRAM_FILES), Path(__file__)):
        hasher.update(path.read_bytes())
    hasher.update(metadata.version("grpcio-tools").encode())
    return hasher.hexdigest()


def _run_descriptor_program(out: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise MissingComponentError("go is not installed: the interop suite builds grpc-go's contracts with it "
                                    "(install Go, then run `scripts/bootstrap.sh interop`, the `make setup` step "
                                    "that `make test` runs)")
    result = subprocess.run([go, "run", ".", "-out", str(out)], cwd=PROGRAM_DIR, capture_output=True, text=True,
                            timeout=GO_RUN_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise MissingComponentError(f"`go run` in {PROGRAM_DIR} failed (`scripts/bootstrap.sh interop` fetches "
                                    f"its modules):\n{result.stderr}")


def _compile_python(descriptor_set: Path, out: Path) -> None:
    from grpc_tools import protoc

    out.mkdir()
    files = [PYTHON_PREFIX + name for name in PYTHON_FILES]
    args = ["protoc", f"--descriptor_set_in={descriptor_set}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    # Regular packages (not namespace ones), so that no `interop` folder elsewhere on sys.path can win.
    for package in (out / "interop", out / PYTHON_PREFIX):
        (package / "__init__.py").touch()


def _read_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(path.read_bytes())
    return files


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two pytest runs (e.g. two suites in parallel) must not replace the tree under each other.
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
