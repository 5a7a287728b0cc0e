#!/usr/bin/env bash
# Create or reuse .venv and install semizoo with its test extras (and MONAI Label's task classes) from this
# repository's files; .venv-deploy layers the MONAI Deploy App SDK on it.
# Reinstalls only when pyproject.toml, tests/requirements-*.txt or this script changed (stamp in .venv/.semizoo-stamp).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
# torch and torchvision come first and pinned, so no other package pulls a different build
TORCH_SPEC="${SEMIZOO_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp="$(cat pyproject.toml scripts/setup_venv.sh tests/requirements-*.txt | sha256sum | cut -d' ' -f1) ${TORCH_SPEC}"
if [ -f .venv/.semizoo-stamp ] && [ "$(cat .venv/.semizoo-stamp)" = "$stamp" ] && .venv/bin/python -c "import semizoo" 2>/dev/null \
    && [ -x .venv-deploy/bin/python ]; then
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
# MONAI Deploy App SDK for scripts/deploy_app.py in .venv-deploy, a venv layered on .venv (it sees .venv's packages):
# installed into .venv, the SDK's monai.deploy would be imported (with Holoscan) by every `import monai`
if [ ! -x .venv-deploy/bin/python ]; then
    "$PYTHON" -m venv .venv-deploy
fi
base="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
overlay="$(.venv-deploy/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import site; site.addsitedir('$base')" > "$overlay/semizoo_base_venv.pth"
.venv-deploy/bin/python -m pip install --quiet -r tests/requirements-deploy.txt
.venv-deploy/bin/python -m pip install --quiet --no-deps -r tests/requirements-deploy-nodeps.txt
echo "$stamp" > .venv/.semizoo-stamp
