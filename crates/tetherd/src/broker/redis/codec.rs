//! How publications, joins, leaves and presence entries are encoded in
//! Redis: compact JSON, with payloads that are JSON kept as raw JSON (byte
//! for byte) and anything else in base64.
//!
//! The format grows by optional fields only, so every node decodes what
//! older ones wrote. A publication on pub/sub with an offset also carries
//! its stream's epoch (`e`, added by the publish script): a message that
//! lacks it (from a node that predates it) or that does not decode cannot
//! be placed in its stream, so the subscriber reports the channel
//! interrupted instead of delivering it blind.

use std::borrow::Cow;

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::broker::{ClientInfo, Publication};

/// A message on a channel's pub/sub channel, and a history entry.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    /// What this is (publications, joins and leaves share the channel).
    k: Kind,
    /// The publication's offset (absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    o: u64,
    /// The epoch of the offset's stream: on pub/sub only, never in history.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    e: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    d: Option<&'a RawValue>,
    /// The data in base64, when it is not exactly one JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    db: Option<String>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    i: Option<WireInfo<'a>>,
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    t: Cow<'a, [(String, String)]>,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    #[serde(rename = "p")]
    Publication,
    #[serde(rename = "j")]
    Join,
    #[serde(rename = "l")]
    Leave,
    /// A message between nodes (see [`crate::broker::Broker::publish_control`]).
    #[serde(rename = "c")]
    Control,
}

#[derive(Serialize, Deserialize)]
pub(super) struct WireInfo<'a> {
    c: Cow<'a, str>,
    u: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    ci: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cib: Option<String>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    hi: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hib: Option<String>,
}

impl<'a> WireInfo<'a> {
    pub(super) fn from_info(info: &'a ClientInfo) -> Self {
        let (ci, cib) = raw(info.conn_info.as_ref());
        let (hi, hib) = raw(info.chan_info.as_ref());
        Self {
            c: Cow::Borrowed(&info.client),
            u: Cow::Borrowed(&info.user),
            ci,
            cib,
            hi,
            hib,
        }
    }

    pub(super) fn into_info(self) -> ClientInfo {
        ClientInfo {
            client: self.c.into_owned(),
            user: self.u.into_owned(),
            conn_info: unraw(self.ci, self.cib),
            chan_info: unraw(self.hi, self.hib),
        }
    }
}

/// What a pub/sub message or history entry holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    /// A publication and the epoch that came with it, if any.
    Publication(Publication, Option<String>),
    Join(ClientInfo),
    Leave(ClientInfo),
    /// A control message's JSON, as the node wrote it.
    Control(Bytes),
}

pub(super) fn encode_publication(publication: &Publication) -> Vec<u8> {
    let (d, db) = raw(Some(&publication.data));
    let wire = Wire {
        k: Kind::Publication,
        o: publication.offset,
        e: None,
        d,
        db,
        i: publication.info.as_ref().map(WireInfo::from_info),
        t: Cow::Borrowed(&publication.tags),
    };
    serde_json::to_vec(&wire).expect("a Wire always serializes: strings and valid raw JSON")
}

pub(super) fn encode_presence_event(kind: Kind, info: &ClientInfo) -> Vec<u8> {
    let wire = Wire {
        k: kind,
        o: 0,
        e: None,
        d: None,
        db: None,
        i: Some(WireInfo::from_info(info)),
        t: Cow::Borrowed(&[]),
    };
    serde_json::to_vec(&wire).expect("a Wire always serializes: strings and valid raw JSON")
}

/// A control message (JSON) for the reserved control channel.
pub(super) fn encode_control(message: &Bytes) -> Vec<u8> {
    let (d, db) = raw(Some(message));
    let wire = Wire {
        k: Kind::Control,
        o: 0,
        e: None,
        d,
        db,
        i: None,
        t: Cow::Borrowed(&[]),
    };
    serde_json::to_vec(&wire).expect("a Wire always serializes: strings and valid raw JSON")
}

pub(super) fn decode(bytes: &[u8]) -> Option<Decoded> {
    let wire: Wire<'_> = serde_json::from_slice(bytes).ok()?;
    match wire.k {
        Kind::Publication => Some(Decoded::Publication(
            Publication {
                offset: wire.o,
                data: unraw(wire.d, wire.db).unwrap_or_default(),
                info: wire.i.map(WireInfo::into_info),
                tags: wire.t.into_owned(),
            },
            wire.e.map(Cow::into_owned),
        )),
        Kind::Join => Some(Decoded::Join(wire.i?.into_info())),
        Kind::Leave => Some(Decoded::Leave(wire.i?.into_info())),
        Kind::Control => Some(Decoded::Control(unraw(wire.d, wire.db)?)),
    }
}

/// Raw JSON as itself when it is exactly one JSON value (so it comes back
/// byte for byte), otherwise as base64.
fn raw(bytes: Option<&Bytes>) -> (Option<&RawValue>, Option<String>) {
    let Some(bytes) = bytes else {
        return (None, None);
    };
    match serde_json::from_slice::<&RawValue>(bytes) {
        Ok(value) if value.get().len() == bytes.len() => (Some(value), None),
        _ => (None, Some(BASE64.encode(bytes))),
    }
}

fn unraw(json: Option<&RawValue>, base64: Option<String>) -> Option<Bytes> {
    match (json, base64) {
        (Some(value), _) => Some(Bytes::copy_from_slice(value.get().as_bytes())),
        (None, Some(encoded)) => BASE64.decode(encoded).ok().map(Bytes::from),
        (None, None) => None,
    }
}

/// A presence entry.
pub(super) fn encode_client_info(info: &ClientInfo) -> Vec<u8> {
    serde_json::to_vec(&WireInfo::from_info(info))
        .expect("a WireInfo always serializes: strings and valid raw JSON")
}

pub(super) fn decode_client_info(bytes: &[u8]) -> Option<ClientInfo> {
    serde_json::from_slice::<WireInfo<'_>>(bytes)
        .ok()
        .map(WireInfo::into_info)
}

fn is_zero(offset: &u64) -> bool {
    *offset == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::testing::{client, publication};

    #[test]
    fn wire_round_trips_json_and_other_bytes() {
        let mut with_everything = publication("x");
        with_everything.offset = 7;
        with_everything.info = Some(ClientInfo {
            chan_info: Some(Bytes::from_static(b" not json")),
            ..client("c1", "u1")
        });
        with_everything.tags = vec![("k".to_owned(), "v\"".to_owned())];
        let not_json = Publication {
            data: Bytes::from_static(b"\xff{"),
            ..publication("y")
        };
        for original in [with_everything, not_json, publication("z")] {
            assert_eq!(
                decode(&encode_publication(&original)),
                Some(Decoded::Publication(original, None))
            );
        }
        let info = client("c1", "u1");
        let Some(Decoded::Leave(decoded)) = decode(&encode_presence_event(Kind::Leave, &info))
        else {
            panic!("a leave decodes as one");
        };
        assert_eq!(decoded, info);
        assert_eq!(decode_client_info(&encode_client_info(&info)), Some(info));
    }

    #[test]
    fn a_published_message_carries_its_epoch() {
        // As the publish script writes it: offset and epoch put in front
        // of the encoded publication (the epoch JSON-escaped).
        let body = encode_publication(&publication("x"));
        let rest = std::str::from_utf8(&body[1..]).unwrap();
        let mut expected = publication("x");
        expected.offset = 7;
        for (epoch, decoded_epoch) in [(r#""Ab3xYz90""#, "Ab3xYz90"), (r#""a\/b\"""#, "a/b\"")] {
            let message = format!(r#"{{"o":7,"e":{epoch},{rest}"#);
            assert_eq!(
                decode(message.as_bytes()),
                Some(Decoded::Publication(
                    expected.clone(),
                    Some(decoded_epoch.to_owned())
                ))
            );
        }
        // Older nodes wrote no epoch: decoded without one.
        let old = format!(r#"{{"o":7,{rest}"#);
        assert_eq!(
            decode(old.as_bytes()),
            Some(Decoded::Publication(expected, None))
        );
    }

    #[test]
    fn foreign_messages_do_not_decode() {
        for foreign in [
            &b""[..],
            b"\xff\xfe",
            b"null",
            b"[1,2]",
            br#"{"k":"z","d":1}"#,
            br#"{"k":"p","o":-1,"d":1}"#,
            br#"{"k":"p","o":1,"e":7,"d":1}"#,
            br#"{"k":"p","o":1,"o":2,"d":1}"#,
            br#"{"k":"j"}"#,
            br#"{"k":"p","d":1"#,
        ] {
            assert_eq!(
                decode(foreign),
                None,
                "{}",
                String::from_utf8_lossy(foreign)
            );
        }
    }
}
