#!/usr/bin/env bash
# THE test command for Tether:  bash scripts/test.sh [--quick]
#
# Works on a fresh Debian machine (as root): it first installs whatever the tests need, each
# install idempotent and near-instant when already done, then runs, stopping at the first failure:
#
#   fmt -> clippy -> doc -> release build -> tests (with the Python/Node interop peers)
#       -> short fuzz run per target -> Autobahn|Testsuite, server mode and client mode
#       (1.*-11.*, then the permessage-deflate cases 12.* and 13.*)
#
#   --quick   skip the fuzzing and Autobahn sections (and their installs)
#
# Environment knobs:
#   TETHER_PY_VENV   Python 3 venv for the interop peer   (default ~/.cache/tether/py-venv)
#   AUTOBAHN_VENV    Python 2.7 venv with wstest          (default ~/.cache/tether/autobahn-venv)
#   FUZZ_SECONDS     libFuzzer time per fuzz target       (default 20)
#
# CI runs this through .ci/run on a fresh clone.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "test.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

# `cargo install` puts binaries here; a fresh login shell may not have it on PATH yet.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# ---------------------------------------------------------------------------------------------
# Sections: a header, the elapsed time, and on failure the name of the section that failed.

run_start=$SECONDS
current_section=""
section_start=$SECONDS
timings=()

section() {
    end_section
    current_section=$1
    section_start=$SECONDS
    printf '\n===== %s  (t+%ds) =====\n' "$current_section" $((SECONDS - run_start))
}

end_section() {
    if [[ -n "$current_section" ]]; then
        local took=$((SECONDS - section_start))
        timings+=("$(printf '%6ds  %s' "$took" "$current_section")")
        printf -- '----- %s: ok in %ds\n' "$current_section" "$took"
        current_section=""
    fi
}

on_exit() {
    local rc=$?
    if [[ $rc -ne 0 && -n "$current_section" ]]; then
        printf '\n===== FAILED: %s (exit %d) after %ds in the section, %ds in all =====\n' \
            "$current_section" "$rc" $((SECONDS - section_start)) $((SECONDS - run_start)) >&2
    fi
}
trap on_exit EXIT

# ---------------------------------------------------------------------------------------------
# Installs. Each checks first, so a machine that already has everything pays a few seconds.

# Debian packages the tests need beyond the machine image: Chromium drives the browser tests
# (crates/tetherd/tests/browser.rs) through playwright-core; redis-server backs the Redis broker
# tests (started by the tests themselves on free loopback ports).
# nginx and haproxy run the shipped deploy/ configs in front of gateway nodes
# (gateway_rolling.rs, deploy.rs), and systemd-analyze checks the unit.
APT_PACKAGES=(chromium redis-server nginx haproxy systemd)

apt_updated=0
# need_apt PKG...: install the packages that are not installed yet (apt-get update at most once).
need_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; return 1; }
        sudo=(sudo)
    fi
    echo "apt: installing ${missing[*]}"
    if [[ $apt_updated -eq 0 ]]; then
        "${sudo[@]}" apt-get update -qq
        apt_updated=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# hash_of FILE...: one hash over the given files, for "already installed from these inputs" stamps.
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# A Node package directory (interop peer, browser tests): npm ci is exact but wipes node_modules
# each time, so only run it when the manifest or lock changed since the last successful install
# (stamp file inside node_modules).
setup_node() {
    local dir=$1
    [[ -f $dir/package.json ]] || { echo "node: no $dir/package.json, skipped"; return 0; }
    local inputs=("$dir/package.json") stamp=$dir/node_modules/.tether-install-stamp
    [[ -f $dir/package-lock.json ]] && inputs+=("$dir/package-lock.json")
    local want
    want=$(hash_of "${inputs[@]}")
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        echo "node: $dir/node_modules up to date"
        return 0
    fi
    if [[ -f $dir/package-lock.json ]]; then
        (cd "$dir" && npm ci --no-audit --no-fund)
    else
        (cd "$dir" && npm install --no-audit --no-fund)
    fi
    echo "$want" >"$stamp"
}

# Python interop peer: a venv (always created, so TETHER_PYTHON always names one) with
# interop/python/requirements.txt installed when that file exists.
PY_VENV=${TETHER_PY_VENV:-$HOME/.cache/tether/py-venv}
setup_python() {
    local reqs=interop/python/requirements.txt stamp=$PY_VENV/.tether-install-stamp want=none
    [[ -f $reqs ]] && want=$(hash_of "$reqs")
    if [[ -x $PY_VENV/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
        echo "python: $PY_VENV up to date"
        return 0
    fi
    if [[ ! -x $PY_VENV/bin/python ]] || ! "$PY_VENV/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$PY_VENV"
        mkdir -p "$(dirname "$PY_VENV")"
        python3 -m venv "$PY_VENV"
    fi
    if [[ -f $reqs ]]; then
        "$PY_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$reqs"
    fi
    echo "$want" >"$stamp"
    echo "python: $PY_VENV ready"
}

# cargo-fuzz, only needed when there is a fuzz/ crate.
setup_cargo_fuzz() {
    if cargo fuzz --version >/dev/null 2>&1; then
        echo "cargo-fuzz: $(cargo fuzz --version)"
    else
        cargo install cargo-fuzz --locked
    fi
}

have_fuzz=0
[[ -f fuzz/Cargo.toml ]] && have_fuzz=1

section "install"
# rustfmt and clippy come with the machine's toolchain; there is nowhere to fetch them from,
# so say clearly if they are missing rather than failing later with a confusing message.
cargo fmt --version >/dev/null || { echo "rustfmt is missing from the Rust toolchain" >&2; exit 1; }
cargo clippy --version >/dev/null || { echo "clippy is missing from the Rust toolchain" >&2; exit 1; }
if [[ ${#APT_PACKAGES[@]} -gt 0 ]]; then need_apt "${APT_PACKAGES[@]}"; fi
setup_node interop/node
setup_node clients/browser-tests
setup_node clients/sdk-tests
setup_python
if [[ $quick -eq 0 ]]; then
    bash scripts/setup-autobahn.sh >/dev/null
    if [[ $have_fuzz -eq 1 ]]; then setup_cargo_fuzz; fi
fi

# What the Rust tests use to find the interop peers.
export TETHER_PYTHON="$PY_VENV/bin/python"
export TETHER_NODE_DIR="$repo_root/interop/node"
echo "TETHER_PYTHON=$TETHER_PYTHON"
echo "TETHER_NODE_DIR=$TETHER_NODE_DIR"

# ---------------------------------------------------------------------------------------------
# Checks.

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --all-targets -- -D warnings
if [[ $have_fuzz -eq 1 ]]; then
    # The fuzz crate is its own workspace, so the line above does not lint it.
    (cd fuzz && cargo clippy --all-targets -- -D warnings)
fi

section "cargo doc (broken links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

section "cargo build --release"
cargo build --release

section "cargo test --release"
cargo test --workspace --release

section "benches/ (the side-by-side runner)"
# Its own workspace (peer echo servers, not shipped): its checks and unit
# tests, built into the main target directory as benches/run.sh does.
cargo fmt --manifest-path benches/Cargo.toml -- --check
CARGO_TARGET_DIR="$repo_root/target" cargo clippy --release --manifest-path benches/Cargo.toml --all-targets -- -D warnings
CARGO_TARGET_DIR="$repo_root/target" cargo test --release --manifest-path benches/Cargo.toml

if [[ $quick -eq 1 ]]; then
    echo
    echo "--quick: skipping fuzzing and the Autobahn|Testsuite"
elif [[ $have_fuzz -eq 1 ]]; then
    # cargo-fuzz builds with -Zsanitizer=address and other unstable flags. The machine has only
    # a stable toolchain; RUSTC_BOOTSTRAP=1 lets stable rustc accept them (checked on 1.95).
    # The fuzz crate is its own workspace in fuzz/ (its own Cargo.lock and fuzz/target/).
    fuzz_seconds=${FUZZ_SECONDS:-20}
    section "cargo fuzz build"
    RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir fuzz
    # (Not `mapfile < <(...)`: a failure inside process substitution would go unnoticed.)
    fuzz_list=$(cargo fuzz list --fuzz-dir fuzz)
    mapfile -t fuzz_targets <<<"$fuzz_list"
    for target in "${fuzz_targets[@]}"; do
        section "cargo fuzz run $target (${fuzz_seconds}s)"
        # Checked-in seeds (and a dictionary where there is one) make a short run go deeper;
        # libFuzzer writes new inputs to the first, untracked corpus directory.
        mkdir -p "fuzz/corpus/$target"
        corpora=("fuzz/corpus/$target")
        [[ -d fuzz/seeds/$target ]] && corpora+=("fuzz/seeds/$target")
        dict=()
        [[ -f fuzz/$target.dict ]] && dict=("-dict=fuzz/$target.dict")
        RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$target" "${corpora[@]}" -- \
            -max_total_time="$fuzz_seconds" "${dict[@]}"
    done
else
    echo
    echo "no fuzz/Cargo.toml: skipping fuzzing"
fi

if [[ $quick -eq 0 ]]; then
    section "autobahn server (wstest fuzzingclient -> tetherd echo --deflate)"
    python3 scripts/autobahn.py server --deflate

    section "autobahn client (Tether client example -> wstest fuzzingserver)"
    python3 scripts/autobahn.py client

    # 12.* and 13.* (permessage-deflate) are bound by wstest's Python, one core per mode:
    # the two modes run side by side.
    section "autobahn permessage-deflate 12.*, 13.* (server --deflate and client, side by side)"
    python3 scripts/autobahn.py server --deflate --cases '12.*,13.*' --run-timeout 3000 &
    deflate_server=$!
    deflate_status=0
    python3 scripts/autobahn.py client --cases '12.*,13.*' --run-timeout 3000 || deflate_status=1
    wait "$deflate_server" || deflate_status=1
    [[ $deflate_status -eq 0 ]]
fi

end_section
printf '\n===== all passed in %ds =====\n' $((SECONDS - run_start))
printf '%s\n' "${timings[@]}"
