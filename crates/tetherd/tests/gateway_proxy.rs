//! The proxy hooks against a real application backend
//! (`clients/proxy-backend/backend.py`, Python's standard library, written
//! to Centrifugo's proxy protocol) and the real `centrifuge` npm SDK
//! (`clients/sdk-tests/proxy.mjs`): a client identified by its cookie,
//! server-side channels, subscribe granted and refused, a publish
//! rewritten, RPC, send, refresh and sub_refresh; then backends that are
//! down, hang, answer garbage, 500 or too much; and other clients' latency
//! while 500 clients hammer a hanging backend.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Tetherd, hs256_token, protocol::Client, repo_root};
use serde_json::json;
use tether::Message;

const API_KEY: &str = "proxy-test-api-key-0123456789";
const HMAC_SECRET: &str = "proxy-test-hmac-secret-0123456789abcdef";
/// The shared secret the gateway adds to every call.
const SECRET_HEADER: &str = r#"X-Tether-Secret = "proxy-secret-0123""#;

/// Held by each test: they run one at a time, so that the latency test
/// does not share the machine's two cores with the others.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long one run of the SDK script may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The backend, started in `mode` (normal, slow, garbage, error500, huge).
struct Backend {
    child: Child,
    url: String,
}

impl Backend {
    fn start(mode: &str) -> Self {
        let mut child = Command::new(common::python())
            .arg(repo_root().join("clients/proxy-backend/backend.py"))
            .args(["--port", "0", "--mode", mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the backend");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the backend prints its port");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("`listening PORT`, got {line:?}"));
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every hook, pointing at `backend` (the hooks proxy.mjs expects).
fn config(backend: &str) -> String {
    format!(
        r#"
# The latency probe publishes 500 times a second.
[security]
client_message_rate = 1000

[auth]
api_key = "{API_KEY}"
token_hmac_secret = "{HMAC_SECRET}"

[client.proxy.connect]
enabled = true
endpoint = "{backend}/connect"
http_headers = ["Cookie", "Origin", "User-Agent", "X-Real-Ip"]
http.static_headers = {{ {SECRET_HEADER} }}

[client.proxy.refresh]
enabled = true
endpoint = "{backend}/refresh"

[client.proxy.send]
enabled = true
endpoint = "{backend}/send"

[channel.proxy.subscribe]
endpoint = "{backend}/subscribe"
http_headers = ["Cookie"]
[channel.proxy.publish]
endpoint = "{backend}/publish"
[channel.proxy.sub_refresh]
endpoint = "{backend}/sub_refresh"

[rpc.proxy]
endpoint = "{backend}/rpc"
[rpc.without_namespace]
proxy_enabled = true

[[namespace]]
name = "room"
subscribe_proxy_enabled = true
publish_proxy_enabled = true

[[namespace]]
name = "secret"
subscribe_proxy_enabled = true

[[namespace]]
name = "expiring"
subscribe_proxy_enabled = true
sub_refresh_proxy_enabled = true

[[namespace]]
name = "notify"

[[namespace]]
name = "capped"

[[namespace]]
name = "plain"
allow_publish_for_client = true
"#
    )
}

/// Runs proxy.mjs (`only`: one scenario) against `server` and `backend`;
/// panics with its output unless every scenario passed.
fn run_script(server: &Tetherd, backend: &str, only: Option<&str>) -> String {
    let (ws, http) = (server.gateway_url(), server.http_url());
    let mut args = vec![
        "proxy.mjs",
        "--ws",
        &ws,
        "--http",
        &http,
        "--api-key",
        API_KEY,
    ];
    args.extend(["--backend", backend]);
    args.extend(only.iter().flat_map(|only| ["--only", *only]));
    let (status, stdout, stderr) = common::run_sdk_script(args, SCRIPT_TIMEOUT);
    let status =
        status.unwrap_or_else(|| panic!("proxy.mjs still running after {SCRIPT_TIMEOUT:?}"));
    assert!(
        status.success() && stdout.contains(" passed, 0 failed"),
        "proxy.mjs failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn the_sdk_works_through_every_hook_of_a_real_backend() {
    let _serial = one_at_a_time();
    let backend = Backend::start("normal");
    let server = Tetherd::gateway(&config(&backend.url), &[]);
    let out = run_script(&server, &backend.url, None);
    assert!(out.contains("10 passed, 0 failed"), "{out}");
    for hook in [
        "connect",
        "refresh",
        "subscribe",
        "publish",
        "sub_refresh",
        "rpc",
        "send",
    ] {
        let calls = server.metric(&format!("proxy_requests_total{{hook=\"{hook}\"}}"));
        assert!(calls > 0, "{hook}: {calls} calls counted");
    }
}

/// A backend that is down, hangs past the timeout, answers garbage, 500 or
/// more than the answer limit: the SDK gets the temporary error 100 and
/// retries; the failure is counted by kind and logged once per burst.
#[test]
fn a_failing_backend_gives_the_temporary_error_and_is_logged_once() {
    let _serial = one_at_a_time();
    for (mode, kind) in [
        ("down", "connection"),
        ("slow", "timeout"),
        ("garbage", "malformed"),
        ("error500", "status"),
        ("huge", "too_large"),
    ] {
        let backend = (mode != "down").then(|| Backend::start(mode));
        let url = backend.as_ref().map_or_else(
            || format!("http://127.0.0.1:{}", common::free_port()),
            |backend| backend.url.clone(),
        );
        let server = Tetherd::gateway(&config(&url), &[]);
        run_script(&server, &url, Some("backend-down"));
        let failures = server.metric(&format!(
            "proxy_errors_total{{hook=\"connect\",kind=\"{kind}\"}}"
        ));
        assert!(failures >= 2, "{mode}: {failures} {kind} failures counted");
        let logged = server
            .log_lines()
            .iter()
            .filter(|line| line.contains("proxy call failed") && line.contains("hook=connect"))
            .count();
        assert_eq!(
            logged, 1,
            "{mode}: {failures} failures within 10 s, one log line"
        );
    }
}

/// 500 clients connect once a second each (spread over the second) through
/// the connect hook while a client with a token publishes: its round trip's
/// p99 with a backend that hangs past the timeout stays within twice the
/// p99 with a healthy backend under the same churn (or 2 ms, whichever is
/// more: on loopback a healthy p99 is a fraction of a millisecond, below
/// what one scheduling delay on a shared 2-core machine adds).
#[expect(
    clippy::await_holding_lock,
    reason = "the guard keeps whole tests apart; each test has its own runtime"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_clients_stay_responsive_while_500_clients_hammer_a_hanging_backend() {
    let _serial = one_at_a_time();
    let (healthy, answered) = p99_under_churn("normal").await;
    let (hanging, timed_out) = p99_under_churn("slow").await;
    println!(
        "publish round trip p99 while 500 clients connect each second: {healthy:?} with a healthy backend \
         ({answered} connects answered), {hanging:?} with a hanging one ({timed_out} timed out)"
    );
    let bound = (healthy * 2).max(Duration::from_millis(2));
    assert!(
        hanging <= bound,
        "p99 {hanging:?} with a hanging backend, over {bound:?}"
    );
}

/// The publish p99 of a token client while 500 others connect through the
/// connect hook of a backend in `mode`, each once a second; and how many
/// hook calls were made (answered or timed out) meanwhile.
async fn p99_under_churn(mode: &str) -> (Duration, u64) {
    let backend = Backend::start(mode);
    let server = Tetherd::gateway(&config(&backend.url), &[]);
    let token = hs256_token(HMAC_SECRET, &json!({"sub": "measured"}));
    let (mut measured, _) = Client::connect_with(&server, json!({ "token": token })).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut churn = Vec::new();
    for client in 0..500u64 {
        let (url, stop) = (server.gateway_url(), stop.clone());
        churn.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(client * 2)).await;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if let Ok((mut ws, _)) = tether::connect(&url).await {
                    let connect = json!({"id": 1, "connect": {}}).to_string();
                    if ws.send(Message::text(connect)).await.is_ok() {
                        // The reply: a disconnect (no cookie), or error 100
                        // once a hanging hook times out (1 s).
                        let _ = tokio::time::timeout(Duration::from_secs(5), ws.recv()).await;
                    }
                }
                tokio::time::sleep_until((started + Duration::from_secs(1)).into()).await;
            }
        }));
    }
    // Every churning client is in its cycle by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p99 = publish_p99(&mut measured).await;
    stop.store(true, Ordering::Relaxed);
    for client in churn {
        let _ = client.await;
    }
    let calls = server.metric("proxy_requests_total{hook=\"connect\"}");
    assert!(calls >= 1000, "{mode}: {calls} connect hook calls");
    if mode == "slow" {
        let timeouts = server.metric("proxy_errors_total{hook=\"connect\",kind=\"timeout\"}");
        assert!(timeouts >= 1000, "{timeouts} of {calls} calls timed out");
    }
    (p99, calls)
}

/// The p99 of 1,000 publish round trips, 2 ms apart.
async fn publish_p99(client: &mut Client) -> Duration {
    let mut times = Vec::new();
    for n in 0..1000 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let started = Instant::now();
        client
            .call("publish", json!({"channel": "plain:x", "data": {"n": n}}))
            .await;
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() * 99 / 100]
}

/// A client with a token is not asked about (as in Centrifugo) unless
/// `client.proxy.connect.always` is on; then the backend alone decides, and
/// this one (no cookie) refuses with 4501.
#[expect(
    clippy::await_holding_lock,
    reason = "the guard keeps whole tests apart; each test has its own runtime"
)]
#[tokio::test]
async fn tokens_skip_the_connect_hook_unless_it_takes_every_client() {
    let _serial = one_at_a_time();
    let backend = Backend::start("normal");
    let token = hs256_token(HMAC_SECRET, &json!({"sub": "token-user"}));
    for always in [false, true] {
        let config = config(&backend.url).replace(
            "[client.proxy.connect]\nenabled = true",
            &format!("[client.proxy.connect]\nenabled = true\nalways = {always}"),
        );
        let server = Tetherd::gateway(&config, &[]);
        let (ws, _) = tether::connect(&server.gateway_url()).await.unwrap();
        let mut client = Client::unconnected(ws);
        let answer = client
            .reply_or_close("connect", json!({ "token": token }))
            .await;
        if always {
            assert_eq!(
                answer,
                Err(4501),
                "the backend refuses a client without its cookie"
            );
        } else {
            let reply = answer.expect("connected with the token");
            assert!(reply["connect"]["client"].is_string(), "{reply}");
            let metrics = server.http("GET", "/metrics", "", "");
            assert!(
                !metrics.contains("tether_proxy_requests_total{hook=\"connect\"}"),
                "no call"
            );
        }
    }
}
