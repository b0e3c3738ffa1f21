#!/usr/bin/env bash
# The whole test suite: prepare the host (idempotent), lint, type-check, then every test
# against the real RabbitMQ and Docker engine (and gVisor for the runsc runs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
PY="$ROOT/.venv/bin"
echo "== ruff"; "$PY/ruff" check .
echo "== mypy"; "$PY/mypy" app
echo "== pytest"
"$PY/pytest" -q -ra --durations=25 "$@"
