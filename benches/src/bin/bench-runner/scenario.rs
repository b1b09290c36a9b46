//! The servers under test and the scenarios: issue #6's echo table, and
//! issue #18's fan-out through a gateway.

/// What a server is measured as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// An echo server: the echo, handshake and idle scenarios.
    Echo,
    /// A pub/sub gateway speaking Centrifugo's JSON client protocol and
    /// `POST /api/publish`: the fan-out scenarios.
    Gateway,
}

/// A server under test: a program started as `PROGRAM ARGS… --listen ADDR`.
#[derive(Debug)]
pub(crate) struct Server {
    /// Name in the tables and in `--servers`.
    pub(crate) name: &'static str,
    /// Program next to `bench-runner` in the target directory, or on the
    /// `PATH` when `on_path`.
    pub(crate) program: &'static str,
    pub(crate) on_path: bool,
    pub(crate) args: &'static [&'static str],
    /// Whether it speaks WebSocket (the plain TCP echo does not).
    pub(crate) websocket: bool,
    /// Runtime threads. A server with more than one is no peer: it may run
    /// on the load generator's core too, takes only the small-message echo
    /// loads, and is compared with one thread by server CPU per message.
    pub(crate) threads: usize,
    pub(crate) role: Role,
}

/// Index of `tetherd` in [`SERVERS`]: the echo ratios are its to each peer.
pub(crate) const TETHERD: usize = 0;

/// Index of `tetherd` with two runtime threads in [`SERVERS`].
pub(crate) const TETHERD_TWO_THREADS: usize = 1;

/// Index of the `tetherd` gateway in [`SERVERS`]: the fan-out ratios are
/// its to uWebSockets.js's.
pub(crate) const TETHERD_GATEWAY: usize = 6;

/// Index of the `tetherd` gateway with two runtime threads in [`SERVERS`].
pub(crate) const TETHERD_GATEWAY_TWO_THREADS: usize = 7;

/// The API key of `peers/tetherd-gateway.toml` (the uWS peer takes any).
pub(crate) const GATEWAY_API_KEY: &str = "bench-api-key-0123456789abcdef";

/// Messages at least this large are reported by bytes per second.
pub(crate) const LARGE_MESSAGE: usize = 64 * 1024;

/// Every server, tetherd first.
pub(crate) const SERVERS: [Server; 10] = [
    Server {
        name: "tetherd",
        program: "tetherd",
        // Node's client in `idle-node` connects from one address.
        args: &[
            "echo",
            "--threads",
            "1",
            "--max-connections-per-ip",
            "100000",
        ],
        websocket: true,
        threads: 1,
        on_path: false,
        role: Role::Echo,
    },
    Server {
        name: "tetherd-2t",
        program: "tetherd",
        args: &[
            "echo",
            "--threads",
            "2",
            "--max-connections-per-ip",
            "100000",
        ],
        websocket: true,
        threads: 2,
        on_path: false,
        role: Role::Echo,
    },
    Server {
        name: "tokio-tungstenite",
        program: "echo-tokio-tungstenite",
        args: &[],
        websocket: true,
        threads: 1,
        on_path: false,
        role: Role::Echo,
    },
    Server {
        name: "fastwebsockets",
        program: "echo-fastwebsockets",
        args: &[],
        websocket: true,
        threads: 1,
        on_path: false,
        role: Role::Echo,
    },
    Server {
        name: "tokio-websockets",
        program: "echo-tokio-websockets",
        args: &[],
        websocket: true,
        threads: 1,
        on_path: false,
        role: Role::Echo,
    },
    Server {
        name: "tcp",
        program: "echo-tcp",
        args: &[],
        websocket: false,
        threads: 1,
        on_path: false,
        role: Role::Echo,
    },
    Server {
        name: "tetherd-gateway",
        program: "tetherd",
        args: &[
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/peers/tetherd-gateway.toml"),
            "--threads",
            "1",
        ],
        websocket: true,
        threads: 1,
        on_path: false,
        role: Role::Gateway,
    },
    Server {
        name: "tetherd-gateway-2t",
        program: "tetherd",
        args: &[
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/peers/tetherd-gateway.toml"),
            "--threads",
            "2",
        ],
        websocket: true,
        threads: 2,
        on_path: false,
        role: Role::Gateway,
    },
    Server {
        name: "uws.js-gateway",
        program: "node",
        args: &[concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/peers/uws-gateway.cjs"
        )],
        websocket: true,
        threads: 1,
        on_path: true,
        role: Role::Gateway,
    },
    Server {
        name: "uws.js",
        program: "node",
        args: &[concat!(env!("CARGO_MANIFEST_DIR"), "/peers/uws-echo.cjs")],
        websocket: true,
        threads: 1,
        on_path: true,
        role: Role::Echo,
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
    /// `conns` idle connections opened by `client`: server RSS per
    /// connection and the rate at which they were opened.
    Idle { conns: usize, client: IdleClient },
    /// Connection churn: connect, upgrade and close, as fast as 128 cycles
    /// in flight allow.
    Handshake,
    /// `subscribers` of one channel; publications at `rate` per second
    /// from `publisher`, each connection sending its next one when the
    /// previous one was answered.
    Broadcast {
        subscribers: usize,
        rate: u32,
        publisher: Publisher,
    },
}

/// What opens the idle scenarios' connections: two tools that share no
/// code, so that a figure both agree on is the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdleClient {
    /// `tether-load idle`, from 127.0.0.x source addresses.
    TetherLoad,
    /// Node's built-in WebSocket client (`peers/idle-client.cjs`), from one
    /// address.
    Node,
}

/// Where the fan-out scenarios' publications come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publisher {
    /// `POST /api/publish` on this many keep-alive connections.
    Api(usize),
    /// A client's `publish` command over one WebSocket.
    WebSocket,
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
            // Two threads: the sustained API loads, where a core is busy.
            Load::Broadcast {
                rate, publisher, ..
            } => {
                server.role == Role::Gateway
                    && (server.threads == 1 || (rate > 1 && publisher != Publisher::WebSocket))
            }
            _ if server.role != Role::Echo => false,
            Load::Echo { size, .. } => server.threads == 1 || size < LARGE_MESSAGE,
            Load::Idle { .. } | Load::Handshake => server.websocket && server.threads == 1,
        }
    }

    /// The tetherd whose figures the ratios compare for this scenario.
    pub(crate) fn tetherd(&self) -> usize {
        match self.load {
            Load::Broadcast { .. } => TETHERD_GATEWAY,
            _ => TETHERD,
        }
    }

    /// The same tetherd with two runtime threads.
    pub(crate) fn tetherd_two_threads(&self) -> usize {
        match self.load {
            Load::Broadcast { .. } => TETHERD_GATEWAY_TWO_THREADS,
            _ => TETHERD_TWO_THREADS,
        }
    }
}

/// The scenarios of issue #6's table, in its order, then issue #18's
/// fan-out.
pub(crate) fn all(idle_conns: usize, fanout_subscribers: usize) -> Vec<Scenario> {
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
            title: format!("idle {}", thousands(idle_conns)),
            load: Load::Idle {
                conns: idle_conns,
                client: IdleClient::TetherLoad,
            },
        },
        Scenario {
            name: "idle-node",
            title: format!("idle {} (Node client)", thousands(idle_conns)),
            load: Load::Idle {
                conns: idle_conns,
                client: IdleClient::Node,
            },
        },
        fanout("fanout-1", fanout_subscribers, 1, Publisher::Api(1)),
        // Sustained, yet below what one thread can write one publication
        // at a time: two threads are compared with one here by CPU per
        // delivery. At 50/s one thread is saturated and batches several
        // publications per write, two are not, and the comparison says
        // more about batching than about threads.
        fanout("fanout-4", fanout_subscribers, 4, Publisher::Api(1)),
        fanout("fanout-50", fanout_subscribers, 50, Publisher::Api(1)),
        fanout("fanout-50-api4", fanout_subscribers, 50, Publisher::Api(4)),
        fanout("fanout-50-ws", fanout_subscribers, 50, Publisher::WebSocket),
    ]
}

fn fanout(name: &'static str, subscribers: usize, rate: u32, publisher: Publisher) -> Scenario {
    let via = match publisher {
        Publisher::Api(1) => String::new(),
        Publisher::Api(connections) => format!(" API×{connections}"),
        Publisher::WebSocket => " WS".into(),
    };
    Scenario {
        name,
        title: format!("fan-out {}×{rate}/s{via}", thousands(subscribers)),
        load: Load::Broadcast {
            subscribers,
            rate,
            publisher,
        },
    }
}

/// `15k` for 15,000; other counts as they are.
fn thousands(count: usize) -> String {
    if count >= 1000 && count.is_multiple_of(1000) {
        format!("{}k", count / 1000)
    } else {
        count.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UWS_ECHO: usize = 9;

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
        assert_eq!(SERVERS[TETHERD_GATEWAY].name, "tetherd-gateway");
        assert_eq!(SERVERS[TETHERD_GATEWAY_TWO_THREADS].threads, 2);
        assert_eq!(
            SERVERS[TETHERD_GATEWAY_TWO_THREADS].role,
            SERVERS[TETHERD_GATEWAY].role
        );
    }

    #[test]
    fn gateways_take_the_fanout_loads_only() {
        for (index, server) in SERVERS.iter().enumerate() {
            let taken: Vec<&str> = all(1000, 1000)
                .iter()
                .filter(|scenario| scenario.applies_to(server))
                .map(|scenario| scenario.name)
                .collect();
            let fanout = taken.iter().all(|name| name.starts_with("fanout"));
            assert_eq!(
                fanout,
                server.role == Role::Gateway,
                "{}: {taken:?}",
                server.name
            );
            if server.role == Role::Gateway {
                let expected: &[&str] = if server.threads == 1 {
                    &[
                        "fanout-1",
                        "fanout-4",
                        "fanout-50",
                        "fanout-50-api4",
                        "fanout-50-ws",
                    ]
                } else {
                    &["fanout-4", "fanout-50", "fanout-50-api4"]
                };
                assert_eq!(taken, expected, "{}", SERVERS[index].name);
            }
        }
    }

    #[test]
    fn two_threads_take_the_small_echo_loads_only() {
        let taken: Vec<&str> = all(1000, 1000)
            .iter()
            .filter(|scenario| scenario.applies_to(&SERVERS[TETHERD_TWO_THREADS]))
            .map(|scenario| scenario.name)
            .collect();
        assert_eq!(taken, ["echo-16", "echo-1k"]);
        assert_eq!(
            all(1000, 1000)
                .iter()
                .filter(|scenario| scenario.applies_to(&SERVERS[TETHERD]))
                .count(),
            7
        );
        assert_eq!(
            all(1000, 1000)
                .iter()
                .filter(|scenario| scenario.applies_to(&SERVERS[UWS_ECHO]))
                .count(),
            7,
            "uWebSockets.js takes every echo load"
        );
        assert_eq!(SERVERS[UWS_ECHO].name, "uws.js");
    }
}
