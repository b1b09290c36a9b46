//! Connection and subscription tokens: JWTs signed by the application
//! backend, with Centrifugo's claims, so tokens minted for Centrifugo work
//! here unchanged.
//!
//! It does not read the clock (the caller passes `now`, in Unix seconds),
//! fetch keys (no JWKS), check `aud` or `iss`, or use the options (`info`,
//! `data`, `override`) inside a `subs` claim: only its channel names. HMAC
//! (HS256/384/512) tokens need the shared secret, RSA (RS256/384/512)
//! tokens the PEM public key; other algorithms, `none` included, are
//! refused.
//!
//! ```text
//!  connect {token} ──verify_connection──▶ ConnectionClaims (user, expiry,
//!                                         info, server-side channels)
//!  subscribe {channel, token} ──verify_subscription──▶ SubscriptionClaims
//! ```
//!
//! What the caller answers, as Centrifugo does:
//!
//! | Outcome                            | connect / refresh  | subscribe / sub_refresh |
//! |------------------------------------|--------------------|-------------------------|
//! | [`TokenError::Expired`]            | error 109 (the SDK fetches a new token) | error 109 |
//! | [`TokenError::Invalid`]            | disconnect 3500    | error 103               |
//! | [`TokenError::WrongChannel`]       | —                  | disconnect 3500         |
//! | claims of another user             | disconnect 3500 (refresh) | disconnect 3500  |
//! | `client` claim of another client   | —                  | disconnect 3500         |

mod capabilities;

use std::{collections::HashMap, fmt, fs};

use base64::Engine;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;

pub(crate) use self::capabilities::{
    Capability, Permission, RawCapability, channel_matches, granted,
};

/// Checks token signatures with the configured keys.
#[derive(Clone)]
pub(crate) struct Verifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
}

/// What a valid connection token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionClaims {
    /// `sub`: the user id; empty for an anonymous user.
    pub(crate) user: String,
    /// When the connection must be refreshed, in Unix seconds: `expire_at`
    /// when present (`0`: never), else `exp`; `None`: never.
    pub(crate) expires_at: Option<u64>,
    /// `info` (or `b64info` decoded): raw JSON shown in presence, join/leave
    /// and client publications.
    pub(crate) info: Option<Bytes>,
    /// Server-side subscriptions: the keys of `subs` (sorted) when present,
    /// else `channels`.
    pub(crate) channels: Vec<String>,
    /// `caps`: what the connection may do in which channels.
    pub(crate) caps: Vec<Capability>,
}

/// What a valid subscription token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscriptionClaims {
    /// `sub`. The caller checks it is the connection's user.
    pub(crate) user: String,
    /// `channel`: the channel asked for.
    pub(crate) channel: String,
    /// `client`: when set, the token is only for the connection with this
    /// client id. The caller checks.
    pub(crate) client: Option<String>,
    /// When the subscription must be refreshed, in Unix seconds
    /// (`expire_at` when present, `0`: never; else `exp`).
    pub(crate) expires_at: Option<u64>,
    /// `info` / `b64info`: channel info, raw JSON.
    pub(crate) info: Option<Bytes>,
    /// `data` / `b64data`: raw JSON for the client's `subscribed` event.
    pub(crate) data: Option<Bytes>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum TokenError {
    /// `exp` is not after `now`, or `nbf` is after it (Centrifugo reports
    /// both as expired). The client should fetch a new token.
    Expired,
    /// Malformed, badly signed, signed with an algorithm that has no key,
    /// with claims of the wrong type, or of the wrong kind of token.
    Invalid(String),
    /// A subscription token for another channel, or a token without one.
    WrongChannel,
}

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyError(String);

/// Builds and signs tokens: for tests, and for `tetherd`'s dev mode,
/// which prints a demo token.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenBuilder {
    claims: serde_json::Map<String, serde_json::Value>,
}

impl Verifier {
    /// A verifier for HMAC tokens (with `hmac_secret`) and/or RSA tokens
    /// (with a PEM `PUBLIC KEY` or `RSA PUBLIC KEY`). With neither, every
    /// token is refused.
    pub(crate) fn new(
        hmac_secret: Option<&str>,
        rsa_public_pem: Option<&str>,
    ) -> Result<Self, KeyError> {
        let hmac = match hmac_secret {
            Some("") => return Err(KeyError("the HMAC secret is empty".into())),
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let rsa = rsa_public_pem
            .map(|pem| DecodingKey::from_rsa_pem(pem.as_bytes()))
            .transpose()
            .map_err(|e| KeyError(format!("the RSA public key is unusable: {e}")))?;
        Ok(Self { hmac, rsa })
    }

    /// A verifier for the `[auth]` configuration: its HMAC secret unless
    /// empty, and the RSA public key read from its PEM file unless no path
    /// is set.
    pub(crate) fn from_config(auth: &crate::config::Auth) -> Result<Self, KeyError> {
        let path = &auth.token_rsa_public_key;
        let pem = if path.as_os_str().is_empty() {
            None
        } else {
            let pem = fs::read_to_string(path)
                .map_err(|e| KeyError(format!("cannot read {}: {e}", path.display())))?;
            Some(pem)
        };
        let secret = Some(auth.token_hmac_secret.as_str()).filter(|s| !s.is_empty());
        Self::new(secret, pem.as_deref())
    }

    /// Verifies a connection token at `now` (Unix seconds).
    pub(crate) fn verify_connection(
        &self,
        token: &str,
        now: u64,
    ) -> Result<ConnectionClaims, TokenError> {
        let claims = self.decode(token, now)?;
        if claims.channel.is_some() {
            return Err(invalid("a subscription token is not a connection token"));
        }
        let channels = match claims.subs {
            Some(subs) => {
                let mut channels: Vec<String> = subs.into_keys().collect();
                channels.sort_unstable();
                channels
            }
            None => claims.channels,
        };
        let caps = Capability::parse_all(claims.caps).map_err(invalid)?;
        Ok(ConnectionClaims {
            user: claims.sub,
            expires_at: expiry(claims.expire_at.as_ref(), claims.exp.as_ref()),
            info: json_or_base64(claims.info, claims.b64info, "b64info")?,
            channels,
            caps,
        })
    }

    /// Verifies a subscription token for `channel` at `now` (Unix seconds).
    /// The caller then checks [`SubscriptionClaims::user`] and
    /// [`SubscriptionClaims::client`] against the connection.
    pub(crate) fn verify_subscription(
        &self,
        token: &str,
        channel: &str,
        now: u64,
    ) -> Result<SubscriptionClaims, TokenError> {
        let claims = self.decode(token, now)?;
        let token_channel = claims.channel.unwrap_or_default();
        if token_channel.is_empty() || token_channel != channel {
            return Err(TokenError::WrongChannel);
        }
        Ok(SubscriptionClaims {
            user: claims.sub,
            channel: token_channel,
            client: claims.client.filter(|c| !c.is_empty()),
            expires_at: expiry(claims.expire_at.as_ref(), claims.exp.as_ref()),
            info: json_or_base64(claims.info, claims.b64info, "b64info")?,
            data: json_or_base64(claims.data, claims.b64data, "b64data")?,
        })
    }

    /// Signature, claim types, `exp` and `nbf`.
    fn decode(&self, token: &str, now: u64) -> Result<RawClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| invalid(format!("bad header: {e}")))?;
        let key = match header.alg.family() {
            AlgorithmFamily::Hmac => self.hmac.as_ref(),
            AlgorithmFamily::Rsa => self.rsa.as_ref(),
            AlgorithmFamily::Ec | AlgorithmFamily::Ed => None,
        }
        .ok_or_else(|| invalid(format!("no key for {:?} tokens", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        // Time is checked below against the caller's clock, without leeway,
        // as Centrifugo does; `exp` is optional (no `exp`: no expiry).
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<RawClaims>(token, key, &validation)
            .map_err(|e| invalid(e.to_string()))?
            .claims;
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let expired = claims.exp.as_ref().is_some_and(|exp| seconds(exp) <= now);
        let early = claims.nbf.as_ref().is_some_and(|nbf| seconds(nbf) > now);
        if expired || early {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("Verifier")
            .field("hmac", &self.hmac.is_some())
            .field("rsa", &self.rsa.is_some())
            .finish()
    }
}

impl TokenError {
    /// Whether the client should fetch a new token (error 109).
    #[cfg(test)]
    pub(crate) fn is_expired(&self) -> bool {
        matches!(self, Self::Expired)
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Expired => f.write_str("token expired"),
            Self::Invalid(why) => write!(f, "invalid token: {why}"),
            Self::WrongChannel => f.write_str("subscription token is for another channel"),
        }
    }
}

impl std::error::Error for TokenError {}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "tests mint every kind of token; the binary only a demo one"
    )
)]
impl TokenBuilder {
    /// A connection token for `user` (`sub`), without expiry.
    pub(crate) fn connection(user: &str) -> Self {
        Self::default().claim("sub", user.into())
    }

    /// A subscription token for `user` to `channel`, without expiry.
    pub(crate) fn subscription(user: &str, channel: &str) -> Self {
        Self::connection(user).claim("channel", channel.into())
    }

    /// Sets `exp` (Unix seconds).
    pub(crate) fn expires_at(self, at: u64) -> Self {
        self.claim("exp", at.into())
    }

    /// Sets `info`.
    pub(crate) fn info(self, info: serde_json::Value) -> Self {
        self.claim("info", info)
    }

    /// Sets `channels`: server-side subscriptions.
    pub(crate) fn channels(self, channels: &[&str]) -> Self {
        let channels = channels.iter().map(|&c| serde_json::Value::from(c));
        self.claim("channels", channels.collect())
    }

    /// Sets any claim.
    pub(crate) fn claim(mut self, name: &str, value: serde_json::Value) -> Self {
        self.claims.insert(name.to_owned(), value);
        self
    }

    /// Signs with HS256.
    pub(crate) fn sign_hs256(&self, secret: &str) -> String {
        // Invariant: HMAC takes keys of any length and the claims are a
        // JSON map, so neither signing nor serializing can fail.
        self.sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("HS256 signing is infallible")
    }

    /// Signs with RS256 using a PEM private key (PKCS#1 or PKCS#8).
    pub(crate) fn sign_rs256(&self, private_pem: &str) -> Result<String, KeyError> {
        let key = EncodingKey::from_rsa_pem(private_pem.as_bytes())
            .map_err(|e| KeyError(format!("the RSA private key is unusable: {e}")))?;
        self.sign(Algorithm::RS256, &key)
            .map_err(|e| KeyError(format!("RS256 signing failed: {e}")))
    }

    fn sign(&self, alg: Algorithm, key: &EncodingKey) -> jsonwebtoken::errors::Result<String> {
        jsonwebtoken::encode(&Header::new(alg), &self.claims, key)
    }
}

/// Both kinds of token's claims as they may appear; which ones count
/// depends on the kind.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: String,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    expire_at: Option<serde_json::Number>,
    info: Option<Box<RawValue>>,
    b64info: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    subs: Option<HashMap<String, serde::de::IgnoredAny>>,
    #[serde(default)]
    caps: Vec<RawCapability>,
    channel: Option<String>,
    client: Option<String>,
    data: Option<Box<RawValue>>,
    b64data: Option<String>,
}

fn invalid(why: impl Into<String>) -> TokenError {
    TokenError::Invalid(why.into())
}

/// `expire_at` overrides `exp` (`0`: never expires).
fn expiry(expire_at: Option<&serde_json::Number>, exp: Option<&serde_json::Number>) -> Option<u64> {
    let secs = match expire_at {
        Some(at) => seconds(at),
        None => seconds(exp?),
    };
    u64::try_from(secs).ok().filter(|&s| s > 0)
}

/// A NumericDate in whole seconds (JWT allows fractions; they are dropped).
fn seconds(n: &serde_json::Number) -> i64 {
    n.as_i64()
        .or_else(|| n.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
        // `as` saturates, and JSON holds no NaN.
        .unwrap_or_else(|| n.as_f64().unwrap_or(0.0).floor() as i64)
}

/// Raw JSON from `json`, else decoded from standard base64 (which must
/// hold JSON too: the wire protocol is JSON only).
fn json_or_base64(
    json: Option<Box<RawValue>>,
    base64: Option<String>,
    claim: &str,
) -> Result<Option<Bytes>, TokenError> {
    if let Some(encoded) = base64.filter(|b| !b.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| invalid(format!("{claim} is not base64: {e}")))?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
            .map_err(|_| invalid(format!("{claim} is not JSON")))?;
        return Ok(Some(crate::wire::compact_json(&bytes)));
    }
    // Compact: the claim's JSON goes into pushes, one object per line.
    Ok(json.map(|raw| crate::wire::compact_json(raw.get().as_bytes())))
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;

    const SECRET: &str = "a-test-secret";

    /// A throwaway 2048-bit key made with `openssl genrsa` for these tests only.
    const RSA_PRIVATE_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDCh41ZIy71t8WE\n\
fbEtow6HxytInnCLIfRh6zqRgLXoM4maaEU9Jw4L+uInTX7SmnIzLQkd19D+UpI0\n\
b+eyavmaGEcgr1DZWkf+gSVGnKiu37iBbwWVrvelNwvmQBrmqrmeukS3zL9b/Rvo\n\
TlKSeVztb6Uv7cloLfdrd162GQUNoPGvGQ7qkdVkANfPMvtKqbYiV2RssPAbGaht\n\
an2rT0WTXjwMRdJJWOSp5A+KlCJ+TaECoGNcOOfA2VKKpWLv87QyEI38HUVMGq+Z\n\
SIDHU/AX3C/+fE41itGVeeDcWRurPesuLGMnWemMrfvYqbO++ANaBsCvJIyPpxaV\n\
o1MJyITXAgMBAAECggEAFjJt1GjZhWv0VljEpw6kQaWzkIQ/waiHYHBSd7g7nuTZ\n\
Q+y3pdw3KUfLQYKBa6+i7f2qvM8xB6wisb1pL1MvQGrvxtDVGrrHXJ5I7hnsfOkw\n\
qQL4R1W2krwewqW4TBoutxLNyjlLRp2xmbGXkM4su+J8SLqgkPTZzCyhT98NVA9r\n\
fjR8eKBbcsjCL+0Cw6H/NY1T/EZJUaV/xxFc4MHY3acI/emyM9RppF5Z/83UDdZd\n\
us7nDc8o+fq82D8p4tpZzfefDxhSt9XRb+asBKRhJ7+9FN76JfWjc+zgu7sP6+u6\n\
wZrbIQPeK+DBEjf/prQ8Br1LKqNXZJ5gFgNu/SXKGQKBgQD+5D5WqxRfeMHQ7fLe\n\
WwX9Ruq+6wbMxGz9ChjpMVULZE8ik+VMRUkytmNYox/6KJ8vLV1zbLo0dNjFx//i\n\
8gFDjGss60Olk5a53NqntJF31Bulog2Ist7UaHar4xCb+xlt5Dgg67nKpOZopQC0\n\
VfQIyz45QbReydd9A8idNUJdmQKBgQDDYBxlN73/p/5+MsfrkqpLZrM1+M8Vaetu\n\
vHlDeiQSqW8UAZIbJTHlFHazPGFZ9Jf8SzfWzR+V7QhSMC+hmMfKr6ChnESaShcL\n\
RcMtKtK/sW66u/arjXZn6vXGxihTcr2RTEuVs/uqLfoU8hztLJkllXQYuGh+D9Sh\n\
ficPqRQb7wKBgQCQ4iQdF3mpGvbwT5Dxm0O4SAs/IlDnK+/XlVm7k3MH2qiwuuhn\n\
hiqpTMsDoxWWGGkDZAHujir5jkF5ismEspLNVo/FJKV7BH10gHk5QoY9Wq+sYoTW\n\
4vWOPyLVaWgTgZNex46wB82/xiPB76iK2SCxrvVbjmF8T7bRNMlfstpaYQKBgH7n\n\
ieoxF+fc7hB42aTpolXRwqxXDePh5fwKzlWHG7FHfxAmqQma0lrzPNrVaIKuvp4x\n\
GXcby91tlo8UH4w+md/MznDK+UCiyW8YBFvtSfEbxkni16m8/GEpnDVd90mk6P9c\n\
6Ge3/csfjCZY0XM5Gczw0/VOqwjfLYUsVSD1+UrfAoGAFJc46W8ZN5l5l1ibwGTP\n\
EdeWEPYHhesvh2QwGC0t56bchHcdp5AoLQtruqwBlgM7KVAzP+lROtAw1EsXrHvx\n\
36qs/X24O+J9GNDk8VRkJLmJNkE20y6Qx/txuiHsk3aAFiE62sDJ2Ina8PeioVbO\n\
Rs1iaufxVolbcqUZWkJqmi4=\n\
-----END PRIVATE KEY-----\n\
";

    /// Its public half (`openssl rsa -pubout`).
    const RSA_PUBLIC_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwoeNWSMu9bfFhH2xLaMO\n\
h8crSJ5wiyH0Yes6kYC16DOJmmhFPScOC/riJ01+0ppyMy0JHdfQ/lKSNG/nsmr5\n\
mhhHIK9Q2VpH/oElRpyort+4gW8Fla73pTcL5kAa5qq5nrpEt8y/W/0b6E5Sknlc\n\
7W+lL+3JaC33a3dethkFDaDxrxkO6pHVZADXzzL7Sqm2IldkbLDwGxmobWp9q09F\n\
k148DEXSSVjkqeQPipQifk2hAqBjXDjnwNlSiqVi7/O0MhCN/B1FTBqvmUiAx1Pw\n\
F9wv/nxONYrRlXng3Fkbqz3rLixjJ1npjK372KmzvvgDWgbArySMj6cWlaNTCciE\n\
1wIDAQAB\n\
-----END PUBLIC KEY-----\n\
";

    /// The public half of an unrelated key.
    const OTHER_RSA_PUBLIC_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAsmLoOpYwSHb69F23SYD9\n\
F10opKUwLl4g/fcpOHEQWJ8QQ2EjYEFab33BnGFxpB6kCP4e7WsBERSBMSFYMgQI\n\
JHRwRkvjwswqhFX2M+pHeB3XplvcRL853eHYp2njGq47HeA+Z1H55XnY4V5PqPGn\n\
vsgJD47jk7b/iEHF9SY0Tfj0ndtWdBIeXHbO6FIfYfM+J4WicDfGQqEiQSv1hViM\n\
+F+yGNBN5NTL+eBnJHuTILzoONY9SfBC1m5mONpxWo9Z/a39Ye/oh9YqShgMloJQ\n\
j+h98WFatxowYlbS+vM4z4/5/7KjezrNtvIyNNIjn6gTyHDKY9lz7kqAtfYYldlA\n\
0QIDAQAB\n\
-----END PUBLIC KEY-----\n\
";

    const NOW: u64 = 1_700_000_000;

    fn hmac() -> Verifier {
        Verifier::new(Some(SECRET), None).unwrap()
    }

    fn both() -> Verifier {
        Verifier::new(Some(SECRET), Some(RSA_PUBLIC_PEM)).unwrap()
    }

    fn is_invalid<T>(result: Result<T, TokenError>) -> bool {
        matches!(result, Err(TokenError::Invalid(_)))
    }

    #[test]
    fn hs256_connection_token_with_claims() {
        let token = TokenBuilder::connection("42")
            .expires_at(NOW + 600)
            .info(json!({"name": "Alice"}))
            .channels(&["personal:42", "news"])
            .claim("meta", json!({"ignored": true}))
            .sign_hs256(SECRET);
        let claims = hmac().verify_connection(&token, NOW).unwrap();
        assert_eq!(
            claims,
            ConnectionClaims {
                user: "42".into(),
                expires_at: Some(NOW + 600),
                info: Some(Bytes::from_static(br#"{"name":"Alice"}"#)),
                channels: vec!["personal:42".into(), "news".into()],
                caps: Vec::new(),
            }
        );
    }

    #[test]
    fn caps_are_read_and_a_bad_entry_invalidates_the_token() {
        let caps = json!([{"channels": ["news"], "allow": ["sub", "hst"]}]);
        let token = TokenBuilder::connection("42")
            .claim("caps", caps)
            .sign_hs256(SECRET);
        let claims = hmac().verify_connection(&token, NOW).unwrap();
        assert!(granted(&claims.caps, Permission::History, "news"));
        assert!(!granted(&claims.caps, Permission::Publish, "news"));
        let bad = TokenBuilder::connection("42")
            .claim(
                "caps",
                json!([{"channels": ["news"], "allow": ["everything"]}]),
            )
            .sign_hs256(SECRET);
        assert!(matches!(
            hmac().verify_connection(&bad, NOW),
            Err(TokenError::Invalid(why)) if why.contains("unknown permission")
        ));
    }

    #[test]
    fn no_exp_means_no_expiry_and_anonymous_is_allowed() {
        let token = TokenBuilder::connection("").sign_hs256(SECRET);
        let claims = hmac().verify_connection(&token, NOW).unwrap();
        assert_eq!((claims.user.as_str(), claims.expires_at), ("", None));
        assert!(claims.info.is_none() && claims.channels.is_empty());
    }

    #[test]
    fn expire_at_overrides_exp() {
        let token = |expire_at: u64| {
            TokenBuilder::connection("42")
                .expires_at(NOW + 60)
                .claim("expire_at", expire_at.into())
                .sign_hs256(SECRET)
        };
        let v = hmac();
        let claims = v.verify_connection(&token(NOW + 3600), NOW).unwrap();
        assert_eq!(claims.expires_at, Some(NOW + 3600));
        let claims = v.verify_connection(&token(0), NOW).unwrap();
        assert_eq!(claims.expires_at, None, "0: the connection never expires");
        // `exp` still decides whether the token itself is valid.
        assert_eq!(
            v.verify_connection(&token(0), NOW + 60),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn expiry_is_checked_against_the_given_clock() {
        let token = TokenBuilder::connection("42")
            .expires_at(NOW)
            .sign_hs256(SECRET);
        let v = hmac();
        assert!(v.verify_connection(&token, NOW - 1).is_ok());
        let err = v.verify_connection(&token, NOW).unwrap_err();
        assert!(err.is_expired(), "exp must be after now: {err}");
        // Fractional NumericDates are allowed.
        let token = TokenBuilder::connection("42")
            .claim("exp", json!(NOW as f64 + 0.5))
            .sign_hs256(SECRET);
        assert!(v.verify_connection(&token, NOW - 1).is_ok());
        assert_eq!(v.verify_connection(&token, NOW), Err(TokenError::Expired));
    }

    #[test]
    fn not_yet_valid_counts_as_expired() {
        let token = TokenBuilder::connection("42")
            .claim("nbf", (NOW + 10).into())
            .sign_hs256(SECRET);
        assert_eq!(
            hmac().verify_connection(&token, NOW),
            Err(TokenError::Expired)
        );
        assert!(hmac().verify_connection(&token, NOW + 10).is_ok());
    }

    #[test]
    fn wrong_secret_is_invalid() {
        let token = TokenBuilder::connection("42").sign_hs256("another-secret");
        assert!(is_invalid(hmac().verify_connection(&token, NOW)));
    }

    #[test]
    fn rs256_tokens_verify_with_the_public_key() {
        let token = TokenBuilder::connection("42")
            .expires_at(NOW + 60)
            .sign_rs256(RSA_PRIVATE_PEM)
            .unwrap();
        assert_eq!(both().verify_connection(&token, NOW).unwrap().user, "42");
        let rsa_only = Verifier::new(None, Some(RSA_PUBLIC_PEM)).unwrap();
        assert!(rsa_only.verify_connection(&token, NOW).is_ok());
        assert_eq!(
            rsa_only.verify_connection(&token, NOW + 60),
            Err(TokenError::Expired)
        );
        let other = Verifier::new(None, Some(OTHER_RSA_PUBLIC_PEM)).unwrap();
        assert!(is_invalid(other.verify_connection(&token, NOW)));
        // An algorithm without a configured key is refused.
        assert!(is_invalid(hmac().verify_connection(&token, NOW)));
        let hs = TokenBuilder::connection("42").sign_hs256(SECRET);
        assert!(is_invalid(rsa_only.verify_connection(&hs, NOW)));
    }

    #[test]
    fn public_key_as_hmac_secret_is_refused() {
        // Algorithm confusion: HS256 keyed with the public PEM.
        let token = TokenBuilder::connection("42").sign_hs256(RSA_PUBLIC_PEM);
        let rsa_only = Verifier::new(None, Some(RSA_PUBLIC_PEM)).unwrap();
        assert!(is_invalid(rsa_only.verify_connection(&token, NOW)));
        assert!(is_invalid(both().verify_connection(&token, NOW)));
    }

    #[test]
    fn none_algorithm_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"42"}"#);
        for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
            assert!(is_invalid(both().verify_connection(&token, NOW)), "{token}");
        }
    }

    #[test]
    fn garbage_is_invalid() {
        for token in ["", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30"] {
            assert!(
                is_invalid(both().verify_connection(token, NOW)),
                "{token:?}"
            );
        }
        // A claim of the wrong type.
        let token = TokenBuilder::default()
            .claim("sub", 42.into())
            .sign_hs256(SECRET);
        assert!(is_invalid(hmac().verify_connection(&token, NOW)));
    }

    #[test]
    fn b64info_and_subs_claims() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let token = TokenBuilder::connection("42")
            .claim("b64info", b64.encode(r#"{"b":1}"#).into())
            .channels(&["ignored-when-subs-is-present"])
            .claim(
                "subs",
                json!({"zeta": {}, "chat": {"info": {"role": "mod"}}}),
            )
            .sign_hs256(SECRET);
        let claims = hmac().verify_connection(&token, NOW).unwrap();
        assert_eq!(claims.info.as_deref(), Some(&br#"{"b":1}"#[..]));
        assert_eq!(claims.channels, ["chat", "zeta"]);
        let not_json = TokenBuilder::connection("42")
            .claim("b64info", b64.encode([0xff, 0x00]).into())
            .sign_hs256(SECRET);
        assert!(is_invalid(hmac().verify_connection(&not_json, NOW)));
    }

    #[test]
    fn subscription_token_for_the_right_channel() {
        let token = TokenBuilder::subscription("42", "$private")
            .expires_at(NOW + 60)
            .info(json!({"role": "mod"}))
            .claim("data", json!("hello"))
            .sign_hs256(SECRET);
        let v = hmac();
        assert_eq!(
            v.verify_subscription(&token, "$private", NOW).unwrap(),
            SubscriptionClaims {
                user: "42".into(),
                channel: "$private".into(),
                client: None,
                expires_at: Some(NOW + 60),
                info: Some(Bytes::from_static(br#"{"role":"mod"}"#)),
                data: Some(Bytes::from_static(br#""hello""#)),
            }
        );
        assert_eq!(
            v.verify_subscription(&token, "$other", NOW),
            Err(TokenError::WrongChannel)
        );
        assert_eq!(
            v.verify_subscription(&token, "$private", NOW + 60),
            Err(TokenError::Expired)
        );
        let bound = TokenBuilder::subscription("42", "$private")
            .claim("client", "c1".into())
            .sign_rs256(RSA_PRIVATE_PEM)
            .unwrap();
        let claims = both().verify_subscription(&bound, "$private", NOW).unwrap();
        assert_eq!(claims.client.as_deref(), Some("c1"));
    }

    #[test]
    fn token_kinds_do_not_mix() {
        let v = hmac();
        let sub_token = TokenBuilder::subscription("42", "news").sign_hs256(SECRET);
        assert!(is_invalid(v.verify_connection(&sub_token, NOW)));
        let conn_token = TokenBuilder::connection("42").sign_hs256(SECRET);
        assert_eq!(
            v.verify_subscription(&conn_token, "news", NOW),
            Err(TokenError::WrongChannel)
        );
    }

    #[test]
    fn bad_keys_are_refused_up_front() {
        assert!(Verifier::new(Some(""), None).is_err());
        assert!(Verifier::new(None, Some("not a pem")).is_err());
        assert!(
            TokenBuilder::connection("42")
                .sign_rs256(RSA_PUBLIC_PEM)
                .is_err()
        );
        let none = Verifier::new(None, None).unwrap();
        let token = TokenBuilder::connection("42").sign_hs256(SECRET);
        assert!(is_invalid(none.verify_connection(&token, NOW)));
        assert!(!format!("{:?}", hmac()).contains(SECRET));
    }
}
