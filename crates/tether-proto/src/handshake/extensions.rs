//! `Sec-WebSocket-Extensions` (RFC 6455 §9.1) as typed values.
//!
//! The same [`ExtensionOffer`] type describes what a client offers and what a
//! server accepts: the server echoes the offers it takes, with the parameters
//! it settled on. This module only parses and formats; deciding which
//! extension to accept (e.g. permessage-deflate, RFC 7692) is left to the
//! extension's own code.

use std::fmt;

use super::{is_tchar, is_token};

/// One extension in a `Sec-WebSocket-Extensions` header, e.g.
/// `permessage-deflate; client_max_window_bits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension token, as sent.
    pub name: String,
    /// Its parameters, in order.
    pub params: Vec<ExtensionParam>,
}

/// One `; name[=value]` parameter of an [`ExtensionOffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionParam {
    /// The parameter token, as sent.
    pub name: String,
    /// The value with any quoting removed, or `None` for a bare parameter.
    pub value: Option<String>,
}

impl ExtensionOffer {
    /// An offer with no parameters.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter; `None` for a bare one like `client_no_context_takeover`.
    pub fn param(mut self, name: impl Into<String>, value: Option<&str>) -> Self {
        self.params.push(ExtensionParam {
            name: name.into(),
            value: value.map(str::to_owned),
        });
        self
    }

    /// Whether this offer's name is `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The first parameter called `name` (ASCII case-insensitive).
    pub fn find_param(&self, name: &str) -> Option<&ExtensionParam> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for ExtensionOffer {
    /// Formats the offer as one element of a header value; values that are
    /// not tokens are written as quoted strings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for p in &self.params {
            write!(f, "; {}", p.name)?;
            match &p.value {
                None => {}
                Some(v) if is_token(v.as_bytes()) => write!(f, "={v}")?,
                Some(v) => {
                    f.write_str("=\"")?;
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
            }
        }
        Ok(())
    }
}

/// The header value for a list of offers: elements joined by `", "`.
pub(super) fn format_header(offers: &[ExtensionOffer]) -> String {
    offers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The §9.1 grammar was not followed.
#[derive(Debug)]
pub(super) struct Malformed;

/// Parses one `Sec-WebSocket-Extensions` header value, appending its offers.
///
/// Grammar (RFC 6455 §9.1, with RFC 7230 list rules): comma-separated
/// `token *( ";" token [ "=" ( token / quoted-string ) ] )`, optional
/// whitespace around separators, empty list elements ignored. A quoted value
/// must unquote to a token, as §9.1 requires.
pub(super) fn parse_header(value: &[u8], out: &mut Vec<ExtensionOffer>) -> Result<(), Malformed> {
    let mut p = Parser { s: value, i: 0 };
    loop {
        p.skip_ows();
        match p.peek() {
            None => return Ok(()),
            Some(b',') => {
                p.i += 1;
                continue;
            }
            Some(_) => {}
        }
        let mut offer = ExtensionOffer::new(p.token()?);
        loop {
            p.skip_ows();
            match p.peek() {
                None | Some(b',') => break,
                Some(b';') => p.i += 1,
                Some(_) => return Err(Malformed),
            }
            p.skip_ows();
            let name = p.token()?;
            p.skip_ows();
            let value = if p.peek() == Some(b'=') {
                p.i += 1;
                p.skip_ows();
                let v = if p.peek() == Some(b'"') {
                    p.quoted()?
                } else {
                    p.token()?
                };
                if !is_token(v.as_bytes()) {
                    return Err(Malformed);
                }
                Some(v)
            } else {
                None
            };
            offer.params.push(ExtensionParam { name, value });
        }
        out.push(offer);
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Result<String, Malformed> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        let token = &self.s[start..self.i];
        if token.is_empty() {
            return Err(Malformed);
        }
        // tchar is ASCII, so this never fails.
        String::from_utf8(token.to_vec()).map_err(|_| Malformed)
    }

    /// A quoted-string, starting at its opening quote; returns the content
    /// with quoted-pairs resolved.
    fn quoted(&mut self) -> Result<String, Malformed> {
        self.i += 1;
        let mut v = Vec::new();
        loop {
            match self.peek() {
                None => return Err(Malformed),
                Some(b'"') => {
                    self.i += 1;
                    return String::from_utf8(v).map_err(|_| Malformed);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b) if b == b'\t' || b >= 0x20 && b != 0x7f => v.push(b),
                        _ => return Err(Malformed),
                    }
                    self.i += 1;
                }
                Some(b) if b == b'\t' || b >= 0x20 && b != 0x7f => {
                    v.push(b);
                    self.i += 1;
                }
                Some(_) => return Err(Malformed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<Vec<ExtensionOffer>, Malformed> {
        let mut out = Vec::new();
        parse_header(value.as_bytes(), &mut out).map(|()| out)
    }

    #[test]
    fn browser_offer() {
        let offers =
            parse("permessage-deflate; client_max_window_bits, x-webkit-deflate-frame").unwrap();
        assert_eq!(
            offers,
            vec![
                ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None),
                ExtensionOffer::new("x-webkit-deflate-frame"),
            ]
        );
    }

    #[test]
    fn values_token_and_quoted() {
        let offers = parse(
            "permessage-deflate;server_max_window_bits=10 ; client_max_window_bits = \"1\\5\"",
        )
        .unwrap();
        let o = &offers[0];
        assert_eq!(
            o.find_param("server_max_window_bits")
                .unwrap()
                .value
                .as_deref(),
            Some("10")
        );
        assert_eq!(
            o.find_param("CLIENT_MAX_WINDOW_BITS")
                .unwrap()
                .value
                .as_deref(),
            Some("15")
        );
        assert!(o.is("PerMessage-Deflate"));
    }

    #[test]
    fn empty_elements_ignored() {
        assert_eq!(
            parse(" , a ,, b,").unwrap(),
            vec![ExtensionOffer::new("a"), ExtensionOffer::new("b")]
        );
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn malformed() {
        for bad in [
            "a;",
            "a; =1",
            "a; b=",
            "a b",
            ";a",
            "a; b=\"1",
            "a; b=\"x y\"",
            "a; b=\"\"",
            "a; b=c d",
            "a=1",
            "a; b=\"\x01\"",
            "\"a\"",
            "a; b=\"\\",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn non_utf8_quoted_value_is_malformed() {
        let mut out = Vec::new();
        assert!(parse_header(b"a; b=\"\xff\"", &mut out).is_err());
    }

    #[test]
    fn format_round_trips() {
        let offers = vec![
            ExtensionOffer::new("permessage-deflate")
                .param("client_no_context_takeover", None)
                .param("server_max_window_bits", Some("10")),
            ExtensionOffer::new("x").param("q", Some("a \"b\"")),
        ];
        let header = format_header(&offers);
        assert_eq!(
            header,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10, x; q=\"a \\\"b\\\"\""
        );
        assert_eq!(
            parse(&header[..header.find(", x").unwrap()]).unwrap(),
            offers[..1]
        );
    }
}
