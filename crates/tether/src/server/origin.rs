//! The `Origin` check against Cross-Site WebSocket Hijacking (CWE-1385).
//!
//! Browsers attach cookies to the upgrade request of any page that opens a
//! WebSocket, and CORS does not apply, so a foreign page could ride a user's
//! session. RFC 6455 §10.2: the server checks `Origin` and answers 403. The
//! default here is same-origin; an allow-list or `*` must be chosen
//! explicitly.

use std::fmt;

use tether_proto::handshake::{HandshakeError, server::Request};

/// Which browser origins may open a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginPolicy {
    /// The origin must be the address the client targeted: its scheme (`http`
    /// for a plain listener, `https` for TLS), host and port equal the `Host`
    /// header's. The default.
    #[default]
    SameOrigin,
    /// Only the listed origins (exact, or `https://*.example.com` wildcards
    /// that match whole labels).
    AllowList(Vec<OriginPattern>),
    /// Any origin: only for endpoints that use no ambient credentials
    /// (cookies, client certificates, HTTP auth).
    Any,
}

impl OriginPolicy {
    /// A policy from configuration strings: an empty list is same-origin, a
    /// list containing `*` accepts any origin, anything else is an
    /// allow-list.
    pub fn from_list<S: AsRef<str>>(origins: &[S]) -> Result<Self, InvalidOrigin> {
        if origins.is_empty() {
            return Ok(Self::SameOrigin);
        }
        if origins.iter().any(|origin| origin.as_ref().trim() == "*") {
            return Ok(Self::Any);
        }
        let patterns = origins
            .iter()
            .map(|origin| origin.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(Self::AllowList(patterns))
    }

    /// Decides on a request. `secure` says whether it arrived over TLS (the
    /// scheme same-origin expects); `require_origin` refuses requests that
    /// carry no `Origin` (non-browser clients) instead of accepting them.
    pub fn check(
        &self,
        request: &Request,
        secure: bool,
        require_origin: bool,
    ) -> Result<(), HandshakeError> {
        let Some(origin) = request.origin() else {
            return if require_origin {
                Err(HandshakeError::Forbidden(
                    "an Origin header is required".into(),
                ))
            } else {
                Ok(())
            };
        };
        let allowed = match self {
            Self::Any => true,
            Self::SameOrigin => {
                let scheme = if secure { "https" } else { "http" };
                match (
                    Origin::parse(origin),
                    Origin::from_host(scheme, request.host()),
                ) {
                    (Some(origin), Some(target)) => origin == target,
                    _ => false,
                }
            }
            Self::AllowList(patterns) => {
                let parsed = Origin::parse(origin);
                patterns
                    .iter()
                    .any(|pattern| pattern.matches(origin, parsed.as_ref()))
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(HandshakeError::Forbidden(format!(
                "origin {} is not allowed",
                excerpt(origin)
            )))
        }
    }
}

/// A serialised origin, normalised per RFC 6454: lowercase scheme and host,
/// the scheme's default port elided.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://host[:port]`, as browsers send it (no path, no
    /// user info). `None` for anything else, including `null`.
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https") {
            return None;
        }
        Self::from_host(&scheme, rest)
    }

    /// The origin a request for `host` (a `Host` header value) targets.
    fn from_host(scheme: &str, host: &str) -> Option<Self> {
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        let (name, port) = match host.strip_prefix('[') {
            Some(v6) => {
                let (name, after) = v6.split_once(']')?;
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':')?.parse::<u16>().ok()?),
                };
                (format!("[{name}]"), port)
            }
            None => match host.rsplit_once(':') {
                Some((name, port)) => (name.to_owned(), Some(port.parse::<u16>().ok()?)),
                None => (host.to_owned(), None),
            },
        };
        if name.is_empty() || name == "[]" {
            return None;
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        Some(Self {
            scheme: scheme.to_owned(),
            host: name.to_ascii_lowercase(),
            port: port.filter(|&port| port != default_port),
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// One allow-list entry: an exact origin, `scheme://*.domain[:port]`, or the
/// literal `null` (sandboxed frames, `file:` pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern(Pattern);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Null,
    Exact(Origin),
    /// Matches hosts with at least one more label in front of `suffix`.
    Subdomains(Origin),
}

impl OriginPattern {
    fn matches(&self, raw: &str, origin: Option<&Origin>) -> bool {
        match (&self.0, origin) {
            (Pattern::Null, _) => raw == "null",
            (Pattern::Exact(allowed), Some(origin)) => allowed == origin,
            (Pattern::Subdomains(allowed), Some(origin)) => {
                allowed.scheme == origin.scheme
                    && allowed.port == origin.port
                    && origin
                        .host
                        .strip_suffix(allowed.host.as_str())
                        .and_then(|front| front.strip_suffix('.'))
                        .is_some_and(|front| !front.is_empty())
            }
            (_, None) => false,
        }
    }
}

impl std::str::FromStr for OriginPattern {
    type Err = InvalidOrigin;

    fn from_str(text: &str) -> Result<Self, InvalidOrigin> {
        let text = text.trim();
        let invalid = |why: &'static str| InvalidOrigin {
            origin: text.to_owned(),
            why,
        };
        if text == "null" {
            return Ok(Self(Pattern::Null));
        }
        // A trailing slash is a common way to write an origin; any other
        // path would never match what browsers send.
        let bare = text.strip_suffix('/').unwrap_or(text);
        let (scheme, host) = bare
            .split_once("://")
            .ok_or_else(|| invalid("expected scheme://host[:port]"))?;
        if host.contains('/') {
            return Err(invalid("an origin has no path"));
        }
        match host.strip_prefix("*.") {
            Some(domain) => {
                let origin = Origin::parse(&format!("{scheme}://{domain}"))
                    .ok_or_else(|| invalid("not an http(s) origin"))?;
                if origin.host.contains('*')
                    || !origin.host.contains('.') && origin.host != "localhost"
                {
                    return Err(invalid("a wildcard needs a domain of at least two labels"));
                }
                Ok(Self(Pattern::Subdomains(origin)))
            }
            None if host.contains('*') => Err(invalid(
                "a wildcard must be a whole leading label: scheme://*.domain",
            )),
            None => Ok(Self(Pattern::Exact(
                Origin::parse(bare).ok_or_else(|| invalid("not an http(s) origin"))?,
            ))),
        }
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Pattern::Null => f.write_str("null"),
            Pattern::Exact(origin) => write!(f, "{origin}"),
            Pattern::Subdomains(origin) => {
                write!(f, "{}", origin.to_string().replacen("://", "://*.", 1))
            }
        }
    }
}

/// An allow-list entry that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOrigin {
    /// The entry as written.
    pub origin: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid origin {:?}: {}", self.origin, self.why)
    }
}

impl std::error::Error for InvalidOrigin {}

/// Peer-controlled text shortened for a one-line refusal.
fn excerpt(text: &str) -> String {
    let mut end = text.len().min(100);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end]
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use tether_proto::handshake::server::validate_upgrade;

    use super::*;

    fn request(host: &str, origin: Option<&str>) -> Request {
        let mut headers = vec![
            ("Host", host.as_bytes()),
            ("Upgrade", b"websocket".as_slice()),
            ("Connection", b"Upgrade".as_slice()),
            ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==".as_slice()),
            ("Sec-WebSocket-Version", b"13".as_slice()),
        ];
        if let Some(origin) = origin {
            headers.push(("Origin", origin.as_bytes()));
        }
        validate_upgrade("GET", (1, 1), "/", headers).expect("a valid upgrade")
    }

    fn allows(policy: &OriginPolicy, host: &str, origin: &str, secure: bool) -> bool {
        policy
            .check(&request(host, Some(origin)), secure, false)
            .is_ok()
    }

    #[test]
    fn same_origin_compares_scheme_host_and_port() {
        let policy = OriginPolicy::default();
        assert!(allows(
            &policy,
            "127.0.0.1:8000",
            "http://127.0.0.1:8000",
            false
        ));
        assert!(allows(
            &policy,
            "Example.COM",
            "http://example.com:80",
            false
        ));
        assert!(allows(
            &policy,
            "example.com:443",
            "https://EXAMPLE.com",
            true
        ));
        assert!(allows(&policy, "[::1]:9000", "http://[::1]:9000", false));
        assert!(!allows(
            &policy,
            "127.0.0.1:8000",
            "http://127.0.0.2:8000",
            false
        ));
        assert!(!allows(
            &policy,
            "127.0.0.1:8000",
            "http://127.0.0.1:8001",
            false
        ));
        assert!(
            !allows(&policy, "example.com", "https://example.com", false),
            "scheme differs"
        );
        assert!(
            !allows(&policy, "example.com", "http://example.com", true),
            "TLS listener expects https"
        );
        assert!(!allows(&policy, "example.com", "null", false));
        assert!(!allows(
            &policy,
            "example.com",
            "http://example.com.evil.net",
            false
        ));
    }

    #[test]
    fn allow_list_normalises_and_matches_exactly() {
        let policy = OriginPolicy::from_list(&["HTTP://Good.Example:80/"]).unwrap();
        assert!(allows(&policy, "any", "http://good.example", false));
        for foreign in [
            "https://evil.example",
            "http://good.example.evil.example",
            "http://evilgood.example",
            "null",
            "https://good.example",
            "http://good.example:8443",
            "http://sub.good.example",
        ] {
            assert!(!allows(&policy, "any", foreign, false), "{foreign}");
        }
    }

    #[test]
    fn wildcards_match_whole_labels_and_the_same_port() {
        let policy = OriginPolicy::from_list(&["https://*.example.com"]).unwrap();
        assert!(allows(&policy, "any", "https://a.example.com", true));
        assert!(allows(&policy, "any", "https://a.b.example.com", true));
        for foreign in [
            "https://example.com",
            "https://evil-example.com",
            "https://example.com.evil.net",
            "https://a.example.com:8443",
            "http://a.example.com",
        ] {
            assert!(!allows(&policy, "any", foreign, true), "{foreign}");
        }
    }

    #[test]
    fn null_only_when_listed_and_star_allows_any() {
        let policy = OriginPolicy::from_list(&["null"]).unwrap();
        assert!(allows(&policy, "any", "null", false));
        assert_eq!(OriginPolicy::from_list(&["*"]).unwrap(), OriginPolicy::Any);
        assert!(allows(
            &OriginPolicy::Any,
            "any",
            "https://whatever.test",
            false
        ));
    }

    #[test]
    fn missing_origin_is_accepted_unless_required() {
        let policy = OriginPolicy::default();
        assert!(policy.check(&request("h", None), false, false).is_ok());
        let refusal = policy.check(&request("h", None), false, true).unwrap_err();
        assert_eq!(refusal.http_status(), 403);
    }

    #[test]
    fn refusal_is_403_naming_the_origin() {
        let refusal = OriginPolicy::default()
            .check(
                &request("good.example", Some("https://evil.example")),
                false,
                false,
            )
            .unwrap_err();
        assert_eq!(refusal.http_status(), 403);
        assert!(
            refusal.to_string().contains("https://evil.example"),
            "{refusal}"
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for bad in [
            "good.example",
            "http://good.example/path",
            "http://*good.example",
            "ftp://x.example",
            "https://*.com",
        ] {
            assert!(OriginPattern::from_str_checked(bad).is_err(), "{bad}");
        }
        assert_eq!(
            "https://*.Example.com:8443"
                .parse::<OriginPattern>()
                .unwrap()
                .to_string(),
            "https://*.example.com:8443"
        );
    }

    impl OriginPattern {
        fn from_str_checked(text: &str) -> Result<Self, InvalidOrigin> {
            text.parse()
        }
    }
}
