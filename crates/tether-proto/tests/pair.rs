//! A client and a server talking in memory, with a virtual clock: messages,
//! the close handshake from either side, timeouts, pings and keepalive.

mod common;

use std::time::Duration;

use bytes::Bytes;
use tether_proto::{
    CloseCode, CloseFrame, Event, Initiator, Keepalive, Message, State, UsageError,
};

use common::{PING, PONG, Pair, decode_frames, quiet, transmit, with};

fn close(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned(),
    }))
}

fn closed(code: CloseCode, reason: &str, initiator: Initiator) -> Event {
    Event::Closed {
        code,
        reason: reason.to_owned(),
        initiator,
    }
}

fn keepalive(interval: u64, timeout: u64) -> Keepalive {
    Keepalive {
        interval: Some(Duration::from_secs(interval)),
        timeout: Duration::from_secs(timeout),
    }
}

#[test]
fn messages_flow_both_ways() {
    let mut pair = Pair::new();
    let big = vec![0xab; 70_000];
    pair.client
        .send(pair.now, Message::text("from client"))
        .unwrap();
    pair.client
        .send(pair.now, Message::binary(big.clone()))
        .unwrap();
    pair.server
        .send(pair.now, Message::text("from server"))
        .unwrap();
    pair.server
        .send(pair.now, Message::binary(big.clone()))
        .unwrap();
    pair.drive();
    let expected = |text| {
        [
            Event::Message(Message::text(text)),
            Event::Message(Message::binary(big.clone())),
        ]
    };
    assert_eq!(pair.server_events(), expected("from client"));
    assert_eq!(pair.client_events(), expected("from server"));
}

#[test]
fn client_initiated_close() {
    let mut pair = Pair::new();
    pair.client
        .send(pair.now, close(CloseCode::NORMAL, "done"))
        .unwrap();
    assert_eq!(pair.client.state(), State::Closing);
    pair.drive();
    assert_eq!(
        pair.server_events(),
        [closed(CloseCode::NORMAL, "done", Initiator::Peer)]
    );
    // The echo carries the code, not the reason.
    assert_eq!(
        pair.client_events(),
        [closed(CloseCode::NORMAL, "", Initiator::Local)]
    );
    assert!(pair.client.is_finished());
    assert!(pair.server.is_finished());
}

#[test]
fn server_initiated_close() {
    let mut pair = Pair::new();
    pair.server
        .send(pair.now, close(CloseCode::GOING_AWAY, "restart"))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.client_events(),
        [closed(CloseCode::GOING_AWAY, "restart", Initiator::Peer)]
    );
    assert_eq!(
        pair.server_events(),
        [closed(CloseCode::GOING_AWAY, "", Initiator::Local)]
    );
    assert!(pair.client.is_finished());
    assert!(pair.server.is_finished());
    assert_eq!(pair.client.poll_timeout(), None);
    assert_eq!(pair.server.poll_timeout(), None);
}

#[test]
fn application_close_code_is_echoed() {
    let mut pair = Pair::new();
    pair.client
        .send(pair.now, close(CloseCode(4321), "app"))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.client_events(),
        [closed(CloseCode(4321), "", Initiator::Local)]
    );
}

#[test]
fn close_without_code_reports_1005_on_both_sides() {
    let mut pair = Pair::new();
    pair.client.send(pair.now, Message::Close(None)).unwrap();
    pair.drive();
    assert_eq!(
        pair.server_events(),
        [closed(CloseCode::NO_STATUS, "", Initiator::Peer)]
    );
    assert_eq!(
        pair.client_events(),
        [closed(CloseCode::NO_STATUS, "", Initiator::Local)]
    );
}

#[test]
fn simultaneous_close_finishes_both_sides() {
    let mut pair = Pair::new();
    pair.client
        .send(pair.now, close(CloseCode::NORMAL, ""))
        .unwrap();
    pair.server
        .send(pair.now, close(CloseCode::GOING_AWAY, ""))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.client_events(),
        [closed(CloseCode::GOING_AWAY, "", Initiator::Local)]
    );
    assert_eq!(
        pair.server_events(),
        [closed(CloseCode::NORMAL, "", Initiator::Local)]
    );
    assert!(pair.client.is_finished() && pair.server.is_finished());
}

#[test]
fn messages_sent_before_close_arrive_before_it() {
    let mut pair = Pair::new();
    pair.client
        .send(pair.now, Message::text("last words"))
        .unwrap();
    pair.client
        .send(pair.now, close(CloseCode::NORMAL, ""))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.server_events(),
        [
            Event::Message(Message::text("last words")),
            closed(CloseCode::NORMAL, "", Initiator::Peer),
        ]
    );
}

#[test]
fn close_timeout_when_the_peer_never_answers() {
    let config = with(quiet(), |c| c.close_timeout = Duration::from_secs(5));
    let mut pair = Pair::with_config(config, config);
    pair.client
        .send(pair.now, close(CloseCode::NORMAL, ""))
        .unwrap();
    // The close frame is written, but the peer never reads it.
    let _ = transmit(&mut pair.client);
    pair.advance(Duration::from_millis(4999));
    assert!(pair.client_events().is_empty());
    assert_eq!(pair.client.state(), State::Closing);
    pair.advance(Duration::from_millis(1));
    assert_eq!(
        pair.client_events(),
        [closed(
            CloseCode::ABNORMAL,
            "the peer did not answer our close frame",
            Initiator::Local
        )]
    );
    assert!(pair.client.is_finished());
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn close_timeout_fires_even_if_the_peer_keeps_sending_data() {
    let config = with(quiet(), |c| c.close_timeout = Duration::from_secs(5));
    let mut pair = Pair::with_config(config, config);
    pair.client
        .send(pair.now, close(CloseCode::NORMAL, ""))
        .unwrap();
    // The server never reads the close frame, but keeps talking.
    let _ = transmit(&mut pair.client);
    for _ in 0..5 {
        pair.advance(Duration::from_secs(1));
        pair.server
            .send(pair.now, Message::text("chatter"))
            .unwrap();
        let wire = transmit(&mut pair.server);
        pair.client
            .receive(pair.now, &mut bytes::BytesMut::from(&wire[..]))
            .unwrap();
    }
    let events = pair.client_events();
    assert_eq!(events.len(), 5, "{events:?}");
    assert_eq!(
        events.last(),
        Some(&closed(
            CloseCode::ABNORMAL,
            "the peer did not answer our close frame",
            Initiator::Local
        ))
    );
}

#[test]
fn keepalive_pings_after_silence() {
    let config = with(quiet(), |c| c.keepalive = keepalive(30, 10));
    let mut pair = Pair::with_config(config, quiet());
    let start = pair.now;
    assert_eq!(
        pair.client.poll_timeout(),
        Some(start + Duration::from_secs(30))
    );
    pair.advance(Duration::from_secs(29));
    assert!(
        transmit(&mut pair.client).is_empty(),
        "no ping before the interval"
    );
    pair.advance(Duration::from_secs(1));
    let frames = decode_frames(&transmit(&mut pair.client));
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].opcode, frames[0].masked), (PING, true));
    assert_eq!(
        pair.client.poll_timeout(),
        Some(start + Duration::from_secs(40)),
        "the dead-peer deadline is armed"
    );
}

#[test]
fn keepalive_pong_keeps_the_connection_alive() {
    let config = with(quiet(), |c| c.keepalive = keepalive(30, 10));
    let mut pair = Pair::with_config(config, quiet());
    for round in 0..5 {
        pair.advance(Duration::from_secs(30));
        pair.drive(); // ping out, pong back
        assert_eq!(
            pair.client_events(),
            [Event::Pong(Bytes::new())],
            "round {round}"
        );
        assert_eq!(pair.server_events(), [Event::Ping(Bytes::new())]);
        assert_eq!(pair.client.state(), State::Open);
    }
}

#[test]
fn any_traffic_postpones_the_keepalive_ping() {
    let config = with(quiet(), |c| c.keepalive = keepalive(30, 10));
    let mut pair = Pair::with_config(config, quiet());
    pair.advance(Duration::from_secs(20));
    pair.server
        .send(pair.now, Message::text("still here"))
        .unwrap();
    pair.drive();
    pair.advance(Duration::from_secs(29));
    assert!(transmit(&mut pair.client).is_empty());
    pair.advance(Duration::from_secs(1));
    assert!(!transmit(&mut pair.client).is_empty());
}

#[test]
fn dead_peer_is_detected_after_the_timeout() {
    let config = with(quiet(), |c| c.keepalive = keepalive(30, 10));
    let mut pair = Pair::with_config(config, config);
    pair.advance(Duration::from_secs(30));
    // Both ping; neither ping is ever delivered.
    let _ = transmit(&mut pair.client);
    let _ = transmit(&mut pair.server);
    pair.advance(Duration::from_secs(9));
    assert_eq!(pair.client.state(), State::Open);
    pair.advance(Duration::from_secs(1));
    for events in [pair.client_events(), pair.server_events()] {
        assert_eq!(
            events,
            [closed(
                CloseCode::ABNORMAL,
                "keepalive timeout: the peer stopped answering",
                Initiator::Local
            )]
        );
    }
    assert_eq!(pair.client.state(), State::Closed);
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn late_answer_after_the_ping_saves_the_connection() {
    let config = with(quiet(), |c| c.keepalive = keepalive(30, 10));
    let mut pair = Pair::with_config(config, quiet());
    pair.advance(Duration::from_secs(30));
    let ping = transmit(&mut pair.client);
    pair.advance(Duration::from_secs(9));
    let mut to_server = bytes::BytesMut::from(&ping[..]);
    pair.server.receive(pair.now, &mut to_server).unwrap();
    pair.drive();
    pair.advance(Duration::from_secs(5));
    assert_eq!(pair.client.state(), State::Open);
}

#[test]
fn keepalive_off_never_pings() {
    let mut pair = Pair::new();
    assert_eq!(pair.client.poll_timeout(), None);
    pair.advance(Duration::from_secs(3600));
    assert!(transmit(&mut pair.client).is_empty());
    assert_eq!(pair.client.state(), State::Open);
}

#[test]
fn ping_is_answered_with_a_pong_automatically() {
    let mut pair = Pair::new();
    pair.client
        .send(
            pair.now,
            Message::Ping(Bytes::from_static(b"are you there")),
        )
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.server_events(),
        [Event::Ping(Bytes::from_static(b"are you there"))]
    );
    assert_eq!(
        pair.client_events(),
        [Event::Pong(Bytes::from_static(b"are you there"))]
    );
}

#[test]
fn application_sees_pongs_to_its_pings_from_the_server() {
    let mut pair = Pair::new();
    pair.server
        .send(pair.now, Message::Ping(Bytes::from_static(b"s")))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.client_events(),
        [Event::Ping(Bytes::from_static(b"s"))]
    );
    assert_eq!(
        pair.server_events(),
        [Event::Pong(Bytes::from_static(b"s"))]
    );
}

#[test]
fn every_ping_is_answered_while_output_flows() {
    let mut pair = Pair::new();
    for payload in [&b"1"[..], b"2", b"3"] {
        pair.client
            .send(pair.now, Message::Ping(Bytes::from_static(payload)))
            .unwrap();
    }
    pair.drive();
    assert_eq!(pair.server_events().len(), 3);
    let pongs: Vec<_> = pair.client_events();
    assert_eq!(
        pongs,
        [&b"1"[..], b"2", b"3"].map(|p| Event::Pong(Bytes::from_static(p)))
    );
}

#[test]
fn only_the_latest_ping_is_answered_when_output_backs_up() {
    let mut pair = Pair::new();
    // 70 kB the peer has not read yet: past the 64 KiB pong queue limit.
    pair.server
        .send(pair.now, Message::binary(vec![0; 70_000]))
        .unwrap();
    for payload in [&b"1"[..], b"2", b"3"] {
        pair.client
            .send(pair.now, Message::Ping(Bytes::from_static(payload)))
            .unwrap();
    }
    let pings = transmit(&mut pair.client);
    pair.server
        .receive(pair.now, &mut bytes::BytesMut::from(&pings[..]))
        .unwrap();
    assert_eq!(pair.server_events().len(), 3, "every ping is reported");
    let frames = decode_frames(&transmit(&mut pair.server));
    let pongs: Vec<_> = frames.iter().filter(|f| f.opcode == PONG).collect();
    assert_eq!(pongs.len(), 1, "{frames:?}");
    assert_eq!(pongs[0].payload, b"3");
}

#[test]
fn unsolicited_pong_is_reported_and_not_answered() {
    let mut pair = Pair::new();
    pair.client
        .send(pair.now, Message::Pong(Bytes::from_static(b"heartbeat")))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.server_events(),
        [Event::Pong(Bytes::from_static(b"heartbeat"))]
    );
    assert!(pair.client_events().is_empty());
}

#[test]
fn oversized_ping_is_refused() {
    let mut pair = Pair::new();
    assert_eq!(
        pair.client
            .send(pair.now, Message::Ping(Bytes::from(vec![0; 126]))),
        Err(UsageError::ControlPayloadTooLong(126))
    );
    assert_eq!(
        pair.client
            .send(pair.now, Message::Pong(Bytes::from(vec![0; 126]))),
        Err(UsageError::ControlPayloadTooLong(126))
    );
    pair.client
        .send(pair.now, Message::Ping(Bytes::from(vec![0; 125])))
        .unwrap();
}

#[test]
fn no_send_after_close() {
    let mut pair = Pair::new();
    pair.client
        .send(pair.now, close(CloseCode::NORMAL, ""))
        .unwrap();
    assert_eq!(
        pair.client.send(pair.now, Message::text("too late")),
        Err(UsageError::AlreadyClosing)
    );
    pair.drive();
    assert_eq!(
        pair.server.send(pair.now, Message::text("too late")),
        Err(UsageError::AlreadyClosing)
    );
    assert!(transmit(&mut pair.client).is_empty());
    assert!(transmit(&mut pair.server).is_empty());
}

#[test]
fn unsendable_close_codes_are_refused() {
    let mut pair = Pair::new();
    for code in [
        CloseCode::NO_STATUS,
        CloseCode::ABNORMAL,
        CloseCode::TLS_HANDSHAKE,
        CloseCode(999),
        CloseCode(2000),
        CloseCode(5000),
    ] {
        assert_eq!(
            pair.client.send(pair.now, close(code, "")),
            Err(UsageError::UnsendableCloseCode(code.0))
        );
    }
    assert_eq!(pair.client.state(), State::Open);
    pair.client
        .send(pair.now, Message::text("still open"))
        .unwrap();
    pair.drive();
    assert_eq!(
        pair.server_events(),
        [Event::Message(Message::text("still open"))]
    );
}

#[test]
fn buffered_amount_counts_queued_bytes() {
    let mut pair = Pair::new();
    assert_eq!(pair.server.buffered_amount(), 0);
    pair.server
        .send(pair.now, Message::binary(vec![0; 2000]))
        .unwrap();
    assert_eq!(pair.server.buffered_amount(), 2 + 2 + 2000);
    let _ = transmit(&mut pair.server);
    assert_eq!(pair.server.buffered_amount(), 0);
}

#[test]
fn buffered_amount_includes_the_pending_pong() {
    let mut pair = Pair::new();
    pair.server
        .send(pair.now, Message::Ping(Bytes::from_static(b"abc")))
        .unwrap();
    pair.client
        .send(pair.now, Message::Ping(Bytes::from_static(b"abc")))
        .unwrap();
    let to_client = transmit(&mut pair.server);
    let to_server = transmit(&mut pair.client);
    for (bytes, peer) in [(to_client, &mut pair.client), (to_server, &mut pair.server)] {
        // A backlog past the pong queue limit, so the pong is held back.
        peer.send(pair.now, Message::binary(vec![0; 70_000]))
            .unwrap();
        peer.receive(pair.now, &mut bytes::BytesMut::from(&bytes[..]))
            .unwrap();
        let promised = peer.buffered_amount();
        assert_eq!(
            promised,
            transmit(peer).len(),
            "{:?} counts its pong as it will be written",
            peer.role()
        );
    }
}
