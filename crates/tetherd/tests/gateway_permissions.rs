//! Channel permissions as Centrifugo v6 models them, deny-by-default: one
//! table with every way a client may be granted subscribe, publish,
//! presence and history (namespace options, user-limited channels, the
//! connection token's `caps`, `channels` and `subs`, subscription tokens)
//! and, beside each, the case that is refused with 103.

mod common;

use common::{Tetherd, protocol::Client, unix_now};
use serde_json::{Value, json};

const SECRET: &str = "permissions-test-secret-0123456789abcdef";

/// Every namespace keeps history and presence, so that only permissions
/// decide (not "not available", 108).
const CONFIG: &str = r#"
[auth]
api_key = "permissions-test-api-key-0123"
token_hmac_secret = "permissions-test-secret-0123456789abcdef"
allow_anonymous = true

[[namespace]]
name = "none"
history_size = 10
history_ttl = "1m"
presence = true

[[namespace]]
name = "client"
history_size = 10
history_ttl = "1m"
presence = true
allow_subscribe_for_client = true
allow_publish_for_client = true
allow_presence_for_client = true
allow_history_for_client = true

[[namespace]]
name = "anon"
history_size = 10
history_ttl = "1m"
presence = true
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
allow_presence_for_client = true
allow_presence_for_anonymous = true
allow_history_for_client = true
allow_history_for_anonymous = true

[[namespace]]
name = "subscriber"
history_size = 10
history_ttl = "1m"
presence = true
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_presence_for_subscriber = true
allow_history_for_subscriber = true

[[namespace]]
name = "personal"
history_size = 10
history_ttl = "1m"
presence = true
allow_user_limited_channels = true
"#;

/// Who connects.
#[derive(Debug, Clone, Copy)]
enum Who {
    Anonymous,
    /// A user's connection token, with these extra claims.
    User(&'static str, &'static str),
}

/// What the client tries.
#[derive(Debug, Clone, Copy)]
enum Action {
    Subscribe,
    /// Subscribe with a subscription token for this user and channel.
    SubscribeWithToken(&'static str),
    Publish,
    Presence,
    History,
}

/// What comes of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed,
    /// The reply's error 103, permission denied.
    Refused,
    /// The connection ended with 3500, invalid token: a subscription token
    /// for another user (Centrifugo does the same).
    InvalidToken,
}

/// One row: who, having first subscribed to the channel or not, tries
/// what in which channel, and what comes of it.
struct Case {
    who: Who,
    subscribed_first: bool,
    action: Action,
    channel: &'static str,
    outcome: Outcome,
}

const fn case(who: Who, action: Action, channel: &'static str, allowed: bool) -> Case {
    Case {
        who,
        subscribed_first: false,
        action,
        channel,
        outcome: if allowed {
            Outcome::Allowed
        } else {
            Outcome::Refused
        },
    }
}

const fn after_subscribing(who: Who, action: Action, channel: &'static str, allowed: bool) -> Case {
    Case {
        subscribed_first: true,
        ..case(who, action, channel, allowed)
    }
}

const USER: Who = Who::User("42", "{}");
const ANON: Who = Who::Anonymous;
const CAPS_SUB: Who = Who::User(
    "42",
    r#"{"caps": [{"channels": ["none:capped"], "allow": ["sub"]}]}"#,
);
const CAPS_ALL: Who = Who::User(
    "42",
    r#"{"caps": [{"channels": ["none:w*"], "match": "wildcard", "allow": ["sub", "pub", "prs", "hst"]}]}"#,
);
const CAPS_REGEX: Who = Who::User(
    "42",
    r#"{"caps": [{"channels": ["^none:r[0-9]+$"], "match": "regex", "allow": ["hst"]}]}"#,
);
/// The first matching entry decides: it allows only `pub`, so the later
/// entry's `sub` is not looked at.
const CAPS_FIRST_DECIDES: Who = Who::User(
    "42",
    r#"{"caps": [{"channels": ["none:f"], "allow": ["pub"]}, {"channels": ["none:f"], "allow": ["sub"]}]}"#,
);

const CASES: &[Case] = &[
    // Nothing granted: everything refused, for users and anonymous alike.
    case(USER, Action::Subscribe, "none:a", false),
    case(USER, Action::Publish, "none:a", false),
    case(USER, Action::Presence, "none:a", false),
    case(USER, Action::History, "none:a", false),
    case(ANON, Action::Subscribe, "none:a", false),
    // allow_*_for_client: users yes, anonymous no.
    case(USER, Action::Subscribe, "client:a", true),
    case(USER, Action::Publish, "client:a", true),
    case(USER, Action::Presence, "client:a", true),
    case(USER, Action::History, "client:a", true),
    case(ANON, Action::Subscribe, "client:a", false),
    case(ANON, Action::Publish, "client:a", false),
    case(ANON, Action::Presence, "client:a", false),
    case(ANON, Action::History, "client:a", false),
    // ... and `$` channels need a subscription token even so.
    case(USER, Action::Subscribe, "$client:private", false),
    // allow_*_for_anonymous: anonymous too.
    case(ANON, Action::Subscribe, "anon:a", true),
    case(ANON, Action::Publish, "anon:a", true),
    case(ANON, Action::Presence, "anon:a", true),
    case(ANON, Action::History, "anon:a", true),
    // allow_*_for_subscriber: only once subscribed.
    case(USER, Action::Publish, "subscriber:a", false),
    case(USER, Action::Presence, "subscriber:a", false),
    case(USER, Action::History, "subscriber:a", false),
    after_subscribing(USER, Action::Publish, "subscriber:a", true),
    after_subscribing(USER, Action::Presence, "subscriber:a", true),
    after_subscribing(USER, Action::History, "subscriber:a", true),
    // User-limited channels: the users listed after `#`, nobody else.
    case(USER, Action::Subscribe, "personal:#42", true),
    case(USER, Action::Subscribe, "personal:dialog#42,43", true),
    case(
        Who::User("44", "{}"),
        Action::Subscribe,
        "personal:#42",
        false,
    ),
    case(
        Who::User("44", "{}"),
        Action::Subscribe,
        "personal:dialog#42,43",
        false,
    ),
    case(ANON, Action::Subscribe, "personal:#", false),
    case(USER, Action::Subscribe, "none:#42", false),
    // caps: exact, wildcard and regex entries, each action on its own.
    case(CAPS_SUB, Action::Subscribe, "none:capped", true),
    case(CAPS_SUB, Action::Publish, "none:capped", false),
    case(CAPS_SUB, Action::Subscribe, "none:other", false),
    case(CAPS_ALL, Action::Subscribe, "none:wide", true),
    case(CAPS_ALL, Action::Publish, "none:wide", true),
    case(CAPS_ALL, Action::Presence, "none:wide", true),
    case(CAPS_ALL, Action::History, "none:wide", true),
    case(CAPS_ALL, Action::Subscribe, "none:narrow", false),
    case(CAPS_REGEX, Action::History, "none:r12", true),
    case(CAPS_REGEX, Action::History, "none:r12x", false),
    case(CAPS_REGEX, Action::Subscribe, "none:r12", false),
    case(CAPS_FIRST_DECIDES, Action::Publish, "none:f", true),
    case(CAPS_FIRST_DECIDES, Action::Subscribe, "none:f", false),
    // Subscription tokens: for this user and this channel only.
    case(USER, Action::SubscribeWithToken("42"), "none:token", true),
    case(
        USER,
        Action::SubscribeWithToken("42"),
        "$client:private",
        true,
    ),
    Case {
        outcome: Outcome::InvalidToken,
        ..case(USER, Action::SubscribeWithToken("43"), "none:token", false)
    },
];

fn token(claims: &Value) -> String {
    common::hs256_token(SECRET, claims)
}

/// The connect request for `who`.
fn connect_params(who: Who) -> Value {
    match who {
        Who::Anonymous => json!({}),
        Who::User(user, extra) => {
            let mut claims = json!({ "sub": user, "exp": unix_now() + 600 });
            let extra: Value = serde_json::from_str(extra).expect("extra claims are JSON");
            for (key, value) in extra.as_object().expect("an object") {
                claims[key] = value.clone();
            }
            json!({ "token": token(&claims) })
        }
    }
}

/// What comes of `action` in `channel`.
async fn attempt(client: &mut Client, action: Action, channel: &str) -> Outcome {
    let (method, params) = match action {
        Action::Subscribe => ("subscribe", json!({ "channel": channel })),
        Action::SubscribeWithToken(user) => {
            let claims = json!({ "sub": user, "channel": channel, "exp": unix_now() + 600 });
            (
                "subscribe",
                json!({ "channel": channel, "token": token(&claims) }),
            )
        }
        Action::Publish => ("publish", json!({ "channel": channel, "data": {} })),
        Action::Presence => ("presence", json!({ "channel": channel })),
        Action::History => ("history", json!({ "channel": channel, "limit": 1 })),
    };
    match client.reply_or_close(method, params).await {
        Ok(reply) if reply.get("error").is_none() => Outcome::Allowed,
        Ok(reply) if reply["error"]["code"] == 103 => Outcome::Refused,
        Err(3500) => Outcome::InvalidToken,
        other => panic!("{method} {channel}: neither allowed nor refused: {other:?}"),
    }
}

#[tokio::test]
async fn every_grant_path_and_its_denial() {
    let node = Tetherd::gateway(CONFIG, &[]);
    let mut wrong = Vec::new();
    for case in CASES {
        let (mut client, _) = Client::connect_with(&node, connect_params(case.who)).await;
        if case.subscribed_first {
            client
                .call("subscribe", json!({ "channel": case.channel }))
                .await;
        }
        let outcome = attempt(&mut client, case.action, case.channel).await;
        if outcome != case.outcome {
            wrong.push(format!(
                "{:?} {:?} {} (subscribed first: {}): expected {:?}, got {outcome:?}",
                case.who, case.action, case.channel, case.subscribed_first, case.outcome
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        CASES.len(),
        wrong.join("\n")
    );
}

/// The connection token's `channels` and `subs` subscribe the connection
/// at connect, in any namespace, with no other grant; a token without them
/// is refused the same channel.
#[tokio::test]
async fn channels_and_subs_claims_subscribe_at_connect() {
    let node = Tetherd::gateway(CONFIG, &[]);
    for claims in [
        json!({ "channels": ["none:claimed"] }),
        json!({ "subs": { "none:claimed": {} } }),
    ] {
        let mut full = json!({ "sub": "42", "exp": unix_now() + 600 });
        for (key, value) in claims.as_object().unwrap() {
            full[key] = value.clone();
        }
        let (_, connected) = Client::connect_with(&node, json!({ "token": token(&full) })).await;
        assert!(
            connected["subs"]["none:claimed"].is_object(),
            "{claims}: subscribed at connect: {connected}"
        );
    }
    let (mut client, connected) = Client::connect_with(&node, connect_params(USER)).await;
    assert!(connected.get("subs").is_none(), "{connected}");
    assert_eq!(
        attempt(&mut client, Action::Subscribe, "none:claimed").await,
        Outcome::Refused
    );
}
