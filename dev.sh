#!/usr/bin/env bash
# Developer entry point. Usage: ./dev.sh COMMAND
#   demo    install (if needed) and run the demo on a built-in real weight matrix
#   test    install (if needed), then lint (ruff), type-check (mypy) and run the test suite
#   bench   install (if needed) and run every benchmark (writes bench/results/*.md)
#   setup   only install: the CPU build of torch first (if torch is missing), then nmsolve[dev]
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

setup() {
    if ! "$PYTHON" -c "import torch" 2>/dev/null; then
        # torch==2.13.0 resolves to the local CPU wheel on our machines; a bare `torch` requirement
        # would pull a multi-GB CUDA build, so it is installed on its own, pinned, before the rest.
        "$PYTHON" -m pip install --quiet "torch==2.13.0"
    fi
    "$PYTHON" -m pip install --quiet -e ".[dev]"
}

case "${1:-}" in
    setup) setup ;;
    demo) setup; shift; nmsolve demo "$@" ;;
    test)
        setup
        "$PYTHON" -m ruff check .
        "$PYTHON" -m ruff format --check .
        "$PYTHON" -m mypy
        shift; "$PYTHON" -m pytest "$@"
        ;;
    bench) setup; shift; "$PYTHON" -m bench "$@" ;;
    *) sed -n '2,7p' "$0"; exit 2 ;;
esac
