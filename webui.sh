#!/usr/bin/env bash
# Start the web UI / API server, installing what is missing first (like A1111's webui.sh + launch.py).
# Usage: ./webui.sh [A1111 flags...]     e.g. ./webui.sh --api --listen --port 7860
# Environment: COMMANDLINE_ARGS is honoured (appended to the flags, as A1111 does); PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-venv.sh
exec "$VENV/bin/python" launch.py "$@"
