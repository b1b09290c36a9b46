//! The gateway's pages in a real browser: the demo page at `/` connects and
//! shows what the HTTP API publishes into `demo:chat` and `demo:ticker`, and
//! the dashboard at `/admin` signs in with the API key and shows the node.
//!
//! Debian's Chromium is driven by `clients/browser-tests/demo.mjs`. Needs
//! `node`, `clients/browser-tests/node_modules` and `/usr/bin/chromium` (or
//! `$CHROMIUM`); `bash scripts/test.sh` installs them.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::{Tetherd, run_browser_script};

const API_KEY: &str = "pages-api-key-0123456789";

/// The built-in namespaces (the demo's among them) stay: none is listed.
const CONFIG: &str = r#"
[auth]
api_key = "pages-api-key-0123456789"
token_hmac_secret = "pages-hmac-secret-0123456789abcdef0123"
"#;

/// How long the whole browser run may take.
const BROWSER_DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn demo_page_shows_api_publications_and_dashboard_shows_the_node() {
    let server = Tetherd::gateway(CONFIG, &[]);
    let logo = server.http("GET", "/tether.svg", "", "");
    assert!(
        logo.starts_with("HTTP/1.1 200") && logo.contains("image/svg+xml") && logo.contains("<svg"),
        "both pages' logo: {logo}"
    );

    let report = run_demo(&server.http_url());

    assert_eq!(report["waits"], serde_json::json!([]), "{report:#}");
    let demo = &report["demo"];
    assert_eq!(demo["state"], "state connected", "{report:#}");
    assert!(
        demo["presence"]
            .as_str()
            .unwrap_or_default()
            .contains("1 online"),
        "{report:#}"
    );
    assert!(
        demo["messages"].as_array().is_some_and(|messages| messages
            .iter()
            .any(|m| m["who"] == "api" && m["text"] == "hello from the API")),
        "the chat message shows: {report:#}"
    );
    assert_eq!(demo["symbol"], "TTHR", "{report:#}");
    assert_eq!(demo["price"], "42.50", "{report:#}");
    let latest: Value = serde_json::from_str(demo["latest"].as_str().unwrap_or_default())
        .unwrap_or_else(|_| panic!("the latest publication shows as JSON: {report:#}"));
    assert_eq!(
        latest,
        serde_json::json!({"symbol": "TTHR", "price": 42.5}),
        "{report:#}"
    );

    let admin = &report["admin"];
    assert_eq!(admin["loginHidden"], true, "signed in: {report:#}");
    assert_eq!(admin["nodes"], "1", "{report:#}");
    assert_eq!(admin["nodesMeta"], "1 node", "{report:#}");
    assert_eq!(
        report["errors"],
        serde_json::json!([]),
        "no console errors: {report:#}"
    );
}

/// Runs `demo.mjs` against the gateway at `base` and returns its report.
fn run_demo(base: &str) -> Value {
    let args = ["--base", base, "--api-key", API_KEY, "--timeout", "30"];
    let stdout = run_browser_script("demo.mjs", &args, BROWSER_DEADLINE);
    let report = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no report; stdout:\n{stdout}"));
    serde_json::from_str(report).expect("demo.mjs prints a JSON report")
}
