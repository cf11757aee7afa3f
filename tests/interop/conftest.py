"""Builds the interop contracts before collection, so test modules can import `interop.grpc_testing`."""

from __future__ import annotations

import importlib
import sys

from interop_build import build_contracts, output_dir

build_contracts()
# The venv's .pth lists gen/interop, but Python skips .pth entries that do not exist at start-up (the first
# run after `make clean`); the folder exists now.
if str(output_dir()) not in sys.path:
    sys.path.append(str(output_dir()))
importlib.invalidate_caches()
