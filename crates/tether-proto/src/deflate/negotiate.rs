//! RFC 7692 §7.1: the four parameters, in offers and in responses.

use super::{
    DeflateConfig, Direction, EXTENSION_NAME, InvalidResponse, MAX_WINDOW_BITS,
    MIN_COMPRESS_WINDOW_BITS, PerMessageDeflate,
};
use crate::handshake::extensions::ExtensionOffer;

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// The parameters of one `permessage-deflate` element, each seen at most once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in offers only).
    client_max_window_bits: Option<Option<u8>>,
}

/// Where the parameters come from: a value-less `client_max_window_bits` is
/// valid in an offer and invalid in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Offer,
    Response,
}

impl Params {
    fn parse(element: &ExtensionOffer, side: Side) -> Result<Self, String> {
        let mut params = Self::default();
        let mut seen = [false; 4];
        for param in &element.params {
            let name = param.name.to_ascii_lowercase();
            let index = match name.as_str() {
                SERVER_NO_CONTEXT_TAKEOVER => 0,
                CLIENT_NO_CONTEXT_TAKEOVER => 1,
                SERVER_MAX_WINDOW_BITS => 2,
                CLIENT_MAX_WINDOW_BITS => 3,
                _ => return Err(format!("unknown parameter {:?}", param.name)),
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(format!("parameter {name} appears twice"));
            }
            let value = param.value.as_deref();
            match (index, value) {
                (0, None) => params.server_no_context_takeover = true,
                (1, None) => params.client_no_context_takeover = true,
                (0 | 1, Some(_)) => return Err(format!("{name} takes no value")),
                (2, Some(v)) => params.server_max_window_bits = Some(window_bits(&name, v)?),
                (2, None) => return Err(format!("{name} needs a value")),
                (_, Some(v)) => params.client_max_window_bits = Some(Some(window_bits(&name, v)?)),
                (_, None) if side == Side::Offer => params.client_max_window_bits = Some(None),
                (_, None) => return Err(format!("{name} needs a value in a response")),
            }
        }
        Ok(params)
    }

    fn to_element(self) -> ExtensionOffer {
        let mut element = ExtensionOffer::new(EXTENSION_NAME);
        if self.server_no_context_takeover {
            element = element.param(SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        if self.client_no_context_takeover {
            element = element.param(CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        if let Some(bits) = self.server_max_window_bits {
            element = element.param(SERVER_MAX_WINDOW_BITS, Some(&bits.to_string()));
        }
        if let Some(bits) = self.client_max_window_bits {
            let value = bits.map(|b| b.to_string());
            element = element.param(CLIENT_MAX_WINDOW_BITS, value.as_deref());
        }
        element
    }
}

/// RFC 7692 §7.1.2: a decimal 8–15 without leading zeros.
fn window_bits(name: &str, value: &str) -> Result<u8, String> {
    match value.parse::<u8>() {
        Ok(bits @ 8..=15) if !value.starts_with(['0', '+']) => Ok(bits),
        _ => Err(format!("{name}={value:?} is not 8 to 15")),
    }
}

impl DeflateConfig {
    /// The client's offer for this configuration.
    pub fn offer(&self) -> ExtensionOffer {
        let config = self.clamped();
        Params {
            server_no_context_takeover: config.server_no_context_takeover,
            client_no_context_takeover: config.client_no_context_takeover,
            server_max_window_bits: config.server_max_window_bits,
            // We can inflate any window, so we always let the server choose.
            client_max_window_bits: Some(config.client_max_window_bits),
        }
        .to_element()
    }

    /// Server side: the first of the client's `permessage-deflate` offers
    /// (in its preference order) that is valid and that we can honour, with
    /// the response element to send and the negotiated parameters. Offers
    /// with unknown, repeated or malformed parameters are declined (§5), as
    /// is one that limits our compression window to 8 bits.
    pub fn accept(&self, offers: &[ExtensionOffer]) -> Option<(ExtensionOffer, PerMessageDeflate)> {
        let config = self.clamped();
        offers
            .iter()
            .filter(|offer| offer.is(EXTENSION_NAME))
            .filter_map(|offer| Params::parse(offer, Side::Offer).ok())
            .find_map(|offer| config.answer(offer))
    }

    fn answer(&self, offer: Params) -> Option<(ExtensionOffer, PerMessageDeflate)> {
        let server_bits = self
            .server_max_window_bits
            .unwrap_or(MAX_WINDOW_BITS)
            .min(offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS));
        if server_bits < MIN_COMPRESS_WINDOW_BITS {
            return None;
        }
        // A value-less client_max_window_bits only says the client can
        // honour one; without our own limit we leave its window alone.
        let client_bits = match offer.client_max_window_bits {
            None => None,
            Some(offered) => match (self.client_max_window_bits, offered) {
                (Some(ours), Some(theirs)) => Some(ours.min(theirs)),
                (ours, theirs) => ours.or(theirs),
            },
        };
        let response = Params {
            server_no_context_takeover: self.server_no_context_takeover
                || offer.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover
                || offer.client_no_context_takeover,
            server_max_window_bits: (offer.server_max_window_bits.is_some()
                || server_bits < MAX_WINDOW_BITS)
                .then_some(server_bits),
            client_max_window_bits: client_bits.map(Some),
        };
        let negotiated = PerMessageDeflate {
            outgoing: Direction {
                no_context_takeover: response.server_no_context_takeover,
                max_window_bits: server_bits,
            },
            incoming: Direction {
                no_context_takeover: response.client_no_context_takeover,
                max_window_bits: client_bits.unwrap_or(MAX_WINDOW_BITS),
            },
            threshold: self.threshold,
            level: self.level,
        };
        Some((response.to_element(), negotiated))
    }

    /// Client side: checks the server's `Sec-WebSocket-Extensions` elements
    /// against the `offered` configurations (each sent as
    /// [`DeflateConfig::offer`]). `Ok(None)` if the server did not accept
    /// permessage-deflate; an error if its answer is invalid or matches none
    /// of the offers, in which case the client fails the connection.
    pub fn check_response(
        offered: &[Self],
        accepted: &[ExtensionOffer],
    ) -> Result<Option<PerMessageDeflate>, InvalidResponse> {
        let mut elements = accepted.iter().filter(|e| e.is(EXTENSION_NAME));
        let Some(element) = elements.next() else {
            return Ok(None);
        };
        if elements.next().is_some() {
            return Err(InvalidResponse(format!(
                "{EXTENSION_NAME} accepted more than once"
            )));
        }
        if offered.is_empty() {
            return Err(InvalidResponse(format!("{EXTENSION_NAME} was not offered")));
        }
        let response =
            Params::parse(element, Side::Response).map_err(|why| InvalidResponse(why.clone()))?;
        offered
            .iter()
            .find_map(|config| config.clamped().settle(response))
            .map(Some)
            .ok_or_else(|| {
                InvalidResponse(format!(
                    "{EXTENSION_NAME} response {element} answers none of our offers"
                ))
            })
    }

    /// The negotiated parameters if `response` is a valid answer to this
    /// configuration's offer (§7.1.1–7.1.2).
    fn settle(&self, response: Params) -> Option<PerMessageDeflate> {
        if self.server_no_context_takeover && !response.server_no_context_takeover {
            return None;
        }
        if let Some(requested) = self.server_max_window_bits {
            if response
                .server_max_window_bits
                .is_none_or(|bits| bits > requested)
            {
                return None;
            }
        }
        // The offer always carries client_max_window_bits, so the server may
        // set it, within our own hint if we gave one.
        let client_bits = response.client_max_window_bits.flatten();
        if let (Some(bits), Some(hint)) = (client_bits, self.client_max_window_bits) {
            if bits > hint {
                return None;
            }
        }
        Some(PerMessageDeflate {
            outgoing: Direction {
                no_context_takeover: self.client_no_context_takeover
                    || response.client_no_context_takeover,
                max_window_bits: client_bits
                    .or(self.client_max_window_bits)
                    .unwrap_or(MAX_WINDOW_BITS),
            },
            incoming: Direction {
                no_context_takeover: response.server_no_context_takeover,
                max_window_bits: response.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            },
            threshold: self.threshold,
            level: self.level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pmd() -> ExtensionOffer {
        ExtensionOffer::new(EXTENSION_NAME)
    }

    fn server(
        config: DeflateConfig,
        offers: &[ExtensionOffer],
    ) -> Option<(String, PerMessageDeflate)> {
        config
            .accept(offers)
            .map(|(element, negotiated)| (element.to_string(), negotiated))
    }

    fn keep_context() -> DeflateConfig {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            ..DeflateConfig::default()
        }
    }

    #[test]
    fn server_default_asks_for_no_context_takeover_both_ways() {
        let (response, negotiated) = server(DeflateConfig::default(), &[pmd()]).unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(negotiated.outgoing.no_context_takeover);
        assert!(negotiated.incoming.no_context_takeover);
        assert_eq!(negotiated.outgoing.max_window_bits, 15);
        assert_eq!(negotiated.incoming.max_window_bits, 15);
    }

    #[test]
    fn plain_offer_with_context_takeover() {
        let (response, negotiated) = server(keep_context(), &[pmd()]).unwrap();
        assert_eq!(response, "permessage-deflate");
        assert!(!negotiated.outgoing.no_context_takeover);
        assert!(!negotiated.incoming.no_context_takeover);
    }

    #[test]
    fn offered_no_context_takeover_is_honoured_both_ways() {
        let offer = pmd()
            .param("server_no_context_takeover", None)
            .param("client_no_context_takeover", None);
        let (response, negotiated) = server(keep_context(), &[offer]).unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(negotiated.outgoing.no_context_takeover && negotiated.incoming.no_context_takeover);
    }

    #[test]
    fn server_max_window_bits_from_offer_and_config() {
        for (ours, theirs, answer) in [
            (None, Some("10"), Some(10)),
            (Some(12), Some("10"), Some(10)),
            (Some(9), Some("10"), Some(9)),
            (Some(11), None, Some(11)),
            (None, None, None),
            (None, Some("15"), Some(15)),
        ] {
            let mut offer = pmd();
            if let Some(v) = theirs {
                offer = offer.param("server_max_window_bits", Some(v));
            }
            let config = DeflateConfig {
                server_max_window_bits: ours,
                ..keep_context()
            };
            let (response, negotiated) = server(config, &[offer]).unwrap();
            match answer {
                Some(bits) => {
                    assert_eq!(
                        response,
                        format!("permessage-deflate; server_max_window_bits={bits}")
                    );
                    assert_eq!(negotiated.outgoing.max_window_bits, bits);
                }
                None => {
                    assert_eq!(response, "permessage-deflate");
                    assert_eq!(negotiated.outgoing.max_window_bits, 15);
                }
            }
        }
    }

    #[test]
    fn client_max_window_bits_with_and_without_value() {
        for (ours, theirs, answer) in [
            (None, None, None),
            (Some(10), None, Some(10)),
            (None, Some("12"), Some(12)),
            (Some(10), Some("12"), Some(10)),
            (Some(13), Some("12"), Some(12)),
            (Some(8), None, Some(8)),
        ] {
            let offer = pmd().param("client_max_window_bits", theirs);
            let config = DeflateConfig {
                client_max_window_bits: ours,
                ..keep_context()
            };
            let (response, negotiated) = server(config, &[offer]).unwrap();
            match answer {
                Some(bits) => {
                    assert_eq!(
                        response,
                        format!("permessage-deflate; client_max_window_bits={bits}")
                    );
                    assert_eq!(negotiated.incoming.max_window_bits, bits);
                }
                None => assert_eq!(response, "permessage-deflate"),
            }
        }
        // A client that did not offer the parameter cannot be limited.
        let config = DeflateConfig {
            client_max_window_bits: Some(10),
            ..keep_context()
        };
        let (response, negotiated) = server(config, &[pmd()]).unwrap();
        assert_eq!(response, "permessage-deflate");
        assert_eq!(negotiated.incoming.max_window_bits, 15);
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_is_taken() {
        let invalid = [
            pmd().param("server_max_window_bits", Some("7")),
            pmd().param("server_max_window_bits", Some("16")),
            pmd().param("server_max_window_bits", Some("010")),
            pmd().param("server_max_window_bits", Some("+9")),
            pmd().param("server_max_window_bits", Some("x")),
            pmd().param("server_max_window_bits", None),
            pmd().param("client_max_window_bits", Some("0")),
            pmd().param("client_max_window_bits", Some("16")),
            pmd().param("server_no_context_takeover", Some("1")),
            pmd().param("client_no_context_takeover", Some("true")),
            pmd()
                .param("server_no_context_takeover", None)
                .param("SERVER_NO_CONTEXT_TAKEOVER", None),
            pmd()
                .param("client_max_window_bits", None)
                .param("client_max_window_bits", Some("10")),
            pmd()
                .param("server_max_window_bits", Some("10"))
                .param("server_max_window_bits", Some("10")),
            pmd().param("mystery", None),
            // We cannot compress with a 256-byte window.
            pmd().param("server_max_window_bits", Some("8")),
        ];
        for bad in invalid {
            assert_eq!(
                server(keep_context(), std::slice::from_ref(&bad)),
                None,
                "{bad}"
            );
            let next = pmd().param("client_max_window_bits", None);
            let (response, _) = server(keep_context(), &[bad.clone(), next]).unwrap();
            assert_eq!(response, "permessage-deflate", "{bad}");
        }
    }

    #[test]
    fn first_acceptable_offer_wins_and_other_extensions_are_ignored() {
        let offers = [
            ExtensionOffer::new("x-webkit-deflate-frame"),
            pmd()
                .param("server_max_window_bits", Some("9"))
                .param("server_no_context_takeover", None),
            pmd(),
        ];
        let (response, negotiated) = server(keep_context(), &offers).unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
        );
        assert_eq!(negotiated.outgoing.max_window_bits, 9);
        assert_eq!(server(keep_context(), &offers[..1]), None);
    }

    #[test]
    fn names_are_case_insensitive() {
        let offer =
            ExtensionOffer::new("PerMessage-Deflate").param("Server_Max_Window_Bits", Some("11"));
        let (response, _) = server(keep_context(), &[offer]).unwrap();
        assert_eq!(response, "permessage-deflate; server_max_window_bits=11");
    }

    #[test]
    fn out_of_range_values_count_as_the_nearest_bound() {
        let wide = DeflateConfig {
            server_max_window_bits: Some(20),
            client_max_window_bits: Some(4),
            level: 12,
            ..keep_context()
        };
        assert_eq!(
            wide.offer().to_string(),
            "permessage-deflate; server_max_window_bits=15; client_max_window_bits=8"
        );
        let (response, negotiated) = server(wide, &[pmd()]).unwrap();
        assert_eq!(response, "permessage-deflate");
        assert_eq!(negotiated.outgoing.max_window_bits, 15);
        assert_eq!(negotiated.level, 9);
        let narrow = DeflateConfig {
            server_max_window_bits: Some(3),
            ..keep_context()
        };
        let (response, negotiated) = server(narrow, &[pmd()]).unwrap();
        assert_eq!(response, "permessage-deflate; server_max_window_bits=9");
        assert_eq!(negotiated.outgoing.max_window_bits, 9);
    }

    #[test]
    fn client_offer_lists_its_configuration() {
        assert_eq!(
            DeflateConfig::default().offer().to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"
        );
        let config = DeflateConfig {
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(12),
            ..keep_context()
        };
        assert_eq!(
            config.offer().to_string(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"
        );
    }

    fn client(
        offered: &[DeflateConfig],
        response: &[ExtensionOffer],
    ) -> Result<Option<PerMessageDeflate>, InvalidResponse> {
        DeflateConfig::check_response(offered, response)
    }

    #[test]
    fn client_accepts_every_valid_response_parameter() {
        let negotiated = client(
            &[keep_context()],
            &[pmd()
                .param("server_no_context_takeover", None)
                .param("client_no_context_takeover", None)
                .param("server_max_window_bits", Some("10"))
                .param("client_max_window_bits", Some("9"))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            negotiated.outgoing,
            Direction {
                no_context_takeover: true,
                max_window_bits: 9
            }
        );
        assert_eq!(
            negotiated.incoming,
            Direction {
                no_context_takeover: true,
                max_window_bits: 10
            }
        );
        let plain = client(&[keep_context()], &[pmd()]).unwrap().unwrap();
        assert_eq!(
            plain.outgoing,
            Direction {
                no_context_takeover: false,
                max_window_bits: 15
            }
        );
        assert_eq!(
            plain.incoming,
            Direction {
                no_context_takeover: false,
                max_window_bits: 15
            }
        );
        assert_eq!(client(&[keep_context()], &[]).unwrap(), None);
    }

    #[test]
    fn client_fails_on_invalid_responses() {
        let bad = [
            pmd().param("client_max_window_bits", None),
            pmd().param("server_max_window_bits", Some("16")),
            pmd().param("server_max_window_bits", Some("7")),
            pmd().param("server_no_context_takeover", Some("x")),
            pmd().param("mystery", None),
            pmd()
                .param("client_no_context_takeover", None)
                .param("client_no_context_takeover", None),
        ];
        for response in bad {
            assert!(
                client(&[keep_context()], std::slice::from_ref(&response)).is_err(),
                "{response}"
            );
        }
        assert!(client(&[keep_context()], &[pmd(), pmd()]).is_err());
        assert!(client(&[], &[pmd()]).is_err());
    }

    #[test]
    fn client_fails_when_the_server_ignores_what_it_must_honour() {
        // Requested server_no_context_takeover, not granted.
        assert!(
            client(
                &[DeflateConfig::default()],
                &[pmd().param("client_no_context_takeover", None)]
            )
            .is_err()
        );
        // Requested server_max_window_bits=10: the answer must say 10 or less.
        let limited = DeflateConfig {
            server_max_window_bits: Some(10),
            ..keep_context()
        };
        assert!(client(&[limited], &[pmd()]).is_err());
        assert!(
            client(
                &[limited],
                &[pmd().param("server_max_window_bits", Some("11"))]
            )
            .is_err()
        );
        assert!(
            client(
                &[limited],
                &[pmd().param("server_max_window_bits", Some("9"))]
            )
            .is_ok()
        );
        // Our client_max_window_bits hint of 10 bounds the server's choice.
        let hinted = DeflateConfig {
            client_max_window_bits: Some(10),
            ..keep_context()
        };
        assert!(
            client(
                &[hinted],
                &[pmd().param("client_max_window_bits", Some("12"))]
            )
            .is_err()
        );
    }

    #[test]
    fn client_matches_the_response_against_each_offer_in_turn() {
        let offers = [
            DeflateConfig {
                server_max_window_bits: Some(9),
                ..DeflateConfig::default()
            },
            keep_context(),
        ];
        let negotiated = client(&offers, &[pmd()]).unwrap().unwrap();
        assert_eq!(negotiated.incoming.max_window_bits, 15);
        let negotiated = client(
            &offers,
            &[pmd()
                .param("server_no_context_takeover", None)
                .param("client_no_context_takeover", None)
                .param("server_max_window_bits", Some("9"))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            negotiated.incoming,
            Direction {
                no_context_takeover: true,
                max_window_bits: 9
            }
        );
        assert!(negotiated.outgoing.no_context_takeover);
    }

    #[test]
    fn client_told_to_use_eight_bits_keeps_them() {
        let negotiated = client(
            &[keep_context()],
            &[pmd().param("client_max_window_bits", Some("8"))],
        )
        .unwrap()
        .unwrap();
        assert_eq!(negotiated.outgoing.max_window_bits, 8);
    }
}
