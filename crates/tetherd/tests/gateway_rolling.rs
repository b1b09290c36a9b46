//! A rolling restart under load loses nothing: nginx (running the shipped
//! `deploy/nginx.conf`) in front of two gateway nodes that share a real
//! `redis-server`; 1,000 `centrifuge` SDK clients subscribed through nginx
//! to a channel with history and recovery; a publisher sending numbered
//! messages through nginx's `/api` at a steady rate. Node A gets SIGTERM,
//! drains and is started again on its port, then node B. Every client must
//! end with every number exactly once and in order; the test prints the lost,
//! duplicated and reordered counts (all zero) and the distribution of the
//! time from losing the connection to being subscribed again.
//!
//! The clients are `clients/sdk-tests/rolling.mjs subscribers` (a few Node
//! processes), the publisher is `rolling.mjs publisher`.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use common::{Nginx, RedisServer, Tetherd, free_port, read_to_end, sdk_dir};
use serde_json::Value;

const CLIENTS: usize = 1_000;
/// Node processes the clients are spread over.
const PROCESSES: usize = 4;
/// Publications per second.
const RATE: u32 = 30;
const CHANNEL: &str = "rolling:ticks";
const API_KEY: &str = "rolling-test-api-key-0123456789";

/// History long enough for the whole run, so every reconnecting client can
/// recover; a short drain deadline, although clients leave at once.
const CONFIG: &str = r#"
[auth]
api_key = "rolling-test-api-key-0123456789"
token_hmac_secret = "rolling-test-hmac-secret-0123456789abcdef"

[drain]
deadline = "15s"

[[namespace]]
name = "rolling"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_history_for_subscriber = true
allow_history_for_anonymous = true
history_size = 10000
history_ttl = "10m"
recovery = true
"#;

/// A generous bound for each step; nothing here is a timing assertion.
const STEP: Duration = Duration::from_secs(120);

#[test]
fn rolling_restart_behind_nginx_loses_nothing() {
    let redis = RedisServer::start();
    let ports = [free_port(), free_port()];
    assert_ne!(ports[0], ports[1]);
    let start_node = |port: u16| {
        Tetherd::gateway_on(
            &format!("127.0.0.1:{port}"),
            CONFIG,
            &["--broker", &redis.url()],
        )
    };
    let mut nodes = ports.map(start_node);
    let nginx_port = free_port();
    let nginx = Nginx::shipped(nginx_port, ports);
    let ws_url = format!("ws://127.0.0.1:{nginx_port}/connection/websocket");
    let http_url = format!("http://127.0.0.1:{nginx_port}");

    let per_process = CLIENTS / PROCESSES;
    let mut subscribers: Vec<Script> = (0..PROCESSES)
        .map(|_| {
            Script::start(&[
                "subscribers",
                "--ws",
                &ws_url,
                "--channel",
                CHANNEL,
                "--clients",
                &per_process.to_string(),
                // Quick reconnects, so the distribution shows the servers
                // rather than the SDK's backoff (first retry after 100-200 ms).
                "--min-delay",
                "100",
                "--max-delay",
                "1000",
            ])
        })
        .collect();
    for subscriber in &mut subscribers {
        subscriber.expect_line("subscribed ", STEP);
    }
    let spread = nodes.each_ref().map(clients_on);
    println!("clients per node through nginx: {spread:?}");
    assert!(
        spread.iter().all(|&clients| clients > 0),
        "nginx spreads clients over both nodes: {spread:?}"
    );

    let mut publisher = Script::start(&[
        "publisher",
        "--http",
        &http_url,
        "--api-key",
        API_KEY,
        "--channel",
        CHANNEL,
        "--rate",
        &RATE.to_string(),
    ]);
    publisher.expect_line("published 1", STEP);
    let publishing = std::time::Instant::now();
    thread::sleep(Duration::from_secs(2));

    // The shipped nginx.conf has no passive health checks (max_fails=0), so a
    // restarted node takes clients as soon as it listens; the pause lets the
    // clients that reconnected settle before the next node stops.
    let rejoin = Duration::from_secs(2);
    for (index, port) in ports.into_iter().enumerate() {
        let name = ["A", "B"][index];
        let status = nodes[index]
            .terminate(STEP)
            .unwrap_or_else(|| panic!("node {name} still running {STEP:?} after SIGTERM"));
        assert!(status.success(), "node {name} exited with {status}");
        println!("node {name} drained and exited; starting it again on port {port}");
        nodes[index] = start_node(port);
        thread::sleep(rejoin);
    }

    publisher.send("stop");
    let last = publisher.expect_line("last ", STEP);
    let (last, failures) = parse_last(&last);
    eprint!("{}", publisher.stderr());
    println!(
        "published 1..={last} in {:.1} s (aimed at {RATE}/s); {failures} publish attempts failed \
         and were settled through history",
        publishing.elapsed().as_secs_f64()
    );
    assert!(last > 0, "the publisher published");

    let mut total = Summary::default();
    for subscriber in &mut subscribers {
        subscriber.send(&format!("expect {last}"));
        let line = subscriber.expect_line("{", STEP);
        let summary: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("a JSON summary: {line}"));
        total.add(&summary);
    }
    println!(
        "rolling restart: {} clients, {} numbers each: lost {}, duplicated {}, reordered {}, \
         outside 1..={last} {}, incomplete {}, resubscribes without recovery {}",
        total.clients,
        last,
        total.lost,
        total.duplicated,
        total.reordered,
        total.extra,
        total.incomplete,
        total.unrecovered
    );
    for (what, times) in [
        ("connected", &mut total.connects),
        ("subscribed with recovery", &mut total.reconnects),
    ] {
        times.sort_unstable();
        println!(
            "connection lost -> {what}, {} reconnects: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            times.len(),
            percentile(times, 50),
            percentile(times, 90),
            percentile(times, 99),
            times.last().copied().unwrap_or(0)
        );
    }
    let retried = nginx
        .error_log()
        .lines()
        .filter(|line| line.contains("while connecting to upstream"))
        .count();
    println!("nginx: {retried} handshakes or calls retried on the other node");

    let problems = (total.lost, total.duplicated, total.reordered, total.extra);
    assert!(
        problems == (0, 0, 0, 0) && total.incomplete == 0 && total.unrecovered == 0,
        "lost, duplicated, reordered, foreign: {problems:?}; incomplete clients {}, \
         resubscribes without recovery {}; missing numbers (number: clients) {:?}; examples:\n{}",
        total.incomplete,
        total.unrecovered,
        total.missing,
        serde_json::to_string_pretty(&total.problems).unwrap_or_default()
    );
    assert_eq!(
        total.not_reconnected, 0,
        "every client was moved by the restarts (all were on node B when it stopped)"
    );
    assert_eq!(total.clients, CLIENTS);
}

/// Clients connected to `node`, from its `/api/info`.
fn clients_on(node: &Tetherd) -> u64 {
    let body = "{}";
    let mut tcp = TcpStream::connect(node.addr).expect("the node accepts");
    tcp.set_read_timeout(Some(STEP)).expect("a read timeout");
    write!(
        tcp,
        "POST /api/info HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("the request is sent");
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let info: Value =
        serde_json::from_str(json).unwrap_or_else(|_| panic!("a JSON answer: {response}"));
    info["result"]["nodes"][0]["num_clients"]
        .as_u64()
        .unwrap_or_else(|| panic!("num_clients in {info}"))
}

/// `last N failures F` -> (N, F)
fn parse_last(line: &str) -> (u64, u64) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["last", last, "failures", failures] => (
            last.parse().expect("a number"),
            failures.parse().expect("a number"),
        ),
        _ => panic!("unexpected publisher line: {line}"),
    }
}

/// The `p`th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// The subscriber processes' summaries, added up.
#[derive(Default)]
struct Summary {
    clients: usize,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    extra: u64,
    incomplete: u64,
    unrecovered: u64,
    not_reconnected: u64,
    /// Milliseconds from losing the connection to connected again.
    connects: Vec<u64>,
    /// Milliseconds from losing the connection to subscribed again.
    reconnects: Vec<u64>,
    /// Number -> how many clients lack it (among each one's first few gaps).
    missing: std::collections::BTreeMap<u64, u64>,
    problems: Vec<Value>,
}

impl Summary {
    fn add(&mut self, summary: &Value) {
        let count = |key: &str| {
            summary[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{key} in {summary}"))
        };
        self.clients += count("clients") as usize;
        self.lost += count("lost");
        self.duplicated += count("duplicated");
        self.reordered += count("reordered");
        self.extra += count("extra");
        self.incomplete += count("incomplete");
        self.unrecovered += count("unrecovered");
        self.not_reconnected += count("notReconnected");
        for (key, times) in [
            ("connects", &mut self.connects),
            ("reconnects", &mut self.reconnects),
        ] {
            let values = summary[key].as_array().unwrap_or_else(|| panic!("{key}"));
            times.extend(values.iter().filter_map(Value::as_u64));
        }
        if let Some(missing) = summary["missing"].as_object() {
            for (number, clients) in missing {
                *self.missing.entry(number.parse().unwrap_or(0)).or_default() +=
                    clients.as_u64().unwrap_or(0);
            }
        }
        if let Some(problems) = summary["problems"].as_array() {
            self.problems.extend(problems.iter().cloned());
        }
    }
}

/// A `rolling.mjs` process: commands on stdin, lines from stdout; stderr is
/// kept for the failure message. Killed on drop.
struct Script {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Script {
    fn start(args: &[&str]) -> Self {
        let dir = sdk_dir();
        let mut child = Command::new("node")
            .arg(dir.join("rolling.mjs"))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs (is Node.js installed?)");
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = Some(read_to_end(child.stderr.take().expect("stderr is piped")));
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// Everything the script wrote to stderr, once it has exited.
    fn stderr(&mut self) -> String {
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|stderr| stderr.join().ok())
            .unwrap_or_default()
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("the script reads its stdin");
    }

    /// The next stdout line starting with `prefix`; panics with the
    /// script's stderr if it does not come within `timeout`.
    fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let stderr = self.stderr();
        panic!("no `{prefix}` line from rolling.mjs within {timeout:?}; its stderr:\n{stderr}");
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
