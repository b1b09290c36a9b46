#!/usr/bin/env bash
# Install the interop peers' dependencies (idempotent):
#   - a Python venv at $INTEROP_VENV (default /tmp/interop-venv) with the
#     pinned `websockets` from python/requirements.txt;
#   - node/node_modules from node/package-lock.json (`npm ci`).
# Prints nothing on stdout but the venv's python path on the last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${INTEROP_VENV:-/tmp/interop-venv}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" - "$here/python/requirements.txt" <<'PY' >/dev/null 2>&1
import sys, importlib.metadata as md
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        assert md.version(name) == version, name
PY
then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt" >&2
fi

want_ws="$(node -p "require('$here/node/package.json').dependencies.ws")"
have_ws="$(node -p "try { require('$here/node/node_modules/ws/package.json').version } catch { '' }")"
if [ "$want_ws" != "$have_ws" ]; then
  (cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error) >&2
fi

echo "$venv/bin/python"
