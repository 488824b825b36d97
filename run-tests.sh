#!/usr/bin/env bash
# Install the test extras (into .venv, creating it when missing) and run the whole test suite.
# Usage: ./run-tests.sh [pytest args...]      (slow tests: ./run-tests.sh -m slow; no browser: -m 'not slow and not browser')
set -euo pipefail
cd "$(dirname "$0")"
EXTRAS=test source scripts/setup-venv.sh
# The browser tests (tests/ui, marker "browser") drive Debian's Chromium through Playwright, which never downloads a
# browser of its own. Install the system package when it is missing (needs root, as on CI).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's chromium for the browser tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: /usr/bin/chromium is missing and this is not root: the browser tests will fail;" \
      "install it with: sudo apt-get install -y chromium" >&2
  fi
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
exec "$VENV/bin/python" -m pytest "$@"
