#!/usr/bin/env bash
# Writes the REST API's OpenAPI document, gen/openapi/protomesh.swagger.json (`make openapi`; git-ignored).
#
# protoc-gen-openapiv2 writes one merged Swagger 2.0 document from the google.api.http rules of protos/acme;
# gateway_envoy/openapi.py then makes it say what Envoy's transcoder really sends and accepts.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
PLUGIN="$ROOT/.tools/bin/protoc-gen-openapiv2"
DESCRIPTOR=gen/descriptors/protomesh.binpb
OUT=gen/openapi/protomesh.swagger.json
# Generator options, each matching the transcoder: lowerCamelCase names (Envoy's print option), enums as names
# (the default; enums_as_ints stays off), one document, definitions under full proto names (google.rpc.Status,
# acme.users.v1.User) so that the post-processor finds each message in the descriptor set; the default error
# response (google.rpc.Status) stays on.
OPTIONS=json_names_for_fields=true,allow_merge=true,merge_file_name=protomesh,openapi_naming_strategy=fqn,output_format=json

die() { printf 'openapi: %s\n' "$*" >&2; exit 1; }

[ -x "$PY" ] && [ -f protos/third_party/google/api/annotations.proto ] ||
  die "the project venv or protos/third_party is missing: run 'make setup' first"
[ -x "$PLUGIN" ] || die "protoc-gen-openapiv2 is missing: run 'scripts/bootstrap.sh openapi' (make openapi does)"
[ -f "$DESCRIPTOR" ] || die "$DESCRIPTOR is missing: run 'make protos' first"
mapfile -t CONTRACTS < <(cd protos && find acme -name '*.proto' | sort)
WKT_INCLUDE=$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
# The generator wants a Go import path per file, which it uses for nothing in a merged document; the contracts
# carry no go_package (they are shared by every language), so each file gets a placeholder.
MAPPINGS=
for f in "${CONTRACTS[@]}"; do MAPPINGS+=",M$f=protomesh/$(dirname "$f")"; done

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
"$PY" -m grpc_tools.protoc -Iprotos -Iprotos/third_party "-I$WKT_INCLUDE" "--plugin=protoc-gen-openapiv2=$PLUGIN" \
  "--openapiv2_out=$staging" "--openapiv2_opt=$OPTIONS$MAPPINGS" "${CONTRACTS[@]}"
"$PY" -m gateway_envoy.openapi "$staging/protomesh.swagger.json" "$DESCRIPTOR" "$OUT"
echo "==> wrote $OUT ($(find protos/acme -name '*.proto' | wc -l) contracts)"
