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
    /// Runtime threads. A server with more than one is no peer: it may run
    /// on the load generator's core too, takes only the small-message echo
    /// loads, and is compared with one thread by server CPU per message.
    pub(crate) threads: usize,
}

/// Index of `tetherd` in [`SERVERS`]: the ratios are its to each peer.
pub(crate) const TETHERD: usize = 0;

/// Index of `tetherd` with two runtime threads in [`SERVERS`].
pub(crate) const TETHERD_TWO_THREADS: usize = 1;

/// Messages at least this large are reported by bytes per second.
pub(crate) const LARGE_MESSAGE: usize = 64 * 1024;

/// Every server, tetherd first.
pub(crate) const SERVERS: [Server; 6] = [
    Server {
        name: "tetherd",
        program: "tetherd",
        args: &["echo", "--threads", "1"],
        websocket: true,
        threads: 1,
    },
    Server {
        name: "tetherd-2t",
        program: "tetherd",
        args: &["echo", "--threads", "2"],
        websocket: true,
        threads: 2,
    },
    Server {
        name: "tokio-tungstenite",
        program: "echo-tokio-tungstenite",
        args: &[],
        websocket: true,
        threads: 1,
    },
    Server {
        name: "fastwebsockets",
        program: "echo-fastwebsockets",
        args: &[],
        websocket: true,
        threads: 1,
    },
    Server {
        name: "tokio-websockets",
        program: "echo-tokio-websockets",
        args: &[],
        websocket: true,
        threads: 1,
    },
    Server {
        name: "tcp",
        program: "echo-tcp",
        args: &[],
        websocket: false,
        threads: 1,
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
    /// Whether `server` can take this load: idle connections and handshakes
    /// are WebSocket ones, and a server with several threads is measured on
    /// small messages only.
    pub(crate) fn applies_to(&self, server: &Server) -> bool {
        match self.load {
            Load::Echo { size, .. } => server.threads == 1 || size < LARGE_MESSAGE,
            Load::Idle { .. } | Load::Handshake => server.websocket && server.threads == 1,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_match_the_command_line() {
        for server in &SERVERS {
            let threads = server
                .args
                .iter()
                .position(|&arg| arg == "--threads")
                .map_or(1, |at| server.args[at + 1].parse().unwrap());
            assert_eq!(threads, server.threads, "{}", server.name);
        }
        assert_eq!(SERVERS[TETHERD].name, "tetherd");
        assert_eq!(SERVERS[TETHERD].threads, 1);
        assert_eq!(SERVERS[TETHERD_TWO_THREADS].program, "tetherd");
        assert_eq!(SERVERS[TETHERD_TWO_THREADS].threads, 2);
    }

    #[test]
    fn two_threads_take_the_small_echo_loads_only() {
        let taken: Vec<&str> = all(1000)
            .iter()
            .filter(|scenario| scenario.applies_to(&SERVERS[TETHERD_TWO_THREADS]))
            .map(|scenario| scenario.name)
            .collect();
        assert_eq!(taken, ["echo-16", "echo-1k"]);
        assert_eq!(
            all(1000)
                .iter()
                .filter(|scenario| scenario.applies_to(&SERVERS[TETHERD]))
                .count(),
            6
        );
    }
}
