//! The PyPI Centrifugo clients against the gateway: `cent` (the HTTP API
//! client) and `centrifuge-python` (the WebSocket SDK), each running a
//! script from `clients/python-sdk-tests/` that exits 0 once every check in
//! it passed.
//!
//! Needs the venv of `interop/python/requirements.txt` (`$TETHER_PYTHON`);
//! `bash scripts/test.sh` installs it.

mod common;

use std::{
    io::Read,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{Tetherd, python, repo_root};

const API_KEY: &str = "python-api-key-0123456789";
const SECRET: &str = "python-hmac-secret-0123456789abcdef0123";

/// Token-only clients; `chat` has everything the scripts use, the default
/// namespace (channel `plain`) has no presence.
const CONFIG: &str = r#"
[auth]
api_key = "python-api-key-0123456789"
token_hmac_secret = "python-hmac-secret-0123456789abcdef0123"
allow_anonymous = false

[[namespace]]
name = ""
allow_subscribe_for_client = true

[[namespace]]
name = "chat"
allow_subscribe_for_client = true
allow_publish_for_client = true
allow_presence_for_subscriber = true
allow_history_for_subscriber = true
history_size = 100
history_ttl = "300s"
recovery = true
presence = true
join_leave = true
"#;

/// How long one script may run.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn cent_drives_the_http_api() {
    run_script("cent_api.py");
}

#[test]
fn centrifuge_python_subscribes_publishes_and_recovers() {
    run_script("sdk_client.py");
}

/// Runs `clients/python-sdk-tests/SCRIPT` against a fresh gateway and
/// asserts it printed `ok` and exited 0.
fn run_script(script: &str) {
    let server = Tetherd::gateway(CONFIG, &[]);
    let dir = repo_root().join("clients/python-sdk-tests");
    let mut child = Command::new(python())
        .current_dir(&dir)
        .arg(dir.join(script))
        .args(["--addr", &server.addr.to_string()])
        .args(["--api-key", API_KEY, "--secret", SECRET])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the Python interpreter starts");
    let stdout = read_all(child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + SCRIPT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits for python") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{script} ran past {SCRIPT_DEADLINE:?}; stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    assert!(
        status.success() && stdout.lines().any(|line| line == "ok"),
        "{script} failed ({status}); stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

/// Reads a pipe to its end on a thread.
fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}
