//! `tether-load echo`: a closed loop against an echo server.
//!
//! Each connection keeps `--inflight` messages outstanding: it sends that
//! many, then one more for every echo it gets back. Every message carries its
//! sequence number and a pattern derived from it, and every echo is compared
//! with what was sent. Latency is measured per message, from the moment it
//! was queued to the moment its echo was decoded.

use std::{
    collections::VecDeque,
    io::{IsTerminal, Write as _},
    ops::Range,
    pin::pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{BufMut, BytesMut};
use hdrhistogram::Histogram;
use tether::{ClientConfig, CloseCode, Limits, Message, TrySendError, Utf8Bytes, WebSocket};
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinSet,
    time::{Instant, sleep_until, timeout},
};

use crate::{
    report::{Cpu, EchoReport, ErrorCounts, latency_histogram},
    spread::{self, Dialer, Target},
    sys,
};

/// How long closing may take once the measured interval is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Latency samples a connection collects before adding them to the shared
/// histogram (so the lock is taken once per this many messages).
const SAMPLE_BATCH: usize = 1024;

/// Payload bytes allocated at once; payloads are carved from it and the
/// allocation is reused once every payload carved from it has been sent.
const ARENA_CHUNK: usize = 64 * 1024;

/// Patterns repeat after this many sequence numbers (a prime, so the pattern
/// shifts by a different amount for each of them).
const PATTERN_PERIOD: usize = 251;

/// Options of `tether-load echo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Echo server to load: ws://HOST[:PORT][/PATH], HOST a loopback address.
    #[arg(long, value_parser = Target::parse)]
    url: Target,
    /// Connections to open.
    #[arg(long, default_value_t = 10)]
    conns: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Messages each connection keeps in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    inflight: u32,
    /// Seconds to measure, after every connection is open.
    #[arg(long, default_value = "10", value_parser = crate::parse_seconds)]
    duration: Duration,
    /// Send text messages instead of binary ones.
    #[arg(long)]
    text: bool,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Also report the CPU time of this (server) process.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections per source address (127.0.0.1, 127.0.0.2, …).
    #[arg(long, default_value_t = spread::DEFAULT_PER_SOURCE, hide = true)]
    per_source: usize,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = spread::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `tether-load echo` and prints its report.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if args.conns == 0 {
        return Err("--conns must be at least 1".into());
    }
    if args.conns > spread::DEFAULT_PER_PROCESS {
        return Err(format!(
            "echo opens at most {} connections (one process); use `idle` for more",
            spread::DEFAULT_PER_PROCESS
        ));
    }
    let threads = args.threads.unwrap_or_else(sys::cores).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    let report = runtime.block_on(echo(&args, threads.min(sys::cores())))?;
    if args.json {
        if report.cpu.saturated() {
            eprintln!(
                "tether-load: warning: it used >= 90% of its cores and may be the bottleneck"
            );
        }
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

async fn echo(args: &Args, cores: usize) -> Result<EchoReport, String> {
    let limits = Limits::default();
    let limits = limits
        .max_frame_size(limits.max_frame_size.max(args.size))
        .max_message_size(limits.max_message_size.max(args.size));
    let config = ClientConfig::default().connection(tether::Config::default().limits(limits));
    let dialer = Dialer::new(
        args.url.clone(),
        config,
        0,
        args.per_source,
        args.concurrency,
    );
    dialer.check_capacity(args.conns)?;
    let dialer = Arc::new(dialer);
    let plan = Arc::new(Plan::new(args.size, args.text));
    let shared = Arc::new(Shared {
        latency: Mutex::new(latency_histogram()),
        messages: AtomicU64::new(0),
    });
    let (go_tx, go_rx) = watch::channel(None);
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for index in 0..args.conns {
        let peer = Peer {
            index,
            plan: plan.clone(),
            shared: shared.clone(),
            inflight: args.inflight as usize,
        };
        tasks.spawn(peer.run(dialer.clone(), opened_tx.clone(), go_rx.clone()));
    }
    drop(opened_tx);

    let mut opened = 0;
    let mut connect_errors = ErrorCounts::new();
    while let Some(result) = opened_rx.recv().await {
        match result {
            Ok(()) => opened += 1,
            Err(error) => *connect_errors.entry(error).or_default() += 1,
        }
    }
    if opened == 0 {
        let why = connect_errors.keys().next().cloned().unwrap_or_default();
        return Err(format!(
            "no connection to {} could be opened: {why}",
            args.url
        ));
    }

    let server_cpu = |pid: u32| {
        sys::cpu_time_of(pid)
            .map_err(|error| format!("cannot read the CPU time of process {pid}: {error}"))
    };
    let server_before = args.server_pid.map(server_cpu).transpose()?;
    let own_before = sys::own_cpu_time();
    let start = Instant::now();
    let deadline = start + args.duration;
    // The receivers live in the tasks, which all wait for this value.
    let _ = go_tx.send(Some(deadline));
    show_progress(&shared, start, deadline).await;
    let wall = start.elapsed();
    let own = sys::own_cpu_time().saturating_sub(own_before);
    let server = match (args.server_pid, server_before) {
        (Some(pid), Some(before)) => Some(server_cpu(pid)?.saturating_sub(before)),
        _ => None,
    };

    let mut totals = Stats::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(stats) => totals.add(stats),
            Err(error) => {
                *totals
                    .errors
                    .entry(format!("task failed: {error}"))
                    .or_default() += 1
            }
        }
    }
    let latency = std::mem::replace(
        &mut *shared
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
        latency_histogram(),
    );
    Ok(EchoReport {
        target: args.url.to_string(),
        conns: args.conns,
        opened,
        size: args.size,
        inflight: args.inflight as usize,
        text: args.text,
        messages: totals.messages,
        bytes: totals.bytes,
        latency,
        verify_errors: totals.verify_errors,
        connect_errors,
        connection_errors: totals.errors,
        first_verify_error: totals.first_verify_error,
        cpu: Cpu {
            wall,
            own,
            cores,
            server,
        },
    })
}

/// Waits until `deadline`, showing the message rate on stderr if it is a
/// terminal.
async fn show_progress(shared: &Shared, start: Instant, deadline: Instant) {
    if !std::io::stderr().is_terminal() {
        sleep_until(deadline).await;
        return;
    }
    let mut last = 0;
    let mut tick = start;
    while tick < deadline {
        tick = (tick + Duration::from_secs(1)).min(deadline);
        sleep_until(tick).await;
        let now = shared.messages.load(Ordering::Relaxed);
        eprint!(
            "\r  {:>6.1} s  {:>12} messages  ~{:>10} msg/s ",
            (tick - start).as_secs_f64(),
            now,
            now - last
        );
        let _ = std::io::stderr().flush();
        last = now;
    }
    eprintln!();
}

/// What every connection adds its results to as it goes.
struct Shared {
    /// Send-to-echo latency of every verified echo, in nanoseconds.
    latency: Mutex<Histogram<u64>>,
    /// Verified echoes so far, for progress (updated in batches).
    messages: AtomicU64,
}

/// One connection's results.
#[derive(Debug, Default)]
struct Stats {
    messages: u64,
    bytes: u64,
    verify_errors: u64,
    first_verify_error: Option<String>,
    errors: ErrorCounts,
}

impl Stats {
    fn add(&mut self, other: Self) {
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.verify_errors += other.verify_errors;
        if self.first_verify_error.is_none() {
            self.first_verify_error = other.first_verify_error;
        }
        for (error, count) in other.errors {
            *self.errors.entry(error).or_default() += count;
        }
    }

    fn error(&mut self, error: impl Into<String>) {
        *self.errors.entry(error.into()).or_default() += 1;
    }
}

/// One connection of the closed loop.
struct Peer {
    index: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    inflight: usize,
}

impl Peer {
    async fn run(
        self,
        dialer: Arc<Dialer>,
        opened: mpsc::UnboundedSender<Result<(), String>>,
        mut go: watch::Receiver<Option<Instant>>,
    ) -> Stats {
        let ws = match dialer.dial(self.index).await {
            Ok(dialed) => {
                let _ = opened.send(Ok(()));
                dialed.ws
            }
            Err(error) => {
                let _ = opened.send(Err(error.to_string()));
                return Stats::default();
            }
        };
        drop(opened);
        let deadline = match go.wait_for(Option::is_some).await {
            Ok(deadline) => deadline.unwrap_or_else(Instant::now),
            Err(_) => return Stats::default(),
        };
        let mut state = Loop {
            plan: &self.plan,
            shared: &self.shared,
            index: self.index,
            deadline,
            arena: BytesMut::new(),
            next_seq: 0,
            expected_seq: 0,
            owed: self.inflight,
            stalled: None,
            sent_at: VecDeque::with_capacity(self.inflight),
            samples: Vec::with_capacity(SAMPLE_BATCH),
            stats: Stats::default(),
        };
        state.run(ws).await;
        state.stats
    }
}

/// The state of one connection's closed loop.
struct Loop<'a> {
    plan: &'a Plan,
    shared: &'a Shared,
    index: usize,
    deadline: Instant,
    /// Where payloads are built.
    arena: BytesMut,
    /// Sequence number of the next message to build.
    next_seq: u64,
    /// Sequence number the next echo must carry.
    expected_seq: u64,
    /// Messages to send as soon as the outbound queue takes them.
    owed: usize,
    /// A message the outbound queue refused; it goes first.
    stalled: Option<Message>,
    /// When each message in flight was queued, oldest first.
    sent_at: VecDeque<Instant>,
    /// Latencies not yet added to the shared histogram.
    samples: Vec<u64>,
    stats: Stats,
}

impl Loop<'_> {
    async fn run(&mut self, mut ws: WebSocket<TcpStream>) {
        let mut stop = pin!(sleep_until(self.deadline));
        loop {
            if let Err(error) = self.send_owed(&mut ws) {
                self.stats.error(error);
                break;
            }
            // Stop first: under full load recv() is always ready.
            let received = tokio::select! {
                biased;
                () = &mut stop => break,
                received = ws.recv() => received,
            };
            match received {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    self.check(&message, true);
                    self.owed += 1;
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(CloseCode(1005), |frame| frame.code);
                    self.stats
                        .error(format!("server closed the connection early ({})", code.0));
                    break;
                }
                // Pings (already answered) and pongs.
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    self.stats.error(error.to_string());
                    break;
                }
                None => {
                    self.stats.error("connection ended without a close frame");
                    return;
                }
            }
        }
        self.flush_samples();
        self.close(ws).await;
    }

    /// Queues owed messages until the outbound queue is full; the next
    /// `recv()` writes them all in one batch.
    /// Messages queued together share one timestamp: they leave together.
    fn send_owed(&mut self, ws: &mut WebSocket<TcpStream>) -> Result<(), String> {
        let mut now = None;
        while self.stalled.is_some() || self.owed > 0 {
            let message = match self.stalled.take() {
                Some(message) => message,
                None => {
                    self.owed -= 1;
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.plan.message(seq, &mut self.arena)
                }
            };
            match ws.try_send(message) {
                Ok(()) => self
                    .sent_at
                    .push_back(*now.get_or_insert_with(Instant::now)),
                Err(TrySendError::Full(message)) => {
                    self.stalled = Some(message);
                    return Ok(());
                }
                Err(TrySendError::Invalid(error)) => return Err(error.to_string()),
                Err(_) => return Err("connection closed while sending".into()),
            }
        }
        Ok(())
    }

    /// Verifies an echo; counts it if it arrived before the deadline.
    fn check(&mut self, message: &Message, measured: bool) {
        let now = Instant::now();
        let seq = self.expected_seq;
        self.expected_seq += 1;
        let sent = self.sent_at.pop_front();
        let data = message.as_bytes();
        let right_type = matches!(message, Message::Text(_)) == self.plan.text;
        if !right_type || !self.plan.matches(seq, data) {
            self.stats.verify_errors += 1;
            if self.stats.first_verify_error.is_none() {
                let kind = if right_type {
                    "wrong payload"
                } else {
                    "wrong message type"
                };
                self.stats.first_verify_error = Some(format!(
                    "connection {}, message {seq}: {kind} ({} bytes, expected {})",
                    self.index,
                    data.len(),
                    self.plan.size
                ));
            }
            return;
        }
        if measured && now <= self.deadline {
            self.stats.messages += 1;
            self.stats.bytes += data.len() as u64;
            if let Some(sent) = sent {
                self.samples.push((now - sent).as_nanos() as u64);
                if self.samples.len() == SAMPLE_BATCH {
                    self.flush_samples();
                }
            }
        }
    }

    fn flush_samples(&mut self) {
        let mut latency = self
            .shared
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &sample in &self.samples {
            latency.saturating_record(sample);
        }
        drop(latency);
        self.shared
            .messages
            .fetch_add(self.samples.len() as u64, Ordering::Relaxed);
        self.samples.clear();
    }

    /// Closes cleanly, still verifying the echoes that were in flight.
    async fn close(&mut self, mut ws: WebSocket<TcpStream>) {
        let closing = async {
            // An error here (the connection is already closing) shows in recv().
            let _ = ws.close(CloseCode::NORMAL, "done").await;
            let mut close_seen = false;
            while let Some(received) = ws.recv().await {
                match received {
                    Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                        self.check(&message, false)
                    }
                    Ok(Message::Close(_)) => close_seen = true,
                    Ok(_) => {}
                    Err(error) => {
                        self.stats.error(format!("while closing: {error}"));
                        return;
                    }
                }
            }
            if !close_seen {
                self.stats
                    .error("while closing: no close frame from the server");
            }
        };
        if timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            self.stats.error("while closing: timed out");
        }
    }
}

/// What each message holds: its sequence number (little-endian for binary,
/// 16 hex digits for text, cut to the payload size), then a pattern that
/// shifts with the sequence number. Text payloads are ASCII.
#[derive(Debug)]
struct Plan {
    size: usize,
    text: bool,
    /// `size + PATTERN_PERIOD` bytes; message `seq` takes its body from
    /// offset `seq % PATTERN_PERIOD`.
    pattern: Vec<u8>,
}

impl Plan {
    fn new(size: usize, text: bool) -> Self {
        let pattern = (0..size + PATTERN_PERIOD)
            .map(|i| {
                if text {
                    b'a' + (i % 26) as u8
                } else {
                    (i % 256) as u8 ^ 0x5a
                }
            })
            .collect();
        Self {
            size,
            text,
            pattern,
        }
    }

    /// The sequence number as it appears at the start of the payload: its
    /// low-order bytes (binary) or hex digits (text) when the payload is short.
    fn header(&self, seq: u64) -> Header {
        let mut bytes = [0; 16];
        let range = if self.text {
            for (i, digit) in bytes.iter_mut().enumerate() {
                let nibble = (seq >> (60 - 4 * i)) & 0xf;
                *digit = b"0123456789abcdef"[nibble as usize];
            }
            16 - self.size.min(16)..16
        } else {
            bytes[..8].copy_from_slice(&seq.to_le_bytes());
            0..self.size.min(8)
        };
        Header { bytes, range }
    }

    fn body(&self, seq: u64, header_len: usize) -> &[u8] {
        let offset = (seq % PATTERN_PERIOD as u64) as usize;
        &self.pattern[offset..offset + self.size - header_len]
    }

    /// Builds message `seq` in `arena` (no allocation while the arena's
    /// earlier payloads have all been sent).
    fn message(&self, seq: u64, arena: &mut BytesMut) -> Message {
        if arena.capacity() < self.size {
            arena.reserve(self.size.max(ARENA_CHUNK));
        }
        let header = self.header(seq);
        arena.put_slice(header.as_slice());
        arena.put_slice(self.body(seq, header.range.len()));
        let payload = arena.split().freeze();
        if self.text {
            // Invariant: the header is hex digits and the pattern is a–z.
            Message::Text(Utf8Bytes::try_from_bytes(payload).expect("text payloads are ASCII"))
        } else {
            Message::Binary(payload)
        }
    }

    fn matches(&self, seq: u64, data: &[u8]) -> bool {
        let header = self.header(seq);
        let (head, body) = data.split_at(header.range.len().min(data.len()));
        data.len() == self.size && head == header.as_slice() && body == self.body(seq, head.len())
    }

    /// The payload of message `seq`, for tests.
    #[cfg(test)]
    fn payload(&self, seq: u64) -> bytes::Bytes {
        self.message(seq, &mut BytesMut::new()).into_bytes()
    }
}

/// The sequence number part of a payload.
struct Header {
    bytes: [u8; 16],
    range: Range<usize>,
}

impl Header {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[self.range.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_sequence_number() {
        for (size, text) in [
            (0, false),
            (3, false),
            (16, false),
            (100, false),
            (5, true),
            (16, true),
            (1000, true),
        ] {
            let plan = Plan::new(size, text);
            for seq in [0, 1, 250, 251, 1 << 40] {
                let payload = plan.payload(seq);
                assert_eq!(payload.len(), size);
                assert!(plan.matches(seq, &payload));
                if text {
                    assert!(std::str::from_utf8(&payload).is_ok());
                }
            }
            if size >= 2 {
                assert!(!plan.matches(1, &plan.payload(2)), "size {size}");
                let mut flipped = plan.payload(7).to_vec();
                flipped[size - 1] ^= 1;
                assert!(!plan.matches(7, &flipped));
            }
        }
    }

    #[test]
    fn arena_is_reused_once_payloads_are_gone() {
        // 64 payloads fill one arena chunk exactly.
        let plan = Plan::new(ARENA_CHUNK / 64, false);
        let mut arena = BytesMut::new();
        let first = plan.message(0, &mut arena).into_bytes();
        let address = first.as_ptr();
        drop(first);
        for seq in 1..640 {
            drop(plan.message(seq, &mut arena));
        }
        let again = plan.message(640, &mut arena).into_bytes();
        assert!(plan.matches(640, &again));
        assert_eq!(again.as_ptr(), address, "the arena's allocation is reused");
    }
}
