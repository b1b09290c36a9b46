//! The checks that make a parsed [`Config`] one the gateway can run with;
//! each refusal names its key.

use std::collections::HashSet;

use tether::{
    deflate::{MAX_WINDOW_BITS, MIN_COMPRESS_WINDOW_BITS},
    server::OriginPolicy,
};

use super::{Config, ConfigError, ConfigErrors, Namespace, duration};

/// Control frames carry up to 125 bytes; a smaller frame limit would refuse
/// a legitimate ping or close.
const MIN_FRAME_SIZE: usize = 125;
/// Shortest API key accepted.
const MIN_API_KEY: usize = 16;
/// Shortest HS256 secret accepted: the hash's size (RFC 7518 §3.2).
const MIN_HMAC_SECRET: usize = 32;
/// Longest namespace name.
const MAX_NAMESPACE_NAME: usize = 64;
/// Most runtime worker threads (tokio's own limit is higher; more than this
/// is a typo).
const MAX_THREADS: usize = 1024;

impl Config {
    /// Checks the values together; every problem is reported, each with its
    /// key path (`security.pong_timeout: …`).
    pub(crate) fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut refuse = |key: &str, reason: String| errors.push(ConfigError::new(key, reason));

        match (
            self.tls.cert.as_os_str().is_empty(),
            self.tls.key.as_os_str().is_empty(),
        ) {
            (false, true) => refuse(
                "tls.key",
                "is empty but tls.cert is set: set both or neither".into(),
            ),
            (true, false) => refuse(
                "tls.cert",
                "is empty but tls.key is set: set both or neither".into(),
            ),
            _ => {}
        }

        if self.threads > MAX_THREADS {
            refuse(
                "threads",
                format!("{} is more than {MAX_THREADS}", self.threads),
            );
        }

        let security = &self.security;
        if let Err(error) = OriginPolicy::from_list(&security.allow_origins) {
            refuse(
                "security.allow_origins",
                format!("{:?}: {}", error.origin, error.why),
            );
        }
        if let Err(why) = crate::client_addr::TrustedProxies::parse(&security.trusted_proxies) {
            refuse("security.trusted_proxies", why);
        }
        if security.proxy_protocol && security.trusted_proxies.is_empty() {
            refuse(
                "security.proxy_protocol",
                "needs security.trusted_proxies: the proxies whose headers to read".into(),
            );
        }
        if security.handshake_timeout.is_zero() {
            refuse(
                "security.handshake_timeout",
                "must be longer than 0s".into(),
            );
        }
        if security.max_connections == 0 {
            refuse("security.max_connections", "must be at least 1".into());
        }
        if security.max_connections_per_ip == 0 {
            refuse(
                "security.max_connections_per_ip",
                "must be at least 1".into(),
            );
        }
        if security.client_message_rate > 0 && security.client_message_burst == 0 {
            refuse(
                "security.client_message_burst",
                "must be at least 1 while security.client_message_rate is on".into(),
            );
        }
        if !security.ping_interval.is_zero() {
            if security.pong_timeout.is_zero() {
                refuse(
                    "security.pong_timeout",
                    "must be longer than 0s while security.ping_interval is on".into(),
                );
            }
            if !security.idle_timeout.is_zero() && security.idle_timeout <= security.ping_interval {
                refuse(
                    "security.idle_timeout",
                    format!(
                        "must be longer than security.ping_interval ({}), or 0s to turn it off",
                        duration::format(security.ping_interval)
                    ),
                );
            }
        }
        if security.max_frame_size < MIN_FRAME_SIZE {
            refuse(
                "security.max_frame_size",
                format!("must be at least {MIN_FRAME_SIZE} (the largest control frame)"),
            );
        }
        if security.max_message_size == 0 {
            refuse("security.max_message_size", "must be at least 1".into());
        }
        if security.max_fragments == 0 {
            refuse("security.max_fragments", "must be at least 1".into());
        }

        let auth = &self.auth;
        if !auth.api_key.is_empty() && auth.api_key.len() < MIN_API_KEY {
            refuse(
                "auth.api_key",
                format!(
                    "is too short: use at least {MIN_API_KEY} characters, e.g. from `openssl rand -hex 32`"
                ),
            );
        }
        if !auth.token_hmac_secret.is_empty() && auth.token_hmac_secret.len() < MIN_HMAC_SECRET {
            refuse(
                "auth.token_hmac_secret",
                format!(
                    "is too short: HS256 needs at least {MIN_HMAC_SECRET} bytes, e.g. from `openssl rand -hex 32`"
                ),
            );
        }

        let client = &self.client;
        if client.outbound_queue_bytes < security.max_message_size {
            refuse(
                "client.outbound_queue_bytes",
                format!(
                    "must be at least security.max_message_size ({}), or one message could never be sent",
                    security.max_message_size
                ),
            );
        }
        if !client.ping_interval.is_zero() && client.pong_timeout.is_zero() {
            refuse(
                "client.pong_timeout",
                "must be longer than 0s while client.ping_interval is on".into(),
            );
        }
        for (key, limit) in [
            (
                "client.history_max_publication_limit",
                client.history_max_publication_limit,
            ),
            (
                "client.recovery_max_publication_limit",
                client.recovery_max_publication_limit,
            ),
        ] {
            if limit == 0 {
                refuse(key, "must be at least 1".into());
            }
        }

        let compression = &self.compression;
        if !(1..=9).contains(&compression.level) {
            refuse("compression.level", "must be 1 to 9".into());
        }
        if !(MIN_COMPRESS_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&compression.max_window_bits) {
            refuse(
                "compression.max_window_bits",
                format!("must be {MIN_COMPRESS_WINDOW_BITS} to {MAX_WINDOW_BITS}"),
            );
        }

        if self.drain.deadline.is_zero() {
            refuse("drain.deadline", "must be longer than 0s".into());
        }

        let mut seen = HashSet::new();
        for namespace in &self.namespaces {
            let key = |field: &str| format!("{}.{field}", namespace_key(&namespace.name));
            if !seen.insert(namespace.name.as_str()) {
                refuse(&key("name"), "is listed twice".into());
            }
            if let Err(reason) = check_namespace_name(&namespace.name) {
                refuse(&key("name"), reason);
            }
            check_history(namespace, |field, reason| refuse(&key(field), reason));
        }
        self.check_proxies(&mut |key, reason| refuse(&key, reason));

        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// How errors name a `[[namespace]]` entry: `namespace["chat"]`.
pub(super) fn namespace_key(name: &str) -> String {
    format!("namespace[{name:?}]")
}

fn check_namespace_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAMESPACE_NAME {
        return Err(format!("is longer than {MAX_NAMESPACE_NAME} characters"));
    }
    check_name_characters(name)
}

/// Names of namespaces and proxies: letters, digits, "_", "-" and ".".
pub(super) fn check_name_characters(name: &str) -> Result<(), String> {
    match name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        Some(c) => Err(format!(
            "contains {c:?}: use letters, digits, \"_\", \"-\" and \".\""
        )),
        None => Ok(()),
    }
}

fn check_history(namespace: &Namespace, mut refuse: impl FnMut(&str, String)) {
    let has_size = namespace.history_size > 0;
    let has_ttl = !namespace.history_ttl.is_zero();
    if has_size && !has_ttl {
        refuse(
            "history_ttl",
            "is 0s but history_size is set: history needs both".into(),
        );
    }
    if has_ttl && !has_size {
        refuse(
            "history_size",
            "is 0 but history_ttl is set: history needs both".into(),
        );
    }
    if namespace.recovery && !(has_size && has_ttl) {
        refuse(
            "recovery",
            "needs history: set history_size and history_ttl".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn errors(config: &Config) -> Vec<String> {
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(errors(&Config::default()), Vec::<String>::new());
    }

    #[test]
    fn threads_are_bounded() {
        let mut config = Config {
            threads: 1024,
            ..Config::default()
        };
        assert_eq!(errors(&config), Vec::<String>::new());
        config.threads = 1025;
        assert_eq!(errors(&config), ["threads: 1025 is more than 1024"]);
    }

    #[test]
    fn recovery_without_history_is_refused() {
        let mut config = Config::default();
        config.namespaces.push(Namespace {
            name: "chat".into(),
            recovery: true,
            ..Namespace::default()
        });
        assert_eq!(
            errors(&config),
            ["namespace[\"chat\"].recovery: needs history: set history_size and history_ttl"]
        );
        let chat = config.namespaces.last_mut().unwrap();
        chat.history_size = 10;
        assert_eq!(
            errors(&config),
            [
                "namespace[\"chat\"].history_ttl: is 0s but history_size is set: history needs both",
                "namespace[\"chat\"].recovery: needs history: set history_size and history_ttl",
            ]
        );
        config.namespaces.last_mut().unwrap().history_ttl = Duration::from_secs(60);
        assert_eq!(errors(&config), Vec::<String>::new());
    }

    #[test]
    fn namespace_names_are_unique_and_plain() {
        let mut config = Config::default();
        for name in ["demo", "a:b", "spaced out", &"x".repeat(65), "ok_name-1.v2"] {
            config.namespaces.push(Namespace {
                name: name.to_owned(),
                ..Namespace::default()
            });
        }
        let found = errors(&config);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert_eq!(found[0], "namespace[\"demo\"].name: is listed twice");
        assert!(
            found[1].starts_with("namespace[\"a:b\"].name: contains ':'"),
            "{}",
            found[1]
        );
        assert!(found[2].contains("contains ' '"), "{}", found[2]);
        assert!(found[3].contains("longer than 64"), "{}", found[3]);
    }

    #[test]
    fn each_problem_names_its_key() {
        let mut config = Config::default();
        config.tls.cert = "cert.pem".into();
        config.security.allow_origins = vec!["example.com".into()];
        config.security.handshake_timeout = Duration::ZERO;
        config.security.max_connections = 0;
        config.security.pong_timeout = Duration::ZERO;
        config.security.idle_timeout = Duration::from_secs(20);
        config.security.max_frame_size = 100;
        config.auth.api_key = "short".into();
        config.auth.token_hmac_secret = "secret".into();
        config.client.outbound_queue_bytes = 1000;
        config.compression.level = 0;
        config.compression.max_window_bits = 8;
        config.drain.deadline = Duration::ZERO;
        let keys: Vec<String> = config
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|error| error.key)
            .collect();
        assert_eq!(
            keys,
            [
                "tls.key",
                "security.allow_origins",
                "security.handshake_timeout",
                "security.max_connections",
                "security.pong_timeout",
                "security.idle_timeout",
                "security.max_frame_size",
                "auth.api_key",
                "auth.token_hmac_secret",
                "client.outbound_queue_bytes",
                "compression.level",
                "compression.max_window_bits",
                "drain.deadline",
            ]
        );
    }
}
