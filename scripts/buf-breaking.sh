#!/usr/bin/env bash
# Checks the contracts for breaking changes (buf FILE rules) against the previous commit.
# Both sides are built into images: the previous commit's contracts together with today's git-ignored
# third_party module (google/api, google/rpc), which a plain `.git#ref=` input would lack.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUF="$ROOT/.tools/node/node_modules/.bin/buf"
cd "$ROOT"
if ! git rev-parse -q --verify HEAD~1 >/dev/null || [ -z "$(git ls-tree -r --name-only HEAD~1 -- protos/acme)" ]; then
  echo "    no previous commit with contracts: nothing to compare"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git archive HEAD~1 protos | tar -x -C "$work"
cp -r protos/third_party "$work/protos/"
"$BUF" build "$work/protos" -o "$work/against.binpb"
"$BUF" build protos -o "$work/current.binpb"
"$BUF" breaking "$work/current.binpb" --against "$work/against.binpb" --config protos/buf.yaml
