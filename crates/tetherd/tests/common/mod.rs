//! Starts real `tetherd` processes and third-party peers for the tests.

#![allow(dead_code, unreachable_pub)] // each test binary uses part of this module

pub mod protocol;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, ChildStderr, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

/// A `tetherd echo` child process, killed on drop.
pub struct Tetherd {
    child: Child,
    pub addr: SocketAddr,
    /// Log lines the server wrote after start-up.
    pub log: mpsc::Receiver<String>,
    /// The same lines, all kept.
    lines: Arc<Mutex<Vec<String>>>,
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
        let (addr, log, lines) = follow_log(stderr);
        Self {
            child,
            addr,
            log,
            lines,
        }
    }

    /// Starts the gateway (`tetherd serve`) on a free loopback port with
    /// the TOML `config` (written to a temporary file) and extra `args`.
    pub fn gateway(config: &str, args: &[&str]) -> Self {
        Self::gateway_on("127.0.0.1:0", config, args)
    }

    /// Starts the gateway on `listen` (e.g. the port of a node that is
    /// being restarted), otherwise like [`Tetherd::gateway`].
    pub fn gateway_on(listen: &str, config: &str, args: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tetherd-test-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tether.toml");
        std::fs::write(&path, config).expect("config written");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tetherd"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .args(["--listen", listen])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tetherd starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (addr, log, lines) = follow_log(stderr);
        Self {
            child,
            addr,
            log,
            lines,
        }
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

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id, to send it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://ADDR/`
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The response to one HTTP/1.1 request (`Connection: close`) for
    /// `path`, with `X-API-Key: key` and `body` when a body is given.
    pub fn http(&self, method: &str, path: &str, key: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(self.addr).expect("connects");
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("sets a timeout");
        write!(
            tcp,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nX-API-Key: {key}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("writes the request");
        let mut response = String::new();
        let _ = tcp.read_to_string(&mut response);
        response
    }

    /// The value of an unlabelled metric at `/metrics` (`tether_` + `name`).
    pub fn metric(&self, name: &str) -> u64 {
        let response = self.http("GET", "/metrics", "", "");
        let prefix = format!("tether_{name} ");
        response
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}in /metrics:\n{response}"))
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

impl Tetherd {
    /// Like [`Tetherd::wait_for_log`], without blocking the runtime.
    pub async fn wait_for_log_async(&self, needle: &str) -> Option<String> {
        loop {
            match self.log.try_recv() {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(mpsc::TryRecvError::Disconnected) => return None,
            }
        }
    }

    /// Every log line after the listening line, so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
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
/// "listening" line (text or JSON), a channel of the lines after it, and a
/// list that keeps them all.
fn follow_log(
    stderr: ChildStderr,
) -> (SocketAddr, mpsc::Receiver<String>, Arc<Mutex<Vec<String>>>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (log_tx, log_rx) = mpsc::channel();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    thread::spawn(move || {
        let mut addr_tx = Some(addr_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(tx) = addr_tx.as_ref() {
                if let Some(addr) = listening_address(&line) {
                    let _ = tx.send(addr);
                    addr_tx = None;
                    continue;
                }
            }
            kept.lock().unwrap().push(line.clone());
            let _ = log_tx.send(line);
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("tetherd printed its listening address");
    (addr, log_rx, lines)
}

/// The address in a "listening" log line: `listen=ADDR` as text,
/// `"listen":"ADDR"` as JSON.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let text = line
        .split("listen=")
        .nth(1)
        .map(|rest| rest.split_whitespace().next().unwrap_or_default());
    let json = line
        .split("\"listen\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next());
    text.or(json)?.parse().ok()
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
        Self::start_on(free_port(), &[])
    }

    /// Starts on `port` with extra `args`; returns once it accepts.
    fn start_on(port: u16, args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(args)
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

    /// Kills the server; what it held is gone (no persistence).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.stop();
        *self = Self::start_on(self.port, &[]);
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server; returns its output (`--raw`).
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli runs (Debian: redis-tools, installed with redis-server)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A local Redis Cluster of `masters` masters without replicas, each a
/// `redis-server` on free loopback ports (client and cluster bus), made
/// with `redis-cli --cluster create`; killed on drop.
pub struct RedisCluster {
    pub masters: Vec<RedisServer>,
    dir: PathBuf,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tether-redis-cluster-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).expect("cluster temp dir");
        let masters: Vec<RedisServer> = (0..masters)
            .map(|i| {
                let bus = free_port();
                let config_file = dir.join(format!("nodes-{i}.conf"));
                RedisServer::start_on(
                    free_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        &bus.to_string(),
                        "--cluster-config-file",
                        &config_file.display().to_string(),
                        "--dir",
                        &dir.display().to_string(),
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = masters
            .iter()
            .map(|master| format!("127.0.0.1:{}", master.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs (Debian: redis-tools, installed with redis-server)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Self { masters, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !cluster.masters.iter().all(|master| {
            master
                .cli(&["cluster", "info"])
                .contains("cluster_state:ok")
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "the Redis Cluster did not reach cluster_state:ok"
            );
            thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .masters
            .iter()
            .map(|master| format!("127.0.0.1:{}", master.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for master in &mut self.masters {
            master.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `node SCRIPT ARGS` in `clients/browser-tests` (see
/// [`browser_dir`]), killing it after `deadline`; returns its stdout once it
/// exited successfully.
pub fn run_browser_script(script: &str, args: &[&str], deadline: Duration) -> String {
    let dir = browser_dir();
    let mut child = Command::new("node")
        .current_dir(&dir)
        .arg(dir.join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run `node` ({error}): {BROWSER_INSTALL_HINT}"));
    let stdout = read_to_end(child.stdout.take().expect("stdout is piped"));
    let stderr = read_to_end(child.stderr.take().expect("stderr is piped"));
    let give_up = std::time::Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits for node") {
            break status;
        }
        if std::time::Instant::now() > give_up {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{script} ran past {deadline:?}; stderr:\n{}",
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
        status.success(),
        "{script} failed ({status}); stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
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

/// A free loopback port, for a server that must come back on the same port
/// after a restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// nginx in the foreground with a complete `nginx.conf` text, every file it
/// writes (pid, logs, temp files) inside its own temporary directory, so it
/// needs no root-owned paths; stopped on drop.
pub struct Nginx {
    child: Child,
    pub dir: PathBuf,
}

impl Nginx {
    /// Starts the shipped `deploy/nginx.conf` on 127.0.0.1:`port`, in front of
    /// the gateway nodes on the loopback `nodes` ports.
    pub fn shipped(port: u16, nodes: [u16; 2]) -> Self {
        let config = substitute(
            &deploy_file("nginx.conf"),
            &[
                (
                    "server 10.0.0.1:8000 ",
                    &format!("server 127.0.0.1:{} ", nodes[0]),
                ),
                (
                    "server 10.0.0.2:8000 ",
                    &format!("server 127.0.0.1:{} ", nodes[1]),
                ),
                ("listen 80;", &format!("listen 127.0.0.1:{port};")),
            ],
        );
        Self::start(&config, port)
    }

    /// Starts nginx with `config`, which must contain an `http {` block and
    /// listen on 127.0.0.1:`port`; returns once the port accepts.
    pub fn start(config: &str, port: u16) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tether-nginx-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).expect("nginx temp dir");
        let paths = [
            "access_log",
            "client_body_temp_path",
            "proxy_temp_path",
            "fastcgi_temp_path",
            "uwsgi_temp_path",
            "scgi_temp_path",
        ]
        .map(|directive| format!("    {directive} {};\n", dir.join(directive).display()))
        .concat();
        assert!(config.contains("http {\n"), "an nginx.conf with `http {{`");
        let config = config.replacen("http {\n", &format!("http {{\n{paths}"), 1);
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).expect("nginx.conf written");
        let error_log = dir.join("error.log");
        let globals = format!(
            "daemon off; pid {}; error_log {} info;",
            dir.join("nginx.pid").display(),
            error_log.display()
        );
        let mut command = Command::new("nginx");
        command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .args(["-g", &globals]);
        let child = start_listening("nginx", command, port, || {
            std::fs::read_to_string(&error_log).unwrap_or_default()
        });
        Self { child, dir }
    }

    /// nginx's error log so far (proxying errors, upstreams marked down).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master stops its workers on the way out.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `haproxy -db` (foreground) with the shipped `deploy/haproxy.cfg` on
/// 127.0.0.1:`port` in front of the loopback `nodes`; killed on drop.
pub struct HaProxy {
    child: Child,
}

impl HaProxy {
    /// Starts the shipped config, with `server_options` added to both
    /// server lines (e.g. `send-proxy-v2 check-send-proxy`).
    pub fn shipped(port: u16, nodes: [u16; 2], server_options: &str) -> Self {
        let config = substitute(
            &deploy_file("haproxy.cfg"),
            &[
                (
                    "10.0.0.1:8000 check",
                    &format!("127.0.0.1:{} check {server_options}", nodes[0]),
                ),
                (
                    "10.0.0.2:8000 check",
                    &format!("127.0.0.1:{} check {server_options}", nodes[1]),
                ),
                ("bind :80", &format!("bind 127.0.0.1:{port}")),
                // The test may run unprivileged, without a syslog socket,
                // and with a lower descriptor limit than a server.
                ("    chroot /var/lib/haproxy\n", ""),
                ("    user haproxy\n", ""),
                ("    group haproxy\n", ""),
                ("log /dev/log local0", "log stderr format raw local0"),
                ("maxconn 100000", "maxconn 1000"),
            ],
        );
        let path = std::env::temp_dir().join(format!(
            "tether-haproxy-{}-{}.cfg",
            std::process::id(),
            unique()
        ));
        std::fs::write(&path, config).expect("haproxy.cfg written");
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&path);
        let child = start_listening("haproxy", command, port, String::new);
        Self { child }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` (a proxy called `name`) and waits until it listens on
/// 127.0.0.1:`port`; panics with its stderr and `log()` if it exits first.
fn start_listening(name: &str, mut command: Command, port: u16, log: impl Fn() -> String) -> Child {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot start {name} ({error}): run `bash scripts/test.sh`, which installs it")
        });
    let stderr = read_to_end(child.stderr.take().expect("stderr is piped"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name} exited ({status}): {}\n{}",
                stderr.join().unwrap_or_default(),
                log()
            );
        }
        assert!(std::time::Instant::now() < deadline, "{name} did not start");
        thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Runs a Node script of the SDK drivers (`node` with `args`, in
/// `clients/sdk-tests`) to its end, at most `limit`, and prints what it
/// wrote: its exit status (`None` when killed at the limit), stdout and
/// stderr.
pub fn run_sdk_script<I, S>(
    args: I,
    limit: Duration,
) -> (Option<std::process::ExitStatus>, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let dir = sdk_dir();
    let child = Command::new("node")
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (is Node.js installed?)");
    let (status, stdout, stderr) = run_to_end(child, limit);
    print!("{stdout}");
    eprint!("{stderr}");
    (status, stdout, stderr)
}

/// Runs a child to its end, at most `limit`: its exit status (`None` when
/// it was killed at the limit), stdout and stderr.
pub fn run_to_end(
    mut child: Child,
    limit: Duration,
) -> (Option<std::process::ExitStatus>, String, String) {
    let stdout = read_to_end(child.stdout.take().expect("stdout is piped"));
    let stderr = read_to_end(child.stderr.take().expect("stderr is piped"));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A JWT with `claims`, signed with HS256 and `secret`.
pub fn hs256_token(secret: &str, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("claims serialize")
}

/// The text of `deploy/NAME`.
pub fn deploy_file(name: &str) -> String {
    let path = repo_root().join("deploy").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// `text` with each `(from, to)` replaced; each `from` must occur exactly
/// once (a changed deploy file fails loudly instead of running untested).
pub fn substitute(text: &str, replacements: &[(&str, &str)]) -> String {
    replacements
        .iter()
        .fold(text.to_owned(), |text, (from, to)| {
            assert_eq!(
                text.matches(from).count(),
                1,
                "expected exactly one `{from}` to replace in:\n{text}"
            );
            text.replace(from, to)
        })
}

/// `clients/sdk-tests` (the `centrifuge` npm SDK with `ws`), after checking
/// that its `node_modules` are installed.
pub fn sdk_dir() -> PathBuf {
    let dir = repo_root().join("clients/sdk-tests");
    for package in ["centrifuge", "ws"] {
        assert!(
            dir.join("node_modules").join(package).exists(),
            "clients/sdk-tests/node_modules/{package} is missing: run `bash scripts/test.sh`, \
             which installs them (or `npm ci` in clients/sdk-tests)"
        );
    }
    dir
}
