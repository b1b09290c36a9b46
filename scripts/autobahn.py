#!/usr/bin/env python3
"""Run the Autobahn|Testsuite against Tether and compare with checked-in expectations.

    python3 scripts/autobahn.py server   # wstest fuzzingclient  -> tetherd echo server
    python3 scripts/autobahn.py client   # Tether client example -> wstest fuzzingserver
    python3 scripts/autobahn.py server --deflate --cases '12.*,13.*'   # permessage-deflate

Needs the Python 2.7 venv from scripts/setup-autobahn.sh (wstest is Python 2 only).

What counts as a pass: every selected case has both `behavior` and `behaviorClose` in
{OK, NON-STRICT, INFORMATIONAL}, no selected case is missing from the report (wstest exits 0
even when it never reached the peer, so counts are checked against the testsuite's own list of
the selected cases), and no case got worse than recorded in the checked-in summary
conformance/autobahn/{server,client}-summary.json. Improvements are reported; `--update`
rewrites the summary (merging: cases outside the current selection keep their old entries).

The last line printed is `autobahn MODE: N passed, M failed` (CI reads that phrase); the exit
status is 0 only when everything passed.

Reports (HTML + JSON per case, plus logs of every process we started) go to
conformance/autobahn/reports/MODE/, which is gitignored.

Standard library only, so it runs with any python3.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conformance" / "autobahn"
REPORTS_DIR = CONF_DIR / "reports"
DEFAULT_VENV = Path.home() / ".cache" / "tether" / "autobahn-venv"
LOOPBACK = "127.0.0.1"

# Everything but permessage-deflate (12.*, 13.*), which takes 15-30 minutes per mode at Python
# speed and runs as its own step (--cases '12.*,13.*', with --deflate in server mode).
# (There are no 8.* or 11.* cases; the patterns are harmless.)
DEFAULT_CASES = [f"{i}.*" for i in range(1, 12)]

GOOD = ("OK", "NON-STRICT", "INFORMATIONAL")
MISSING = "MISSING"
# Lower is better. NON-STRICT and INFORMATIONAL are both acceptable; a move between them is
# reported as a change but is not a regression. Unknown outcome strings rank as FAILED.
RANK = {"OK": 0, "NON-STRICT": 1, "INFORMATIONAL": 1, "UNIMPLEMENTED": 2, "WRONG CODE": 3,
        "FAILED": 3, MISSING: 4}

# Helper run by the venv's Python 2.7, so that we use the testsuite's own code rather than
# re-implementing it:
#  - `list-cases SPEC`: the exact case ids the spec selects (what wstest will run), so we can
#    tell "all cases ran" from "wstest gave up early".
#  - `wstest ARGS...`: wstest itself, except that fuzzingserver's listenWS binds to all
#    interfaces whatever host the spec URL names; we make it bind to loopback only.
PY2_HELPER = r'''
import json, sys
if sys.argv[1] == "list-cases":
    import autobahntestsuite.case as c
    from autobahntestsuite.caseset import CaseSet
    cs = CaseSet(c.CaseSetname, c.CaseBasename, c.Cases, c.CaseCategories, c.CaseSubCategories)
    with open(sys.argv[2]) as f:
        print(json.dumps(cs.parseSpecCases(json.load(f))))
elif sys.argv[1] == "wstest":
    import autobahntestsuite.fuzzing as fuzzing
    _listen = getattr(fuzzing, "listenWS", None)
    if _listen is not None:
        def listen_loopback(factory, contextFactory=None, backlog=50, interface=""):
            return _listen(factory, contextFactory, backlog, interface or "127.0.0.1")
        fuzzing.listenWS = listen_loopback
    from autobahntestsuite.wstest import run
    sys.argv = ["wstest"] + sys.argv[2:]
    sys.exit(run())
'''


class StepError(Exception):
    """A harness step failed (peer did not start, timed out, crashed...)."""


def log(msg: str) -> None:
    print(f"autobahn: {msg}", flush=True)


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case_id.split("."))


def free_port() -> int:
    # Racy in theory (the port is free when we look, someone could take it before the peer
    # binds), fine in practice on a CI machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    # Cut long lines: wstest prints the whole selected case list on one line.
    return "\n".join("    | " + (line if len(line) <= 300 else line[:300] + " ...")
                     for line in text[-lines:]) or "    | (empty)"


class Proc:
    """A child process in its own process group (so `cargo run` and its child die together),
    with stdout+stderr going to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        log(f"starting {name}: {shlex.join(argv)}  (log: {rel(log_path)})")
        try:
            self.p = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
        except OSError as e:
            self._log.close()
            raise StepError(f"cannot start {name}: {e}") from None

    def poll(self) -> int | None:
        return self.p.poll()

    def wait(self, timeout: float, progress=None) -> int:
        """Wait for exit; StepError (after killing it) if it takes longer than `timeout`."""
        deadline = time.monotonic() + timeout
        next_progress = time.monotonic() + 60
        while True:
            rc = self.p.poll()
            if rc is not None:
                return rc
            now = time.monotonic()
            if now >= deadline:
                self.stop()
                raise StepError(f"{self.name} timed out after {timeout:.0f} s\n{tail(self.log_path)}")
            if progress is not None and now >= next_progress:
                progress()
                next_progress = now + 60
            time.sleep(0.2)

    def stop(self, grace: float = 10) -> None:
        if self.p.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.p.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            # Leader exited; make sure nothing it spawned lingers in the group.
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def wait_for_port(port: int, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            raise StepError(f"{proc.name} exited with status {rc} before listening on port {port}\n"
                            f"{tail(proc.log_path)}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise StepError(f"{proc.name} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s\n"
                    f"{tail(proc.log_path)}")


def run_step(name: str, argv: list[str], log_path: Path, timeout: float, cwd: Path) -> None:
    proc = Proc(name, argv, log_path, cwd=cwd)
    try:
        rc = proc.wait(timeout)
    finally:
        proc.stop()
    if rc != 0:
        raise StepError(f"{name} failed with status {rc}\n{tail(log_path)}")


def count_started(wstest_log: Path) -> int:
    try:
        return wstest_log.read_text(errors="replace").count("Running test case ID")
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# The two modes. Each returns (agent, {case: (behavior, behaviorClose)}) read from index.json
# (empty when there is none) and appends harness problems to `errors`.


def venv_paths(args) -> tuple[Path, Path]:
    venv = Path(args.venv)
    wstest, python2 = venv / "bin" / "wstest", venv / "bin" / "python"
    if not wstest.exists() or not python2.exists():
        sys.exit(f"autobahn: no wstest in {venv}; run `bash scripts/setup-autobahn.sh` first")
    return wstest, python2


def list_cases(python2: Path, helper: Path, spec_path: Path) -> list[str]:
    out = subprocess.run([str(python2), str(helper), "list-cases", str(spec_path)],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        sys.exit(f"autobahn: cannot list the selected cases:\n{out.stderr}")
    return json.loads(out.stdout)


def run_server_mode(args, outdir: Path, python2: Path, wstest: Path, helper: Path,
                    errors: list[str]) -> tuple[list[str], str | None, dict]:
    port = free_port()
    addr = f"{LOOPBACK}:{port}"
    url = f"ws://{addr}"
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": args.agent or "tether", "url": url}],
        "cases": args.cases,
        "exclude-cases": args.exclude_cases,
        "exclude-agent-cases": {},
    }
    spec_path = outdir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    expected = list_cases(python2, helper, spec_path)

    if args.server_cmd:
        argv = shlex.split(args.server_cmd.format(port=port, addr=addr, url=url))
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        tetherd = target / "release" / "tetherd"
        if not tetherd.exists():
            errors.append(f"{rel(tetherd)} does not exist: run `cargo build --release` first")
            return expected, None, {}
        argv = [str(tetherd), "echo", "--listen", addr] + (["--deflate"] if args.deflate else [])

    server = None
    try:
        server = Proc("server", argv, outdir / "server.log", cwd=REPO)
        wait_for_port(port, server, args.startup_timeout)
        log(f"running {len(expected)} cases against {url}")
        wlog = outdir / "wstest.log"
        ws = Proc("wstest fuzzingclient",
                  [str(wstest), "-m", "fuzzingclient", "-s", str(spec_path)], wlog, cwd=outdir)
        try:
            rc = ws.wait(args.run_timeout, progress=lambda: log(
                f"... {count_started(wlog)}/{len(expected)} cases started"))
        finally:
            ws.stop()
        if rc != 0:
            errors.append(f"wstest exited with status {rc}\n{tail(wlog)}")
        rc = server.poll()
        if rc is not None:
            # An echo server must outlive the run; a crash is a failure even if wstest
            # happened to record results for every case.
            errors.append(f"the server exited (status {rc}) during the run\n{tail(server.log_path)}")
    except StepError as e:
        errors.append(str(e))
    finally:
        if server is not None:
            server.stop()
    agent, results = read_index(outdir, args.agent or "tether", errors)
    return expected, agent, results


def run_client_mode(args, outdir: Path, python2: Path, wstest: Path, helper: Path,
                    errors: list[str]) -> tuple[list[str], str | None, dict]:
    port = free_port()
    url = f"ws://{LOOPBACK}:{port}"
    spec = {
        "url": url,
        "outdir": str(outdir),
        "cases": args.cases,
        "exclude-cases": args.exclude_cases,
        "exclude-agent-cases": {},
    }
    spec_path = outdir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    expected = list_cases(python2, helper, spec_path)

    if args.client_cmd:
        argv = shlex.split(args.client_cmd.format(url=url, port=port))
    else:
        # Build first, with its own timeout, so compile time does not eat the run's budget and a
        # compile error is reported as such. `cargo run` afterwards is a no-op build.
        cargo_args = ["--release", "--example", "autobahn-client", "-p", "tether"]
        try:
            run_step("cargo build (client example)", ["cargo", "build", *cargo_args],
                     outdir / "client-build.log", args.build_timeout, cwd=REPO)
        except StepError as e:
            errors.append(str(e))
            return expected, None, {}
        argv = ["cargo", "run", "--quiet", *cargo_args, "--", url]

    # `--webport 0`: wstest's embedded web page is a command-line option (default 8080, on
    # all interfaces); a "webport" key in the spec is ignored.
    wlog = outdir / "wstest.log"
    fuzz = None
    try:
        fuzz = Proc("wstest fuzzingserver",
                    [str(python2), "-u", str(helper), "wstest", "-m", "fuzzingserver",
                     "-s", str(spec_path), "--webport", "0"], wlog, cwd=outdir)
        wait_for_port(port, fuzz, args.startup_timeout)
        log(f"running {len(expected)} cases, client connecting to {url}")
        client = Proc("client", argv, outdir / "client.log", cwd=REPO)
        try:
            rc = client.wait(args.run_timeout, progress=lambda: log(
                f"... {count_started(wlog)}/{len(expected)} cases started"))
        finally:
            client.stop()
        if rc != 0:
            errors.append(f"the client exited with status {rc}\n{tail(client.log_path)}")
        wait_for_reports(fuzz, wlog, port, errors)
    except StepError as e:
        errors.append(str(e))
    finally:
        if fuzz is not None:
            fuzz.stop()
    agent, results = read_index(outdir, args.agent, errors)
    return expected, agent, results


def wait_for_reports(fuzz: Proc, wlog: Path, port: int, errors: list[str]) -> None:
    """The client ends by calling /updateReports; wstest then writes index.json and logs
    'Report generation complete'. If the client never did, ask for the reports ourselves so
    the cases it did run can still be inspected."""
    marker = "Report generation complete"

    def done(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in wlog.read_text(errors="replace"):
                return True
            if fuzz.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    if done(30):
        return
    agents = agents_in_log(wlog)
    if fuzz.poll() is not None or len(agents) != 1:
        errors.append(f"wstest wrote no report (the client never called /updateReports)\n{tail(wlog)}")
        return
    log(f"WARNING: the client did not call /updateReports; requesting reports for agent {agents[0]!r}")
    try:
        request_update_reports(port, agents[0])
    except OSError as e:
        errors.append(f"could not request the reports from wstest: {e}")
        return
    if not done(60):
        errors.append(f"wstest wrote no report after /updateReports\n{tail(wlog)}")


def agents_in_log(wlog: Path) -> list[str]:
    agents = set()
    for line in wlog.read_text(errors="replace").splitlines():
        # "Running test case ID 1.1.1 for agent NAME from peer tcp:..."
        if line.startswith("Running test case ID") and " for agent " in line:
            agents.add(line.split(" for agent ", 1)[1].rsplit(" from peer ", 1)[0])
    return sorted(agents)


def request_update_reports(port: int, agent: str) -> None:
    """Minimal WebSocket opening handshake to /updateReports (wstest acts on the open)."""
    from urllib.parse import quote
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    req = (f"GET /updateReports?agent={quote(agent)} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
           f"Sec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection((LOOPBACK, port), timeout=30) as s:
        s.sendall(req.encode())
        s.recv(4096)  # the 101 response; wstest writes the reports and then closes


def read_index(outdir: Path, agent: str | None, errors: list[str]) -> tuple[str | None, dict]:
    index = outdir / "index.json"
    if not index.exists():
        errors.append(f"no report at {rel(index)}")
        return agent, {}
    data = json.loads(index.read_text())
    if agent is None:
        if len(data) > 1:
            errors.append(f"report has several agents {sorted(data)}; choose one with --agent")
            return None, {}
        agent = next(iter(data), None)
    if agent not in data:
        errors.append(f"report has no results for agent {agent!r} (agents: {sorted(data)})")
        return agent, {}
    results = {case: (r.get("behavior", "?"), r.get("behaviorClose", "?"))
               for case, r in data[agent].items()}
    return agent, results


# ---------------------------------------------------------------------------------------------
# Summary files and comparison.


def either_ok_or_non_strict(outdir: Path, agent: str | None, case: str) -> bool:
    """True when the testsuite itself lists both an OK and a NON-STRICT outcome for `case`.

    In those cases (3.2-3.4, 4.x.3-5, 5.15, 6.4.x) a valid message is followed by a bad frame,
    and whether the peer's echo of the first goes out before it fails the connection is a race
    (seen flipping run to run on a loaded machine, for tetherd and for the client). A flip
    between OK and NON-STRICT there is noise, not a regression."""
    try:
        index = json.loads((outdir / "index.json").read_text())
        entry = (index[agent] if agent in index else next(iter(index.values())))[case]
        expected = json.loads((outdir / entry["reportfile"]).read_text()).get("expected") or {}
        return "OK" in expected and "NON-STRICT" in expected
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return False


def summarize(mode: str, agent: str | None, cases: dict) -> dict:
    totals: dict = {"cases": len(cases), "passed": 0, "failed": 0, "behavior": {}, "behaviorClose": {}}
    for b, bc in cases.values():
        totals["passed" if (b in GOOD and bc in GOOD) else "failed"] += 1
        totals["behavior"][b] = totals["behavior"].get(b, 0) + 1
        totals["behaviorClose"][bc] = totals["behaviorClose"].get(bc, 0) + 1
    for k in ("behavior", "behaviorClose"):
        totals[k] = dict(sorted(totals[k].items(), key=lambda kv: (RANK.get(kv[0], 3), kv[0])))
    return {"mode": mode, "agent": agent, "totals": totals,
            "cases": {c: list(cases[c]) for c in sorted(cases, key=case_key)}}


def write_summary(path: Path, summary: dict) -> None:
    # One case per line: small, and diffs in review show exactly which cases changed.
    head = {k: v for k, v in summary.items() if k != "cases"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "cases": {')
    items = [f"    {json.dumps(c)}: {json.dumps(v)}" for c, v in summary["cases"].items()]
    lines.append(",\n".join(items))
    lines.append("  }")
    lines.append("}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def load_summary(path: Path) -> dict | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return {c: tuple(v) for c, v in data.get("cases", {}).items()}


def fmt(outcome: tuple[str, str]) -> str:
    return f"{outcome[0]}/{outcome[1]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["server", "client"],
                    help="server: wstest fuzzes tetherd; client: Tether's client runs against wstest")
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES),
                    help="comma-separated case patterns (default: %(default)s)")
    ap.add_argument("--exclude-cases", default="", help="comma-separated case patterns to skip")
    ap.add_argument("--server-cmd",
                    help="server command line; {port}, {addr} (127.0.0.1:PORT) and {url} are "
                         "substituted (default: target/release/tetherd echo --listen {addr})")
    ap.add_argument("--deflate", action="store_true",
                    help="server mode: run tetherd echo with --deflate (permessage-deflate)")
    ap.add_argument("--client-cmd",
                    help="client command line; {url} and {port} are substituted (default: cargo "
                         "run --release --example autobahn-client -p tether -- {url})")
    ap.add_argument("--agent", help="agent name (server mode: reported name, default 'tether'; "
                                    "client mode: which agent's results to read, default the only one)")
    ap.add_argument("--venv", default=os.environ.get("AUTOBAHN_VENV", str(DEFAULT_VENV)),
                    help="Python 2.7 venv with wstest (default: $AUTOBAHN_VENV or %(default)s)")
    ap.add_argument("--summary", help="summary file to compare with "
                                      "(default: conformance/autobahn/MODE-summary.json)")
    ap.add_argument("--update", action="store_true",
                    help="rewrite the summary file with this run's results")
    ap.add_argument("--startup-timeout", type=float, default=60,
                    help="seconds for a peer to start listening (default: %(default)s)")
    ap.add_argument("--run-timeout", type=float, default=1800,
                    help="seconds for the whole run of cases (default: %(default)s)")
    ap.add_argument("--build-timeout", type=float, default=1800,
                    help="seconds to build the client example (default: %(default)s)")
    args = ap.parse_args()
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.exclude_cases = [c.strip() for c in args.exclude_cases.split(",") if c.strip()]
    mode = args.mode
    summary_path = Path(args.summary) if args.summary else CONF_DIR / f"{mode}-summary.json"

    # Run cleanup (killing our process groups) on SIGTERM/SIGHUP too, not only on Ctrl-C.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    # wstest is Python; unbuffered output keeps its log (and our progress lines) current.
    os.environ["PYTHONUNBUFFERED"] = "1"
    wstest, python2 = venv_paths(args)
    outdir = REPORTS_DIR / mode
    # Two runs of the same mode would share (and wipe) one report dir: take turns. The lock is
    # released when this process exits.
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    lock = open(REPORTS_DIR / f".{mode}.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"another `autobahn.py {mode}` is running in this checkout; waiting for it")
        fcntl.flock(lock, fcntl.LOCK_EX)
    shutil.rmtree(outdir, ignore_errors=True)  # never read a stale index.json
    outdir.mkdir(parents=True)
    helper = outdir / "ab_helper.py"
    helper.write_text(PY2_HELPER)

    errors: list[str] = []
    started = time.monotonic()
    runner = run_server_mode if mode == "server" else run_client_mode
    expected, agent, results = runner(args, outdir, python2, wstest, helper, errors)
    elapsed = time.monotonic() - started

    # Every selected case, with MISSING for those that never ran.
    current = {c: results.get(c, (MISSING, MISSING)) for c in expected}
    extra = sorted(set(results) - set(expected), key=case_key)
    if extra:
        log(f"note: report has {len(extra)} cases outside the selection, ignored: {' '.join(extra[:10])}")
    summary = summarize(mode, agent, current)
    write_summary(outdir / "summary.json", summary)

    bad = {c: v for c, v in current.items() if v[0] not in GOOD or v[1] not in GOOD}

    old = load_summary(summary_path)
    regressions, improvements, changes, new_cases, racy = [], [], [], [], []
    if old is None:
        log(f"no checked-in summary at {rel(summary_path)} (run with --update to create it)")
        if not args.update:
            errors.append(f"{rel(summary_path)} is missing: nothing to compare against")
    else:
        for c, now in current.items():
            was = old.get(c)
            if was is None:
                new_cases.append(c)
                continue
            if tuple(was) == now:
                continue
            worse = any(RANK.get(n, 3) > RANK.get(w, 3) for w, n in zip(was, now))
            better = any(RANK.get(n, 3) < RANK.get(w, 3) for w, n in zip(was, now))
            line = f"{c}: {fmt(was)} -> {fmt(now)}"
            if ({was[0], now[0]} == {"OK", "NON-STRICT"} and was[1] == now[1]
                    and either_ok_or_non_strict(outdir, agent, c)):
                racy.append(line)
                continue
            (regressions if worse else improvements if better else changes).append(line)

    # Report.
    missing = sorted((c for c, v in current.items() if v[0] == MISSING), key=case_key)
    if missing:
        log(f"{len(missing)} of {len(expected)} selected cases missing from the report "
            f"(never ran): {missing[0]} ... {missing[-1]}")
    failing = sorted((c for c in bad if c not in set(missing)), key=case_key)
    if failing:
        log(f"{len(failing)} cases not passing (behavior/behaviorClose):")
        for c in failing[:60]:
            print(f"    {c:<10} {fmt(bad[c])}")
        if len(failing) > 60:
            print(f"    ... and {len(failing) - 60} more; see {rel(outdir / 'summary.json')}")
        print(f"    details: {rel(outdir / 'index.html')} and {rel(outdir)}/<agent>_case_*.html")
    if regressions:
        verb = "changed (accepted by --update)" if args.update else "GOT WORSE than the checked-in summary"
        log(f"{len(regressions)} cases {verb}:")
        for line in regressions:
            print(f"    {line}")
    if improvements:
        log(f"{len(improvements)} cases improved on the checked-in summary"
            + ("" if args.update else " (run with --update to record them)") + ":")
        for line in improvements:
            print(f"    {line}")
    if racy:
        log(f"{len(racy)} cases moved between OK and NON-STRICT where the testsuite accepts "
            f"either (timing-dependent; not a regression):")
        for line in racy:
            print(f"    {line}")
    if changes:
        log(f"{len(changes)} cases changed between acceptable outcomes:")
        for line in changes:
            print(f"    {line}")
    if new_cases:
        log(f"{len(new_cases)} cases are not in the checked-in summary yet"
            + ("" if args.update else " (run with --update to record them)"))
    for e in errors:
        log(f"ERROR: {e}")

    if args.update:
        merged = dict(old or {})
        merged.update(current)
        write_summary(summary_path, summarize(mode, agent, merged))
        log(f"wrote {rel(summary_path)}")

    regressed = set() if args.update else {line.split(":", 1)[0] for line in regressions}
    failed = len(set(bad) | regressed)
    passed = len(expected) - failed
    t = summary["totals"]
    log(f"{len(expected)} cases in {elapsed:.0f} s; behavior {t['behavior']}; "
        f"behaviorClose {t['behaviorClose']}")
    print(f"autobahn {mode}: {passed} passed, {failed} failed", flush=True)
    return 1 if (failed or errors) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        # The `finally` blocks have already stopped everything we started.
        print(f"autobahn: interrupted ({e or 'Ctrl-C'})", file=sys.stderr)
        sys.exit(130)
