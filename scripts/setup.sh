#!/usr/bin/env bash
# Set up .venv on a fresh machine: the CPU build of torch first (pinned: an unpinned torch pulls a
# multi-GB CUDA build), then imamatch with its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
