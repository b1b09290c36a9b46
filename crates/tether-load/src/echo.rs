//! `tether-load echo`: a closed loop against an echo server.
//!
//! Each connection keeps `--inflight` messages outstanding: it sends that
//! many, then one more for every echo it gets back. Every message carries its
//! sequence number and a pattern derived from it, and every echo is compared
//! byte for byte with what was sent. Latency is measured per message, from
//! the moment it was queued to the moment its echo was read.
//!
//! The client must cost less CPU per message than the server it loads, so it
//! drives each socket itself ([`crate::framing`], with [`inbox`] checking
//! the echoes): per wakeup it reads all the socket holds, checks every echo
//! in place, and writes the messages owed in one write. The clock is read once per read and once per batch of sends, not
//! per message: the echoes found by one read all reached this process at
//! that read, and the messages of one batch all leave in the same write, so
//! per-message clock reads would only add the nanoseconds spent decoding or
//! encoding in between. Every message still gets its own latency sample.

mod inbox;
mod plan;

use std::{
    collections::VecDeque,
    pin::pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use tether::{ClientConfig, CloseCode, Error};
use tether_load_os as os;
use tether_proto::{
    frame::{FrameHeader, OpCode},
    handshake::client::ClientRequest,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinSet,
    time::{Instant, sleep_until},
};

use self::{
    inbox::{Event, Inbox, Verdict},
    plan::Plan,
};
use crate::{
    framing::{self, MAX_CONTROL_FRAME, Outbox, UpgradeError},
    meter::{CpuMeter, own_cpu_time},
    progress,
    report::{EchoReport, ErrorCounts, Report as _, latency_histogram},
    sources::{self, Dialer},
    target::Target,
    workers,
};

/// How long closing may take once the measured interval is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Distinct latencies a connection collects before adding them to the
/// shared histogram, so the lock is taken once per this many (and
/// messages of one batch, which share a latency, take one entry).
const SAMPLE_BATCH: usize = 256;

/// New messages are encoded into a connection's write buffer until it holds
/// this many bytes (or one message, if that is larger).
const WRITE_BATCH: usize = 64 * 1024;

/// Bounds of a connection's read buffer, which is sized to hold every
/// message in flight.
const READ_BUFFER: std::ops::RangeInclusive<usize> = 4 * 1024..=256 * 1024;

/// Options of `tether-load echo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Echo server to load: `ws://HOST[:PORT][/PATH]`, HOST a loopback address.
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
    #[arg(long, default_value_t = sources::DEFAULT_PER_SOURCE, hide = true)]
    per_source: usize,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = sources::DEFAULT_CONCURRENCY)]
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
    if args.conns > workers::DEFAULT_PER_PROCESS {
        return Err(format!(
            "echo opens at most {} connections (one process); use `idle` for more",
            workers::DEFAULT_PER_PROCESS
        ));
    }
    let threads = args.threads.unwrap_or_else(os::cores).max(1);
    // One thread needs no work-stealing scheduler, whose cross-thread
    // bookkeeping costs CPU on every wakeup.
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    let report = runtime.block_on(echo(&args, threads.min(os::cores())))?;
    if args.json && report.cpu.saturated() {
        eprintln!("tether-load: warning: it used >= 90% of its cores and may be the bottleneck");
    }
    report.print(args.json);
    Ok(())
}

async fn echo(args: &Args, cores: usize) -> Result<EchoReport, String> {
    let dialer = Dialer::new(
        args.url.clone(),
        ClientConfig::default(),
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

    let meter = CpuMeter::start(args.server_pid, own_cpu_time)?;
    let start = Instant::now();
    let deadline = start + args.duration;
    // The receivers live in the tasks, which all wait for this value.
    let _ = go_tx.send(Some(deadline));
    show_progress(&shared, start, deadline).await;
    let cpu = meter.stop(start.elapsed(), cores, own_cpu_time)?;

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
        cpu,
    })
}

/// Waits until `deadline`, showing the message rate on stderr if it is a
/// terminal.
async fn show_progress(shared: &Shared, start: Instant, deadline: Instant) {
    let line = progress::line(true, 0, progress::MESSAGE);
    if line.is_hidden() {
        sleep_until(deadline).await;
        return;
    }
    let mut last = 0;
    let mut tick = start;
    while tick < deadline {
        tick = (tick + Duration::from_secs(1)).min(deadline);
        sleep_until(tick).await;
        let now = shared.messages.load(Ordering::Relaxed);
        line.set_message(format!(
            "{:>6.1} s  {:>12} messages  ~{:>10} msg/s",
            (tick - start).as_secs_f64(),
            now,
            now - last
        ));
        last = now;
    }
    line.finish();
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

/// The upgrade; returns the socket and the bytes the server sent after its
/// response.
async fn handshake(mut tcp: TcpStream, target: &Target) -> Result<(TcpStream, Vec<u8>), Error> {
    let request = ClientRequest::new(&target.host, &target.path);
    let mut buf = Vec::with_capacity(1024);
    match framing::upgrade(&mut tcp, &request, &mut buf).await {
        Ok(consumed) => {
            buf.drain(..consumed);
            Ok((tcp, buf))
        }
        Err(UpgradeError::Io(error)) => Err(error.into()),
        Err(UpgradeError::Closed) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "server closed during the handshake",
        )
        .into()),
        Err(UpgradeError::Refused(error)) => Err(error.into()),
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
        let target = dialer.target();
        let dialed = dialer
            .dial_with(self.index, |tcp| handshake(tcp, target))
            .await;
        let (tcp, leftover) = match dialed {
            Ok((upgraded, _latency)) => {
                let _ = opened.send(Ok(()));
                upgraded
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
            inbox: Inbox::new(),
            outbox: Outbox::new(),
            next_seq: 0,
            owed: self.inflight,
            closing: false,
            close_seen: false,
            sent_at: VecDeque::new(),
            samples: Vec::with_capacity(SAMPLE_BATCH),
            sampled: 0,
            stats: Stats::default(),
        };
        let in_flight =
            (self.plan.size.saturating_add(FrameHeader::MAX_LEN)).saturating_mul(self.inflight);
        let read_buffer = in_flight.clamp(*READ_BUFFER.start(), *READ_BUFFER.end());
        state.run(tcp, leftover, read_buffer).await;
        state.stats
    }
}

/// The state of one connection's closed loop.
struct Loop<'a> {
    plan: &'a Plan,
    shared: &'a Shared,
    index: usize,
    deadline: Instant,
    inbox: Inbox,
    outbox: Outbox,
    /// Sequence number of the next message to send.
    next_seq: u64,
    /// Messages to send once the write buffer has room.
    owed: usize,
    /// Our close frame is queued: no more messages.
    closing: bool,
    /// The server's close frame arrived: nothing more is read.
    close_seen: bool,
    /// When the messages in flight were queued, oldest first, as runs of
    /// messages that share a timestamp.
    sent_at: VecDeque<(Instant, u32)>,
    /// Latencies (nanoseconds, count) not yet added to the shared histogram.
    samples: Vec<(u64, u64)>,
    /// Messages behind `samples`.
    sampled: u64,
    stats: Stats,
}

/// What woke a connection up.
enum Wake {
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Timer,
}

impl Loop<'_> {
    /// Runs the closed loop until the deadline, then the close handshake,
    /// still checking the echoes in flight.
    async fn run(&mut self, mut tcp: TcpStream, leftover: Vec<u8>, read_buffer: usize) {
        let (mut reader, mut writer) = tcp.split();
        let mut buf = vec![0; read_buffer.max(leftover.len() + MAX_CONTROL_FRAME)];
        buf[..leftover.len()].copy_from_slice(&leftover);
        let mut filled = leftover.len();
        let mut now = Instant::now();
        let mut timer = pin!(sleep_until(self.deadline));
        let mut close_timer_set = false;
        loop {
            match self.receive(&buf[..filled], now) {
                Ok(used) => {
                    // What is left is part of a frame header or of a control
                    // frame (data payloads are checked as they arrive), so
                    // the buffer always has room for the next read.
                    buf.copy_within(used..filled, 0);
                    filled -= used;
                }
                Err(error) => {
                    self.stats.error(error);
                    break;
                }
            }
            if self.close_seen && self.outbox.is_empty() {
                break;
            }
            if !self.closing && now >= self.deadline {
                self.closing = true;
                self.outbox.push_close(CloseCode::NORMAL.0, "done");
            }
            // Either side may have started the close.
            if self.closing && !close_timer_set {
                timer.as_mut().reset(Instant::now() + CLOSE_TIMEOUT);
                close_timer_set = true;
            }
            if !self.closing && self.outbox.is_empty() {
                self.send_owed();
            }
            let wake = tokio::select! {
                biased;
                read = reader.read(&mut buf[filled..]), if !self.close_seen => Wake::Read(read),
                wrote = writer.write(self.outbox.pending()), if !self.outbox.is_empty() => {
                    Wake::Wrote(wrote)
                }
                () = &mut timer => Wake::Timer,
            };
            match wake {
                Wake::Read(Ok(0)) => {
                    self.stats.error(if self.closing {
                        "while closing: no close frame from the server"
                    } else {
                        "connection ended without a close frame"
                    });
                    break;
                }
                Wake::Read(Ok(n)) => {
                    filled += n;
                    now = Instant::now();
                }
                Wake::Wrote(Ok(n)) if n > 0 => self.outbox.advance(n),
                Wake::Read(Err(error)) | Wake::Wrote(Err(error)) => {
                    if !self.close_seen {
                        self.stats.error(self.while_closing(error.to_string()));
                    }
                    break;
                }
                Wake::Wrote(Ok(_)) => {
                    self.stats
                        .error(self.while_closing("the socket took no bytes".into()));
                    break;
                }
                Wake::Timer if self.closing => {
                    self.stats.error("while closing: timed out");
                    break;
                }
                Wake::Timer => now = Instant::now(),
            }
        }
        self.flush_samples();
    }

    fn while_closing(&self, error: String) -> String {
        if self.closing {
            format!("while closing: {error}")
        } else {
            error
        }
    }

    /// Decodes what `buf` holds, read at `now`; returns the bytes used.
    fn receive(&mut self, buf: &[u8], now: Instant) -> Result<usize, String> {
        let measured = !self.closing && now <= self.deadline;
        let mut used = 0;
        while !self.close_seen {
            let (n, event) = self.inbox.decode(self.plan, &buf[used..])?;
            used += n;
            match event {
                Some(Event::Echo { seq, len, verdict }) => {
                    self.check(seq, len, verdict, now, measured)
                }
                Some(Event::Ping(payload)) => self.outbox.push_control(OpCode::Pong, payload),
                Some(Event::Close(code)) => {
                    self.close_seen = true;
                    if !self.closing {
                        self.closing = true;
                        self.stats.error(format!(
                            "server closed the connection early ({})",
                            code.unwrap_or(1005)
                        ));
                        self.outbox.push_control(OpCode::Close, &[]);
                    }
                }
                None if n == 0 => break,
                None => {}
            }
        }
        Ok(used)
    }

    /// Encodes owed messages into the write buffer, which the next write
    /// sends in one go. Messages queued together share one timestamp: they
    /// leave together.
    fn send_owed(&mut self) {
        let mut queued = 0;
        while self.owed > 0 && self.outbox.len() < WRITE_BATCH {
            self.plan.push_message(&mut self.outbox, self.next_seq);
            self.next_seq += 1;
            self.owed -= 1;
            queued += 1;
        }
        if queued > 0 {
            self.sent_at.push_back((Instant::now(), queued));
        }
    }

    /// Counts an echo; measures it if it arrived before the deadline.
    fn check(&mut self, seq: u64, len: u64, verdict: Verdict, now: Instant, measured: bool) {
        let sent = self.sent_at.front_mut().map(|(sent, count)| {
            *count -= 1;
            *sent
        });
        if self.sent_at.front().is_some_and(|&(_, count)| count == 0) {
            self.sent_at.pop_front();
        }
        if !self.closing {
            self.owed += 1;
        }
        let kind = match verdict {
            Verdict::Match => {
                if measured {
                    self.stats.messages += 1;
                    self.stats.bytes += len;
                    if let Some(sent) = sent {
                        self.sample((now - sent).as_nanos() as u64);
                    }
                }
                return;
            }
            Verdict::WrongType => "wrong message type",
            Verdict::WrongPayload => "wrong payload",
        };
        self.stats.verify_errors += 1;
        if self.stats.first_verify_error.is_none() {
            self.stats.first_verify_error = Some(format!(
                "connection {}, message {seq}: {kind} ({len} bytes, expected {})",
                self.index, self.plan.size
            ));
        }
    }

    fn sample(&mut self, latency: u64) {
        self.sampled += 1;
        match self.samples.last_mut() {
            Some((last, count)) if *last == latency => *count += 1,
            _ => {
                self.samples.push((latency, 1));
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
        for &(sample, count) in &self.samples {
            latency.saturating_record_n(sample, count);
        }
        drop(latency);
        self.shared
            .messages
            .fetch_add(self.sampled, Ordering::Relaxed);
        self.samples.clear();
        self.sampled = 0;
    }
}
