//! The close handshake on the wire (§5.5.1, §7): close payload rules, close
//! codes (§7.4), the single echoed reply, and what happens after closing.

mod common;

use std::time::Duration;

use bytes::Bytes;
use tether_proto::{
    CloseCode, CloseFrame, Connection, Event, Initiator, Message, ProtocolError, Role, State,
    UsageError,
};

use common::{
    CLOSE, PING, TEXT, assert_refused, close_payload, decode_frames, events, feed, from_client,
    from_server, quiet, start, transmit, with,
};

fn server() -> Connection {
    Connection::new(Role::Server, quiet(), start())
}

fn closed(code: CloseCode, reason: &str, initiator: Initiator) -> Event {
    Event::Closed {
        code,
        reason: reason.to_owned(),
        initiator,
    }
}

#[test]
fn peer_close_is_echoed_once_with_the_same_code() {
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ] {
        let mut conn = server();
        feed(
            &mut conn,
            start(),
            &from_client(true, CLOSE, &close_payload(code, b"bye")),
        )
        .unwrap();
        assert_eq!(
            events(&mut conn),
            [closed(CloseCode(code), "bye", Initiator::Peer)],
            "{code}"
        );
        assert_eq!(conn.state(), State::Closed);
        let frames = decode_frames(&transmit(&mut conn));
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].close_code(), Some(code));
        assert!(!frames[0].masked && frames[0].fin);
        assert!(conn.is_finished());
    }
}

#[test]
fn client_echoes_close_masked() {
    let mut conn = Connection::new(Role::Client, quiet(), start());
    feed(
        &mut conn,
        start(),
        &from_server(true, CLOSE, &close_payload(1001, b"")),
    )
    .unwrap();
    let frames = decode_frames(&transmit(&mut conn));
    assert_eq!(frames.len(), 1);
    assert!(frames[0].masked);
    assert_eq!(frames[0].close_code(), Some(1001));
}

#[test]
fn empty_close_is_reported_as_1005_and_answered_empty() {
    let mut conn = server();
    feed(&mut conn, start(), &from_client(true, CLOSE, b"")).unwrap();
    assert_eq!(
        events(&mut conn),
        [closed(CloseCode::NO_STATUS, "", Initiator::Peer)]
    );
    let frames = decode_frames(&transmit(&mut conn));
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].opcode, frames[0].payload.len()), (CLOSE, 0));
}

#[test]
fn one_byte_close_payload_is_refused() {
    assert_refused(
        Role::Server,
        quiet(),
        &from_client(true, CLOSE, &[0x03]),
        &ProtocolError::ClosePayloadTooShort,
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn close_codes_never_sent_on_the_wire_are_refused() {
    // 1005, 1006 and 1015 are local-only; 0–999 and 1016–2999 are not
    // assigned; 1004 is reserved; 5000+ is out of range.
    for code in [
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        assert_refused(
            Role::Server,
            quiet(),
            &from_client(true, CLOSE, &close_payload(code, b"")),
            &ProtocolError::InvalidCloseCode(code),
            CloseCode::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn close_reason_must_be_utf8() {
    assert_refused(
        Role::Server,
        quiet(),
        &from_client(true, CLOSE, &close_payload(1000, &[b'o', b'k', 0xff])),
        &ProtocolError::InvalidCloseReason,
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn close_reason_of_123_bytes_is_accepted() {
    let reason = "é".repeat(61) + "x";
    assert_eq!(reason.len(), 123);
    let mut conn = server();
    feed(
        &mut conn,
        start(),
        &from_client(true, CLOSE, &close_payload(1000, reason.as_bytes())),
    )
    .unwrap();
    assert_eq!(
        events(&mut conn),
        [closed(CloseCode::NORMAL, &reason, Initiator::Peer)]
    );
}

#[test]
fn bytes_after_peer_close_are_ignored() {
    let mut conn = server();
    let mut wire = from_client(true, CLOSE, &close_payload(1000, b""));
    wire.extend(from_client(true, TEXT, b"late"));
    wire.extend(from_server(true, TEXT, b"unmasked and late"));
    feed(&mut conn, start(), &wire).unwrap();
    feed(&mut conn, start(), &from_client(true, PING, b"later")).unwrap();
    assert_eq!(
        events(&mut conn),
        [closed(CloseCode::NORMAL, "", Initiator::Peer)]
    );
    let frames = decode_frames(&transmit(&mut conn));
    assert_eq!(frames.len(), 1, "only the close reply: {frames:?}");
}

#[test]
fn second_close_from_peer_gets_no_second_reply() {
    let mut conn = server();
    feed(
        &mut conn,
        start(),
        &from_client(true, CLOSE, &close_payload(1000, b"")),
    )
    .unwrap();
    let _ = transmit(&mut conn);
    feed(
        &mut conn,
        start(),
        &from_client(true, CLOSE, &close_payload(1001, b"")),
    )
    .unwrap();
    assert!(transmit(&mut conn).is_empty());
    assert_eq!(events(&mut conn).len(), 1);
}

#[test]
fn close_reply_completes_our_close() {
    let now = start();
    let mut conn = server();
    conn.send(
        now,
        Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY))),
    )
    .unwrap();
    assert_eq!(conn.state(), State::Closing);
    let frames = decode_frames(&transmit(&mut conn));
    assert_eq!(frames[0].close_code(), Some(1001));
    // Data still arrives while we wait for the reply.
    feed(&mut conn, now, &from_client(true, TEXT, b"in flight")).unwrap();
    feed(
        &mut conn,
        now,
        &from_client(true, CLOSE, &close_payload(1001, b"ok")),
    )
    .unwrap();
    assert_eq!(
        events(&mut conn),
        [
            Event::Message(Message::text("in flight")),
            closed(CloseCode::GOING_AWAY, "ok", Initiator::Local),
        ]
    );
    assert!(transmit(&mut conn).is_empty(), "our close is not repeated");
    assert!(conn.is_finished());
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn ping_while_closing_is_still_answered() {
    // §5.5.2: a ping gets a pong unless a close was *received*; having sent
    // ours does not excuse us.
    let now = start();
    let mut conn = server();
    conn.send(now, Message::Close(None)).unwrap();
    let _ = transmit(&mut conn);
    feed(&mut conn, now, &from_client(true, PING, b"p")).unwrap();
    assert_eq!(events(&mut conn), [Event::Ping(Bytes::from_static(b"p"))]);
    assert_eq!(transmit(&mut conn), [0x8a, 0x01, b'p']);
}

#[test]
fn protocol_error_while_closing_sends_no_second_close() {
    let now = start();
    let mut conn = server();
    conn.send(
        now,
        Message::Close(Some(CloseFrame::new(CloseCode::NORMAL))),
    )
    .unwrap();
    let _ = transmit(&mut conn);
    assert_eq!(
        feed(&mut conn, now, &from_server(true, TEXT, b"x")),
        Err(ProtocolError::UnmaskedFrame)
    );
    assert_eq!(conn.state(), State::Closed);
    assert!(transmit(&mut conn).is_empty());
    assert!(conn.is_finished());
}

#[test]
fn no_pong_follows_our_close() {
    for backlog in [0, 70_000] {
        let now = start();
        let mut conn = server();
        // With 64 KiB or more queued, the pong waits (only the latest is kept).
        if backlog > 0 {
            conn.send(now, Message::binary(vec![0; backlog])).unwrap();
        }
        feed(&mut conn, now, &from_client(true, PING, b"p")).unwrap();
        conn.send(now, Message::Close(None)).unwrap();
        let frames = decode_frames(&transmit(&mut conn));
        assert_eq!(
            frames.last().map(|f| f.opcode),
            Some(CLOSE),
            "nothing after our close: {frames:?}"
        );
    }
}

#[test]
fn pending_pong_is_dropped_when_the_peer_closes() {
    let now = start();
    let mut conn = server();
    let mut wire = from_client(true, PING, b"p");
    wire.extend(from_client(true, CLOSE, b""));
    feed(&mut conn, now, &wire).unwrap();
    let frames = decode_frames(&transmit(&mut conn));
    assert_eq!(frames.last().map(|f| f.opcode), Some(CLOSE), "{frames:?}");
}

#[test]
fn unsendable_close_codes_are_refused() {
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        let mut conn = server();
        assert_eq!(
            conn.send(
                start(),
                Message::Close(Some(CloseFrame::new(CloseCode(code))))
            ),
            Err(UsageError::UnsendableCloseCode(code))
        );
        assert_eq!(conn.state(), State::Open, "a refused close changes nothing");
        assert!(transmit(&mut conn).is_empty());
    }
}

#[test]
fn close_without_a_code_is_sent_empty() {
    let mut conn = server();
    conn.send(start(), Message::Close(None)).unwrap();
    let frames = decode_frames(&transmit(&mut conn));
    assert_eq!((frames[0].opcode, frames[0].payload.len()), (CLOSE, 0));
}

#[test]
fn long_close_reason_is_cut_to_fit_a_control_frame() {
    let mut conn = server();
    let frame = CloseFrame {
        code: CloseCode(4000),
        reason: "€".repeat(100),
    };
    conn.send(start(), Message::Close(Some(frame))).unwrap();
    let frames = decode_frames(&transmit(&mut conn));
    assert!(frames[0].payload.len() <= 125);
    assert_eq!(frames[0].close_code(), Some(4000));
    assert!(std::str::from_utf8(&frames[0].payload[2..]).is_ok());
}

#[test]
fn no_send_after_close() {
    let now = start();
    let mut conn = server();
    conn.send(now, Message::Close(None)).unwrap();
    for message in [
        Message::text("late"),
        Message::binary(&b"late"[..]),
        Message::Ping(Bytes::new()),
        Message::Pong(Bytes::new()),
        Message::Close(None),
    ] {
        assert_eq!(conn.send(now, message), Err(UsageError::AlreadyClosing));
    }
    assert_eq!(decode_frames(&transmit(&mut conn)).len(), 1);
}

#[test]
fn no_send_after_peer_close() {
    let now = start();
    let mut conn = server();
    feed(&mut conn, now, &from_client(true, CLOSE, b"")).unwrap();
    assert_eq!(
        conn.send(now, Message::text("late")),
        Err(UsageError::AlreadyClosing)
    );
    assert_eq!(
        conn.send(now, Message::Close(None)),
        Err(UsageError::AlreadyClosing)
    );
}

#[test]
fn no_send_after_protocol_error() {
    let now = start();
    let mut conn = server();
    assert!(feed(&mut conn, now, &from_server(true, TEXT, b"x")).is_err());
    assert_eq!(
        conn.send(now, Message::text("late")),
        Err(UsageError::AlreadyClosing)
    );
}

#[test]
fn eof_without_close_is_abnormal() {
    let mut conn = server();
    conn.receive_eof();
    let events = events(&mut conn);
    assert!(
        matches!(
            events.as_slice(),
            [Event::Closed { code, initiator: Initiator::Peer, .. }] if *code == CloseCode::ABNORMAL
        ),
        "{events:?}"
    );
    assert!(conn.is_finished());
}

#[test]
fn eof_after_close_handshake_is_silent() {
    let mut conn = server();
    feed(&mut conn, start(), &from_client(true, CLOSE, b"")).unwrap();
    let _ = events(&mut conn);
    conn.receive_eof();
    assert!(conn.poll_event().is_none());
}

#[test]
fn eof_while_waiting_for_the_close_reply_is_abnormal() {
    let now = start();
    let mut conn = server();
    conn.send(now, Message::Close(None)).unwrap();
    conn.receive_eof();
    assert!(matches!(
        events(&mut conn).as_slice(),
        [Event::Closed { code, .. }] if *code == CloseCode::ABNORMAL
    ));
    assert_eq!(conn.poll_timeout(), None, "no close timer left");
}

#[test]
fn close_timer_is_armed_by_our_close() {
    let now = start();
    let config = with(quiet(), |c| c.close_timeout = Duration::from_secs(3));
    let mut conn = Connection::new(Role::Server, config, now);
    assert_eq!(conn.poll_timeout(), None);
    conn.send(now, Message::Close(None)).unwrap();
    assert_eq!(conn.poll_timeout(), Some(now + Duration::from_secs(3)));
    conn.handle_timeout(now + Duration::from_millis(2999));
    assert!(conn.poll_event().is_none(), "an early call does nothing");
    conn.handle_timeout(now + Duration::from_secs(3));
    assert_eq!(
        events(&mut conn),
        [closed(
            CloseCode::ABNORMAL,
            "the peer did not answer our close frame",
            Initiator::Local
        )]
    );
    assert_eq!(conn.state(), State::Closed);
}
