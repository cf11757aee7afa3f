"""The bootstrap's tools are installed and answer with the versions the project is built against."""

from __future__ import annotations

import shutil
import subprocess

from localmesh.testing import find_binary, project_root


def _version(binary: str, *args: str) -> str:
    return subprocess.run([binary, *args], capture_output=True, text=True, check=True, timeout=60).stdout


def test_consul_answers_with_the_debian_11_version_or_the_one_on_path() -> None:
    out = _version(find_binary("consul"), "version")
    assert out.startswith("Consul v")
    if shutil.which("consul") is None:
        assert out.startswith("Consul v1.8.7")


def test_envoy_answers_with_version_1_40() -> None:
    assert "/1.40." in _version(find_binary("envoy"), "--version")


def test_buf_answers_with_the_pinned_version() -> None:
    buf = project_root() / ".tools" / "node" / "node_modules" / ".bin" / "buf"
    assert _version(str(buf), "--version").strip() == "1.75.0"


def test_rabbitmq_server_is_installed() -> None:
    assert shutil.which("rabbitmq-server") or shutil.which("rabbitmq-server", path="/usr/sbin:/usr/lib/rabbitmq/bin")


def test_the_interop_client_is_built_from_grpc_go_v1_85_0() -> None:
    go = shutil.which("go")
    assert go is not None, "go is not installed: the interop client is built with it (scripts/bootstrap.sh interop)"
    # The client has no version flag; the Go toolchain reads the module versions linked into it.
    out = _version(go, "version", "-m", find_binary("grpc-interop-client"))
    assert ["mod", "google.golang.org/grpc", "v1.85.0"] in [line.split()[:3] for line in out.splitlines()]
