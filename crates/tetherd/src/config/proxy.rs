//! The proxy hooks' settings, named and shaped as Centrifugo v6 names them
//! (`client.proxy.connect`, `channel.proxy.subscribe`, `rpc.proxy`,
//! `proxies`, the namespaces' `*_proxy_enabled`), so a Centrifugo config
//! moves over key for key.

// Field comments are TOML text, as in config.rs.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::duration;

/// One backend endpoint and how to call it (Centrifugo's proxy object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Proxy {
    /// The backend's URL, "http://" or "https://"; every call is a POST of
    /// JSON. Empty: not configured.
    pub(crate) endpoint: String,
    /// How long a call may take, waiting for a free slot included; past it
    /// the client gets Centrifugo's temporary "internal" error (100).
    #[serde(with = "duration")]
    pub(crate) timeout: Duration,
    /// Headers of the client's WebSocket upgrade request copied into each
    /// call, e.g. ["Cookie", "Authorization", "Origin", "User-Agent"].
    /// "X-Real-Ip" is the client's address as the gateway determined it
    /// (security.trusted_proxies), never a header the client sent.
    /// Hop-by-hop and handshake headers cannot be listed.
    pub(crate) http_headers: Vec<String>,
    /// HTTP-only options.
    pub(crate) http: ProxyHttp,
    /// Calls in flight at once to this endpoint (Tether's own key); more
    /// wait for a free slot within the timeout.
    pub(crate) max_in_flight: usize,
}

/// `http`: options of HTTP proxy calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ProxyHttp {
    /// Headers added to every call, e.g. a shared secret the backend checks
    /// so that it answers only this gateway: { "X-Tether-Secret" = "…" }.
    /// A forwarded header of the same name replaces it: do not list a
    /// secret's name in http_headers.
    pub(crate) static_headers: BTreeMap<String, String>,
}

impl Default for Proxy {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            timeout: Duration::from_secs(1),
            http_headers: Vec::new(),
            http: ProxyHttp::default(),
            max_in_flight: 256,
        }
    }
}

/// A client-wide hook: a proxy object that is switched on with `enabled`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ClientHook {
    /// Call this hook.
    pub(crate) enabled: bool,
    #[serde(flatten)]
    pub(crate) proxy: Proxy,
}

/// The connect hook: a client hook that may also take clients with tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ConnectHook {
    /// Call this hook.
    pub(crate) enabled: bool,
    /// Ask the backend about every client, also those that send a token
    /// (Tether's own key; Centrifugo asks only about clients without one):
    /// tokens are then ignored and the backend alone says who connects,
    /// e.g. while moving from tokens to cookies.
    pub(crate) always: bool,
    #[serde(flatten)]
    pub(crate) proxy: Proxy,
}

/// `[client.proxy]`: hooks for the connection as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ClientProxies {
    /// A client that connects without a token is identified by the backend:
    /// it answers with the user (and expire_at, info, data, channels, subs)
    /// or an error or disconnect.
    pub(crate) connect: ConnectHook,
    /// A connection identified by the connect hook that reaches its
    /// expire_at is extended (or ended) by the backend instead of the
    /// client refreshing a token.
    pub(crate) refresh: ClientHook,
    /// The client's asynchronous send messages go to the backend, fire and
    /// forget (Tether's own hook). Without it a send ends the connection
    /// with 3508 (not available), as Centrifugo does.
    pub(crate) send: ClientHook,
}

/// `[channel]`: what channels share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Channel {
    /// The channel hooks' default endpoints, each used by the namespaces
    /// that switch it on (subscribe_proxy_enabled, …) without naming one of
    /// the [[proxies]].
    pub(crate) proxy: ChannelProxies,
}

/// `[channel.proxy]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ChannelProxies {
    /// Decides a subscribe without a subscription token (instead of the
    /// namespace's allow_* options).
    pub(crate) subscribe: Proxy,
    /// Decides a client's publish (instead of the allow_* options), and may
    /// rewrite its data or keep it out of history.
    pub(crate) publish: Proxy,
    /// Extends (or ends) a subscription that reaches the expire_at the
    /// subscribe hook gave it.
    pub(crate) sub_refresh: Proxy,
}

/// `[rpc]`: the client's `rpc` command, sent to a backend by method.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Rpc {
    /// The default RPC endpoint.
    pub(crate) proxy: Proxy,
    /// Methods without ":" ("sum").
    pub(crate) without_namespace: RpcOptions,
    /// Methods "name:…" of each namespace, as [[rpc.namespaces]] tables with
    /// a name and the keys of rpc.without_namespace.
    pub(crate) namespaces: Vec<RpcNamespace>,
}

/// Which endpoint answers a group of RPC methods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RpcOptions {
    /// Send these methods to a backend; otherwise the client gets 108 (not
    /// available).
    pub(crate) proxy_enabled: bool,
    /// One of [[proxies]] by name; empty: rpc.proxy.
    pub(crate) proxy_name: String,
}

/// `[[rpc.namespaces]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RpcNamespace {
    /// The part of the method before ":".
    pub(crate) name: String,
    #[serde(flatten)]
    pub(crate) options: RpcOptions,
}

/// `[[proxies]]`: a named endpoint that namespaces and RPC namespaces refer
/// to with *_proxy_name, for several backends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct NamedProxy {
    /// What *_proxy_name options call it: letters, digits, "_", "-", ".".
    pub(crate) name: String,
    #[serde(flatten)]
    pub(crate) proxy: Proxy,
}

/// Request headers that belong to one hop or to the WebSocket handshake,
/// and those the call sets itself: never copied into a proxy call.
const UNFORWARDABLE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
];

impl Proxy {
    /// Whether an endpoint is set.
    pub(crate) fn configured(&self) -> bool {
        !self.endpoint.is_empty()
    }

    /// Checks an endpoint's values; `key` is its path in the config.
    fn check(&self, key: &str, refuse: &mut impl FnMut(String, String)) {
        if self.configured() {
            if let Err(reason) = check_endpoint(&self.endpoint) {
                refuse(format!("{key}.endpoint"), reason);
            }
        }
        if self.timeout.is_zero() {
            refuse(format!("{key}.timeout"), "must be longer than 0s".into());
        }
        if self.max_in_flight == 0 {
            refuse(format!("{key}.max_in_flight"), "must be at least 1".into());
        }
        for name in &self.http_headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                refuse(
                    format!("{key}.http_headers"),
                    format!("{name:?} is not a header name"),
                );
            } else if UNFORWARDABLE_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                refuse(
                    format!("{key}.http_headers"),
                    format!(
                        "{name:?} belongs to one connection or to the WebSocket handshake and is never forwarded"
                    ),
                );
            }
        }
        for (name, value) in &self.http.static_headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                refuse(
                    format!("{key}.http.static_headers"),
                    format!("{name:?} is not a header name"),
                );
            } else if http::HeaderValue::from_str(value).is_err() {
                refuse(
                    format!("{key}.http.static_headers"),
                    format!("the value of {name:?} is not a header value"),
                );
            }
        }
    }
}

/// An endpoint must be an absolute http:// or https:// URL.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|error| format!("{endpoint:?} is not a URL: {error}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(format!(
            "{endpoint:?}: use an http:// or https:// URL with a host"
        )),
    }
}

/// How Centrifugo restricts proxy and RPC namespace names.
fn check_name(name: &str) -> Result<(), String> {
    if name.len() < 2 {
        return Err("must be at least 2 characters".into());
    }
    super::validate::check_name_characters(name)
}

impl super::Config {
    /// The hooks' checks: endpoints, names, and every reference to a named
    /// proxy or a default endpoint resolving to one that is configured.
    pub(super) fn check_proxies(&self, refuse: &mut impl FnMut(String, String)) {
        let mut names = std::collections::HashSet::new();
        for (index, named) in self.proxies.iter().enumerate() {
            let key = format!("proxies[{:?}]", named.name);
            if let Err(reason) = check_name(&named.name) {
                refuse(format!("proxies[{index}].name"), reason);
            } else if !names.insert(named.name.as_str()) {
                refuse(format!("{key}.name"), "is listed twice".into());
            }
            if !named.proxy.configured() {
                refuse(format!("{key}.endpoint"), "must be set".into());
            }
            named.proxy.check(&key, refuse);
        }
        let hooks = &self.client.proxy;
        let connect = &hooks.connect;
        for (name, enabled, proxy) in [
            ("connect", connect.enabled, &connect.proxy),
            ("refresh", hooks.refresh.enabled, &hooks.refresh.proxy),
            ("send", hooks.send.enabled, &hooks.send.proxy),
        ] {
            let key = format!("client.proxy.{name}");
            if enabled && !proxy.configured() {
                refuse(
                    format!("{key}.endpoint"),
                    format!("must be set while {key}.enabled is on"),
                );
            }
            proxy.check(&key, refuse);
        }
        if connect.always && !connect.enabled {
            refuse(
                "client.proxy.connect.always".into(),
                "has no effect while client.proxy.connect.enabled is off".into(),
            );
        }
        let channel = &self.channel.proxy;
        for (name, proxy) in [
            ("subscribe", &channel.subscribe),
            ("publish", &channel.publish),
            ("sub_refresh", &channel.sub_refresh),
        ] {
            proxy.check(&format!("channel.proxy.{name}"), refuse);
        }
        self.rpc.proxy.check("rpc.proxy", refuse);
        for namespace in &self.namespaces {
            let key = |field: &str| {
                format!(
                    "{}.{field}",
                    super::validate::namespace_key(&namespace.name)
                )
            };
            let uses = [
                (
                    "subscribe_proxy_name",
                    namespace.subscribe_proxy_enabled,
                    &namespace.subscribe_proxy_name,
                    &channel.subscribe,
                    "channel.proxy.subscribe",
                ),
                (
                    "publish_proxy_name",
                    namespace.publish_proxy_enabled,
                    &namespace.publish_proxy_name,
                    &channel.publish,
                    "channel.proxy.publish",
                ),
                (
                    "sub_refresh_proxy_name",
                    namespace.sub_refresh_proxy_enabled,
                    &namespace.sub_refresh_proxy_name,
                    &channel.sub_refresh,
                    "channel.proxy.sub_refresh",
                ),
            ];
            for (field, enabled, name, default, default_key) in uses {
                check_use(
                    refuse,
                    &names,
                    key(field),
                    enabled,
                    name,
                    (default, default_key),
                );
            }
        }
        let rpc = &self.rpc;
        let options = &rpc.without_namespace;
        check_use(
            refuse,
            &names,
            "rpc.without_namespace.proxy_name".into(),
            options.proxy_enabled,
            &options.proxy_name,
            (&rpc.proxy, "rpc.proxy"),
        );
        let mut rpc_names = std::collections::HashSet::new();
        for (index, namespace) in rpc.namespaces.iter().enumerate() {
            let key = format!("rpc.namespaces[{:?}]", namespace.name);
            if let Err(reason) = check_name(&namespace.name) {
                refuse(format!("rpc.namespaces[{index}].name"), reason);
            } else if !rpc_names.insert(namespace.name.as_str()) {
                refuse(format!("{key}.name"), "is listed twice".into());
            }
            let options = &namespace.options;
            check_use(
                refuse,
                &names,
                format!("{key}.proxy_name"),
                options.proxy_enabled,
                &options.proxy_name,
                (&rpc.proxy, "rpc.proxy"),
            );
        }
    }
}

/// Checks one switch of a hook (`*_proxy_enabled`, `proxy_enabled`) and its
/// `*_proxy_name`: a name must be one of `names`; without one, the hook's
/// default endpoint (`default`, at `default_key`) must be set.
fn check_use(
    refuse: &mut impl FnMut(String, String),
    names: &std::collections::HashSet<&str>,
    key: String,
    enabled: bool,
    name: &str,
    (default, default_key): (&Proxy, &str),
) {
    match (enabled, name.is_empty()) {
        (false, false) => refuse(key, "has no effect while the hook is not enabled".into()),
        (true, false) if !names.contains(name) => {
            refuse(key, format!("{name:?} is not one of [[proxies]]"));
        }
        (true, true) if !default.configured() => refuse(
            key,
            format!(
                "the hook is enabled but {default_key}.endpoint is not set: set it, or name one of [[proxies]]"
            ),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// The problems `Config::from_toml` reports for `text`, as `key: reason`.
    fn problems(text: &str) -> Vec<String> {
        match Config::from_toml(text) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .0
                .iter()
                .map(|error| format!("{}: {}", error.key, error.reason))
                .collect(),
        }
    }

    #[test]
    fn a_centrifugo_shaped_config_loads() {
        let config = Config::from_toml(
            r#"
            proxies = [{ name = "rpc-billing", endpoint = "https://billing.internal/rpc", timeout = "3s" }]

            [client.proxy.connect]
            enabled = true
            endpoint = "http://127.0.0.1:3000/centrifugo/connect"
            http_headers = ["Cookie", "Authorization"]
            http.static_headers = { "X-Secret" = "s3cret" }

            [channel.proxy.subscribe]
            endpoint = "http://127.0.0.1:3000/centrifugo/subscribe"

            [rpc.without_namespace]
            proxy_enabled = true
            proxy_name = "rpc-billing"

            [[namespace]]
            name = "chat"
            subscribe_proxy_enabled = true
            "#,
        )
        .expect("valid");
        let connect = &config.client.proxy.connect;
        assert!(connect.enabled);
        assert_eq!(connect.proxy.http_headers, ["Cookie", "Authorization"]);
        assert_eq!(connect.proxy.http.static_headers["X-Secret"], "s3cret");
        assert_eq!(connect.proxy.timeout, std::time::Duration::from_secs(1));
        assert_eq!(
            config.proxies[0].proxy.timeout,
            std::time::Duration::from_secs(3)
        );
        assert_eq!(config.proxies[0].proxy.max_in_flight, 256);
        assert!(config.namespaces[0].subscribe_proxy_enabled);
    }

    #[test]
    fn endpoints_headers_and_references_are_checked() {
        let found = problems(
            r#"
            [client.proxy.connect]
            enabled = true
            http_headers = ["Cookie", "Upgrade", "bad header"]
            timeout = "0s"

            [client.proxy.refresh]
            endpoint = "ftp://backend/refresh"

            [rpc.without_namespace]
            proxy_enabled = true

            [[proxies]]
            name = "a"
            endpoint = "http://127.0.0.1:1/x"

            [[namespace]]
            name = ""
            publish_proxy_enabled = true
            subscribe_proxy_name = "nowhere"
            sub_refresh_proxy_enabled = true
            sub_refresh_proxy_name = "nowhere"
            "#,
        );
        for expected in [
            "client.proxy.connect.endpoint: must be set while client.proxy.connect.enabled is on",
            "client.proxy.connect.timeout: must be longer than 0s",
            "client.proxy.connect.http_headers: \"Upgrade\" belongs to one connection",
            "client.proxy.connect.http_headers: \"bad header\" is not a header name",
            "client.proxy.refresh.endpoint: \"ftp://backend/refresh\": use an http:// or https:// URL",
            "rpc.without_namespace.proxy_name: the hook is enabled but rpc.proxy.endpoint is not set",
            "proxies[0].name: must be at least 2 characters",
            "namespace[\"\"].publish_proxy_name: the hook is enabled but channel.proxy.publish.endpoint is not set",
            "namespace[\"\"].subscribe_proxy_name: has no effect while the hook is not enabled",
            "namespace[\"\"].sub_refresh_proxy_name: \"nowhere\" is not one of [[proxies]]",
        ] {
            assert!(
                found.iter().any(|problem| problem.starts_with(expected)),
                "{expected}\nnot in\n{}",
                found.join("\n")
            );
        }
        assert_eq!(found.len(), 10, "{}", found.join("\n"));
    }

    #[test]
    fn unknown_keys_are_named_and_centrifugo_keys_tether_lacks_explained() {
        let found = problems(
            r#"
            [[proxies]]
            name = "backend"
            endpoint = "http://127.0.0.1:1/x"
            timout = "1s"

            [[rpc.namespaces]]
            name = "billing"
            proxy_enabld = true

            [client.proxy.connect]
            grpc_metadata = ["x"]
            http.status_to_code_transforms = []
            "#,
        );
        assert_eq!(
            found,
            [
                "client.proxy.connect.grpc_metadata: gRPC proxies are not supported: use an http:// or https:// endpoint",
                "client.proxy.connect.http.status_to_code_transforms: not supported: any status but 200 is the temporary error 100",
                "proxies[\"backend\"].timout: unknown key (did you mean proxies[\"backend\"].timeout?)",
                "rpc.namespaces[\"billing\"].proxy_enabld: unknown key (did you mean rpc.namespaces[\"billing\"].proxy_enabled?)",
            ]
        );
    }
}
