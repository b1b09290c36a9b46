//! A connection token's `caps` claim, as Centrifugo defines it: a list of
//! entries, each naming channels (exactly, with `*` wildcards, or by
//! regular expression) and what the connection may do in them.
//!
//! ```json
//! "caps": [
//!   {"channels": ["news", "user_42"], "allow": ["sub"]},
//!   {"channels": ["chat:*"], "match": "wildcard", "allow": ["sub", "pub", "prs", "hst"]}
//! ]
//! ```
//!
//! The first entry whose channels match decides, and the rest are not
//! looked at: an entry that matches but does not allow an action denies it
//! (as far as caps go; a namespace option may still allow it).

use regex::Regex;
use serde::Deserialize;

/// What a connection may do in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permission {
    /// `sub`: subscribe.
    Subscribe,
    /// `pub`: publish.
    Publish,
    /// `prs`: presence and presence stats.
    Presence,
    /// `hst`: history.
    History,
}

/// One `caps` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Capability {
    channels: Channels,
    allow: Vec<Permission>,
}

/// How an entry names its channels.
#[derive(Debug, Clone)]
enum Channels {
    Exact(Vec<String>),
    /// `*` matches any run of characters.
    Wildcard(Vec<String>),
    /// Anchored: the whole name must match.
    Regex(Vec<Regex>),
}

/// A `caps` entry as it appears in a token or a connect hook's answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCapability {
    channels: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default, rename = "match")]
    match_type: String,
}

impl PartialEq for Channels {
    fn eq(&self, other: &Self) -> bool {
        let patterns = |regexes: &[Regex]| {
            regexes
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) | (Self::Wildcard(a), Self::Wildcard(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => patterns(a) == patterns(b),
            _ => false,
        }
    }
}

impl Eq for Channels {}

impl Capability {
    /// Reads every entry of a `caps` list; one bad entry refuses them all.
    pub(crate) fn parse_all(raw: Vec<RawCapability>) -> Result<Vec<Self>, String> {
        raw.into_iter().map(Self::parse).collect()
    }

    /// Reads a token's entry; an unknown permission or match type, or a bad
    /// regular expression, makes the token invalid rather than grant less
    /// (or more) than its issuer meant.
    pub(super) fn parse(raw: RawCapability) -> Result<Self, String> {
        let allow = raw
            .allow
            .iter()
            .map(|name| match name.as_str() {
                "sub" => Ok(Permission::Subscribe),
                "pub" => Ok(Permission::Publish),
                "prs" => Ok(Permission::Presence),
                "hst" => Ok(Permission::History),
                other => Err(format!("caps: unknown permission {other:?}")),
            })
            .collect::<Result<_, _>>()?;
        let channels = match raw.match_type.as_str() {
            "" => Channels::Exact(raw.channels),
            "wildcard" => Channels::Wildcard(raw.channels),
            "regex" => Channels::Regex(
                raw.channels
                    .iter()
                    .map(|pattern| {
                        Regex::new(&format!("^(?:{pattern})$"))
                            .map_err(|error| format!("caps: bad regex {pattern:?}: {error}"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(format!("caps: unknown match {other:?}")),
        };
        Ok(Self { channels, allow })
    }

    fn matches(&self, channel: &str) -> bool {
        match &self.channels {
            Channels::Exact(names) => names.iter().any(|name| name == channel),
            Channels::Wildcard(patterns) => patterns
                .iter()
                .any(|pattern| channel_matches(pattern, channel)),
            Channels::Regex(patterns) => patterns.iter().any(|regex| regex.is_match(channel)),
        }
    }
}

/// Whether `caps` grant `permission` in `channel`: the first entry that
/// names the channel decides.
pub(crate) fn granted(caps: &[Capability], permission: Permission, channel: &str) -> bool {
    caps.iter()
        .find(|cap| cap.matches(channel))
        .is_some_and(|cap| cap.allow.contains(&permission))
}

/// Centrifugo's channel pattern (the `channels` API's, a `caps` wildcard):
/// `*` matches any run of characters; an empty pattern matches everything.
pub(crate) fn channel_matches(pattern: &str, name: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(json: &str) -> Vec<Capability> {
        let raw: Vec<RawCapability> = serde_json::from_str(json).unwrap();
        raw.into_iter()
            .map(|raw| Capability::parse(raw).unwrap())
            .collect()
    }

    #[test]
    fn the_first_entry_that_names_the_channel_decides() {
        let caps = caps(
            r#"[{"channels":["news"],"allow":["pub"]},
                {"channels":["news","user_42"],"allow":["sub","prs"]}]"#,
        );
        assert!(granted(&caps, Permission::Publish, "news"));
        assert!(
            !granted(&caps, Permission::Subscribe, "news"),
            "the first entry has no sub"
        );
        assert!(granted(&caps, Permission::Subscribe, "user_42"));
        assert!(granted(&caps, Permission::Presence, "user_42"));
        assert!(!granted(&caps, Permission::History, "user_42"));
        assert!(!granted(&caps, Permission::Subscribe, "other"));
    }

    #[test]
    fn channels_match_exactly_by_wildcard_or_by_anchored_regex() {
        let caps = caps(
            r#"[{"channels":["chat:*"],"match":"wildcard","allow":["sub"]},
                {"channels":["room:[0-9]+"],"match":"regex","allow":["sub"]}]"#,
        );
        assert!(granted(&caps, Permission::Subscribe, "chat:lobby"));
        assert!(!granted(&caps, Permission::Subscribe, "chatx"));
        assert!(granted(&caps, Permission::Subscribe, "room:12"));
        assert!(
            !granted(&caps, Permission::Subscribe, "room:12a"),
            "anchored"
        );
        assert!(
            !granted(&caps, Permission::Subscribe, "xroom:12"),
            "anchored"
        );
    }

    #[test]
    fn unknown_names_make_the_entry_invalid() {
        let bad = |json: &str| {
            let raw: RawCapability = serde_json::from_str(json).unwrap();
            Capability::parse(raw).unwrap_err()
        };
        assert!(bad(r#"{"channels":["a"],"allow":["all"]}"#).contains("unknown permission"));
        assert!(bad(r#"{"channels":["a"],"match":"glob"}"#).contains("unknown match"));
        assert!(bad(r#"{"channels":["("],"match":"regex"}"#).contains("bad regex"));
    }

    #[test]
    fn channel_patterns() {
        assert!(channel_matches("", "chat:a"));
        assert!(channel_matches("chat:*", "chat:a"));
        assert!(!channel_matches("chat:*", "news:a"));
        assert!(channel_matches("*:a", "chat:a"));
        assert!(channel_matches("c*t:*", "chat:lobby"));
        assert!(!channel_matches("chat", "chat:a"));
    }
}
