#!/usr/bin/env bash
# The proxy hooks' benchmark (issue #19): connects per second through the
# connect hook, and RPC round trips per second through the RPC hook, against
# a trivial local backend (benches/peers/proxy-backend.cjs, Node's own http
# server). tetherd runs on one runtime thread pinned to core 0; the load
# generator and the backend share core 1, and the backend's CPU is reported
# apart from the gateway's. For what the connect hook adds, the same run
# connects anonymously to a second tetherd without hooks. Each runs
# --rounds times (alternating); the summary is the median round.
#   bash benches/hooks.sh [--rounds 3] [--duration 10] [--concurrency 32]
set -euo pipefail

benches="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$benches")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
rounds=3 duration=10 concurrency=32
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --concurrency) concurrency="$2"; shift 2 ;;
        *) echo "hooks.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
command -v taskset >/dev/null || { echo "hooks.sh: taskset (util-linux) is required" >&2; exit 1; }
command -v node >/dev/null || { echo "hooks.sh: node is required for the backend" >&2; exit 1; }
cargo build --release --manifest-path "$root/Cargo.toml" -p tetherd -p tether-load
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

taskset -c 1 node "$benches/peers/proxy-backend.cjs" 0 > "$work/backend.out" &
backend_pid=$!
until grep -q listening "$work/backend.out"; do sleep 0.1; done
backend_port="$(awk '/listening/ {print $2}' "$work/backend.out")"

cat > "$work/tether.toml" <<TOML
[auth]
api_key = "hooks-bench-api-key-0123456789"
token_hmac_secret = "hooks-bench-hmac-secret-0123456789abcdef"
# Closed-loop RPC callers send far more than a browser would.
[security]
client_message_rate = 0
[client.proxy.connect]
enabled = true
endpoint = "http://127.0.0.1:$backend_port/connect"
[rpc.proxy]
endpoint = "http://127.0.0.1:$backend_port/rpc"
[rpc.without_namespace]
proxy_enabled = true
TOML
cat > "$work/plain.toml" <<TOML
[auth]
api_key = "hooks-bench-api-key-0123456789"
token_hmac_secret = "hooks-bench-hmac-secret-0123456789abcdef"
allow_anonymous = true
TOML

# Starts tetherd on core 0 with config $1; sets $tetherd_pid and $listen.
start_tetherd() {
    local log="$work/$(basename "$1" .toml).log"
    taskset -c 0 "$bin/tetherd" serve --config "$1" --listen 127.0.0.1:0 --threads 1 2> "$log" &
    tetherd_pid=$!
    until grep -q "listening" "$log"; do sleep 0.1; done
    listen="$(grep -o 'listen=[0-9.:]*' "$log" | head -1 | cut -d= -f2)"
}
start_tetherd "$work/plain.toml"
plain_pid=$tetherd_pid plain_listen=$listen
start_tetherd "$work/tether.toml"

load() { # HOOK LISTEN GATEWAY_PID LABEL
    taskset -c 1 "$bin/tether-load" hooks --url "ws://$2/connection/websocket" --hook "$1" \
        --duration "$duration" --concurrency "$concurrency" \
        --server-pid "$3" --backend-pid "$backend_pid" --json \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); r["label"]=sys.argv[1]; print(json.dumps(r))' "$4" \
        >> "$work/results.jsonl"
}
for round in $(seq "$rounds"); do
    load connect "$listen" "$tetherd_pid" "connect hook"
    load connect "$plain_listen" "$plain_pid" "connect, no hook (anonymous)"
    load rpc "$listen" "$tetherd_pid" "rpc hook"
done

python3 - "$work/results.jsonl" "$rounds" "$duration" "$concurrency" <<'PY'
import json, statistics, sys
path, rounds, duration, concurrency = sys.argv[1:]
runs = [json.loads(line) for line in open(path)]
print(f"proxy hooks, {rounds} rounds of {duration} s, {concurrency} connections; "
      "tetherd --threads 1 on core 0, load and backend (Node http) on core 1\n")
print("| hook | per second | p50 | p99 | gateway CPU each | backend CPU each | failed |")
print("|---|---|---|---|---|---|---|")
for label in dict.fromkeys(r["label"] for r in runs):
    mine = sorted((r for r in runs if r["label"] == label), key=lambda r: r["per_s"])
    median = mine[len(mine) // 2]
    print(f"| {label} | {median['per_s']:,.0f} | {median['latency_us']['p50']:.0f} µs "
          f"| {median['latency_us']['p99']:.0f} µs | {median['server_cpu_us_per_call']:.1f} µs "
          f"| {median['backend_cpu_us_per_call']:.1f} µs | {sum(r['failed'] for r in mine)} |")
PY
