//! The part of Centrifugo's v2 JSON client protocol a benchmark subscriber
//! speaks (connect, subscribe, answer pings, read publications), and the
//! publications the benchmark sends through the HTTP API: each carries a
//! sequence number and the `CLOCK_MONOTONIC` time it was sent.
//!
//! What it does not do: tokens, recovery, presence, history; replies and
//! pushes it does not need are recognised and skipped.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// The frame a subscriber sends first: `connect` (id 1), then `subscribe`
/// to each of `channels` (ids 2, 3, …), one command per line.
pub(crate) fn connect_and_subscribe(channels: &[String]) -> String {
    let mut frame = String::from(r#"{"id":1,"connect":{}}"#);
    for (id, channel) in (2..).zip(channels) {
        frame.push('\n');
        frame.push_str(
            &serde_json::json!({ "id": id, "subscribe": { "channel": channel } }).to_string(),
        );
    }
    frame
}

/// The answer to a server ping (`{}`).
pub(crate) const PONG: &str = "{}";

/// One reply or push of a frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// The reply to command `id`, with the error message if it failed.
    Reply { id: u64, error: Option<String> },
    /// A ping: answer with [`PONG`].
    Ping,
    /// A publication of the benchmark on `channel`.
    Publication { channel: Cow<'a, str>, stamp: Stamp },
    /// Something a benchmark subscriber does not need (join, leave, …).
    Other,
}

/// What each benchmark publication carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct Stamp {
    /// 0, 1, 2, … in the order they were published.
    pub(crate) seq: u64,
    /// `CLOCK_MONOTONIC` when it was sent, in nanoseconds.
    pub(crate) t: u64,
}

/// Decodes each line of a frame from the server.
pub(crate) fn events(frame: &str) -> impl Iterator<Item = Result<Event<'_>, String>> {
    frame
        .split('\n')
        .filter(|line| !line.trim().is_empty())
        .map(event)
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default)]
    id: u64,
    error: Option<ReplyError>,
    result: Option<IgnoredAny>,
    #[serde(borrow)]
    push: Option<Push<'a>>,
}

#[derive(Deserialize)]
struct ReplyError {
    code: u32,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(borrow, default)]
    channel: Cow<'a, str>,
    #[serde(rename = "pub")]
    publication: Option<Publication>,
}

#[derive(Deserialize)]
struct Publication {
    data: Stamp,
}

fn event(line: &str) -> Result<Event<'_>, String> {
    let parsed: Line<'_> = serde_json::from_str(line).map_err(|error| {
        let shown: String = line.chars().take(80).collect();
        format!("unexpected frame from the server ({error}): {shown}")
    })?;
    Ok(match parsed {
        Line {
            push: Some(push), ..
        } => match push.publication {
            Some(publication) => Event::Publication {
                channel: push.channel,
                stamp: publication.data,
            },
            None => Event::Other,
        },
        Line {
            id,
            error: Some(error),
            ..
        } if id > 0 => Event::Reply {
            id,
            error: Some(format!("error {}: {}", error.code, error.message)),
        },
        Line { id, .. } if id > 0 => Event::Reply { id, error: None },
        Line {
            error: None,
            result: None,
            ..
        } => Event::Ping,
        Line { .. } => Event::Other,
    })
}

/// The body of an HTTP API `publish` of publication `seq`, sent at `t`,
/// padded so that its data is about `size` bytes of JSON.
pub(crate) fn publish_body(channel: &str, seq: u64, t: u64, size: usize) -> String {
    let data = format!(r#"{{"seq":{seq},"t":{t}}}"#);
    let pad = size.saturating_sub(data.len() + r#","pad":"""#.len());
    let data = if pad == 0 {
        data
    } else {
        format!(r#"{{"seq":{seq},"t":{t},"pad":"{}"}}"#, "x".repeat(pad))
    };
    format!(
        r#"{{"channel":{},"data":{data}}}"#,
        serde_json::Value::from(channel)
    )
}

/// Tracks the sequence numbers one subscriber received: which are missing,
/// repeated or late. Memory grows with the number of gaps, not with the
/// number of publications.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SeqTracker {
    /// One past the highest sequence number seen.
    next: u64,
    /// Sequence numbers below `next` not seen yet, as sorted ranges.
    gaps: Vec<std::ops::Range<u64>>,
    pub(crate) received: u64,
    pub(crate) duplicated: u64,
    /// Arrived after a higher sequence number.
    pub(crate) reordered: u64,
}

impl SeqTracker {
    pub(crate) fn record(&mut self, seq: u64) {
        self.received += 1;
        if seq >= self.next {
            if seq > self.next {
                self.gaps.push(self.next..seq);
            }
            self.next = seq + 1;
            return;
        }
        // Later than a higher one: fills a gap, or is a repeat.
        let at = self.gaps.partition_point(|gap| gap.end <= seq);
        match self.gaps.get_mut(at) {
            Some(gap) if gap.start <= seq => {
                self.reordered += 1;
                let after = seq + 1..gap.end;
                gap.end = seq;
                match (gap.is_empty(), after.is_empty()) {
                    (true, true) => {
                        self.gaps.remove(at);
                    }
                    (true, false) => *gap = after,
                    (false, true) => {}
                    (false, false) => self.gaps.insert(at + 1, after),
                }
            }
            _ => self.duplicated += 1,
        }
    }

    /// Distinct sequence numbers below `published` seen so far.
    pub(crate) fn has_all(&self, published: u64) -> bool {
        self.next >= published && self.gaps.first().is_none_or(|gap| gap.start >= published)
    }

    /// Of sequence numbers `0..published`, how many never arrived.
    pub(crate) fn lost(&self, published: u64) -> u64 {
        let missing_below: u64 = self
            .gaps
            .iter()
            .map(|gap| gap.end.min(published).saturating_sub(gap.start))
            .sum();
        missing_below + published.saturating_sub(self.next)
    }

    /// Received sequence numbers that were never published (distinct).
    pub(crate) fn unexpected(&self, published: u64) -> u64 {
        let distinct = self.received - self.duplicated;
        distinct.saturating_sub(published - self.lost(published))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_frame_subscribes_in_order() {
        let frame = connect_and_subscribe(&["bench:all".into(), "bench:c1-7".into()]);
        assert_eq!(
            frame,
            "{\"id\":1,\"connect\":{}}\n\
             {\"id\":2,\"subscribe\":{\"channel\":\"bench:all\"}}\n\
             {\"id\":3,\"subscribe\":{\"channel\":\"bench:c1-7\"}}"
        );
    }

    #[test]
    fn decodes_replies_pings_and_publications() {
        let frame = concat!(
            r#"{"id":1,"result":{"client":"abc","version":"0.1.0","ping":25,"pong":true}}"#,
            "\n",
            r#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#,
            "\n{}\n",
            r#"{"push":{"channel":"bench:all","pub":{"data":{"seq":7,"t":123,"pad":"xx"},"offset":8}}}"#,
            "\n",
            r#"{"push":{"type":1,"channel":"bench:all","data":{"info":{}}}}"#,
        );
        let decoded: Vec<_> = events(frame).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            decoded,
            [
                Event::Reply { id: 1, error: None },
                Event::Reply {
                    id: 2,
                    error: Some("error 103: permission denied".into())
                },
                Event::Ping,
                Event::Publication {
                    channel: "bench:all".into(),
                    stamp: Stamp { seq: 7, t: 123 }
                },
                Event::Other,
            ]
        );
        assert!(events("not json").next().unwrap().is_err());
    }

    #[test]
    fn publications_round_trip_at_any_size() {
        for size in [0, 10, 40, 1000] {
            let body = publish_body("bench:all", 42, 1_000_000_007, size);
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(value["channel"], "bench:all");
            let data = value["data"].to_string();
            if size > 40 {
                assert_eq!(data.len(), size, "{data}");
            }
            let stamp: Stamp = serde_json::from_str(&data).unwrap();
            assert_eq!(
                stamp,
                Stamp {
                    seq: 42,
                    t: 1_000_000_007
                }
            );
        }
    }

    #[test]
    fn counts_losses_repeats_and_reordering() {
        let mut tracker = SeqTracker::default();
        for seq in [0, 1, 2, 5, 3, 3, 7, 4, 9] {
            tracker.record(seq);
        }
        assert_eq!(tracker.received, 9);
        assert_eq!(tracker.duplicated, 1);
        assert_eq!(tracker.reordered, 2); // 3 and 4
        assert_eq!(tracker.gaps, [6..7, 8..9]);
        assert_eq!(tracker.lost(10), 2); // 6 and 8
        assert_eq!(tracker.lost(12), 4); // and 10, 11
        assert_eq!(tracker.unexpected(8), 1); // 9
        assert!(!tracker.has_all(10));
        tracker.record(6);
        tracker.record(8);
        assert!(tracker.has_all(10));
        assert_eq!(tracker.lost(10), 0);
        assert_eq!(tracker.reordered, 4);
        tracker.record(8);
        assert_eq!(tracker.duplicated, 2);
    }

    #[test]
    fn in_order_stream_keeps_no_gaps() {
        let mut tracker = SeqTracker::default();
        (0..10_000).for_each(|seq| tracker.record(seq));
        assert!(tracker.gaps.is_empty() && tracker.has_all(10_000));
        assert_eq!(
            (tracker.lost(10_000), tracker.duplicated, tracker.reordered),
            (0, 0, 0)
        );
        assert_eq!(tracker.lost(10_001), 1);
        assert_eq!(tracker.unexpected(10_000), 0);
    }
}
