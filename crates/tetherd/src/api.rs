//! The server HTTP API, compatible with Centrifugo's (v5 style): `POST
//! /api/<method>` with a JSON body, authenticated by `X-API-Key` (or
//! `Authorization: apikey KEY`). Answers `{"result": …}` or
//! `{"error": {"code", "message"}}`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};
use tether::CloseFrame;

use crate::{
    broker::{ClientInfo, HistoryQuery, Publication, StreamPosition},
    node::{Node, PublishOptions, broker_error, history_options},
    wire::{self, Disconnect, ReplyError},
};

/// Why an API call failed.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// The request was understood and refused: HTTP 200 with the client
    /// protocol's error (same codes), as Centrifugo answers.
    Reply(ReplyError),
    /// The body is not the method's JSON request: HTTP 400.
    Malformed(String),
}

impl From<ReplyError> for ApiError {
    fn from(error: ReplyError) -> Self {
        Self::Reply(error)
    }
}

fn bad_request(why: impl Into<String>) -> ReplyError {
    ReplyError {
        message: why.into().into(),
        ..ReplyError::BAD_REQUEST
    }
}

/// Runs `method` with the JSON `body`; returns the HTTP status and the
/// response body.
pub(crate) async fn call(node: &Node, method: &str, body: &[u8]) -> (u16, Value) {
    let result = match method {
        "publish" => publish_api(node, body).await,
        "broadcast" => broadcast(node, body).await,
        "subscribe" => subscribe(node, body).await,
        "unsubscribe" => unsubscribe(node, body).await,
        "disconnect" => disconnect(node, body).await,
        "presence" => presence(node, body).await,
        "presence_stats" => presence_stats(node, body).await,
        "history" => history(node, body).await,
        "history_remove" => history_remove(node, body).await,
        "channels" => channels(node, body).await,
        "info" => Ok(info(node).await),
        _ => return (404, error_json(&ReplyError::METHOD_NOT_FOUND)),
    };
    match result {
        Ok(result) => (200, json!({ "result": result })),
        Err(ApiError::Reply(error)) => (200, error_json(&error)),
        Err(ApiError::Malformed(why)) => (400, error_json(&bad_request(why))),
    }
}

fn error_json(error: &ReplyError) -> Value {
    json!({ "error": { "code": error.code, "message": error.message } })
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::Malformed(format!("bad request body: {error}")))
}

#[derive(Deserialize)]
struct PublishRequest<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    skip_history: bool,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

fn position_json(position: &StreamPosition) -> Value {
    let mut result = serde_json::Map::new();
    if position.offset > 0 {
        result.insert("offset".into(), json!(position.offset));
    }
    if !position.epoch.is_empty() {
        result.insert("epoch".into(), json!(position.epoch));
    }
    Value::Object(result)
}

async fn publish_api(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: PublishRequest<'_> = parse(body)?;
    let data = wire::compact_json(request.data.get().as_bytes());
    let options = PublishOptions {
        info: None,
        tags: request.tags.into_iter().collect(),
        skip_history: request.skip_history,
    };
    let position = node.publish(&request.channel, data, options).await?;
    Ok(position_json(&position))
}

#[derive(Deserialize)]
struct BroadcastRequest<'a> {
    channels: Vec<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    skip_history: bool,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

async fn broadcast(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: BroadcastRequest<'_> = parse(body)?;
    let data = wire::compact_json(request.data.get().as_bytes());
    let options = PublishOptions {
        info: None,
        tags: request.tags.into_iter().collect(),
        skip_history: request.skip_history,
    };
    let mut responses = Vec::with_capacity(request.channels.len());
    for channel in &request.channels {
        let published = node.publish(channel, data.clone(), options.clone()).await;
        responses.push(match published {
            Ok(position) => json!({ "result": position_json(&position) }),
            Err(error) => error_json(&error),
        });
    }
    Ok(json!({ "responses": responses }))
}

#[derive(Deserialize)]
struct UserChannel {
    user: String,
    channel: String,
    #[serde(default)]
    client: Option<String>,
}

async fn subscribe(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: UserChannel = parse(body)?;
    node.namespace(&request.channel)?;
    for handle in node.sessions() {
        if handle.belongs_to(&request.user, request.client.as_deref()) {
            handle.command(crate::handle::ServerCommand::Subscribe(
                request.channel.clone(),
            ));
        }
    }
    Ok(json!({}))
}

async fn unsubscribe(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: UserChannel = parse(body)?;
    for handle in node.sessions() {
        if handle.belongs_to(&request.user, request.client.as_deref()) {
            handle.command(crate::handle::ServerCommand::Unsubscribe(
                request.channel.clone(),
            ));
        }
    }
    Ok(json!({}))
}

#[derive(Deserialize)]
struct DisconnectRequest {
    user: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    disconnect: Option<DisconnectBody>,
}

#[derive(Deserialize)]
struct DisconnectBody {
    code: u16,
    #[serde(default)]
    reason: String,
}

async fn disconnect(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: DisconnectRequest = parse(body)?;
    let disconnect = match request.disconnect {
        // It becomes the WebSocket close frame: a code the protocol lets an
        // application send, and a reason that fits the frame.
        Some(body) if !(3000..=4999).contains(&body.code) => {
            return Err(bad_request("disconnect code must be 3000 to 4999").into());
        }
        Some(body) if body.reason.len() > CloseFrame::MAX_REASON_BYTES => {
            return Err(bad_request(format!(
                "disconnect reason must be at most {} bytes",
                CloseFrame::MAX_REASON_BYTES
            ))
            .into());
        }
        Some(body) => Disconnect {
            code: body.code,
            reason: body.reason.into(),
        },
        None => Disconnect::FORCE_NO_RECONNECT,
    };
    for handle in node.sessions() {
        if handle.belongs_to(&request.user, request.client.as_deref()) {
            handle.close(disconnect.clone());
        }
    }
    Ok(json!({}))
}

#[derive(Deserialize)]
struct ChannelRequest {
    channel: String,
}

fn presence_enabled(node: &Node, channel: &str) -> Result<(), ReplyError> {
    if node.namespace(channel)?.presence {
        Ok(())
    } else {
        Err(ReplyError::NOT_AVAILABLE)
    }
}

/// A `ClientInfo` as the protocol shows it.
fn client_info_json(info: &ClientInfo) -> Value {
    serde_json::from_slice(&wire::encode_client_info(info)).unwrap_or(Value::Null)
}

async fn presence(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: ChannelRequest = parse(body)?;
    presence_enabled(node, &request.channel)?;
    let clients = node
        .broker
        .presence(&request.channel)
        .await
        .map_err(broker_error)?;
    let presence: serde_json::Map<_, _> = clients
        .iter()
        .map(|info| (info.client.clone(), client_info_json(info)))
        .collect();
    Ok(json!({ "presence": presence }))
}

async fn presence_stats(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: ChannelRequest = parse(body)?;
    presence_enabled(node, &request.channel)?;
    let stats = node
        .broker
        .presence_stats(&request.channel)
        .await
        .map_err(broker_error)?;
    Ok(json!({ "num_clients": stats.clients, "num_users": stats.users }))
}

#[derive(Deserialize)]
struct HistoryRequest {
    channel: String,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    since: Option<SincePosition>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
pub(crate) struct SincePosition {
    #[serde(default)]
    pub(crate) offset: u64,
    #[serde(default)]
    pub(crate) epoch: String,
}

/// A publication as the protocol shows it.
fn publication_json(publication: &Publication) -> Value {
    serde_json::from_slice(&wire::encode_publication(publication)).unwrap_or(Value::Null)
}

async fn history(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: HistoryRequest = parse(body)?;
    if history_options(node.namespace(&request.channel)?).is_none() {
        return Err(ReplyError::NOT_AVAILABLE.into());
    }
    let query = HistoryQuery {
        since: request.since.map(|since| StreamPosition {
            offset: since.offset,
            epoch: since.epoch,
        }),
        // Centrifugo: a missing or 0 limit returns only the position, a
        // negative one everything.
        limit: match request.limit {
            None | Some(0) => Some(0),
            Some(limit) if limit < 0 => None,
            Some(limit) => Some(limit as usize),
        },
        reverse: request.reverse,
    };
    if query.pages_back_from_zero() {
        return Err(bad_request("reverse from since offset 0: nothing is older").into());
    }
    let history = node
        .broker
        .history(&request.channel, query)
        .await
        .map_err(broker_error)?;
    let publications: Vec<_> = history.publications.iter().map(publication_json).collect();
    let mut result = position_json(&history.position);
    if let Value::Object(object) = &mut result {
        object.insert("publications".into(), json!(publications));
    }
    Ok(result)
}

async fn history_remove(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: ChannelRequest = parse(body)?;
    node.namespace(&request.channel)?;
    node.broker
        .remove_history(&request.channel)
        .await
        .map_err(broker_error)?;
    Ok(json!({}))
}

#[derive(Deserialize, Default)]
struct ChannelsRequest {
    #[serde(default)]
    pattern: String,
}

async fn channels(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: ChannelsRequest = if body.is_empty() {
        ChannelsRequest::default()
    } else {
        parse(body)?
    };
    let channels: serde_json::Map<_, _> = node
        .hub
        .channels()
        .into_iter()
        .filter(|(name, _)| glob(&request.pattern, name))
        .map(|(name, clients)| (name, json!({ "num_clients": clients })))
        .collect();
    Ok(json!({ "channels": channels }))
}

/// Centrifugo's channel pattern: `*` matches any run of characters; an
/// empty pattern matches everything.
fn glob(pattern: &str, name: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<_> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// The live nodes: this one (counters as of now) and those in the
/// broker's registry. When the registry cannot be read (Redis down), this
/// node alone, so the dashboard still shows what it can.
pub(crate) async fn info(node: &Node) -> Value {
    let local = node.info();
    let mut nodes = match node.broker.nodes().await {
        Ok(nodes) => nodes,
        Err(error) => {
            // The announcer already warned that the registry is unreachable.
            tracing::debug!(%error, "node registry unavailable; /api/info lists this node only");
            Vec::new()
        }
    };
    nodes.retain(|other| other.uid != local.uid);
    nodes.insert(0, local);
    json!({ "nodes": nodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(glob("", "chat:a"));
        assert!(glob("chat:*", "chat:a"));
        assert!(!glob("chat:*", "news:a"));
        assert!(glob("*:a", "chat:a"));
        assert!(glob("c*t:*", "chat:lobby"));
        assert!(!glob("chat", "chat:a"));
    }
}
