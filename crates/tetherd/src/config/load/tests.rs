//! The layers: defaults, file, environment and flags, their precedence, and
//! how each problem is named.

use std::time::Duration;

use super::*;
use crate::config::{Broker, RedisServers};

fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    vars.iter()
        .map(|&(name, value)| (name.into(), value.into()))
        .collect()
}

fn messages(result: Result<Config, ConfigErrors>) -> Vec<String> {
    result
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn an_empty_file_is_the_defaults() {
    assert_eq!(Config::from_toml(""), Ok(Config::default()));
    assert_eq!(
        Config::load_from(&Flags::default(), env(&[])),
        Ok(Config::default())
    );
}

#[test]
fn a_file_sets_keys_and_keeps_the_other_defaults() {
    let config = Config::from_toml(
        r#"
        listen = "0.0.0.0:9000"
        broker = "redis://127.0.0.1:6379/2"
        [security]
        handshake_timeout = "2500ms"
        allow_origins = ["https://app.example"]
        [[namespace]]
        name = "chat"
        history_size = 50
        history_ttl = "1h"
        recovery = true
        "#,
    )
    .unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(
        config.broker,
        Broker::Redis {
            url: RedisServers::Instances(vec!["redis://127.0.0.1:6379/2".into()])
        }
    );
    assert_eq!(
        config.security.handshake_timeout,
        Duration::from_millis(2500)
    );
    assert_eq!(config.security.allow_origins, ["https://app.example"]);
    assert_eq!(config.security.max_connections, 100_000);
    assert_eq!(
        config.namespaces.len(),
        1,
        "the file's list replaces the built-in one"
    );
    assert_eq!(config.namespaces[0].history_ttl, Duration::from_secs(3600));
    assert!(!config.namespaces[0].presence);
}

#[test]
fn unknown_keys_are_refused_by_name() {
    assert_eq!(
        messages(Config::from_toml(
            "colour = 1\n[security]\nping_intervall = \"5s\"\n[[namespace]]\nname = \"chat\"\nhistory = 5\n[metrics]\nport = 1"
        )),
        [
            "colour: unknown key",
            "metrics: unknown key",
            "namespace[\"chat\"].history: unknown key",
            "security.ping_intervall: unknown key (did you mean security.ping_interval?)",
        ]
    );
}

/// Permissions deny by default now: a config written for the old keys is
/// refused with what replaces each, never read with a new meaning.
#[test]
fn replaced_namespace_keys_are_refused_with_their_replacement() {
    let found = messages(Config::from_toml(
        "[[namespace]]\nname = \"chat\"\nallow_publish = true\nallow_anonymous = true\nsubscription_token_required = true",
    ));
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("namespace[\"chat\"].allow_anonymous: was replaced: "));
    assert!(found[0].contains("allow_subscribe_for_anonymous"));
    assert!(found[1].starts_with("namespace[\"chat\"].allow_publish: was replaced: "));
    assert!(found[1].contains("allow_publish_for_subscriber"));
    assert!(found[2].starts_with("namespace[\"chat\"].subscription_token_required: was removed"));
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    assert_eq!(
        messages(Config::from_toml(
            "[security]\nhandshake_timeout = \"10x\"\nmax_connections = -1\nrequire_origin = \"yes\""
        )),
        [
            "security.handshake_timeout: \"10x\" is not a duration (use 10s, 500ms, 5m)",
            "security.max_connections: invalid value: integer `-1`, expected usize",
            "security.require_origin: invalid type: string \"yes\", expected a boolean",
        ]
    );
    assert_eq!(
        messages(Config::from_toml(
            "listen = \"localhost\"\nbroker = \"nats://x\"\nlog_format = \"xml\"\ntls = 1\n[[namespace]]\nname = \"a\"\nhistory_ttl = \"forever\""
        )),
        [
            "tls: expected a [tls] table, found an integer",
            "broker: \"nats://x\" is not a broker (use \"memory\", \"redis://host:port\" (several separated by commas) or \"redis+cluster://host:port,host:port\")",
            "listen: \"localhost\" is not an address (use IP:port, e.g. 127.0.0.1:8000 or [::]:8000)",
            "log_format: unknown variant `xml`, expected `text` or `json`",
            "namespace[\"a\"].history_ttl: \"forever\" is not a duration (use 10s, 500ms, 5m)",
        ]
    );
}

#[test]
fn bad_values_do_not_hide_the_other_problems() {
    assert_eq!(
        messages(Config::from_toml(
            "[security]\nhandshake_timeout = \"10x\"\n[tls]\ncert = \"a.pem\"\n\
             [[namespace]]\nname = \"chat\"\nrecovery = true\nhistory_size = 5\nhistory_ttl = \"1y\""
        )),
        [
            "security.handshake_timeout: \"10x\" is not a duration (use 10s, 500ms, 5m)",
            "namespace[\"chat\"].history_ttl: \"1y\" is not a duration (use 10s, 500ms, 5m)",
            "tls.key: is empty but tls.cert is set: set both or neither",
            "namespace[\"chat\"].recovery: needs history: set history_size and history_ttl",
        ]
    );
}

#[test]
fn syntax_errors_give_the_line() {
    let errors = messages(Config::from_toml("listen = \n"));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("config: TOML parse error at line 1"),
        "{}",
        errors[0]
    );
}

#[test]
fn environment_overrides_the_file_and_flags_override_both() {
    let dir = std::env::temp_dir().join(format!("tetherd-config-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tether.toml");
    fs::write(
        &file,
        "listen = \"127.0.0.1:7000\"\nbroker = \"redis://file:6379\"\n[auth]\napi_key = \"from-the-file-0123456789\"\n",
    )
    .unwrap();
    let flags = Flags {
        config: Some(file.clone()),
        ..Flags::default()
    };
    let vars = env(&[
        ("TETHER_LISTEN", "127.0.0.1:7001"),
        ("TETHER_API_KEY", "from-the-environment-0123"),
        (
            "TETHER_SECURITY_ALLOW_ORIGINS",
            "https://a.example, https://b.example",
        ),
        ("TETHER_SECURITY_REQUIRE_ORIGIN", "true"),
        ("TETHER_SECURITY_MAX_CONNECTIONS", "5"),
        ("TETHER_SECURITY_IDLE_TIMEOUT", "0s"),
        ("TETHER_PYTHON", "/usr/bin/python3"),
    ]);
    let config = Config::load_from(&flags, vars.clone()).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:7001");
    assert_eq!(config.broker.to_string(), "redis://file:6379");
    assert_eq!(config.auth.api_key, "from-the-environment-0123");
    assert_eq!(
        config.security.allow_origins,
        ["https://a.example", "https://b.example"]
    );
    assert!(config.security.require_origin);
    assert_eq!(config.security.max_connections, 5);
    assert_eq!(config.security.idle_timeout, Duration::ZERO);

    let flags = Flags {
        listen: Some("127.0.0.1:7002".into()),
        api_key: Some("from-the-command-line-01".into()),
        token_secret: Some("s".repeat(32)),
        allow_origins: vec!["*".into()],
        broker: Some("memory".into()),
        threads: Some("2".into()),
        ..flags
    };
    let config = Config::load_from(&flags, vars).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:7002");
    assert_eq!(config.threads, 2);
    assert_eq!(config.broker, Broker::Memory);
    assert_eq!(config.auth.api_key, "from-the-command-line-01");
    assert_eq!(config.auth.token_hmac_secret, "s".repeat(32));
    assert_eq!(config.security.allow_origins, ["*"]);
    assert!(
        config.security.require_origin,
        "the environment still applies"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn overrides_are_refused_naming_key_and_source() {
    let flags = Flags {
        listen: Some("nowhere".into()),
        ..Flags::default()
    };
    assert_eq!(
        messages(Config::load_from(
            &flags,
            env(&[
                ("TETHER_SECURITY_HANDSHAKE_TIMEOUT", "10x"),
                ("TETHER_SECURITY_REQUIRE_ORIGIN", "yes"),
                ("TETHER_DRAIN_DEADLINE", "0s"),
                ("TETHER_API_KEY", "one-value-0123456789"),
                ("TETHER_AUTH_API_KEY", "another-value-0123456"),
            ])
        )),
        [
            "auth.api_key (from TETHER_API_KEY and TETHER_AUTH_API_KEY): set to different values",
            "security.require_origin (from TETHER_SECURITY_REQUIRE_ORIGIN): \"yes\" is not true or false",
            "listen (from --listen): \"nowhere\" is not an address (use IP:port, e.g. 127.0.0.1:8000 or [::]:8000)",
            "security.handshake_timeout (from TETHER_SECURITY_HANDSHAKE_TIMEOUT): \"10x\" is not a duration (use 10s, 500ms, 5m)",
            "drain.deadline (from TETHER_DRAIN_DEADLINE): must be longer than 0s",
        ]
    );
    let missing = Flags {
        config: Some("/nonexistent/tether.toml".into()),
        ..Flags::default()
    };
    let errors = messages(Config::load_from(&missing, env(&[])));
    assert!(
        errors[0].starts_with("/nonexistent/tether.toml: cannot read:"),
        "{errors:?}"
    );
}

#[test]
fn flags_parse_from_a_command_line() {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }
    let cli = Cli::try_parse_from([
        "tetherd",
        "--config",
        "tether.toml",
        "--listen",
        "0.0.0.0:8000",
        "--broker",
        "redis://redis:6379",
        "--api-key",
        "key",
        "--token-secret",
        "secret",
        "--allow-origin",
        "https://a.example",
        "--allow-origin",
        "https://b.example",
    ])
    .unwrap();
    let flags = cli.flags;
    assert_eq!(flags.config.as_deref(), Some(Path::new("tether.toml")));
    assert_eq!(flags.listen.as_deref(), Some("0.0.0.0:8000"));
    assert_eq!(flags.broker.as_deref(), Some("redis://redis:6379"));
    assert_eq!(flags.api_key.as_deref(), Some("key"));
    assert_eq!(flags.token_secret.as_deref(), Some("secret"));
    assert_eq!(
        flags.allow_origins,
        ["https://a.example", "https://b.example"]
    );
}

#[test]
fn every_scalar_key_has_an_environment_variable() {
    let vars = Config::env_vars();
    let names: Vec<&str> = vars.iter().map(|(name, _)| name.as_str()).collect();
    for expected in [
        "TETHER_LISTEN",
        "TETHER_BROKER",
        "TETHER_LOG_FORMAT",
        "TETHER_TLS_CERT",
        "TETHER_SECURITY_ALLOW_ORIGINS",
        "TETHER_SECURITY_HANDSHAKE_TIMEOUT",
        "TETHER_AUTH_API_KEY",
        "TETHER_API_KEY",
        "TETHER_AUTH_TOKEN_HMAC_SECRET",
        "TETHER_CLIENT_OUTBOUND_QUEUE_BYTES",
        "TETHER_DRAIN_DEADLINE",
        "TETHER_CLIENT_PROXY_CONNECT_ENDPOINT",
        "TETHER_CHANNEL_PROXY_SUBSCRIBE_TIMEOUT",
        "TETHER_RPC_WITHOUT_NAMESPACE_PROXY_ENABLED",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "two keys share a variable");
    // The arrays of tables are set in the file only.
    for array in [
        "TETHER_NAMESPACE",
        "TETHER_PROXIES",
        "TETHER_RPC_NAMESPACES",
    ] {
        assert!(!names.iter().any(|name| name.starts_with(array)), "{array}");
    }
}
