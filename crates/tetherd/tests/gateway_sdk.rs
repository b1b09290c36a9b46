//! The real `centrifuge` npm SDK (5.x, in Node with `ws` as its WebSocket)
//! against the gateway: JWT connect (HS256 and RS256), refusals, subscription
//! tokens, publications through the HTTP API, presence, history, join/leave,
//! client publish, token refresh and expiry (connection and subscription
//! tokens), and recovery after a cut connection.
//!
//! Each test starts its own gateway and runs one scenario of
//! `clients/sdk-tests/scenarios.mjs`, which prints `ok NAME` or
//! `FAIL NAME: reason`.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use common::Tetherd;

const API_KEY: &str = "sdk-test-api-key-0123456789";
const HMAC_SECRET: &str = "sdk-test-hmac-secret-0123456789abcdef";

/// How long one scenario may take before it is killed.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// The namespaces the scenarios use (see the header of scenarios.mjs).
const NAMESPACES: &str = r#"
[[namespace]]
name = "chat"
allow_subscribe_for_client = true
allow_publish_for_client = true
allow_presence_for_subscriber = true
allow_history_for_subscriber = true
history_size = 100
history_ttl = "5m"
recovery = true
presence = true
join_leave = true

[[namespace]]
name = "news"
allow_subscribe_for_client = true
allow_history_for_subscriber = true
history_size = 100
history_ttl = "5m"
recovery = true

[[namespace]]
name = "private"
allow_subscribe_for_client = true
allow_presence_for_subscriber = true
presence = true

[[namespace]]
name = "open"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true

[[namespace]]
name = "secret"
"#;

/// A throwaway RSA key pair made with `openssl` once per test process:
/// (private key for the SDK side to sign with, public key for the gateway).
fn rsa_keys() -> &'static (PathBuf, PathBuf) {
    static KEYS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tetherd-sdk-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("key dir");
        let private = dir.join("private.pem");
        let public = dir.join("public.pem");
        let status = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .arg("-out")
            .arg(&private)
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl genpkey: {status}");
        let status = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl pkey -pubout: {status}");
        (private, public)
    })
}

fn config(public_key: &Path) -> String {
    format!(
        r#"
[auth]
api_key = "{API_KEY}"
token_hmac_secret = "{HMAC_SECRET}"
token_rsa_public_key = "{}"
allow_anonymous = true
token_refresh_grace = "1s"
{NAMESPACES}"#,
        public_key.display()
    )
}

/// Starts a gateway and runs the scenario `name` against it; panics with the
/// script's output unless it printed `ok NAME` and exited 0.
fn scenario(name: &str) {
    let (private_key, public_key) = rsa_keys();
    let server = Tetherd::gateway(&config(public_key), &[]);
    let mut args: Vec<std::ffi::OsString> = ["scenarios.mjs", "--ws", &server.gateway_url()]
        .into_iter()
        .chain(["--http", &server.http_url(), "--api-key", API_KEY])
        .chain(["--secret", HMAC_SECRET, "--only", name, "--rsa-key"])
        .map(Into::into)
        .collect();
    args.push(private_key.into());
    let (status, stdout, stderr) = common::run_sdk_script(args, SCENARIO_TIMEOUT);
    let status = status.unwrap_or_else(|| {
        panic!("scenario {name} still running after {SCENARIO_TIMEOUT:?}:\n{stdout}\n{stderr}")
    });
    assert!(
        status.success() && stdout.lines().any(|line| line == format!("ok {name}")),
        "scenario {name} failed ({status}):\n{stdout}\n{stderr}"
    );
}

#[test]
fn jwt_hs256() {
    scenario("jwt-hs256");
}

#[test]
fn jwt_rs256() {
    scenario("jwt-rs256");
}

#[test]
fn bad_token_disconnects_without_reconnect() {
    scenario("bad-token");
}

#[test]
fn anonymous_refused_in_protected_namespace() {
    scenario("anonymous-refused-in-protected-namespace");
}

#[test]
fn subscription_token() {
    scenario("subscription-token");
}

#[test]
fn api_publications_arrive_in_order() {
    scenario("api-publications");
}

#[test]
fn presence_and_history() {
    scenario("presence-and-history");
}

#[test]
fn join_leave() {
    scenario("join-leave");
}

#[test]
fn client_publish() {
    scenario("client-publish");
}

#[test]
fn token_refresh_keeps_the_connection() {
    scenario("token-refresh");
}

#[test]
fn an_unrefreshed_token_ends_the_connection_with_3005() {
    scenario("token-expiry-without-refresh");
}

#[test]
fn without_get_token_an_expired_connection_ends() {
    scenario("token-expiry-without-get-token");
}

#[test]
fn subscription_token_refresh_keeps_the_subscription() {
    scenario("sub-token-refresh");
}

#[test]
fn an_unrefreshed_subscription_token_ends_the_subscription_with_2501() {
    scenario("sub-token-expiry");
}

#[test]
fn subscribed_comes_before_the_channels_publications() {
    scenario("subscribed-before-publications");
}

#[test]
fn recovery_after_a_cut_connection() {
    scenario("recovery");
}

#[test]
fn recovery_impossible_after_history_remove() {
    scenario("recovery-impossible");
}
