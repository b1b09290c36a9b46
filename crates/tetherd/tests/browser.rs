//! The Origin policy of `tetherd echo` as a real browser meets it.
//!
//! Debian's Chromium, driven by `clients/browser-tests/csws.mjs`, loads the
//! same page from an allowed origin (127.0.0.1) and from a foreign one
//! (127.0.0.2). The page sets a session cookie and opens a WebSocket to
//! tetherd: the allowed page gets its echo, the foreign page is refused at
//! the handshake, and tetherd logs the refused origin.
//!
//! Needs `node`, `clients/browser-tests/node_modules` and `/usr/bin/chromium`
//! (or `$CHROMIUM`); `bash scripts/test.sh` installs them.

mod common;

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use common::{Tetherd, run_browser_script};

/// The session cookie the page sets.
const SESSION: &str = "tether-browser-test";

/// How long one run of the browser script may take in all.
const BROWSER_DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn foreign_page_is_refused_at_the_handshake_over_ws() {
    let _one_browser = one_browser_at_a_time();
    let port = page_port();
    let (allowed, foreign) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.2:{port}"),
    );
    let server = Tetherd::echo(&["--allow-origin", &allowed]);

    let reports = run_browser(&server.url(), &[&allowed, &foreign], &[]);

    assert_echoed(&reports[0], &allowed);
    assert_refused(&reports[1], &foreign);
    assert_log_shows(&server, &allowed, &foreign);
}

#[test]
fn allowed_page_sends_its_session_cookie_on_the_handshake() {
    let _one_browser = one_browser_at_a_time();
    let port = page_port();
    let (allowed, foreign) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.2:{port}"),
    );
    let server = Tetherd::echo(&["--allow-origin", &allowed]);

    // --tap relays the browser's connections to tetherd through a recorder,
    // since the DevTools protocol does not show a WebSocket's Cookie header.
    let reports = run_browser(&server.url(), &[&allowed, &foreign], &["--tap"]);

    assert_echoed(&reports[0], &allowed);
    let handshake = &reports[0]["handshake"];
    assert_eq!(handshake["source"], "tap", "{}", reports[0]);
    assert_eq!(handshake["status"], 101, "{}", reports[0]);
    assert_eq!(
        handshake["cookie"],
        format!("session={SESSION}").as_str(),
        "the session cookie rides on the handshake: {}",
        reports[0]
    );
    assert_refused(&reports[1], &foreign);
    assert_eq!(
        reports[1]["handshake"]["status"], 403,
        "the foreign page's upgrade is answered 403: {}",
        reports[1]
    );
    assert_log_shows(&server, &allowed, &foreign);
}

#[test]
fn foreign_page_is_refused_at_the_handshake_over_wss() {
    let _one_browser = one_browser_at_a_time();
    let certs = Certificate::self_signed();
    let port = page_port();
    let (allowed, foreign) = (
        format!("https://127.0.0.1:{port}"),
        format!("https://127.0.0.2:{port}"),
    );
    let server = Tetherd::echo(&[
        "--tls-cert",
        &certs.cert,
        "--tls-key",
        &certs.key,
        "--allow-origin",
        &allowed,
    ]);
    let url = format!("wss://{}/", server.addr);

    // The pages are served over https with the same certificate, as a
    // deployment would serve them; Chromium runs with
    // --ignore-certificate-errors to trust it.
    let reports = run_browser(
        &url,
        &[&allowed, &foreign],
        &["--tls-cert", &certs.cert, "--tls-key", &certs.key],
    );

    assert_echoed(&reports[0], &allowed);
    assert_eq!(reports[0]["url"], url.as_str(), "{}", reports[0]);
    assert_refused(&reports[1], &foreign);
    assert_log_shows(&server, &allowed, &foreign);
}

#[test]
fn chromium_negotiates_permessage_deflate_and_round_trips() {
    let _one_browser = one_browser_at_a_time();
    let port = page_port();
    let page = format!("http://127.0.0.1:{port}");
    let server = Tetherd::echo(&["--deflate", "--allow-origin", &page]);
    let text = "a compressible message from Chromium; ".repeat(200);

    // --tap shows the response's extensions and counts the bytes the
    // server sent back, which only compression can make smaller than the echo.
    let reports = run_browser(&server.url(), &[&page], &["--tap", "--msg", &text]);

    let report = &reports[0];
    assert_eq!(report["outcome"], "echoed", "{report}");
    assert_eq!(report["echo"], text.as_str(), "the echo arrives whole");
    assert_eq!(report["close"]["code"], 1000, "{report}");
    let handshake = &report["handshake"];
    let extensions = handshake["extensions"].as_str().unwrap_or_default();
    assert!(
        extensions.starts_with("permessage-deflate"),
        "the server accepted Chromium's offer: {handshake}"
    );
    let server_bytes = handshake["serverBytes"].as_u64().expect("counted");
    assert!(
        server_bytes < text.len() as u64 / 4,
        "the {}-byte echo went out compressed, {server_bytes} bytes in all: {handshake}",
        text.len()
    );
}

/// The page from `origin` opened its socket, got its message back and closed
/// normally.
fn assert_echoed(report: &Value, origin: &str) {
    assert_eq!(report["page"], origin, "{report}");
    assert_eq!(
        report["outcome"], "echoed",
        "the allowed page connects: {report}"
    );
    assert_eq!(report["opened"], true, "{report}");
    assert_eq!(
        report["echo"],
        format!("hello from {origin}").as_str(),
        "{report}"
    );
    assert_eq!(report["close"]["code"], 1000, "{report}");
    assert!(
        report["cookie"]
            .as_str()
            .is_some_and(|cookie| cookie.contains(&format!("session={SESSION}"))),
        "the page holds its session cookie: {report}"
    );
}

/// The page from `origin` saw an error and no open: the handshake failed.
fn assert_refused(report: &Value, origin: &str) {
    assert_eq!(report["page"], origin, "{report}");
    assert_eq!(
        report["outcome"], "error",
        "the foreign page is refused: {report}"
    );
    assert_eq!(report["opened"], false, "never opened: {report}");
    assert_eq!(report["echo"], Value::Null, "{report}");
    assert_eq!(
        report["close"]["code"], 1006,
        "closed abnormally, as browsers report a failed handshake: {report}"
    );
}

/// tetherd served the allowed page (a `connection closed` line with its
/// origin) and logged a 403 `handshake refused` line naming the foreign one.
fn assert_log_shows(server: &Tetherd, allowed: &str, foreign: &str) {
    let (mut served, mut refused) = (false, None);
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(served && refused.is_some()) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let Ok(line) = server.log.recv_timeout(left) else {
            break;
        };
        if line.contains("connection closed") && line.contains(&format!("origin={allowed} ")) {
            served = true;
        }
        if line.contains("handshake refused") {
            assert!(
                !line.contains(&format!("origin {allowed} ")),
                "the allowed origin was refused: {line}"
            );
            if line.contains(&format!("origin {foreign} is not allowed")) {
                refused = Some(line.clone());
            }
        }
        lines.push(line);
    }
    assert!(
        served,
        "no `connection closed` line for {allowed}: {lines:#?}"
    );
    let refused =
        refused.unwrap_or_else(|| panic!("no `handshake refused` line for {foreign}: {lines:#?}"));
    assert!(refused.contains("403"), "{refused}");
}

/// Runs `csws.mjs` against `ws_url` with one `--page` per origin and returns
/// its reports, one per page, in order.
fn run_browser(ws_url: &str, pages: &[&str], extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--ws", ws_url, "--session", SESSION, "--timeout", "30"];
    args.extend(extra);
    for page in pages {
        args.extend(["--page", page]);
    }
    let stdout = run_browser_script("csws.mjs", &args, BROWSER_DEADLINE);
    let reports: Vec<Value> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("csws.mjs prints JSON reports"))
        .collect();
    assert_eq!(
        reports.len(),
        pages.len(),
        "one report per page; stdout:\n{stdout}"
    );
    reports
}

/// A port free on both 127.0.0.1 and 127.0.0.2, for the page servers.
fn page_port() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("binds 127.0.0.1");
        let port = first.local_addr().expect("a local address").port();
        if TcpListener::bind(("127.0.0.2", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// Chromium is heavy for the two-core machines the tests run on: one at a
/// time keeps the per-page timeouts meaningful.
fn one_browser_at_a_time() -> MutexGuard<'static, ()> {
    static BROWSER: Mutex<()> = Mutex::new(());
    BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A self-signed certificate for 127.0.0.1, 127.0.0.2 and localhost, written
/// as PEM files into a directory removed on drop.
struct Certificate {
    dir: PathBuf,
    /// The certificate's PEM file.
    cert: String,
    /// The private key's PEM file.
    key: String,
}

impl Certificate {
    fn self_signed() -> Self {
        let names = ["127.0.0.1", "127.0.0.2", "localhost"].map(str::to_owned);
        let certified = rcgen::generate_simple_self_signed(names.to_vec()).expect("a certificate");
        let dir = std::env::temp_dir().join(format!(
            "tether-browser-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        fs::create_dir_all(&dir).expect("creates the certificate directory");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        fs::write(&cert, certified.cert.pem()).expect("writes cert.pem");
        fs::write(&key, certified.key_pair.serialize_pem()).expect("writes key.pem");
        Self {
            cert: path_str(&cert),
            key: path_str(&key),
            dir,
        }
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("temp paths are UTF-8").to_owned()
}
