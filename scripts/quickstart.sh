#!/usr/bin/env bash
# Quick start on phantom ACDC: create or reuse .venv, then train the labeled-only bound and Mean Teacher through the
# bundle runner, evaluate both on the test split and print the results table. Extra arguments go to
# `python -m semizoo quickstart` (e.g. --seeds "[0,1,2]" --out runs/qs3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_venv.sh
exec .venv/bin/python -m semizoo quickstart "$@"
