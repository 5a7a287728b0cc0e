#!/usr/bin/env bash
# Run the test suite: create or reuse .venv (scripts/setup_venv.sh), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_venv.sh
exec .venv/bin/python -m pytest -q "$@"
