//! Idle timeout and message rate limit, with a virtual clock.

mod common;

use std::time::Duration;

use common::{CLOSE, Pair, decode_frames, events, quiet, transmit, with};
use tether_proto::{
    CloseCode, Config, Event, Initiator, Keepalive, Message, ProtocolError, RateLimit, State,
};

fn closed_with(events: &[Event]) -> Option<(CloseCode, Initiator)> {
    events.iter().find_map(|event| match event {
        Event::Closed {
            code, initiator, ..
        } => Some((*code, *initiator)),
        _ => None,
    })
}

#[test]
fn idle_connection_is_closed_with_going_away() {
    let server = with(quiet(), |c| c.idle_timeout = Some(Duration::from_secs(60)));
    let mut pair = Pair::with_config(quiet(), server);
    pair.advance(Duration::from_secs(59));
    assert_eq!(pair.server.state(), State::Open);
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.server.state(), State::Closing);
    pair.drive();
    assert_eq!(
        closed_with(&pair.client_events()),
        Some((CloseCode::GOING_AWAY, Initiator::Peer))
    );
    assert_eq!(
        closed_with(&pair.server_events()),
        Some((CloseCode::GOING_AWAY, Initiator::Local))
    );
}

#[test]
fn traffic_including_pongs_keeps_a_connection_from_idling() {
    let keepalive = Keepalive {
        interval: Some(Duration::from_secs(20)),
        timeout: Duration::from_secs(20),
    };
    let server = with(Config::default(), |c| {
        c.keepalive = keepalive;
        c.idle_timeout = Some(Duration::from_secs(30));
    });
    let mut pair = Pair::with_config(quiet(), server);
    for _ in 0..10 {
        // The server pings after 20 s of silence; the client's pong resets
        // the idle clock before the 30 s idle timeout.
        pair.advance(Duration::from_secs(20));
        pair.drive();
    }
    assert_eq!(pair.server.state(), State::Open);
    assert!(
        pair.server_events()
            .iter()
            .all(|e| matches!(e, Event::Pong(_)))
    );
}

#[test]
fn message_flood_beyond_the_rate_limit_closes_with_1008() {
    let limit = RateLimit {
        per_second: 10,
        burst: 20,
    };
    let server = with(quiet(), |c| c.rate_limit = Some(limit));
    let mut pair = Pair::with_config(quiet(), server);
    for i in 0..20 {
        pair.client
            .send(pair.now, Message::text(format!("burst {i}")))
            .unwrap();
    }
    pair.drive();
    assert_eq!(pair.server_events().len(), 20, "the burst is allowed");
    // One second refills ten tokens.
    pair.advance(Duration::from_secs(1));
    for i in 0..10 {
        pair.client
            .send(pair.now, Message::text(format!("steady {i}")))
            .unwrap();
    }
    pair.drive();
    assert_eq!(pair.server_events().len(), 10);
    pair.client
        .send(pair.now, Message::text("one too many"))
        .unwrap();
    let mut wire = bytes::BytesMut::from(&transmit(&mut pair.client)[..]);
    let error = pair.server.receive(pair.now, &mut wire).unwrap_err();
    assert_eq!(
        error,
        ProtocolError::RateLimited {
            per_second: 10,
            burst: 20
        }
    );
    assert_eq!(error.close_code(), CloseCode::POLICY_VIOLATION);
    let frames = decode_frames(&transmit(&mut pair.server));
    assert_eq!(
        frames.last().map(|f| (f.opcode, f.close_code())),
        Some((CLOSE, Some(1008)))
    );
    assert!(
        events(&mut pair.server).is_empty(),
        "the offending message is not delivered"
    );
}
