//! Hooks that ask the application's backend over HTTP, wire-compatible with
//! Centrifugo's HTTP proxy: connect, refresh, subscribe, publish,
//! sub_refresh, rpc, and Tether's send.
//!
//! ```text
//!  session ──hook, endpoint, JSON──▶ Proxies::call ─▶ slot (max_in_flight) ─▶ POST (pooled keep-alive)
//!          ◀──Verdict / ProxyError── (timeout covers all of it; body ≤ MAX_ANSWER_BYTES)
//! ```
//!
//! A backend that fails (timeout, refused connection, non-200 status,
//! oversized or malformed answer) is a [`ProxyError`]: the caller turns it
//! into Centrifugo's temporary error 100, so SDKs retry with backoff. Calls
//! are never retried here: publish and rpc are not idempotent. Failures
//! are counted by kind and logged once per [`LOG_EVERY`] per endpoint, with
//! the number left unlogged, so a dead backend cannot flood the log.

pub(crate) mod messages;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::Semaphore;
use tracing::warn;

use self::messages::{Answer, Verdict};
use crate::{
    config::{ClientHook, Config, Namespace, Proxy},
    metrics::Metrics,
};

/// Largest answer read from a backend; a larger one is an error.
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// At most one log line per endpoint this often while calls fail.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Idle keep-alive connections kept per backend host.
const POOL_IDLE_PER_HOST: usize = 64;

/// Which hook a call is for: the metrics' label and the log's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    Connect,
    Refresh,
    Subscribe,
    Publish,
    SubRefresh,
    Rpc,
    Send,
}

impl Hook {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Refresh => "refresh",
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::SubRefresh => "sub_refresh",
            Self::Rpc => "rpc",
            Self::Send => "send",
        }
    }
}

/// Why a call gave no answer the gateway can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// No answer (slot and response included) within the endpoint's timeout.
    Timeout,
    /// The backend could not be reached, or the connection failed.
    Connection(String),
    /// An HTTP status other than 200.
    Status(u16),
    /// An answer over [`MAX_ANSWER_BYTES`].
    TooLarge,
    /// Not JSON, or not an answer the protocol allows.
    Malformed(String),
}

impl ProxyError {
    /// The metrics' label.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection(_) => "connection",
            Self::Status(_) => "status",
            Self::TooLarge => "too_large",
            Self::Malformed(_) => "malformed",
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Connection(error) => write!(f, "connection failed: {error}"),
            Self::Status(status) => write!(f, "answered with HTTP status {status}"),
            Self::TooLarge => write!(f, "answer over {MAX_ANSWER_BYTES} bytes"),
            Self::Malformed(error) => write!(f, "malformed answer: {error}"),
        }
    }
}

/// One backend endpoint, ready to call.
#[derive(Debug)]
struct Endpoint {
    uri: Uri,
    timeout: Duration,
    /// The client's headers to copy, lower-case.
    forward: Vec<HeaderName>,
    static_headers: HeaderMap,
    slots: Semaphore,
    /// Failures since the last log line, and when that was (ms since
    /// [`Proxies::started`]; `u64::MAX`: never).
    unlogged: AtomicU64,
    logged_at: AtomicU64,
}

impl Endpoint {
    /// From a validated proxy object.
    fn new(proxy: &Proxy) -> Option<Self> {
        let uri = proxy.endpoint.parse().ok()?;
        let mut static_headers = HeaderMap::new();
        for (name, value) in &proxy.http.static_headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue;
            };
            static_headers.insert(name, value);
        }
        Some(Self {
            uri,
            timeout: proxy.timeout,
            forward: header_names(&proxy.http_headers),
            static_headers,
            slots: Semaphore::new(proxy.max_in_flight),
            unlogged: AtomicU64::new(0),
            logged_at: AtomicU64::new(u64::MAX),
        })
    }
}

/// The header names of a validated `http_headers` (no hop-by-hop or
/// handshake ones), lower-case.
fn header_names(names: &[String]) -> Vec<HeaderName> {
    names
        .iter()
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}

/// What a client brings to every call: its address and the headers of its
/// upgrade request that some hook forwards.
#[derive(Debug, Clone)]
pub(crate) struct ClientHeaders {
    pub(crate) ip: IpAddr,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

/// Where an endpoint is: an index into [`Proxies::endpoints`].
type Route = Option<usize>;

/// Every configured endpoint and which hook uses which.
#[derive(Debug)]
pub(crate) struct Proxies {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoints: Vec<Endpoint>,
    named: HashMap<String, usize>,
    connect: Route,
    /// The connect hook takes clients with tokens too.
    connect_always: bool,
    refresh: Route,
    send: Route,
    subscribe: Route,
    publish: Route,
    sub_refresh: Route,
    rpc: Route,
    /// Method namespace ("" for methods without ":") → its endpoint.
    rpc_routes: HashMap<String, usize>,
    /// Every header any hook forwards: what a session keeps of its
    /// upgrade request.
    forwarded: Vec<HeaderName>,
    /// A hook other than connect forwards headers: a session keeps them
    /// after it connected.
    forwarded_after_connect: bool,
    started: Instant,
}

impl Proxies {
    /// The endpoints of a validated config.
    pub(crate) fn new(config: &Config) -> Self {
        let mut endpoints = Vec::new();
        let mut add = |proxy: &Proxy| -> Route {
            let endpoint = Endpoint::new(proxy).filter(|_| proxy.configured())?;
            endpoints.push(endpoint);
            Some(endpoints.len() - 1)
        };
        let client_hooks = &config.client.proxy;
        let connect_hook = &client_hooks.connect;
        let connect = connect_hook
            .enabled
            .then_some(&connect_hook.proxy)
            .and_then(&mut add);
        let refresh = enabled(&client_hooks.refresh).and_then(&mut add);
        let send = enabled(&client_hooks.send).and_then(&mut add);
        let channel = &config.channel.proxy;
        let subscribe = add(&channel.subscribe);
        let publish = add(&channel.publish);
        let sub_refresh = add(&channel.sub_refresh);
        let rpc = add(&config.rpc.proxy);
        let mut named = HashMap::new();
        for proxy in &config.proxies {
            if let Some(index) = add(&proxy.proxy) {
                named.insert(proxy.name.clone(), index);
            }
        }
        let after_connect: Vec<&Proxy> = config
            .proxies
            .iter()
            .map(|named| &named.proxy)
            .chain([&client_hooks.refresh.proxy, &client_hooks.send.proxy])
            .chain([
                &channel.subscribe,
                &channel.publish,
                &channel.sub_refresh,
                &config.rpc.proxy,
            ])
            .collect();
        let forwarded_after_connect = after_connect
            .iter()
            .any(|proxy| !proxy.http_headers.is_empty());
        let mut forwarded: Vec<HeaderName> = after_connect
            .into_iter()
            .chain([&client_hooks.connect.proxy])
            .flat_map(|proxy| header_names(&proxy.http_headers))
            .collect();
        forwarded.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        forwarded.dedup();
        let mut proxies = Self {
            client: http_client(),
            endpoints,
            named,
            connect,
            connect_always: connect_hook.always,
            refresh,
            send,
            subscribe,
            publish,
            sub_refresh,
            rpc,
            rpc_routes: HashMap::new(),
            forwarded,
            forwarded_after_connect,
            started: Instant::now(),
        };
        let rpc_config = &config.rpc;
        let namespaces = rpc_config
            .namespaces
            .iter()
            .map(|namespace| (namespace.name.as_str(), &namespace.options))
            .chain([("", &rpc_config.without_namespace)]);
        for (name, options) in namespaces {
            let route = options
                .proxy_enabled
                .then(|| proxies.route(&options.proxy_name, proxies.rpc))
                .flatten();
            if let Some(index) = route {
                proxies.rpc_routes.insert(name.to_owned(), index);
            }
        }
        proxies
    }

    /// A named proxy, or `default` for no name.
    fn route(&self, name: &str, default: Route) -> Route {
        if name.is_empty() {
            default
        } else {
            self.named.get(name).copied()
        }
    }

    /// The connect hook, for a client that sent a token (`with_token`) or
    /// not: only token-less ones unless the hook takes every client.
    pub(crate) fn connect(&self, with_token: bool) -> Route {
        self.connect.filter(|_| !with_token || self.connect_always)
    }

    pub(crate) fn refresh(&self) -> Route {
        self.refresh
    }

    pub(crate) fn send(&self) -> Route {
        self.send
    }

    /// The subscribe hook of `namespace`, if it is switched on.
    pub(crate) fn subscribe(&self, namespace: &Namespace) -> Route {
        namespace
            .subscribe_proxy_enabled
            .then(|| self.route(&namespace.subscribe_proxy_name, self.subscribe))
            .flatten()
    }

    /// The publish hook of `namespace`, if it is switched on.
    pub(crate) fn publish(&self, namespace: &Namespace) -> Route {
        namespace
            .publish_proxy_enabled
            .then(|| self.route(&namespace.publish_proxy_name, self.publish))
            .flatten()
    }

    /// The sub_refresh hook of `namespace`, if it is switched on.
    pub(crate) fn sub_refresh(&self, namespace: &Namespace) -> Route {
        namespace
            .sub_refresh_proxy_enabled
            .then(|| self.route(&namespace.sub_refresh_proxy_name, self.sub_refresh))
            .flatten()
    }

    /// The endpoint for an RPC `method`: its namespace's (the part before
    /// the first ":"), or that of methods without one.
    pub(crate) fn rpc(&self, method: &str) -> Route {
        let namespace = method
            .split_once(':')
            .map_or("", |(namespace, _)| namespace);
        self.rpc_routes.get(namespace).copied()
    }

    /// The headers a session keeps of its upgrade request: those some hook
    /// forwards. `None` when no hook forwards any.
    pub(crate) fn keep_headers(&self, headers: &HeaderMap, ip: IpAddr) -> Option<ClientHeaders> {
        if self.forwarded.is_empty() {
            return None;
        }
        let kept = self
            .forwarded
            .iter()
            .filter(|name| *name != "x-real-ip")
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(move |value| (name.clone(), value.clone()))
            })
            .collect();
        Some(ClientHeaders { ip, headers: kept })
    }

    /// Whether a connected session still needs its headers: some hook
    /// besides connect forwards them.
    pub(crate) fn forwards_after_connect(&self) -> bool {
        self.forwarded_after_connect
    }

    /// Calls `hook` at `route` with `body`; the backend's checked decision,
    /// its granted result passed through `check` (which may find it
    /// unusable: then it counts and logs as a malformed answer).
    pub(crate) async fn call<R: DeserializeOwned, T>(
        &self,
        hook: Hook,
        route: usize,
        body: &impl Serialize,
        client: Option<&ClientHeaders>,
        metrics: &Metrics,
        check: impl FnOnce(R) -> Result<T, ProxyError>,
    ) -> Result<Verdict<T>, ProxyError> {
        let endpoint = &self.endpoints[route];
        let started = Instant::now();
        let refresh_only = matches!(hook, Hook::Refresh | Hook::SubRefresh);
        let result =
            match tokio::time::timeout(endpoint.timeout, self.post(endpoint, body, client)).await {
                Ok(Ok(answer)) => serde_json::from_slice::<Answer<R>>(&answer)
                    .map_err(|error| ProxyError::Malformed(error.to_string()))
                    .and_then(|answer| answer.verdict(refresh_only))
                    .and_then(|verdict| verdict.checked(check)),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(ProxyError::Timeout),
            };
        metrics.proxy_call(
            hook.name(),
            started.elapsed(),
            result.as_ref().err().map(ProxyError::kind),
        );
        if let Err(error) = &result {
            self.log_failure(hook, endpoint, error);
        }
        result
    }

    async fn post(
        &self,
        endpoint: &Endpoint,
        body: &impl Serialize,
        client: Option<&ClientHeaders>,
    ) -> Result<Bytes, ProxyError> {
        let body =
            serde_json::to_vec(body).map_err(|error| ProxyError::Malformed(error.to_string()))?;
        let mut request = Request::post(endpoint.uri.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| ProxyError::Connection(error.to_string()))?;
        let headers = request.headers_mut();
        headers.extend(endpoint.static_headers.clone());
        if let Some(client) = client {
            for name in &endpoint.forward {
                if name == "x-real-ip" {
                    if let Ok(ip) = HeaderValue::from_str(&client.ip.to_string()) {
                        headers.insert(name.clone(), ip);
                    }
                    continue;
                }
                let mut values = client.headers.iter().filter(|(kept, _)| kept == name);
                if let Some((_, first)) = values.next() {
                    headers.insert(name.clone(), first.clone());
                    for (_, value) in values {
                        headers.append(name.clone(), value.clone());
                    }
                }
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // The slot is held until the answer is read: max_in_flight bounds
        // what the backend sees at once.
        let _slot = endpoint
            .slots
            .acquire()
            .await
            .map_err(|error| ProxyError::Connection(error.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| ProxyError::Connection(error_chain(&error)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    ProxyError::TooLarge
                } else {
                    ProxyError::Connection(error.to_string())
                }
            })?
            .to_bytes();
        if status != http::StatusCode::OK {
            return Err(ProxyError::Status(status.as_u16()));
        }
        Ok(body)
    }

    /// Logs a failure unless one was logged for this endpoint in the last
    /// [`LOG_EVERY`]; the line says how many went unlogged since.
    fn log_failure(&self, hook: Hook, endpoint: &Endpoint, error: &ProxyError) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = endpoint.logged_at.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if !due
            || endpoint
                .logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            endpoint.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let unlogged = endpoint.unlogged.swap(0, Ordering::Relaxed);
        warn!(hook = hook.name(), endpoint = %endpoint.uri, %error, unlogged, "proxy call failed (logged at most every 10 s per endpoint; `unlogged` failures since the last line)");
    }
}

/// The pooled keep-alive client of every hook: HTTP/1.1 over TCP, or TLS
/// with the web's root certificates for https:// endpoints.
fn http_client() -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .build(connector)
}

/// A client hook's proxy object, if the hook is switched on.
fn enabled(hook: &ClientHook) -> Option<&Proxy> {
    hook.enabled.then_some(&hook.proxy)
}

/// An error with its causes ("client error (Connect): tcp connect error:
/// Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_route_by_namespace_and_name() {
        let config = Config::from_toml(
            r#"
            proxies = [{ name = "billing", endpoint = "http://127.0.0.1:9/billing" }]
            [rpc.proxy]
            endpoint = "http://127.0.0.1:9/rpc"
            [rpc.without_namespace]
            proxy_enabled = true
            [[rpc.namespaces]]
            name = "bill"
            proxy_enabled = true
            proxy_name = "billing"
            [[rpc.namespaces]]
            name = "off"
            [channel.proxy.subscribe]
            endpoint = "http://127.0.0.1:9/subscribe"
            [[namespace]]
            name = "chat"
            subscribe_proxy_enabled = true
            [[namespace]]
            name = "news"
            "#,
        )
        .expect("valid");
        let proxies = Proxies::new(&config);
        let uri = |route: Route| route.map(|index| proxies.endpoints[index].uri.path().to_owned());
        assert_eq!(uri(proxies.rpc("sum")), Some("/rpc".into()));
        assert_eq!(uri(proxies.rpc("bill:charge")), Some("/billing".into()));
        assert_eq!(uri(proxies.rpc("off:x")), None);
        assert_eq!(uri(proxies.rpc("unknown:x")), None);
        let [chat, news] = &config.namespaces[..] else {
            panic!("two namespaces");
        };
        assert_eq!(uri(proxies.subscribe(chat)), Some("/subscribe".into()));
        assert_eq!(uri(proxies.subscribe(news)), None);
        assert_eq!(uri(proxies.publish(chat)), None);
        assert_eq!(proxies.connect(false), None, "not enabled");
    }

    #[test]
    fn a_session_keeps_only_the_headers_some_hook_forwards() {
        let config = Config::from_toml(
            r#"
            [client.proxy.connect]
            enabled = true
            endpoint = "http://127.0.0.1:9/connect"
            http_headers = ["Cookie", "X-Real-Ip"]
            "#,
        )
        .expect("valid");
        let proxies = Proxies::new(&config);
        let mut headers = HeaderMap::new();
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("cookie", HeaderValue::from_static("b=2"));
        headers.insert("x-real-ip", HeaderValue::from_static("10.9.9.9"));
        headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        let ip = IpAddr::from([192, 0, 2, 7]);
        let kept = proxies
            .keep_headers(&headers, ip)
            .expect("some are forwarded");
        assert_eq!(kept.ip, ip);
        let names: Vec<_> = kept
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect();
        // The client's own X-Real-Ip is not kept: the gateway's address is
        // sent in its place.
        assert_eq!(names, [("cookie", "a=1"), ("cookie", "b=2")]);
        assert!(
            Proxies::new(&Config::default())
                .keep_headers(&headers, ip)
                .is_none()
        );
    }
}
