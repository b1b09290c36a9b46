//! The JSON a hook sends and the JSON the backend answers, field for field
//! as Centrifugo's HTTP proxy has them, so a backend written for Centrifugo
//! works unchanged. Answers tolerate fields Tether does not use (`meta`,
//! `override`, …): backends written for newer Centrifugo versions send
//! them.

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ProxyError;
use crate::{
    auth::RawCapability,
    wire::{Disconnect, ReplyError},
};

/// Who is calling: the part every request shares.
#[derive(Debug, Serialize)]
pub(crate) struct Caller<'a> {
    pub(crate) client: &'a str,
    pub(crate) transport: &'static str,
    pub(crate) protocol: &'static str,
    pub(crate) encoding: &'static str,
    /// Absent from the connect request only (there is no user yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<&'a str>,
}

impl<'a> Caller<'a> {
    /// A WebSocket client of the JSON protocol.
    pub(crate) fn websocket(client: &'a str, user: Option<&'a str>) -> Self {
        Self {
            client,
            transport: "websocket",
            protocol: "json",
            encoding: "json",
            user,
        }
    }
}

/// The client's JSON, passed through as it came.
pub(crate) type Json<'a> = Option<&'a RawValue>;

#[derive(Debug, Serialize)]
pub(crate) struct ConnectRequest<'a> {
    #[serde(flatten)]
    pub(crate) caller: Caller<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Json<'a>,
}

/// The refresh request: the caller alone.
#[derive(Debug, Serialize)]
pub(crate) struct RefreshRequest<'a> {
    #[serde(flatten)]
    pub(crate) caller: Caller<'a>,
}

/// subscribe, publish, sub_refresh (which sends no data).
#[derive(Debug, Serialize)]
pub(crate) struct ChannelRequest<'a> {
    #[serde(flatten)]
    pub(crate) caller: Caller<'a>,
    pub(crate) channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Json<'a>,
}

/// rpc, and send (without a method).
#[derive(Debug, Serialize)]
pub(crate) struct RpcRequest<'a> {
    #[serde(flatten)]
    pub(crate) caller: Caller<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Json<'a>,
}

/// A backend's answer: a result, an error for the client's command, or a
/// disconnect.
#[derive(Debug, Deserialize)]
#[serde(bound = "R: Deserialize<'de>")]
pub(crate) struct Answer<R> {
    #[serde(default)]
    result: Option<R>,
    #[serde(default)]
    error: Option<AnswerError>,
    #[serde(default)]
    disconnect: Option<AnswerDisconnect>,
}

#[derive(Debug, Deserialize)]
struct AnswerError {
    code: u32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    temporary: bool,
}

#[derive(Debug, Deserialize)]
struct AnswerDisconnect {
    code: u32,
    #[serde(default)]
    reason: String,
}

/// What the backend decided.
#[derive(Debug)]
pub(crate) enum Verdict<R> {
    Granted(R),
    /// The client's command fails with this error.
    Refused(ReplyError),
    /// The connection ends with this disconnect.
    Disconnect(Disconnect),
}

impl<R> Answer<R> {
    /// The decision, checked: a disconnect code must be 4000–4999 (the
    /// application's range; 4500 and up are terminal), an error code at
    /// least 100. A refresh answers with a result only (`refresh_only`:
    /// Centrifugo ignores errors and disconnects there), and an answer with
    /// nothing in it is the backend's mistake.
    pub(crate) fn verdict(self, refresh_only: bool) -> Result<Verdict<R>, ProxyError> {
        if refresh_only {
            return self
                .result
                .map(Verdict::Granted)
                .ok_or_else(|| ProxyError::Malformed("no result".into()));
        }
        if let Some(disconnect) = self.disconnect {
            let code = u16::try_from(disconnect.code)
                .ok()
                .filter(|code| (4000..=4999).contains(code))
                .ok_or_else(|| {
                    ProxyError::Malformed(format!(
                        "disconnect code {} is not 4000 to 4999",
                        disconnect.code
                    ))
                })?;
            return Disconnect::custom(code, disconnect.reason)
                .map(Verdict::Disconnect)
                .map_err(ProxyError::Malformed);
        }
        if let Some(error) = self.error {
            if error.code < 100 {
                return Err(ProxyError::Malformed(format!(
                    "error code {} is below 100",
                    error.code
                )));
            }
            return Ok(Verdict::Refused(ReplyError {
                code: error.code,
                message: error.message.into(),
                temporary: error.temporary,
            }));
        }
        self.result
            .map(Verdict::Granted)
            .ok_or_else(|| ProxyError::Malformed("no result, error or disconnect".into()))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ConnectResult {
    pub(crate) user: String,
    /// Unix seconds; 0: the connection does not expire.
    pub(crate) expire_at: u64,
    pub(crate) info: Option<Box<RawValue>>,
    pub(crate) b64info: String,
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) b64data: String,
    /// Server-side subscriptions.
    pub(crate) channels: Vec<String>,
    /// Server-side subscriptions with options.
    pub(crate) subs: BTreeMap<String, SubscribeOptions>,
    /// What the connection may do in which channels, as a token's `caps`.
    pub(crate) caps: Vec<RawCapability>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SubscribeOptions {
    pub(crate) info: Option<Box<RawValue>>,
    pub(crate) b64info: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RefreshResult {
    pub(crate) expired: bool,
    /// Unix seconds; 0: no longer expires.
    pub(crate) expire_at: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SubscribeResult {
    pub(crate) info: Option<Box<RawValue>>,
    pub(crate) b64info: String,
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) b64data: String,
    /// Unix seconds; 0: the subscription does not expire.
    pub(crate) expire_at: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PublishResult {
    /// Replaces the client's data.
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) b64data: String,
    pub(crate) skip_history: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RpcResult {
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) b64data: String,
}

impl<R> Verdict<R> {
    /// A granted result through `check` (its payloads, say), which may find
    /// the answer unusable; refusals and disconnects as they are.
    pub(crate) fn checked<T>(
        self,
        check: impl FnOnce(R) -> Result<T, ProxyError>,
    ) -> Result<Verdict<T>, ProxyError> {
        Ok(match self {
            Self::Granted(result) => Verdict::Granted(check(result)?),
            Self::Refused(error) => Verdict::Refused(error),
            Self::Disconnect(disconnect) => Verdict::Disconnect(disconnect),
        })
    }
}

/// An `expire_at` in Unix seconds; 0 is none (never expires).
pub(crate) fn expiry(expire_at: u64) -> Option<u64> {
    (expire_at > 0).then_some(expire_at)
}

/// A payload given as JSON or as base64 (`b64data`, `b64info`). The JSON
/// protocol carries JSON only, so base64 must decode to JSON; `null` and
/// absent are none.
pub(crate) fn payload(json: Option<Box<RawValue>>, b64: &str) -> Result<Option<Bytes>, ProxyError> {
    if let Some(json) = json.filter(|json| json.get() != "null") {
        return Ok(Some(Bytes::from(Box::<str>::from(json).into_boxed_bytes())));
    }
    if b64.is_empty() {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|error| ProxyError::Malformed(format!("base64 payload: {error}")))?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(|_| {
        ProxyError::Malformed(
            "a base64 payload that is not JSON (JSON clients get JSON only)".into(),
        )
    })?;
    Ok(Some(Bytes::from(bytes)))
}

/// The client's JSON (already checked when its command was decoded) as a
/// raw value to pass through.
pub(crate) fn client_json(data: Option<&Bytes>) -> Json<'_> {
    data.and_then(|data| serde_json::from_slice(data).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer<R: for<'de> Deserialize<'de>>(json: &str) -> Result<Verdict<R>, ProxyError> {
        serde_json::from_str::<Answer<R>>(json)
            .unwrap()
            .verdict(false)
    }

    #[test]
    fn a_connect_result_keeps_its_json_as_it_came() {
        let Ok(Verdict::Granted(result)) = answer::<ConnectResult>(
            r#"{"result":{"user":"56","expire_at":1700000000,"info":{"a":[1, 2]},"channels":["x"],"meta":{"k":1},"caps":[{"channels":["news"],"allow":["sub"]}]}}"#,
        ) else {
            panic!("granted");
        };
        assert_eq!(result.user, "56");
        assert_eq!(result.expire_at, 1_700_000_000);
        assert_eq!(
            payload(result.info, "").unwrap().unwrap(),
            &br#"{"a":[1, 2]}"#[..]
        );
        assert_eq!(result.channels, ["x"]);
        assert_eq!(result.caps.len(), 1);
    }

    #[test]
    fn errors_and_disconnects_are_checked() {
        let Ok(Verdict::Refused(error)) =
            answer::<SubscribeResult>(r#"{"error":{"code":403,"message":"no"}}"#)
        else {
            panic!("refused");
        };
        assert_eq!(
            (error.code, &*error.message, error.temporary),
            (403, "no", false)
        );
        let Ok(Verdict::Disconnect(disconnect)) =
            answer::<SubscribeResult>(r#"{"disconnect":{"code":4501,"reason":"unauthorized"}}"#)
        else {
            panic!("disconnect");
        };
        assert_eq!(
            (disconnect.code, &*disconnect.reason),
            (4501, "unauthorized")
        );
        for bad in [
            r#"{"disconnect":{"code":3001,"reason":"x"}}"#,
            r#"{"disconnect":{"code":70000}}"#,
            r#"{"error":{"code":5}}"#,
            r#"{}"#,
        ] {
            assert!(
                matches!(
                    answer::<SubscribeResult>(bad),
                    Err(ProxyError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_refresh_looks_at_its_result_only() {
        let answer: Answer<RefreshResult> =
            serde_json::from_str(r#"{"result":{"expired":true},"disconnect":{"code":4000}}"#)
                .unwrap();
        let Ok(Verdict::Granted(result)) = answer.verdict(true) else {
            panic!("result");
        };
        assert!(result.expired);
    }

    #[test]
    fn a_check_sees_granted_results_only() {
        let unusable = |_: RpcResult| Err::<(), _>(ProxyError::Malformed("no".into()));
        let granted = answer::<RpcResult>(r#"{"result":{"b64data":"AAEC"}}"#).unwrap();
        assert!(matches!(
            granted.checked(unusable),
            Err(ProxyError::Malformed(_))
        ));
        let refused = answer::<RpcResult>(r#"{"error":{"code":400}}"#).unwrap();
        assert!(
            matches!(refused.checked(unusable), Ok(Verdict::Refused(error)) if error.code == 400)
        );
    }

    #[test]
    fn base64_payloads_must_be_json() {
        assert_eq!(
            payload(None, "eyJhIjoxfQ==").unwrap().unwrap(),
            &br#"{"a":1}"#[..]
        );
        assert!(payload(None, "AAEC").is_err());
        assert!(payload(None, "not base64!").is_err());
        let null = serde_json::from_str::<Box<RawValue>>("null").unwrap();
        assert_eq!(payload(Some(null), "").unwrap(), None);
    }
}
