#!/usr/bin/env bash
# Install the test extras (into .venv, creating it when missing) and run the whole test suite.
# Usage: ./run-tests.sh [pytest args...]      (slow tests: ./run-tests.sh -m slow)
set -euo pipefail
cd "$(dirname "$0")"
EXTRAS=test source scripts/setup-venv.sh
exec "$VENV/bin/python" -m pytest "$@"
