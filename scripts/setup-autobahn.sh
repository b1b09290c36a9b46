#!/usr/bin/env bash
# Build (once) the Python 2.7 virtualenv that runs the Autobahn|Testsuite (`wstest`).
#
# Why this dance: autobahntestsuite is still Python 2.7 code (in a Python 3 venv it installs but
# wstest crashes), and its sdist omits its requirements, so `pip install autobahntestsuite` alone
# installs no dependencies. So we
#   1. bootstrap `virtualenv<20.22` (the last release that can still create 2.7 environments) with
#      python3 into a throwaway --target dir,
#   2. use it to create a 2.7 venv with the pyenv-provided python2.7,
#   3. install our own pinned lock file (conformance/autobahn/requirements-py27.txt).
#
# Idempotent and fast when already done: if "$VENV/bin/wstest -a" works and the venv was built
# from the current pins (stamp file), nothing happens.
#
# Environment:
#   AUTOBAHN_VENV  where the venv lives (default: $HOME/.cache/tether/autobahn-venv)
#   AUTOBAHN_PY2   the python2.7 interpreter to use (default: pyenv's 2.7.x, else python2.7 on PATH)
#   PYTHON3        python3 used for the bootstrap (default: python3)
#
# Prints the venv path on the last line of stdout (scripts/test.sh does not rely on it, but it is
# handy by hand).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
reqs="$repo_root/conformance/autobahn/requirements-py27.txt"
VENV=${AUTOBAHN_VENV:-$HOME/.cache/tether/autobahn-venv}
PYTHON3=${PYTHON3:-python3}
stamp="$VENV/.tether-requirements.sha256"

log() { echo "setup-autobahn: $*" >&2; }

want_hash=$(sha256sum "$reqs" | cut -d' ' -f1)

# `wstest -a` prints "Autobahn 0.10.9" then "AutobahnTestSuite 25.10.1"; keep the latter.
wstest_version() { "$VENV/bin/wstest" -a 2>&1 | grep AutobahnTestSuite; }

# Fast path: already built from these pins and working.
if [[ -x "$VENV/bin/wstest" && -f "$stamp" && "$(cat "$stamp")" == "$want_hash" ]] &&
    version=$(wstest_version); then
    log "ok, already set up at $VENV ($version)"
    echo "$VENV"
    exit 0
fi

# Find a Python 2.7 interpreter. The machine image ships one under pyenv.
py2=${AUTOBAHN_PY2:-}
if [[ -z "$py2" ]]; then
    for cand in "$HOME"/.pyenv/versions/2.7*/bin/python2.7; do
        if [[ -x "$cand" ]]; then py2=$cand; break; fi
    done
fi
if [[ -z "$py2" ]]; then py2=$(command -v python2.7 || true); fi
if [[ -z "$py2" ]]; then
    log "no python2.7 found (set AUTOBAHN_PY2); the Autobahn|Testsuite needs Python 2.7"
    exit 1
fi

# A half-built or stale venv is not worth repairing: start over. But never delete a directory
# that is not a virtualenv (AUTOBAHN_VENV pointed somewhere by mistake).
if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" && -n "$(ls -A "$VENV" 2>/dev/null)" ]]; then
    log "$VENV exists and is not a virtualenv; refusing to replace it"
    exit 1
fi

# We run as root on CI; pip's "running as root" warning is noise here.
export PIP_ROOT_USER_ACTION=ignore

log "building $VENV with $py2 (takes ~1 minute cold)"
start=$SECONDS
bootstrap=$(mktemp -d "${TMPDIR:-/tmp}/tether-ab-bootstrap.XXXXXX")
trap 'rm -rf "$bootstrap"' EXIT

# A half-built or stale venv is not worth repairing: start over.
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"

"$PYTHON3" -m pip install --quiet --disable-pip-version-check --target "$bootstrap/pkgs" 'virtualenv<20.22'
# VIRTUALENV_OVERRIDE_APP_DATA keeps virtualenv's seed-wheel cache inside the throwaway dir.
PYTHONPATH="$bootstrap/pkgs" VIRTUALENV_OVERRIDE_APP_DATA="$bootstrap/appdata" \
    "$PYTHON3" -m virtualenv --quiet -p "$py2" "$VENV"

# pip under 2.7 prints a deprecation banner on every call; silence it.
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-python-version-warning -r "$reqs"

if ! version=$(wstest_version); then
    log "wstest -a does not run after install:"
    "$VENV/bin/wstest" -a >&2 || true
    exit 1
fi
echo "$want_hash" >"$stamp"
log "done in $((SECONDS - start)) s: $version"
echo "$VENV"
