//! The servers under test and the scenarios of issue #6's table.

/// A server under test: a program started as `PROGRAM ARGS… --listen ADDR`.
#[derive(Debug)]
pub(crate) struct Server {
    /// Name in the tables and in `--servers`.
    pub(crate) name: &'static str,
    /// Program next to `bench-runner` in the target directory.
    pub(crate) program: &'static str,
    pub(crate) args: &'static [&'static str],
    /// Whether it speaks WebSocket (the plain TCP echo does not).
    pub(crate) websocket: bool,
}

/// Every server, tetherd first (the ratios are tetherd's to each other).
pub(crate) const SERVERS: [Server; 5] = [
    Server {
        name: "tetherd",
        program: "tetherd",
        args: &["echo", "--threads", "1"],
        websocket: true,
    },
    Server {
        name: "tokio-tungstenite",
        program: "echo-tokio-tungstenite",
        args: &[],
        websocket: true,
    },
    Server {
        name: "fastwebsockets",
        program: "echo-fastwebsockets",
        args: &[],
        websocket: true,
    },
    Server {
        name: "tokio-websockets",
        program: "echo-tokio-websockets",
        args: &[],
        websocket: true,
    },
    Server {
        name: "tcp",
        program: "echo-tcp",
        args: &[],
        websocket: false,
    },
];

/// What the load generator does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Load {
    /// Closed-loop echo: `conns` connections × `inflight` messages of `size`
    /// bytes.
    Echo {
        conns: usize,
        inflight: usize,
        size: usize,
    },
    /// `conns` idle connections: server RSS per connection and the rate at
    /// which they were opened.
    Idle { conns: usize },
    /// Connection churn: connect, upgrade and close, as fast as 128 cycles
    /// in flight allow.
    Handshake,
}

/// One column group of the results.
#[derive(Debug)]
pub(crate) struct Scenario {
    /// Name in `--scenarios`.
    pub(crate) name: &'static str,
    /// Heading in the tables, such as `100×8 16 B`.
    pub(crate) title: String,
    pub(crate) load: Load,
}

impl Scenario {
    /// Whether `server` can take this load (idle connections and handshakes
    /// are WebSocket ones).
    pub(crate) fn applies_to(&self, server: &Server) -> bool {
        server.websocket || matches!(self.load, Load::Echo { .. })
    }
}

/// The scenarios of issue #6's table, in its order.
pub(crate) fn all(idle_conns: usize) -> Vec<Scenario> {
    let echo = |name, conns, inflight, size, size_label| Scenario {
        name,
        title: format!("{conns}×{inflight} {size_label}"),
        load: Load::Echo {
            conns,
            inflight,
            size,
        },
    };
    vec![
        echo("echo-16", 100, 8, 16, "16 B"),
        echo("echo-1k", 100, 8, 1024, "1 KiB"),
        echo("echo-64k", 10, 4, 64 * 1024, "64 KiB"),
        echo("echo-1m", 10, 4, 1024 * 1024, "1 MiB"),
        Scenario {
            name: "handshake",
            title: "churn".into(),
            load: Load::Handshake,
        },
        Scenario {
            name: "idle",
            title: if idle_conns >= 1000 && idle_conns.is_multiple_of(1000) {
                format!("idle {}k", idle_conns / 1000)
            } else {
                format!("idle {idle_conns}")
            },
            load: Load::Idle { conns: idle_conns },
        },
    ]
}
