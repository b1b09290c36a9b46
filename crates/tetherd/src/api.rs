//! The server HTTP API, compatible with Centrifugo's (v5 style): `POST
//! /api/<method>` with a JSON body, authenticated by `X-API-Key` (or
//! `Authorization: apikey KEY`). Answers `{"result": …}` or
//! `{"error": {"code", "message"}}`.

use std::{collections::BTreeMap, sync::Arc};

use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};

use crate::{
    broker::{ClientInfo, HistoryQuery, Publication, StreamPosition},
    node::{ControlMessage, Node, PublishOptions, broker_error, history_options},
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
/// response body: `{"result": …}` or `{"error": …}`, and for `batch`
/// `{"replies": […]}`.
pub(crate) async fn call(node: &Arc<Node>, method: &str, body: &[u8]) -> (u16, Value) {
    if method == "batch" {
        return match batch(node, body).await {
            Ok(replies) => (200, replies),
            Err(why) => (400, error_json(&bad_request(why))),
        };
    }
    match run(node, method, body).await {
        None => (404, error_json(&ReplyError::METHOD_NOT_FOUND)),
        Some(Ok(result)) => (200, json!({ "result": result })),
        Some(Err(ApiError::Reply(error))) => (200, error_json(&error)),
        Some(Err(ApiError::Malformed(why))) => (400, error_json(&bad_request(why))),
    }
}

/// Runs one method; `None` when there is no such method.
async fn run(node: &Arc<Node>, method: &str, body: &[u8]) -> Option<Result<Value, ApiError>> {
    Some(match method {
        "publish" => publish_api(node, body).await,
        "broadcast" => broadcast(node, body).await,
        "subscribe" => subscribe(node, body).await,
        "unsubscribe" => unsubscribe(node, body).await,
        "disconnect" => disconnect(node, body).await,
        "refresh" => refresh(node, body).await,
        "presence" => presence(node, body).await,
        "presence_stats" => presence_stats(node, body).await,
        "history" => history(node, body).await,
        "history_remove" => history_remove(node, body).await,
        "channels" => channels(node, body).await,
        "info" => Ok(info(node).await),
        _ => return None,
    })
}

#[derive(Deserialize)]
struct BatchRequest {
    /// Each an object with one method name and its request.
    commands: Vec<serde_json::Map<String, Value>>,
    /// Centrifugo may run the commands concurrently; they run in order here
    /// either way.
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted for compatibility; commands always run in order"
    )]
    parallel: bool,
}

/// Centrifugo's `batch`: the commands run in order, each answered in its
/// place as `{"METHOD": result}` or `{"error": …}`; one that is not a
/// known method with a request is an error of its own, not of the batch.
async fn batch(node: &Arc<Node>, body: &[u8]) -> Result<Value, String> {
    let request: BatchRequest =
        serde_json::from_slice(body).map_err(|error| format!("bad request body: {error}"))?;
    let mut replies = Vec::with_capacity(request.commands.len());
    for command in request.commands {
        let mut methods = command.into_iter();
        let reply = match (methods.next(), methods.next()) {
            (Some((method, params)), None) if method != "batch" => {
                let params = params.to_string();
                match run(node, &method, params.as_bytes()).await {
                    None => error_json(&ReplyError::METHOD_NOT_FOUND),
                    Some(Ok(result)) => json!({ method: result }),
                    Some(Err(ApiError::Reply(error))) => error_json(&error),
                    Some(Err(ApiError::Malformed(why))) => error_json(&bad_request(why)),
                }
            }
            _ => error_json(&bad_request(
                "a command names exactly one method, not batch",
            )),
        };
        replies.push(reply);
    }
    Ok(json!({ "replies": replies }))
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

/// Subscribes the user's connections, on whichever node they are.
async fn subscribe(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: UserChannel = parse(body)?;
    node.namespace(&request.channel)?;
    node.control(ControlMessage::Subscribe {
        user: request.user,
        client: request.client,
        channel: request.channel,
    })
    .await?;
    Ok(json!({}))
}

/// Unsubscribes the user's connections, on whichever node they are.
async fn unsubscribe(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: UserChannel = parse(body)?;
    node.control(ControlMessage::Unsubscribe {
        user: request.user,
        client: request.client,
        channel: request.channel,
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
struct DisconnectRequest {
    user: String,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    disconnect: Option<DisconnectBody>,
    /// Client ids of the user to keep connected.
    #[serde(default)]
    whitelist: Vec<String>,
}

#[derive(Deserialize)]
struct DisconnectBody {
    code: u16,
    #[serde(default)]
    reason: String,
}

/// Ends the user's connections, on whichever node they are.
async fn disconnect(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: DisconnectRequest = parse(body)?;
    let disconnect = match request.disconnect {
        Some(body) => Disconnect::custom(body.code, body.reason).map_err(bad_request)?,
        None => Disconnect::FORCE_NO_RECONNECT,
    };
    node.control(ControlMessage::Disconnect {
        user: request.user,
        client: request.client,
        code: disconnect.code,
        reason: disconnect.reason.into_owned(),
        whitelist: request.whitelist,
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
struct RefreshRequest {
    user: String,
    #[serde(default)]
    client: Option<String>,
    /// End the connections now as expired (3005).
    #[serde(default)]
    expired: bool,
    /// When the connections expire, Unix seconds; 0 or absent: never.
    #[serde(default)]
    expire_at: u64,
}

/// Expires the user's connections, or moves their expiry, on whichever
/// node they are (Centrifugo's `refresh`).
async fn refresh(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let request: RefreshRequest = parse(body)?;
    node.control(ControlMessage::Refresh {
        user: request.user,
        client: request.client,
        expired: request.expired,
        expire_at: (request.expire_at > 0).then_some(request.expire_at),
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
struct ChannelRequest {
    channel: String,
}

/// The channel of a presence request, if its namespace has presence.
fn presence_channel(node: &Node, body: &[u8]) -> Result<String, ApiError> {
    let request: ChannelRequest = parse(body)?;
    if node.namespace(&request.channel)?.presence {
        Ok(request.channel)
    } else {
        Err(ReplyError::NOT_AVAILABLE.into())
    }
}

/// A `ClientInfo` as the protocol shows it.
fn client_info_json(info: &ClientInfo) -> Value {
    serde_json::from_slice(&wire::encode_client_info(info)).unwrap_or(Value::Null)
}

async fn presence(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let channel = presence_channel(node, body)?;
    let clients = node.broker.presence(&channel).await.map_err(broker_error)?;
    let presence: serde_json::Map<_, _> = clients
        .iter()
        .map(|info| (info.client.clone(), client_info_json(info)))
        .collect();
    Ok(json!({ "presence": presence }))
}

async fn presence_stats(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let channel = presence_channel(node, body)?;
    let stats = node
        .broker
        .presence_stats(&channel)
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

/// Channels with subscribers on any node, with their counts summed. Nodes
/// that did not answer in time are named in `missing_nodes` (absent when
/// every live node answered).
async fn channels(node: &Arc<Node>, body: &[u8]) -> Result<Value, ApiError> {
    let request: ChannelsRequest = if body.is_empty() {
        ChannelsRequest::default()
    } else {
        parse(body)?
    };
    let cluster = node.cluster_channels(&request.pattern).await?;
    let channels: serde_json::Map<_, _> = cluster
        .channels
        .into_iter()
        .map(|(name, clients)| (name, json!({ "num_clients": clients })))
        .collect();
    let mut result = json!({ "channels": channels });
    if !cluster.missing_nodes.is_empty() {
        result["missing_nodes"] = json!(cluster.missing_nodes);
    }
    Ok(result)
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
