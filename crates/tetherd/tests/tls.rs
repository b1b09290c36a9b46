//! `tetherd echo --tls-cert FILE --tls-key FILE`: `wss://` through rustls,
//! and certificate reloads on SIGHUP that leave open connections alone.

mod common;

use std::{
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use rustls::{RootCertStore, pki_types::CertificateDer};
use tether::{ClientConfig, MaybeTls, Message, WebSocket};
use tokio::time::timeout;

use common::Tetherd;

const LIMIT: Duration = Duration::from_secs(30);

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tetherd-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn cert(&self) -> PathBuf {
        self.0.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.0.join("key.pem")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, with a fresh key.
struct Cert {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Cert {
    fn generate() -> Self {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        Self {
            der: certified.cert.der().clone(),
            cert_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
        }
    }

    fn write_to(&self, dir: &TempDir) {
        std::fs::write(dir.cert(), &self.cert_pem).unwrap();
        std::fs::write(dir.key(), &self.key_pem).unwrap();
    }

    /// A client that trusts only this certificate. Each call builds a new
    /// rustls config, so no session from an earlier connection is resumed
    /// (a resumed session skips the certificate check).
    fn client(&self) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut config = ClientConfig::default();
        config.tls = Some(Arc::new(tls));
        config
    }
}

/// Starts `tetherd echo` serving `cert`, written to `dir`.
fn start(dir: &TempDir, cert: &Cert) -> Tetherd {
    cert.write_to(dir);
    let (cert, key) = (dir.cert(), dir.key());
    Tetherd::echo(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
}

fn wss_url(server: &Tetherd) -> String {
    format!("wss://localhost:{}/", server.addr.port())
}

async fn connect(
    server: &Tetherd,
    config: &ClientConfig,
) -> Result<WebSocket<MaybeTls>, tether::Error> {
    let (ws, _) = timeout(LIMIT, tether::connect_with(&wss_url(server), config))
        .await
        .expect("the handshake ends")?;
    Ok(ws)
}

async fn assert_echoes(ws: &mut WebSocket<MaybeTls>, label: &str) {
    let binary = Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<_>>());
    for message in [Message::text(label.to_owned()), Message::Binary(binary)] {
        ws.send(message.clone()).await.expect("sends");
        let echoed = timeout(LIMIT, ws.recv())
            .await
            .expect("an echo in time")
            .expect("the connection is open")
            .expect("an echo");
        assert_eq!(echoed, message, "{label}");
    }
}

/// Sends SIGHUP to the server.
fn hang_up(server: &Tetherd) {
    let pid = libc::pid_t::try_from(server.pid()).unwrap();
    // SAFETY: kill(2) takes plain integers; the pid is our own child, which
    // `Tetherd` keeps alive (unreaped) until it is dropped.
    let sent = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(sent, 0, "kill: {}", std::io::Error::last_os_error());
}

#[tokio::test]
async fn wss_round_trips_and_same_origin_expects_https() {
    let dir = TempDir::new("round-trip");
    let cert = Cert::generate();
    let server = start(&dir, &cert);
    let mut ws = connect(&server, &cert.client()).await.expect("connects");
    assert_echoes(&mut ws, "over TLS").await;
    ws.close(tether::CloseCode::NORMAL, "done").await.unwrap();

    let port = server.addr.port();
    let mut https = cert.client();
    https
        .headers
        .push(("Origin".into(), format!("https://localhost:{port}")));
    let mut ws = connect(&server, &https)
        .await
        .expect("same origin over https");
    assert_echoes(&mut ws, "https origin").await;
    let mut http = cert.client();
    http.headers
        .push(("Origin".into(), format!("http://localhost:{port}")));
    assert!(connect(&server, &http).await.is_err());
    let line = server
        .wait_for_log("handshake refused", LIMIT)
        .expect("the refusal is logged");
    assert!(line.contains("403"), "{line}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = TempDir::new("reload");
    let old = Cert::generate();
    let server = start(&dir, &old);
    let mut open = connect(&server, &old.client()).await.expect("connects");
    assert_echoes(&mut open, "before the reload").await;

    let new = Cert::generate();
    new.write_to(&dir);
    hang_up(&server);
    let line = server
        .wait_for_log("TLS certificate reloaded", LIMIT)
        .expect("the reload is logged");
    assert!(line.contains(dir.cert().to_str().unwrap()), "{line}");

    assert_echoes(&mut open, "open across the reload").await;
    let mut fresh = connect(&server, &new.client())
        .await
        .expect("new handshakes get the new certificate");
    assert_echoes(&mut fresh, "after the reload").await;
    let stale = connect(&server, &old.client())
        .await
        .expect_err("the old certificate is still served");
    assert!(stale.to_string().contains("certificate"), "{stale}");
    assert_echoes(&mut open, "still open").await;
}

#[tokio::test]
async fn a_broken_reload_keeps_the_previous_certificate() {
    let dir = TempDir::new("broken");
    let old = Cert::generate();
    let server = start(&dir, &old);
    let mut open = connect(&server, &old.client()).await.expect("connects");

    std::fs::write(dir.cert(), "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    hang_up(&server);
    let line = server
        .wait_for_log("reload failed", LIMIT)
        .expect("the failed reload is logged");
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(dir.cert().to_str().unwrap()), "{line}");
    let mut ws = connect(&server, &old.client())
        .await
        .expect("the previous certificate is still served");
    assert_echoes(&mut ws, "after a broken file").await;

    // A certificate whose key is not the one in --tls-key.
    let other = Cert::generate();
    std::fs::write(dir.cert(), &other.cert_pem).unwrap();
    hang_up(&server);
    let line = server
        .wait_for_log("reload failed", LIMIT)
        .expect("the failed reload is logged");
    assert!(line.contains("does not match"), "{line}");
    assert!(line.contains(dir.key().to_str().unwrap()), "{line}");
    let refused = connect(&server, &other.client())
        .await
        .expect_err("the mismatched certificate is served");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    let mut ws = connect(&server, &old.client())
        .await
        .expect("the previous certificate is still served");
    assert_echoes(&mut ws, "after a mismatched key").await;
    assert_echoes(&mut open, "open all along").await;
}

#[test]
fn startup_refuses_unusable_files_naming_them() {
    let dir = TempDir::new("startup");
    let cert = Cert::generate();
    std::fs::write(dir.cert(), &cert.cert_pem).unwrap();
    let (cert_path, key_path) = (dir.cert(), dir.key());
    let (cert_arg, key_arg) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());
    let tetherd = |args: &[&str]| {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_tetherd"))
            .args(["echo", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("tetherd runs");
        assert!(started.elapsed() < LIMIT);
        assert!(!output.status.success(), "{args:?} started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    let stderr = tetherd(&["--tls-cert", cert_arg, "--tls-key", key_arg]);
    assert!(stderr.contains(&format!("--tls-key {key_arg}")), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");

    std::fs::write(dir.key(), "").unwrap();
    let stderr = tetherd(&["--tls-cert", cert_arg, "--tls-key", key_arg]);
    assert!(stderr.contains(key_arg), "{stderr}");
    assert!(stderr.contains("no PEM"), "{stderr}");

    std::fs::write(dir.key(), Cert::generate().key_pem).unwrap();
    let stderr = tetherd(&["--tls-cert", cert_arg, "--tls-key", key_arg]);
    assert!(stderr.contains(key_arg), "{stderr}");
    assert!(stderr.contains("does not match"), "{stderr}");

    let stderr = tetherd(&["--tls-cert", key_arg, "--tls-key", key_arg]);
    assert!(
        stderr.contains(&format!("--tls-cert {key_arg}")),
        "{stderr}"
    );

    let stderr = tetherd(&["--tls-cert", cert_arg]);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[tokio::test]
async fn plain_client_on_the_tls_port_fails_and_the_server_keeps_serving() {
    let dir = TempDir::new("plain");
    let cert = Cert::generate();
    let server = start(&dir, &cert);
    let plain = timeout(LIMIT, tether::connect(&server.url()))
        .await
        .expect("the plain client gives up in time");
    assert!(plain.is_err(), "a ws:// upgrade succeeded on the TLS port");
    let line = server
        .wait_for_log("TLS handshake failed", LIMIT)
        .expect("the failure is logged");
    assert!(line.contains("127.0.0.1"), "{line}");
    let mut ws = connect(&server, &cert.client()).await.expect("connects");
    assert_echoes(&mut ws, "after a plain client").await;
}

#[test]
fn the_tls_handshake_counts_against_the_handshake_timeout() {
    use std::io::Read;

    let dir = TempDir::new("timeout");
    let cert = Cert::generate();
    cert.write_to(&dir);
    let (cert_path, key_path) = (dir.cert(), dir.key());
    let server = Tetherd::echo(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
        "--handshake-timeout",
        "1",
    ]);
    // Connects and never starts TLS.
    let mut tcp = std::net::TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    let started = Instant::now();
    let read = tcp.read(&mut [0; 64]);
    assert!(matches!(read, Ok(0)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let line = server
        .wait_for_log("handshake failed", LIMIT)
        .expect("the timeout is logged");
    assert!(line.contains("timed out"), "{line}");
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503_over_tls() {
    let dir = TempDir::new("cap");
    let cert = Cert::generate();
    cert.write_to(&dir);
    let (cert_path, key_path) = (dir.cert(), dir.key());
    let server = Tetherd::echo(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
        "--max-connections-per-ip",
        "1",
    ]);
    let mut first = connect(&server, &cert.client()).await.expect("connects");
    let refused = connect(&server, &cert.client())
        .await
        .expect_err("over the cap");
    assert!(refused.to_string().contains("503"), "{refused}");
    assert_echoes(&mut first, "under the cap").await;
}
