"""The venv holds each distribution's own files where two wheels write the same module.

xds-protos (the gateway's Envoy API) bundles an older copy of ``opentelemetry/proto/*``. Whichever wheel pip
unpacks last wins, so a fresh venv could hold the copy without ``InstrumentationScope``, and every service
then fails at start when the OTLP exporter imports it. The bootstrap (and the gateway image) install
opentelemetry-proto again on its own; this checks the result on disk, file by file, against its RECORD.
"""

import base64
import hashlib
from importlib.metadata import distribution


def test_the_opentelemetry_protos_on_disk_are_opentelemetry_protos_own_not_the_copy_xds_protos_bundles() -> None:
    dist = distribution("opentelemetry-proto")
    modules = [f for f in dist.files or [] if f.hash is not None and str(f).endswith("_pb2.py")]
    assert modules, "opentelemetry-proto lists no generated modules in its RECORD"
    foreign = []
    for file in modules:
        algorithm, expected = file.hash.mode, file.hash.value
        digest = base64.urlsafe_b64encode(hashlib.new(algorithm, file.read_binary()).digest()).rstrip(b"=").decode()
        if digest != expected:
            foreign.append(str(file))
    assert not foreign, f"these files are another wheel's copy (reinstall opentelemetry-proto last): {foreign}"


def test_the_otlp_exporter_imports() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    assert OTLPSpanExporter
