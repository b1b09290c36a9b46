//! Starts real `tetherd` processes and third-party peers for the tests.

#![allow(dead_code, unreachable_pub)] // each test binary uses part of this module

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, ChildStderr, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

/// A `tetherd echo` child process, killed on drop.
pub struct Tetherd {
    child: Child,
    pub addr: SocketAddr,
    /// Log lines the server wrote after start-up.
    pub log: mpsc::Receiver<String>,
}

impl Tetherd {
    /// Starts `tetherd echo` on a free loopback port with extra `args`.
    pub fn echo(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tetherd"))
            .args(["echo", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tetherd starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (addr, log) = follow_log(stderr);
        Self { child, addr, log }
    }

    /// Starts the gateway (`tetherd serve`) on a free loopback port with
    /// the TOML `config` (written to a temporary file) and extra `args`.
    pub fn gateway(config: &str, args: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tetherd-test-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tether.toml");
        std::fs::write(&path, config).expect("config written");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tetherd"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tetherd starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (addr, log) = follow_log(stderr);
        Self { child, addr, log }
    }

    /// `http://ADDR`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://ADDR/connection/websocket`
    pub fn gateway_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit;
    /// returns its exit status, or `None` if it is still running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id, to send it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://ADDR/`
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Waits up to `timeout` for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Tetherd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A number unique within this test process.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Reads the server's stderr on a thread: returns the address from the
/// "listening" line and a channel of the lines after it.
fn follow_log(stderr: ChildStderr) -> (SocketAddr, mpsc::Receiver<String>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (log_tx, log_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut addr_tx = Some(addr_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(tx) = addr_tx.as_ref() {
                if let Some(addr) = line.split("listen=").nth(1) {
                    let addr = addr.split_whitespace().next().unwrap_or_default();
                    if let Ok(addr) = addr.parse::<SocketAddr>() {
                        let _ = tx.send(addr);
                        addr_tx = None;
                        continue;
                    }
                }
            }
            let _ = log_tx.send(line);
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("tetherd printed its listening address");
    (addr, log_rx)
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python interpreter with the interop requirements installed:
/// `TETHER_PYTHON`, or the venv `bash interop/setup.sh` makes.
pub fn python() -> PathBuf {
    let python = std::env::var_os("TETHER_PYTHON").map_or_else(
        || PathBuf::from("/tmp/interop-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "{} is missing: run `bash interop/setup.sh` (the test command does) or set TETHER_PYTHON",
        python.display()
    );
    python
}

/// The directory of the Node peer, with its `node_modules` installed.
pub fn node_dir() -> PathBuf {
    let dir = repo_root().join("interop/node");
    assert!(
        dir.join("node_modules/ws").exists(),
        "interop/node/node_modules is missing: run `bash interop/setup.sh` (the test command does)"
    );
    dir
}

/// A third-party peer program: Python `websockets` or Node `ws`.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Python,
    Node,
}

impl Peer {
    pub fn command(self) -> Command {
        match self {
            Self::Python => {
                let mut command = Command::new(python());
                command.arg(repo_root().join("interop/python/peer.py"));
                command
            }
            Self::Node => {
                let mut command = Command::new("node");
                command.arg(node_dir().join("peer.mjs"));
                command
            }
        }
    }
}

/// A peer running as a server, killed on drop.
pub struct PeerServer {
    child: Child,
    pub port: u16,
}

impl PeerServer {
    pub fn start(peer: Peer) -> Self {
        let mut child = peer
            .command()
            .args(["server", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("peer server starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("listening ") {
                    let _ = tx.send(port.trim().parse::<u16>());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("peer server printed `listening PORT`")
            .expect("a port number");
        Self { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` on a free loopback port, without persistence; killed on
/// drop. Fails clearly when Redis is not installed (the test command
/// installs it).
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server ({error}): run `bash scripts/test.sh`, which installs it")
            });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What to do when the browser test tools are missing.
pub const BROWSER_INSTALL_HINT: &str = "run `bash scripts/test.sh`, which installs them \
     (apt: chromium; npm: `npm ci` in clients/browser-tests)";

/// `clients/browser-tests`, after checking that playwright-core and
/// Chromium (`/usr/bin/chromium`, or `$CHROMIUM`) are installed.
pub fn browser_dir() -> PathBuf {
    let dir = repo_root().join("clients/browser-tests");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "{} is missing: {BROWSER_INSTALL_HINT}",
        dir.join("node_modules/playwright-core").display()
    );
    let chromium = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        chromium.exists(),
        "{} is missing: {BROWSER_INSTALL_HINT}",
        chromium.display()
    );
    dir
}

/// Reads a pipe to its end on a thread.
pub fn read_to_end(mut pipe: impl std::io::Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}
