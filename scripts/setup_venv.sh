#!/usr/bin/env bash
# Create or reuse .venv and install semizoo with its test extras (and MONAI Label's task classes) from this
# repository's files.
# Reinstalls only when pyproject.toml or this script changed (stamp in .venv/.semizoo-stamp).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
# torch and torchvision come first and pinned, so no other package pulls a different build
TORCH_SPEC="${SEMIZOO_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp="$(cat pyproject.toml scripts/setup_venv.sh tests/requirements-monailabel.txt | sha256sum | cut -d' ' -f1) ${TORCH_SPEC}"
if [ -f .venv/.semizoo-stamp ] && [ "$(cat .venv/.semizoo-stamp)" = "$stamp" ] && .venv/bin/python -c "import semizoo" 2>/dev/null; then
    echo "[setup] reusing .venv"
    exit 0
fi
echo "[setup] installing into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet $TORCH_SPEC
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet -e ".[test]" $TORCH_SPEC
# MONAI Label's bundle task classes for tests/test_monailabel.py, without its server stack (see the file's header)
.venv/bin/python -m pip install --quiet --no-deps -r tests/requirements-monailabel.txt
echo "$stamp" > .venv/.semizoo-stamp
