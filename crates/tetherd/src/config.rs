//! The gateway's configuration: one typed tree, read from built-in defaults,
//! then a TOML file (`--config`), then `TETHER_*` environment variables, then
//! command-line flags; [`Config::validate`] runs before anything starts.
//!
//! It does not watch the file: settings change with a restart (only the TLS
//! files are re-read, on SIGHUP).
//!
//! ```text
//!  Config::default() ─► file (--config) ─► TETHER_* env ─► flags ─► Config ─► validate()
//!   (each layer replaces the keys it sets; unknown keys and bad values are
//!    reported with their key path and where they came from)
//! ```
//!
//! Every field's doc comment is also its comment in `tetherd config
//! example` (`config/tether.example.toml`); a test keeps the two equal.

// Field comments are TOML text (`[[namespace]]`, bare origins), not rustdoc
// markup: escaping them would put the escapes in the example.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]

mod broker;
mod command;
mod duration;
mod example;
mod load;
mod proxy;
mod validate;

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tether::{
    Keepalive, Limits, RateLimit, ServerConfig,
    deflate::{DeflateConfig, MAX_WINDOW_BITS},
    server::OriginPolicy,
};

pub(crate) use self::{
    broker::{Broker, RedisServers},
    command::{ConfigCommand, run},
    example::EXAMPLE,
    load::Flags,
    proxy::{Channel, ClientHook, ClientProxies, NamedProxy, Proxy, Rpc, RpcNamespace},
};

/// The gateway's settings. Each section and key has a default, so an empty
/// file (or none) is a working development setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Address for WebSocket connections, the HTTP API, health checks and
    /// metrics, all on one port.
    #[serde(with = "socket_addr")]
    pub(crate) listen: SocketAddr,
    /// Where publications fan out between subscribers: "memory" (a single
    /// node, nothing else to run) or Redis, so that several nodes share
    /// channels, history and presence: "redis://host:port" (one instance),
    /// several such URLs separated by commas or as a list (each channel
    /// lives on one instance, chosen by consistent hashing; only ever append
    /// to the list) or "redis+cluster://host:port,host:port" (a Redis
    /// Cluster, version 7 or later, through some of its nodes).
    pub(crate) broker: Broker,
    /// Log lines as "text" (for people) or "json" (one object per line).
    pub(crate) log_format: LogFormat,
    /// Runtime worker threads: 0 for one per CPU core; 1 runs everything on
    /// one thread, without work stealing.
    pub(crate) threads: usize,
    /// Serve wss:// and https:// with these PEM files; SIGHUP re-reads both.
    pub(crate) tls: Tls,
    /// Limits on what clients may do, and which web pages may connect.
    pub(crate) security: Security,
    /// Who may connect: the HTTP API key and the signed tokens of clients.
    pub(crate) auth: Auth,
    /// The gateway's own protocol on each client connection.
    pub(crate) client: Client,
    /// permessage-deflate (RFC 7692): compressed WebSocket messages for
    /// clients that offer it, as browsers do.
    pub(crate) compression: Compression,
    /// Shutting down on SIGTERM or SIGINT.
    pub(crate) drain: Drain,
    /// What all channels share: the channel hooks' default endpoints.
    pub(crate) channel: Channel,
    /// The client's rpc command, answered by a backend.
    pub(crate) rpc: Rpc,
    /// Named backend endpoints, for several backends: namespaces pick one
    /// with subscribe_proxy_name, publish_proxy_name, sub_refresh_proxy_name,
    /// RPC namespaces with proxy_name. Each [[proxies]] table has a name and
    /// the keys of [channel.proxy.subscribe].
    pub(crate) proxies: Vec<NamedProxy>,
    /// Channel namespaces: channel "chat:lobby" belongs to namespace "chat",
    /// a channel without ":" to the default namespace "". Channels whose
    /// namespace is not listed are refused. Listing any [[namespace]]
    /// replaces the built-in list (the default namespace and "demo").
    #[serde(rename = "namespace")]
    pub(crate) namespaces: Vec<Namespace>,
}

/// `[tls]`: certificate and key files, both or neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Tls {
    /// PEM certificate chain, leaf first. Empty (with key empty too): plain
    /// ws:// and http://, e.g. behind a proxy that terminates TLS.
    pub(crate) cert: PathBuf,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: PathBuf,
}

/// `[security]`: limits and the `Origin` check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Security {
    /// Web pages (origins) allowed to connect: "https://app.example",
    /// "https://*.example.com", "null", or "*" for any page. Empty: only
    /// pages served from this gateway's own address.
    pub(crate) allow_origins: Vec<String>,
    /// Refuse clients that send no Origin header (non-browser clients send
    /// none).
    pub(crate) require_origin: bool,
    /// Time a client has to complete TLS and the WebSocket upgrade.
    #[serde(with = "duration")]
    pub(crate) handshake_timeout: Duration,
    /// Most connections open at once; more are refused with 503.
    pub(crate) max_connections: usize,
    /// Most connections open at once from one client address; more are
    /// refused with 503. Behind trusted_proxies, the client's address.
    pub(crate) max_connections_per_ip: usize,
    /// Load balancers in front of the gateway ("10.0.0.5", "10.0.0.0/8"):
    /// their connections may say who the client is, with X-Forwarded-For
    /// or, with proxy_protocol, a PROXY header. Their own connections are
    /// not counted per address; the clients they forward are. Empty: every
    /// peer is the client, and such headers are ignored.
    pub(crate) trusted_proxies: Vec<String>,
    /// Connections from trusted_proxies begin with a PROXY protocol header
    /// (v1 or v2: HAProxy's send-proxy / send-proxy-v2) naming the client.
    pub(crate) proxy_protocol: bool,
    /// Sustained messages per second one client may send; beyond it the
    /// connection is closed with 1008. 0 turns the limit off.
    pub(crate) client_message_rate: u32,
    /// Messages one client may send at once after a quiet period.
    pub(crate) client_message_burst: u32,
    /// Close a connection (1001) after this long without receiving anything;
    /// pings and pongs count. "0s" turns it off. The gateway's protocol pings
    /// (client.ping_interval) replace this while they are on.
    #[serde(with = "duration")]
    pub(crate) idle_timeout: Duration,
    /// Send a WebSocket ping after this long without hearing from the client.
    /// "0s" turns these pings off. The gateway's protocol pings
    /// (client.ping_interval) replace these while they are on.
    #[serde(with = "duration")]
    pub(crate) ping_interval: Duration,
    /// Give up on a client that has not answered a WebSocket ping after this
    /// long.
    #[serde(with = "duration")]
    pub(crate) pong_timeout: Duration,
    /// Largest frame payload a client may send, in bytes; larger closes the
    /// connection with 1009.
    pub(crate) max_frame_size: usize,
    /// Largest message a client may send, in bytes (65536 = 64 KiB); larger
    /// closes the connection with 1009.
    pub(crate) max_message_size: usize,
    /// Most frames in one fragmented message from a client.
    pub(crate) max_fragments: usize,
}

/// `[auth]`: the API key and connection tokens. `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Auth {
    /// Key for the HTTP API (Authorization: apikey KEY), at least 16
    /// characters. Empty: a random key is generated and printed at start-up,
    /// which suits development only.
    pub(crate) api_key: String,
    /// HS256 secret that connection and subscription tokens are signed
    /// with, at least 32 bytes. Empty (and no RSA key either): a random secret
    /// is generated and printed at start-up, which suits development only.
    pub(crate) token_hmac_secret: String,
    /// PEM file with the RSA public key of RS256 tokens, for tokens signed
    /// by a service that keeps the private key. Empty: RS256 tokens are
    /// refused.
    pub(crate) token_rsa_public_key: PathBuf,
    /// Clients may connect without a token, as anonymous users; they can
    /// only use what namespaces grant with their allow_*_for_anonymous
    /// options. (Centrifugo: client.allow_anonymous_connect_without_token.)
    pub(crate) allow_anonymous: bool,
    /// When a client's connection token expires it is asked for a new one;
    /// without a refresh within this time it is disconnected.
    #[serde(with = "duration")]
    pub(crate) token_refresh_grace: Duration,
}

/// `[client]`: per-connection protocol settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Client {
    /// Bytes waiting to be sent to one client (1048576 = 1 MiB); a slow
    /// subscriber that falls further behind is disconnected with the "slow"
    /// close code. At least security.max_message_size.
    pub(crate) outbound_queue_bytes: usize,
    /// Send a protocol ping message (which browser code can see, unlike
    /// WebSocket pings) this often. "0s" turns them off.
    #[serde(with = "duration")]
    pub(crate) ping_interval: Duration,
    /// Disconnect a client that has not answered a protocol ping after this
    /// long.
    #[serde(with = "duration")]
    pub(crate) pong_timeout: Duration,
    /// Most publications one history call from a client returns; a larger
    /// or negative limit is lowered to this. (The HTTP API is not capped.)
    pub(crate) history_max_publication_limit: usize,
    /// Most publications a resubscribing client recovers; when it missed
    /// more, it is told recovered: false and gets none of them.
    pub(crate) recovery_max_publication_limit: usize,
    /// Hooks that ask the application's backend about a connection.
    pub(crate) proxy: ClientProxies,
}

/// `[compression]`: permessage-deflate, off unless enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Compression {
    /// Accept permessage-deflate from clients that offer it. A publication
    /// is compressed once for all its subscribers. The gateway compresses
    /// each message afresh and tells clients to do the same
    /// (server_no_context_takeover, client_no_context_takeover), so an idle
    /// connection holds no compression state; compressed messages from
    /// clients are inflated within security.max_message_size.
    pub(crate) enabled: bool,
    /// Messages shorter than this many bytes are sent uncompressed.
    pub(crate) threshold: usize,
    /// zlib compression level, 1 (fastest) to 9 (smallest).
    pub(crate) level: u32,
    /// Largest LZ77 window the gateway compresses with, in bits: 9 (512
    /// bytes) to 15 (32 KiB); a client may ask for a smaller one.
    pub(crate) max_window_bits: u8,
}

/// `[drain]`: graceful shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Drain {
    /// After SIGTERM, connections are told to go away (1001) and get this
    /// long to close; then the process exits regardless.
    #[serde(with = "duration")]
    pub(crate) deadline: Duration,
}

/// `[[namespace]]`: the options of a group of channels. Permissions follow
/// Centrifugo's names and meanings, and deny by default: a client may
/// subscribe only with a subscription token, a channel of its connection
/// token (`channels`, `subs`, `caps`), a user-limited channel, or
/// allow_subscribe_for_client; it may publish, read presence or history
/// only where an allow_* option or its token's `caps` grant it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Namespace {
    /// The part before ":" in channel names ("chat" for "chat:lobby"); ""
    /// is the default namespace, for channels without ":". Letters, digits,
    /// "_", "-" and ".", at most 64.
    pub(crate) name: String,
    /// Publications kept per channel, for history and recovery; 0 keeps
    /// none.
    pub(crate) history_size: usize,
    /// How long a channel's history is kept after its last publication;
    /// set together with history_size.
    #[serde(with = "duration")]
    pub(crate) history_ttl: Duration,
    /// A reconnecting client gets the publications it missed from history,
    /// or learns that they are gone. Needs history_size and history_ttl.
    /// (Centrifugo: force_recovery with force_positioning.)
    pub(crate) recovery: bool,
    /// Who is subscribed to a channel is kept, for presence queries.
    pub(crate) presence: bool,
    /// Subscribers are told when others join or leave a channel.
    pub(crate) join_leave: bool,
    /// Any connected client with a user id may subscribe without a token,
    /// except to channels starting with "$" (private: a token is needed;
    /// "$chat:x" belongs to the namespace "chat").
    pub(crate) allow_subscribe_for_client: bool,
    /// With allow_subscribe_for_client, anonymous clients (see
    /// auth.allow_anonymous) may subscribe too.
    pub(crate) allow_subscribe_for_anonymous: bool,
    /// A subscriber may publish into the channel.
    pub(crate) allow_publish_for_subscriber: bool,
    /// Any connected client may publish, subscribed or not.
    pub(crate) allow_publish_for_client: bool,
    /// The publish permissions above extend to anonymous clients.
    pub(crate) allow_publish_for_anonymous: bool,
    /// A subscriber may read the channel's presence (needs presence).
    pub(crate) allow_presence_for_subscriber: bool,
    /// Any connected client may read presence, subscribed or not.
    pub(crate) allow_presence_for_client: bool,
    /// The presence permissions above extend to anonymous clients.
    pub(crate) allow_presence_for_anonymous: bool,
    /// A subscriber may read the channel's history (needs history).
    pub(crate) allow_history_for_subscriber: bool,
    /// Any connected client may read history, subscribed or not.
    pub(crate) allow_history_for_client: bool,
    /// The history permissions above extend to anonymous clients.
    pub(crate) allow_history_for_anonymous: bool,
    /// User "42" may subscribe without a token to channels ending in "#"
    /// and a comma-separated list of user ids that holds it: "personal:#42",
    /// "dialog:#42,43".
    pub(crate) allow_user_limited_channels: bool,
    /// A subscribe without a subscription token asks the backend
    /// ([channel.proxy.subscribe]) instead of the allow_subscribe_* options.
    /// User-limited channels are not asked about.
    pub(crate) subscribe_proxy_enabled: bool,
    /// One of [[proxies]] for the subscribe hook; empty: the default.
    pub(crate) subscribe_proxy_name: String,
    /// A client's publish asks the backend ([channel.proxy.publish])
    /// instead of the allow_publish_* options.
    pub(crate) publish_proxy_enabled: bool,
    /// One of [[proxies]] for the publish hook; empty: the default.
    pub(crate) publish_proxy_name: String,
    /// A subscription that reaches the expire_at its subscribe hook gave is
    /// extended by the backend ([channel.proxy.sub_refresh]).
    pub(crate) sub_refresh_proxy_enabled: bool,
    /// One of [[proxies]] for the sub_refresh hook; empty: the default.
    pub(crate) sub_refresh_proxy_name: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One problem with the configuration: the key at fault, where its value
/// came from when that was not the file, and why it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// Key path such as `security.handshake_timeout` or
    /// `namespace["chat"].recovery`; the file name for syntax errors.
    pub(crate) key: String,
    /// The environment variable or flag that set the value, if any.
    pub(crate) from: Option<String>,
    /// What is wrong, for a person.
    pub(crate) reason: String,
}

/// Every problem found, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigErrors(pub(crate) Vec<ConfigError>);

impl Config {
    /// The namespace whose options apply to `channel`: the part before the
    /// first `:` names it (`chat:lobby` → `chat`), a channel without `:`
    /// belongs to the default namespace `""`. `None` when that namespace is
    /// not configured, or for an empty prefix (`:lobby`), so each channel
    /// has one spelling. A private channel's `$` is not part of the name
    /// (`$chat:secret` → `chat`), as in Centrifugo.
    pub(crate) fn namespace_for(&self, channel: &str) -> Option<&Namespace> {
        let unprefixed = channel.strip_prefix('$').unwrap_or(channel);
        let name = match unprefixed.split_once(':') {
            Some(("", _)) => return None,
            Some((name, _)) => name,
            None => "",
        };
        self.namespaces
            .iter()
            .find(|namespace| namespace.name == name)
    }

    /// The WebSocket settings of every connection: origin policy, frame and
    /// message limits, keepalive, rate limit, idle and handshake timeouts,
    /// outbound queue bound, and `secure` when TLS is configured.
    pub(crate) fn server_config(&self) -> ServerConfig {
        // Protocol pings, answered by the client's code, prove more than
        // WebSocket pings and the idle timeout would; a second timer per
        // connection would only cost memory.
        let protocol_pings = !self.client.ping_interval.is_zero();
        let mut config = self.security.server_config(protocol_pings);
        config.secure = self.tls.files().is_some();
        config.deflate = self.compression.deflate();
        config.max_buffered = self.client.outbound_queue_bytes;
        config
    }

    /// Development mode: fills an empty `auth.api_key`, and an empty
    /// `auth.token_hmac_secret` when no RSA key is configured either, with
    /// random values. Returns each key filled with its new value, for
    /// start-up to print.
    pub(crate) fn generate_missing_secrets(&mut self) -> Vec<(&'static str, String)> {
        let mut generated = Vec::new();
        if self.auth.api_key.is_empty() {
            self.auth.api_key = random_hex();
            generated.push(("auth.api_key", self.auth.api_key.clone()));
        }
        if self.auth.token_hmac_secret.is_empty()
            && self.auth.token_rsa_public_key.as_os_str().is_empty()
        {
            self.auth.token_hmac_secret = random_hex();
            generated.push((
                "auth.token_hmac_secret",
                self.auth.token_hmac_secret.clone(),
            ));
        }
        generated
    }
}

impl Default for Config {
    /// A development setup: loopback only, the memory broker, anonymous
    /// clients allowed in the `demo` namespace.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            broker: Broker::Memory,
            log_format: LogFormat::Text,
            threads: 0,
            tls: Tls::default(),
            security: Security::default(),
            auth: Auth::default(),
            client: Client::default(),
            compression: Compression::default(),
            drain: Drain::default(),
            channel: Channel::default(),
            rpc: Rpc::default(),
            proxies: Vec::new(),
            namespaces: vec![
                Namespace::default(),
                Namespace {
                    name: "demo".to_owned(),
                    history_size: 100,
                    history_ttl: Duration::from_secs(600),
                    recovery: true,
                    presence: true,
                    join_leave: true,
                    allow_subscribe_for_client: true,
                    allow_subscribe_for_anonymous: true,
                    allow_publish_for_subscriber: true,
                    allow_publish_for_anonymous: true,
                    allow_presence_for_subscriber: true,
                    allow_presence_for_anonymous: true,
                    allow_history_for_subscriber: true,
                    allow_history_for_anonymous: true,
                    ..Namespace::default()
                },
            ],
        }
    }
}

impl Tls {
    /// The certificate and key files, when TLS is on.
    pub(crate) fn files(&self) -> Option<(&Path, &Path)> {
        if self.cert.as_os_str().is_empty() || self.key.as_os_str().is_empty() {
            None
        } else {
            Some((&self.cert, &self.key))
        }
    }
}

impl Security {
    /// What these limits make of each connection (`tetherd echo` builds its
    /// own `Security` from flags): frame and message limits, keepalive and
    /// idle timeout (off where `protocol_pings` replace them), rate limit,
    /// handshake deadline and Origin policy.
    pub(crate) fn server_config(&self, protocol_pings: bool) -> ServerConfig {
        let mut limits = Limits::default();
        limits.max_frame_size = self.max_frame_size;
        limits.max_message_size = self.max_message_size;
        limits.max_fragments = self.max_fragments;
        let keepalive = if self.ping_interval.is_zero() || protocol_pings {
            Keepalive::OFF
        } else {
            Keepalive {
                interval: Some(self.ping_interval),
                timeout: self.pong_timeout,
            }
        };
        let rate_limit = (self.client_message_rate > 0).then_some(RateLimit {
            per_second: self.client_message_rate,
            burst: self.client_message_burst.max(1),
        });
        let idle_timeout =
            (!self.idle_timeout.is_zero() && !protocol_pings).then_some(self.idle_timeout);
        // validate() refuses a list that does not parse; should an
        // unvalidated one get here, same-origin is the strictest policy.
        let origin = OriginPolicy::from_list(&self.allow_origins).unwrap_or_default();
        let mut connection = tether::Config::default();
        connection.limits = limits;
        connection.keepalive = keepalive;
        connection.rate_limit = rate_limit;
        connection.idle_timeout = idle_timeout;
        let mut config = ServerConfig::default();
        config.connection = Arc::new(connection);
        config.handshake_timeout = self.handshake_timeout;
        config.origin = origin;
        config.require_origin = self.require_origin;
        config
    }
}

impl Default for Security {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            require_origin: false,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            client_message_rate: 100,
            client_message_burst: 200,
            idle_timeout: Duration::from_secs(600),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            max_frame_size: 64 << 10,
            max_message_size: 64 << 10,
            max_fragments: 1024,
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            api_key: String::new(),
            token_hmac_secret: String::new(),
            token_rsa_public_key: PathBuf::new(),
            allow_anonymous: true,
            token_refresh_grace: Duration::from_secs(25),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |secret: &str| if secret.is_empty() { "" } else { "<hidden>" };
        f.debug_struct("Auth")
            .field("api_key", &hidden(&self.api_key))
            .field("token_hmac_secret", &hidden(&self.token_hmac_secret))
            .field("token_rsa_public_key", &self.token_rsa_public_key)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("token_refresh_grace", &self.token_refresh_grace)
            .finish()
    }
}

impl Default for Client {
    fn default() -> Self {
        Self {
            outbound_queue_bytes: 1 << 20,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            history_max_publication_limit: 300,
            recovery_max_publication_limit: 300,
            proxy: ClientProxies::default(),
        }
    }
}

impl Default for Compression {
    fn default() -> Self {
        let deflate = DeflateConfig::default();
        Self {
            enabled: false,
            threshold: deflate.threshold,
            level: deflate.level,
            max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

impl Compression {
    /// The permessage-deflate the gateway accepts, if enabled. No context
    /// takeover either way: the server's so that one compressed publication
    /// suits every subscriber, the client's so that the server inflates with
    /// pooled streams (RFC 7692 §7.1.1.2 lets the server answer with
    /// client_no_context_takeover whether or not the client offered it).
    pub(crate) fn deflate(&self) -> Option<DeflateConfig> {
        self.enabled.then(|| {
            let mut config = DeflateConfig::default();
            config.server_no_context_takeover = true;
            config.client_no_context_takeover = true;
            config.server_max_window_bits =
                (self.max_window_bits < MAX_WINDOW_BITS).then_some(self.max_window_bits);
            config.threshold = self.threshold;
            config.level = self.level;
            config
        })
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
        }
    }
}

impl From<LogFormat> for crate::logging::Format {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            from: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{} (from {from}): {}", self.key, self.reason),
            None => write!(f, "{}: {}", self.key, self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// 32 random bytes as 64 hex digits.
fn random_hex() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `#[serde(with = "socket_addr")]`: `host:port` with a readable error.
mod socket_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(
        addr: &SocketAddr,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(addr)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|_| {
            de::Error::custom(format!(
                "{text:?} is not an address (use IP:port, e.g. 127.0.0.1:8000 or [::]:8000)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_for_takes_the_prefix_before_the_first_colon() {
        let config = Config::default();
        let name = |channel| config.namespace_for(channel).map(|ns| ns.name.as_str());
        assert_eq!(name("lobby"), Some(""));
        assert_eq!(name("demo:lobby"), Some("demo"));
        assert_eq!(name("demo:a:b"), Some("demo"));
        assert_eq!(name("chat:lobby"), None, "not configured");
        assert_eq!(name(":lobby"), None, "an empty prefix is no namespace");
        assert_eq!(
            name("$demo:secret"),
            Some("demo"),
            "private: `$` and then the name"
        );
        assert_eq!(name("$secret"), Some(""));
        assert_eq!(name("$:secret"), None);
        let without_default = Config {
            namespaces: config.namespaces[1..].to_vec(),
            ..Config::default()
        };
        assert!(without_default.namespace_for("lobby").is_none());
    }

    #[test]
    fn default_has_the_demo_namespace() {
        let config = Config::default();
        let demo = config.namespace_for("demo:x").unwrap();
        assert!(demo.allow_subscribe_for_client && demo.allow_subscribe_for_anonymous);
        assert!(demo.allow_publish_for_subscriber && demo.allow_publish_for_anonymous);
        assert!(!demo.allow_publish_for_client && !demo.allow_user_limited_channels);
        assert!(demo.recovery && demo.presence && demo.join_leave);
        assert_eq!(
            (demo.history_size, demo.history_ttl),
            (100, Duration::from_secs(600))
        );
        assert!(config.auth.allow_anonymous);
        let default = config.namespace_for("x").unwrap();
        assert_eq!(default, &Namespace::default());
    }

    #[test]
    fn server_config_carries_the_security_settings() {
        let mut config = Config::default();
        let server = config.server_config();
        assert_eq!(
            server.connection.keepalive,
            Keepalive::OFF,
            "protocol pings replace WebSocket pings"
        );
        assert_eq!(server.connection.idle_timeout, None);
        config.client.ping_interval = Duration::ZERO;
        config.security.allow_origins = vec!["https://app.example".into()];
        config.security.require_origin = true;
        let server = config.server_config();
        assert!(matches!(server.origin, OriginPolicy::AllowList(_)));
        assert!(server.require_origin && !server.secure);
        assert_eq!(server.handshake_timeout, Duration::from_secs(10));
        assert_eq!(server.max_buffered, 1 << 20);
        let connection = server.connection;
        assert_eq!(connection.limits.max_message_size, 64 << 10);
        assert_eq!(connection.limits.max_frame_size, 64 << 10);
        assert_eq!(connection.limits.max_fragments, 1024);
        assert_eq!(
            connection.keepalive,
            Keepalive {
                interval: Some(Duration::from_secs(25)),
                timeout: Duration::from_secs(10)
            }
        );
        assert_eq!(
            connection.rate_limit,
            Some(RateLimit {
                per_second: 100,
                burst: 200
            })
        );
        assert_eq!(connection.idle_timeout, Some(Duration::from_secs(600)));

        config.security.ping_interval = Duration::ZERO;
        config.security.client_message_rate = 0;
        config.security.idle_timeout = Duration::ZERO;
        config.tls.cert = "cert.pem".into();
        config.tls.key = "key.pem".into();
        let server = config.server_config();
        assert_eq!(server.connection.keepalive, Keepalive::OFF);
        assert_eq!(server.connection.rate_limit, None);
        assert_eq!(server.connection.idle_timeout, None);
        assert!(server.secure);
    }

    #[test]
    fn compression_is_off_by_default_and_never_takes_context_over() {
        let mut config = Config::default();
        assert_eq!(config.server_config().deflate, None);
        config.compression.enabled = true;
        config.compression.threshold = 256;
        config.compression.level = 1;
        let deflate = config.server_config().deflate.expect("enabled");
        assert!(deflate.server_no_context_takeover && deflate.client_no_context_takeover);
        assert_eq!(
            (
                deflate.threshold,
                deflate.level,
                deflate.server_max_window_bits
            ),
            (256, 1, None)
        );
        config.compression.max_window_bits = 10;
        let deflate = config.server_config().deflate.expect("enabled");
        assert_eq!(deflate.server_max_window_bits, Some(10));
    }

    #[test]
    fn compression_is_set_by_flag_or_environment_and_checked() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
            pairs
                .iter()
                .map(|&(name, value)| (name.into(), value.into()))
                .collect()
        };
        let flags = Flags {
            compression: true,
            ..Flags::default()
        };
        assert!(Config::load_from(&flags, []).unwrap().compression.enabled);
        let config = Config::load_from(
            &Flags::default(),
            env(&[
                ("TETHER_COMPRESSION_ENABLED", "true"),
                ("TETHER_COMPRESSION_THRESHOLD", "512"),
                ("TETHER_COMPRESSION_MAX_WINDOW_BITS", "12"),
            ]),
        )
        .unwrap();
        assert!(config.compression.enabled);
        assert_eq!(config.compression.threshold, 512);
        assert_eq!(config.compression.max_window_bits, 12);
        let errors = Config::load_from(
            &Flags::default(),
            env(&[
                ("TETHER_COMPRESSION_LEVEL", "12"),
                ("TETHER_COMPRESSION_MAX_WINDOW_BITS", "300"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            errors,
            "compression.max_window_bits (from TETHER_COMPRESSION_MAX_WINDOW_BITS): \
             invalid value: integer `300`, expected u8\n\
             compression.level (from TETHER_COMPRESSION_LEVEL): must be 1 to 9"
        );
    }

    #[test]
    fn missing_secrets_are_generated_once() {
        let mut config = Config::default();
        let generated = config.generate_missing_secrets();
        let keys: Vec<_> = generated.iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, ["auth.api_key", "auth.token_hmac_secret"]);
        assert_eq!(config.auth.api_key.len(), 64);
        assert_ne!(config.auth.api_key, config.auth.token_hmac_secret);
        assert!(config.validate().is_ok());
        assert!(config.generate_missing_secrets().is_empty());

        let mut rsa_only = Config::default();
        rsa_only.auth.token_rsa_public_key = "tokens.pem".into();
        let keys: Vec<_> = rsa_only
            .generate_missing_secrets()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, ["auth.api_key"]);
    }

    #[test]
    fn debug_output_hides_the_secrets() {
        let mut config = Config::default();
        config.auth.api_key = "api-key-0123456789".into();
        config.auth.token_hmac_secret = "hmac-secret-0123456789".into();
        let debug = format!("{config:?}");
        assert!(!debug.contains("0123456789"), "{debug}");
        assert!(debug.contains("<hidden>"), "{debug}");
    }
}
