//! The one kind of target this tool accepts: a `ws://` (or, for an HTTP API
//! next to it, `http://`) URL on a loopback address.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

/// A `ws://` URL on a loopback address: the only kind of target this tool
/// accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// The `Host` header: the URL's authority.
    pub(crate) host: String,
    /// The request target: path and query.
    pub(crate) path: String,
}

impl Target {
    /// Parses `ws://host[:port][/path]`, where host is a loopback IP literal
    /// or `localhost`.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        match url.split_once("://") {
            Some(("ws", rest)) => Self::parse_rest(url, rest),
            Some(("wss", _)) => Err(format!(
                "{url}: wss:// is not supported; tether-load speaks plain ws:// to loopback addresses"
            )),
            _ => Err(format!("{url}: the URL must start with ws://")),
        }
    }

    /// Parses `http://host[:port][/path]` like [`Target::parse`] does
    /// `ws://` (an HTTP API next to the WebSocket endpoint).
    pub(crate) fn parse_http(url: &str) -> Result<Self, String> {
        match url.split_once("://") {
            Some(("http", rest)) => Self::parse_rest(url, rest),
            _ => Err(format!("{url}: the URL must start with http://")),
        }
    }

    /// Parses what follows the scheme of `url`.
    fn parse_rest(url: &str, rest: &str) -> Result<Self, String> {
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let path = path.split('#').next().unwrap_or_default();
        let path = match path.strip_prefix('?') {
            Some(_) => format!("/{path}"),
            None if path.is_empty() => "/".to_owned(),
            None => path.to_owned(),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url}: unclosed IPv6 bracket"))?;
            let port = after.strip_prefix(':');
            if port.is_none() && !after.is_empty() {
                return Err(format!("{url}: junk after the IPv6 address"));
            }
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| format!("{url}: bad port {port:?}"))?,
            None => 80,
        };
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse::<IpAddr>().map_err(|_| {
                format!("{url}: the host must be a loopback IP address or localhost, not {host:?}")
            })?
        };
        if !ip.is_loopback() {
            return Err(format!(
                "{url}: {ip} is not a loopback address; tether-load only targets loopback addresses"
            ));
        }
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            host: authority.to_owned(),
            path,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ws://{}{}", self.host, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() {
        let target = Target::parse("ws://127.0.0.1:9001").unwrap();
        assert_eq!(target.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(
            (target.host.as_str(), target.path.as_str()),
            ("127.0.0.1:9001", "/")
        );
        let target = Target::parse("ws://localhost/echo?x=1#frag").unwrap();
        assert_eq!(target.addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(target.path, "/echo?x=1");
        let target = Target::parse("ws://[::1]:8000?q").unwrap();
        assert_eq!(target.addr, "[::1]:8000".parse().unwrap());
        assert_eq!(target.path, "/?q");
        assert_eq!(
            Target::parse("ws://127.3.4.5:1/").unwrap().addr.ip(),
            Ipv4Addr::new(127, 3, 4, 5)
        );
    }

    #[test]
    fn refuses_other_targets() {
        for url in [
            "ws://10.0.0.1:80/",
            "ws://example.com/",
            "ws://[2001:db8::1]/",
            "wss://127.0.0.1/",
            "http://127.0.0.1/",
            "ws://127.0.0.1:port/",
        ] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
        assert!(Target::parse_http("ws://127.0.0.1/").is_err());
        assert!(Target::parse_http("http://192.168.1.1/").is_err());
        assert_eq!(
            Target::parse_http("http://127.0.0.1:8000/api")
                .unwrap()
                .path,
            "/api"
        );
        assert!(
            Target::parse("ws://192.168.1.1/")
                .unwrap_err()
                .contains("not a loopback address")
        );
    }
}
