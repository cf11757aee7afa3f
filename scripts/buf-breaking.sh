#!/usr/bin/env bash
# Checks the contracts for breaking changes against the previous commit (skipped on the first one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../protos"
BUF=../.tools/node/node_modules/.bin/buf
if ! git rev-parse -q --verify HEAD~1 >/dev/null || [ -z "$(git ls-tree -r --name-only HEAD~1 -- . | grep '\.proto$' || true)" ]; then
  echo "    no previous commit with contracts: nothing to compare"
  exit 0
fi
"$BUF" breaking --against "../.git#ref=HEAD~1,subdir=protos"
