"""The bootstrap's tools are installed and answer with the versions the project is built against."""

from __future__ import annotations

import json
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


def test_the_openapi_generator_is_protoc_gen_openapiv2_v2_33_0() -> None:
    plugin = project_root() / ".tools" / "bin" / "protoc-gen-openapiv2"
    assert plugin.is_file(), f"{plugin} is missing: run `scripts/bootstrap.sh openapi` (`make openapi` does)"
    assert _version(str(plugin), "--version").startswith("Version v2.33.0")


def test_the_docs_page_assets_are_swagger_ui_dist_5_35_0() -> None:
    package = project_root() / ".tools" / "node" / "node_modules" / "swagger-ui-dist" / "package.json"
    assert package.is_file(), f"{package} is missing: run `scripts/bootstrap.sh swaggerui` (`make openapi` does)"
    assert json.loads(package.read_text())["version"] == "5.35.0"


def test_the_browser_test_has_debians_chromium() -> None:
    # Debian's wrapper script may warn on stderr (its memory probe); the version is on stdout.
    assert _version("/usr/bin/chromium", "--version").startswith("Chromium ")
