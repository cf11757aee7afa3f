#!/usr/bin/env bash
# Runs every test suite with the project venv: each service's own suite from its folder, where its `app`
# package is importable, the cross-service suite (tests/), then the container suite (tests/containers:
# images built and docker-compose.yml run in podman). Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv/bin/python"
export PATH="$ROOT/.tools/bin:$PATH"

failed=()
run_suite() {
  local dir=$1 tests=$2
  shift 2
  echo "==> pytest $(realpath --relative-to="$ROOT" "$dir/$tests")"
  (cd "$dir" && "$PY" -m pytest "$tests" -q "$@") || failed+=("$(realpath --relative-to="$ROOT" "$dir/$tests")")
}

for svc in "$ROOT"/services/*/; do
  [ -d "$svc/tests" ] && run_suite "${svc%/}" tests "$@"
done
run_suite "$ROOT" tests --ignore=tests/containers "$@"
run_suite "$ROOT" tests/containers "$@"

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED suites: ${failed[*]}" >&2
  exit 1
fi
