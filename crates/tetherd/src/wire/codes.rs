//! The protocol's numbered outcomes: reply errors (100–113), unsubscribe
//! codes (2000–2999) and disconnect codes (3000–4999), with Centrifugo's
//! numbers and messages so that its SDKs react as they do to Centrifugo.
//!
//! What the SDKs do with each range (centrifuge-js 5.x `_handleDisconnect`,
//! `onClose`, `_connectError`, `_subscribeError`; centrifuge-python alike):
//!
//! | Code                      | SDK reaction                                        |
//! |---------------------------|-----------------------------------------------------|
//! | close 1009                | disconnected ("message size limit"), no reconnect   |
//! | other close codes < 3000  | "transport closed", reconnects with backoff         |
//! | 3000–3499, 4000–4499, ≥5000 | reconnects with backoff                           |
//! | 3500–3999, 4500–4999      | terminal: disconnected, no reconnect                |
//! | unsubscribe < 2500        | subscription ends (unsubscribed)                    |
//! | unsubscribe ≥ 2500        | the SDK subscribes again                            |
//! | error on connect          | < 100, 109 or `temporary`: reconnects (109 fetches a new token); else disconnected |
//! | error on subscribe        | < 100, 109 or `temporary`: resubscribes; else unsubscribed |
//! | error on refresh          | < 100 or `temporary`: retries; else disconnected / unsubscribed |

use std::borrow::Cow;

use tether::{CloseCode, CloseFrame};

/// An error in a reply: `{"code":…,"message":…,"temporary":true}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplyError {
    pub(crate) code: u32,
    pub(crate) message: Cow<'static, str>,
    /// The SDKs retry a command whose error is temporary.
    pub(crate) temporary: bool,
}

impl ReplyError {
    /// 100: the server failed; the client is not at fault. Temporary.
    pub(crate) const INTERNAL: Self = Self::named(100, "internal server error", true);
    /// 101: the request is unauthorized.
    pub(crate) const UNAUTHORIZED: Self = Self::named(101, "unauthorized", false);
    /// 102: no such channel (e.g. an undefined namespace).
    pub(crate) const UNKNOWN_CHANNEL: Self = Self::named(102, "unknown channel", false);
    /// 103: not allowed (also an invalid subscription token's signature).
    pub(crate) const PERMISSION_DENIED: Self = Self::named(103, "permission denied", false);
    /// 104: the command names a method the server does not have.
    pub(crate) const METHOD_NOT_FOUND: Self = Self::named(104, "method not found", false);
    /// 105: the connection is already subscribed to the channel.
    pub(crate) const ALREADY_SUBSCRIBED: Self = Self::named(105, "already subscribed", false);
    /// 106: some limit was exceeded (see 111 for rate limits).
    pub(crate) const LIMIT_EXCEEDED: Self = Self::named(106, "limit exceeded", false);
    /// 107: the request is malformed; retrying makes no sense.
    pub(crate) const BAD_REQUEST: Self = Self::named(107, "bad request", false);
    /// 108: the feature is not enabled (e.g. history in a channel without it).
    pub(crate) const NOT_AVAILABLE: Self = Self::named(108, "not available", false);
    /// 109: the connection or subscription token expired; the SDKs fetch a
    /// new one and try again.
    pub(crate) const TOKEN_EXPIRED: Self = Self::named(109, "token expired", false);
    /// 110: the connection expired (no token involved).
    pub(crate) const EXPIRED: Self = Self::named(110, "expired", false);
    /// 111: rate limited. Temporary.
    pub(crate) const TOO_MANY_REQUESTS: Self = Self::named(111, "too many requests", true);
    /// 112: the stream no longer holds the requested position (history
    /// `since`, or a subscribe that asked to be refused rather than
    /// `recovered: false`).
    pub(crate) const UNRECOVERABLE_POSITION: Self =
        Self::named(112, "unrecoverable position", false);
    /// 113: the token was revoked; the SDKs treat it like any permanent error.
    pub(crate) const TOKEN_REVOKED: Self = Self::named(113, "token revoked", false);

    const fn named(code: u32, message: &'static str, temporary: bool) -> Self {
        Self {
            code,
            message: Cow::Borrowed(message),
            temporary,
        }
    }
}

/// Why the server ends a connection: sent as the WebSocket close code and
/// reason, or as a `disconnect` push. Whether the client reconnects follows
/// from the code alone (see the module table), so there is no separate flag
/// to contradict it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Disconnect {
    pub(crate) code: u16,
    /// Plain text for humans, at most 123 bytes. Never valid JSON: the JS
    /// SDK first tries to parse a close reason as a protocol v1 advice
    /// object, so a reason like `true` or `42` would cancel the reconnect.
    pub(crate) reason: Cow<'static, str>,
}

impl Disconnect {
    /// 3000: closed with no advice from the server (used for metrics).
    pub(crate) const CONNECTION_CLOSED: Self = Self::named(3000, "connection closed");
    /// 3001: the node is shutting down; the client reconnects (to another node).
    pub(crate) const SHUTDOWN: Self = Self::named(3001, "shutdown");
    /// 3004: the server failed.
    pub(crate) const SERVER_ERROR: Self = Self::named(3004, "internal server error");
    /// 3005: the connection expired and was not refreshed in time.
    pub(crate) const EXPIRED: Self = Self::named(3005, "connection expired");
    /// 3006: a subscription expired and was not refreshed in time.
    pub(crate) const SUBSCRIPTION_EXPIRED: Self = Self::named(3006, "subscription expired");
    /// 3008: the client does not read fast enough (its queue overflowed).
    pub(crate) const SLOW: Self = Self::named(3008, "slow");
    /// 3009: writing to the connection failed.
    pub(crate) const WRITE_ERROR: Self = Self::named(3009, "write error");
    /// 3010: the client's position in a stream is wrong; reconnecting lets
    /// it recover the missed publications.
    pub(crate) const INSUFFICIENT_STATE: Self = Self::named(3010, "insufficient state");
    /// 3011: the server wants the client to reconnect.
    pub(crate) const FORCE_RECONNECT: Self = Self::named(3011, "force reconnect");
    /// 3012: no pong to the server's pings in time.
    pub(crate) const NO_PONG: Self = Self::named(3012, "no pong");
    /// 3013: the client sent too many commands.
    pub(crate) const TOO_MANY_REQUESTS: Self = Self::named(3013, "too many requests");
    /// 3500: the connection token (or a subscription token's channel, user
    /// or client) is invalid. Terminal.
    pub(crate) const INVALID_TOKEN: Self = Self::named(3500, "invalid token");
    /// 3501: malformed commands or commands in a wrong order. Terminal.
    pub(crate) const BAD_REQUEST: Self = Self::named(3501, "bad request");
    /// 3502: the connection sent no connect command in time. Terminal.
    pub(crate) const STALE: Self = Self::named(3502, "stale");
    /// 3503: the server disconnects the client for good. Terminal.
    pub(crate) const FORCE_NO_RECONNECT: Self = Self::named(3503, "force disconnect");
    /// 3504: too many connections (per user or other rule). Terminal.
    pub(crate) const CONNECTION_LIMIT: Self = Self::named(3504, "connection limit");
    /// 3505: too many channels on one connection. Terminal.
    pub(crate) const CHANNEL_LIMIT: Self = Self::named(3505, "channel limit");
    /// 3506: the connection's format cannot carry the data (binary for a
    /// JSON client). Terminal.
    pub(crate) const INAPPROPRIATE_PROTOCOL: Self = Self::named(3506, "inappropriate protocol");
    /// 3507: not enough permissions for the server at all. Terminal.
    pub(crate) const PERMISSION_DENIED: Self = Self::named(3507, "permission denied");
    /// 3508: a feature without an error reply to carry 108 (e.g. `send`
    /// with no handler). Terminal.
    pub(crate) const NOT_AVAILABLE: Self = Self::named(3508, "not available");
    /// 3509: the client caused too many errors. Terminal.
    pub(crate) const TOO_MANY_ERRORS: Self = Self::named(3509, "too many errors");

    /// An application's disconnect (the server API's, or one relayed by
    /// another node): it becomes the WebSocket close frame, so the code must
    /// be one an application may send (3000–4999) and the reason must fit
    /// the frame.
    pub(crate) fn custom(code: u16, reason: String) -> Result<Self, String> {
        if !(3000..=4999).contains(&code) {
            return Err("disconnect code must be 3000 to 4999".into());
        }
        if reason.len() > CloseFrame::MAX_REASON_BYTES {
            return Err(format!(
                "disconnect reason must be at most {} bytes",
                CloseFrame::MAX_REASON_BYTES
            ));
        }
        Ok(Self {
            code,
            reason: Cow::Owned(reason),
        })
    }

    const fn named(code: u16, reason: &'static str) -> Self {
        Self {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// Whether the SDKs reconnect after this code: everything except the
    /// terminal ranges 3500–3999 and 4500–4999.
    pub(crate) fn reconnect(&self) -> bool {
        !matches!(self.code, 3500..=3999 | 4500..=4999)
    }

    /// The WebSocket close frame carrying this disconnect: the code and the
    /// plain reason (protocol v2 sends no JSON advice).
    pub(crate) fn close_frame(&self) -> CloseFrame {
        CloseFrame {
            code: CloseCode(self.code),
            reason: self.reason.clone().into_owned(),
        }
    }
}

/// Why the server ends one subscription (an `unsubscribe` push).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsubscribe {
    pub(crate) code: u32,
    pub(crate) reason: Cow<'static, str>,
}

impl Unsubscribe {
    /// 2000: the server unsubscribed the client; the subscription ends.
    pub(crate) const SERVER: Self = Self::named(2000, "server unsubscribe");
    /// 2500: the client's stream position is wrong; the SDK subscribes again
    /// and recovers.
    pub(crate) const INSUFFICIENT_STATE: Self = Self::named(2500, "insufficient state");
    /// 2501: the subscription expired; the SDK subscribes again.
    pub(crate) const EXPIRED: Self = Self::named(2501, "subscription expired");

    const fn named(code: u32, reason: &'static str) -> Self {
        Self {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// Whether the SDKs subscribe again after this code (≥ 2500).
    pub(crate) fn resubscribe(&self) -> bool {
        self.code >= 2500
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_follows_the_sdk_ranges() {
        for d in [
            Disconnect::CONNECTION_CLOSED,
            Disconnect::SHUTDOWN,
            Disconnect::SERVER_ERROR,
            Disconnect::EXPIRED,
            Disconnect::SUBSCRIPTION_EXPIRED,
            Disconnect::SLOW,
            Disconnect::WRITE_ERROR,
            Disconnect::INSUFFICIENT_STATE,
            Disconnect::FORCE_RECONNECT,
            Disconnect::NO_PONG,
            Disconnect::TOO_MANY_REQUESTS,
        ] {
            assert!(d.reconnect(), "{d:?}");
            assert!(d.close_frame().code.is_sendable());
        }
        for d in [
            Disconnect::INVALID_TOKEN,
            Disconnect::BAD_REQUEST,
            Disconnect::STALE,
            Disconnect::FORCE_NO_RECONNECT,
            Disconnect::CONNECTION_LIMIT,
            Disconnect::CHANNEL_LIMIT,
            Disconnect::INAPPROPRIATE_PROTOCOL,
            Disconnect::PERMISSION_DENIED,
            Disconnect::NOT_AVAILABLE,
            Disconnect::TOO_MANY_ERRORS,
        ] {
            assert!(!d.reconnect(), "{d:?}");
        }
        let custom = |code| Disconnect {
            code,
            reason: "custom".into(),
        };
        assert!(custom(4000).reconnect());
        assert!(custom(4499).reconnect());
        assert!(!custom(4500).reconnect());
        assert!(!custom(4999).reconnect());
    }

    #[test]
    fn reasons_are_not_json() {
        // The JS SDK reads a close reason that parses as JSON as v1 advice.
        for d in [
            Disconnect::SHUTDOWN,
            Disconnect::BAD_REQUEST,
            Disconnect::FORCE_NO_RECONNECT,
        ] {
            assert!(serde_json::from_str::<serde_json::Value>(&d.reason).is_err());
            assert!(d.reason.len() <= CloseFrame::MAX_REASON_BYTES);
        }
    }

    #[test]
    fn unsubscribe_ranges() {
        assert!(!Unsubscribe::SERVER.resubscribe());
        assert!(Unsubscribe::INSUFFICIENT_STATE.resubscribe());
        assert!(Unsubscribe::EXPIRED.resubscribe());
    }

    #[test]
    fn error_codes_run_from_100_and_only_internal_and_rate_limit_are_temporary() {
        let all = [
            ReplyError::INTERNAL,
            ReplyError::UNAUTHORIZED,
            ReplyError::UNKNOWN_CHANNEL,
            ReplyError::PERMISSION_DENIED,
            ReplyError::METHOD_NOT_FOUND,
            ReplyError::ALREADY_SUBSCRIBED,
            ReplyError::LIMIT_EXCEEDED,
            ReplyError::BAD_REQUEST,
            ReplyError::NOT_AVAILABLE,
            ReplyError::TOKEN_EXPIRED,
            ReplyError::EXPIRED,
            ReplyError::TOO_MANY_REQUESTS,
            ReplyError::UNRECOVERABLE_POSITION,
            ReplyError::TOKEN_REVOKED,
        ];
        let codes: Vec<u32> = all.iter().map(|e| e.code).collect();
        assert_eq!(codes, (100..=113).collect::<Vec<_>>());
        let temporary: Vec<u32> = all.iter().filter(|e| e.temporary).map(|e| e.code).collect();
        assert_eq!(temporary, [100, 111]);
    }
}
