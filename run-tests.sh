#!/usr/bin/env bash
# Install the test extras (into .venv, creating it when missing) and run the whole test suite.
# Usage: ./run-tests.sh [pytest args...]      (slow tests: ./run-tests.sh -m slow; no browser: -m 'not slow and not browser')
set -euo pipefail
cd "$(dirname "$0")"
EXTRAS=test source scripts/setup-venv.sh
# The browser tests (tests/ui, marker "browser") drive Debian's Chromium through Playwright, which never downloads a
# browser of its own. Install the system package when it is missing (needs root, as on CI).
# The page's buttons are emoji (A1111's 🔄 📋 🖌️ ...): without a colour emoji font Chromium draws empty boxes in the
# screenshots, so Debian's fonts-noto-color-emoji is installed the same way.
MISSING=""
[ -x /usr/bin/chromium ] || MISSING="chromium"
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || MISSING="$MISSING fonts-noto-color-emoji"
if [ -n "$MISSING" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's$MISSING for the browser tests"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $MISSING >/dev/null
  else
    echo "warning: missing Debian packages:$MISSING and this is not root: the browser tests will fail or draw" \
      "emoji as boxes; install them with: sudo apt-get install -y$MISSING" >&2
  fi
fi
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
exec "$VENV/bin/python" -m pytest "$@"
