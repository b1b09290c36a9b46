//! One port for everything: the WebSocket endpoint, the HTTP API, health,
//! metrics and the pages.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use serde_json::json;
use tether::handshake::HandshakeError;
use tracing::info;

use crate::{
    api,
    client_addr::Admission,
    metrics::{self, Gauges},
    node::Node,
    pages, session,
};

/// Largest HTTP API request body.
const MAX_API_BODY: usize = 1 << 20;

type Body = Full<Bytes>;

/// Routes one HTTP request.
pub(crate) async fn handle(
    node: Arc<Node>,
    peer: SocketAddr,
    admission: Admission,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    Ok(match (request.method(), path.as_str()) {
        (&Method::GET, "/connection/websocket") => websocket(node, peer, admission, request),
        (_, p) if p.starts_with("/api/") || p == "/api" => api(node, request).await,
        (&Method::GET, "/health") => health(&node),
        (&Method::GET, "/ready") => ready(&node).await,
        (&Method::GET, "/metrics") => metrics(&node),
        (&Method::GET, "/") => html(pages::DEMO),
        (&Method::GET, "/admin") => html(pages::ADMIN),
        (&Method::GET, "/tether.js") => javascript(pages::CLIENT_JS),
        (&Method::GET, "/tether.svg") => respond(StatusCode::OK, "image/svg+xml", pages::LOGO_SVG),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}

fn websocket(
    node: Arc<Node>,
    peer: SocketAddr,
    admission: Admission,
    mut request: Request<Incoming>,
) -> Response<Body> {
    if node.is_draining() {
        node.metrics.refused(503);
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: connect to another node\n",
        );
    }
    let (peer, permit) = match admission {
        Admission::Counted(permit) => (peer, permit),
        Admission::PerUpgrade => {
            let client = forwarded_client(&node, peer, &request);
            match node.limiter.try_acquire(client.ip()) {
                Ok(permit) => (client, Arc::new(permit)),
                Err(refusal) => return refused(&node, client, &refusal),
            }
        }
    };
    match tether::server::upgrade(&mut request, &node.server_config) {
        Ok((response, pending)) => {
            let headers = node.proxies.keep_headers(request.headers(), peer.ip());
            // A short task: the session gets its own, without this one's state.
            tokio::spawn(async move {
                match pending.wait().await {
                    Ok(ws) => session::spawn(node, ws, peer, permit, headers),
                    Err(error) => info!(%peer, %error, "upgrade failed"),
                }
            });
            response.map(|()| Body::default())
        }
        Err(refusal) => refused(&node, peer, &refusal),
    }
}

/// The client a trusted proxy forwarded `request` for, by its
/// `X-Forwarded-For` (every such header, in order). Its port is unknown:
/// 0, unless the proxy itself is the client.
fn forwarded_client(node: &Node, proxy: SocketAddr, request: &Request<Incoming>) -> SocketAddr {
    let headers: Vec<&[u8]> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .map(header::HeaderValue::as_bytes)
        .collect();
    let forwarded = (!headers.is_empty()).then(|| headers.join(&b","[..]));
    let client = node
        .trusted_proxies
        .forwarded_client(proxy.ip(), forwarded.as_deref());
    if client == proxy.ip() {
        proxy
    } else {
        SocketAddr::new(client, 0)
    }
}

/// The HTTP answer to a refused upgrade, counted and logged.
fn refused(node: &Node, peer: SocketAddr, refusal: &HandshakeError) -> Response<Body> {
    let status = refusal.http_status();
    node.metrics.refused(status);
    info!(%peer, status, reason = %refusal, "handshake refused");
    let mut response = text(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        &format!("{refusal}\n"),
    );
    if status == 426 {
        response.headers_mut().insert(
            "sec-websocket-version",
            header::HeaderValue::from_static("13"),
        );
    }
    response
}

async fn api(node: Arc<Node>, request: Request<Incoming>) -> Response<Body> {
    if request.method() != Method::POST {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    if !authorized(&node, &request) {
        return text(StatusCode::UNAUTHORIZED, "missing or wrong API key\n");
    }
    let method = request
        .uri()
        .path()
        .trim_start_matches("/api")
        .trim_start_matches('/')
        .to_owned();
    // The body has as long as the request head had: a client that stops
    // sending mid-body does not hold the connection.
    let reading = Limited::new(request.into_body(), MAX_API_BODY).collect();
    let body = match tokio::time::timeout(node.server_config.handshake_timeout, reading).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(_)) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable\n",
            );
        }
        Err(_) => {
            info!("API request body not received within security.handshake_timeout");
            let mut response = text(StatusCode::REQUEST_TIMEOUT, "request body timed out\n");
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    // Centrifugo also accepts `{"method": …, "params": …}` at `/api`.
    let (method, body) = if method.is_empty() {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(command) => {
                let method = command["method"].as_str().unwrap_or_default().to_owned();
                (method, Bytes::from(command["params"].to_string()))
            }
            Err(error) => {
                let reply = json!({ "error": { "code": 107, "message": format!("bad request body: {error}") } });
                return json_response(StatusCode::BAD_REQUEST, reply.to_string());
            }
        }
    } else {
        (method, body)
    };
    let (status, reply) = api::call(&node, &method, &body).await;
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.to_string(),
    )
}

/// `X-API-Key: KEY` or `Authorization: apikey KEY`, compared in constant
/// time.
fn authorized(node: &Node, request: &Request<Incoming>) -> bool {
    let headers = request.headers();
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("apikey "))
        })
        .unwrap_or_default();
    let expected = node.config.auth.api_key.as_bytes();
    !expected.is_empty()
        && presented.len() == expected.len()
        && presented
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn health(node: &Node) -> Response<Body> {
    if node.is_draining() {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "draining"}).to_string(),
        )
    } else {
        json_response(StatusCode::OK, json!({"status": "ready"}).to_string())
    }
}

/// Readiness, for a load balancer to take a node out of rotation: 503
/// while it drains or cannot use its broker (Redis unreachable, or its
/// subscriptions being restored), 200 otherwise. `/health` stays liveness.
async fn ready(node: &Node) -> Response<Body> {
    let (status, body) = if node.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "draining"}),
        )
    } else {
        match node.broker.ready().await {
            Ok(()) => (StatusCode::OK, json!({"status": "ready"})),
            Err(error) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "broker unavailable", "error": error.to_string()}),
            ),
        }
    };
    json_response(status, body.to_string())
}

fn metrics(node: &Node) -> Response<Body> {
    let channels = node.hub.channels();
    let gauges = Gauges {
        connections: node.session_count(),
        subscriptions: channels.iter().map(|(_, n)| n).sum(),
        channels: channels.len(),
        draining: node.is_draining(),
    };
    let body = node.metrics.render(gauges);
    respond(StatusCode::OK, metrics::CONTENT_TYPE, body)
}

/// A response with `status`, `content_type` and `body`.
fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "application/json", body)
}

fn html(page: &'static str) -> Response<Body> {
    respond(StatusCode::OK, "text/html; charset=utf-8", page)
}

fn javascript(source: &'static str) -> Response<Body> {
    respond(StatusCode::OK, "text/javascript; charset=utf-8", source)
}
