#!/usr/bin/env bash
# Self-test of the interop peers without Tether: each client against each
# server (python and node) on /echo, /echo-fragmented and
# /echo-fragmented-ping, plus python/check_server.py against both servers.
# Ends with one `N passed, N failed` line; exit 0 only if all passed.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$("$here/setup.sh" | tail -n 1)" || exit 1
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

start_server() { # name cmd... ; sets port
  local name="$1"; shift
  "$@" server 0 >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
  for _ in $(seq 100); do
    if grep -q '^listening ' "$tmp/$name.out"; then
      port="$(awk '/^listening /{print $2; exit}' "$tmp/$name.out")"
      return 0
    fi
    sleep 0.1
  done
  echo "$name server did not start:" >&2; cat "$tmp/$name.err" >&2
  exit 1
}

declare -A ports
start_server python "$py" "$here/python/peer.py"; ports[python]="$port"
start_server node node "$here/node/peer.mjs"; ports[node]="$port"

passed=0 failed=0
run() { # label cmd...
  local label="$1"; shift
  if "$@" >"$tmp/run.out" 2>&1; then
    passed=$((passed + 1)); echo "ok $label ($(tail -n 1 "$tmp/run.out"))"
  else
    failed=$((failed + 1)); echo "FAIL $label:"; sed 's/^/    /' "$tmp/run.out"
  fi
}

for server in python node; do
  port="${ports[$server]}"
  for path in echo echo-fragmented echo-fragmented-ping; do
    run "python-client->$server-server/$path" "$py" "$here/python/peer.py" client "ws://127.0.0.1:$port/$path"
    run "node-client->$server-server/$path" node "$here/node/peer.mjs" client "ws://127.0.0.1:$port/$path"
  done
  run "check-server->$server-server" "$py" "$here/python/check_server.py" "$port"
done

echo "selftest: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
