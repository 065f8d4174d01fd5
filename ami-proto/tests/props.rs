//! Properties: no input panics, generated messages round-trip through the writer, every strict
//! prefix of a message is incomplete, chunking does not change framing, memory stays bounded.

// Tests may unwrap, index and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use ami_proto::{
    Action, ActionId, AmiFramer, AmiMessage, CelEventKind, CelExtra, Event, HeaderBuf, Limits,
    Parsed, parse_ami, skip_message,
};
use common::{Owned, frames_chunked};
use proptest::prelude::*;

/// A header name: printable ASCII without `:`, not starting with a space.
fn name() -> impl Strategy<Value = String> {
    "[!-9;-~][ -9;-~]{0,15}".prop_filter("not the greeting", |n| {
        !n.starts_with("Asterisk Call Manager/")
    })
}

/// A value: any bytes but `\r` and `\n` (not UTF-8 included).
fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no line breaks", |b| *b != b'\r' && *b != b'\n'),
        0..24,
    )
}

/// The headers of a plain message (never `Response: Follows` first).
fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec((name(), value()), 1..12).prop_map(|mut h| {
        if h[0].0.eq_ignore_ascii_case("Response") && h[0].1.eq_ignore_ascii_case(b"Follows") {
            h[0].1 = b"Success".to_vec();
        }
        h
    })
}

/// One generated message: its wire form and what parsing must give.
#[derive(Debug, Clone)]
struct Msg {
    bytes: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    output: Option<Vec<u8>>,
}

fn plain(headers: Vec<(String, Vec<u8>)>, lf_only: bool) -> Msg {
    let m = AmiMessage::from_headers(headers.iter().map(|(n, v)| (n, v))).unwrap();
    let mut bytes = m.to_bytes();
    if lf_only {
        bytes.retain(|b| *b != b'\r');
    }
    Msg {
        bytes,
        headers,
        output: None,
    }
}

/// Old-style command output: output lines are lower-case words (blank ones included).
fn follows() -> impl Strategy<Value = Msg> {
    (
        any::<bool>(),
        proptest::option::of("[a-z0-9/._-]{1,12}"),
        proptest::collection::vec("[a-z0-9 ]{0,20}", 0..6),
        any::<bool>(),
    )
        .prop_map(|(privilege, id, lines, glued)| {
            let mut headers = vec![("Response".to_owned(), b"Follows".to_vec())];
            if privilege {
                headers.push(("Privilege".to_owned(), b"Command".to_vec()));
            }
            if let Some(id) = id {
                headers.push(("ActionID".to_owned(), id.into_bytes()));
            }
            let mut bytes = Vec::new();
            for (n, v) in &headers {
                bytes.extend_from_slice(format!("{n}: ").as_bytes());
                bytes.extend_from_slice(v);
                bytes.extend_from_slice(b"\r\n");
            }
            let mut output = Vec::new();
            for l in &lines {
                output.extend_from_slice(l.as_bytes());
                output.extend_from_slice(b"\n");
            }
            if glued && output.ends_with(b"\n") && output.len() > 1 {
                // The marker glued to the last line, as Asterisk writes output without a final
                // newline.
                output.pop();
            }
            bytes.extend_from_slice(&output);
            bytes.extend_from_slice(b"--END COMMAND--\r\n\r\n");
            Msg {
                bytes,
                headers,
                output: Some(output),
            }
        })
}

fn message() -> impl Strategy<Value = Msg> {
    prop_oneof![
        4 => (headers(), any::<bool>()).prop_map(|(h, lf)| plain(h, lf)),
        1 => follows(),
    ]
}

fn check(m: &AmiMessage<'_>, want: &Msg) -> Result<(), TestCaseError> {
    let got: Vec<(String, Vec<u8>)> = m
        .headers()
        .map(|(n, v)| (n.to_owned(), v.to_vec()))
        .collect();
    prop_assert_eq!(&got, &want.headers);
    prop_assert_eq!(m.command_output(), want.output.as_deref());
    Ok(())
}

/// Everything a typed view can read, read (for the no-panic property).
fn read_everything(m: &AmiMessage<'_>) {
    let _ = (
        m.event(),
        m.response(),
        m.action_id(),
        m.timestamp(),
        m.greeting_version(),
    );
    for part in m.split_events() {
        let _ = part.len();
    }
    match m.typed() {
        Event::Cel(c) => {
            let _ = (
                c.kind(),
                c.extra(),
                c.extra_json(),
                c.event_time(),
                c.event_timestamp(),
            );
        }
        Event::Cdr(c) => {
            let _ = (
                c.start_time(),
                c.answer_time(),
                c.duration(),
                c.billable_seconds(),
            );
        }
        Event::DialBegin(d) | Event::DialEnd(d) => {
            let _ = (
                d.dest().variables().count(),
                d.caller().state(),
                d.dest_uniqueid(),
            );
        }
        Event::Hangup(h) => {
            let _ = (h.cause(), h.channel().priority(), h.channel().variable("X"));
        }
        Event::CoreShowChannel(c) => {
            let _ = c.duration();
        }
        Event::Response(r) => {
            let _ = (r.status(), r.is_success(), r.challenge());
        }
        _ => {}
    }
}

fn chunks<'a>(stream: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for a in at.into_iter().chain([stream.len()]) {
        out.push(&stream[prev..a]);
        prev = a;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn doesnt_crash(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = AmiMessage::parse(&bytes) {
            read_everything(&m);
            // Whatever parses, writes and parses back to itself.
            let again = m.to_bytes();
            prop_assert_eq!(AmiMessage::parse(&again).unwrap(), m);
        }
        match parse_ami(&bytes) {
            Ok(Parsed::Complete { consumed, .. }) => prop_assert!(consumed > 0 && consumed <= bytes.len()),
            Ok(Parsed::Incomplete) => {}
            Err(e) => prop_assert!(e.offset <= bytes.len()),
        }
        if let Some(n) = skip_message(&bytes) {
            prop_assert!(n > 0 && n <= bytes.len());
        }
        let limits = Limits { max_message: 64, max_headers: 4 };
        let _ = frames_chunked(&[&bytes], limits);
        let _ = CelExtra::parse(&bytes, CelEventKind::Hangup);
    }

    #[test]
    fn doesnt_crash_on_near_messages(m in message(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        // Corrupt one byte of a valid message.
        let mut bytes = m.bytes;
        let i = at.index(bytes.len());
        bytes[i] = b;
        if let Ok(m2) = AmiMessage::parse(&bytes) {
            read_everything(&m2);
            let again = m2.to_bytes();
            prop_assert_eq!(AmiMessage::parse(&again).unwrap(), m2);
        }
        let _ = frames_chunked(&[&bytes], Limits::default());
    }

    #[test]
    fn generated_messages_round_trip(m in message()) {
        // Through the stateless parser, the framer, and the writer.
        match parse_ami(&m.bytes) {
            Ok(Parsed::Complete { value, consumed }) => {
                check(&value, &m)?;
                prop_assert_eq!(consumed, m.bytes.len());
                let written = value.to_bytes();
                let again = AmiMessage::parse(&written).unwrap();
                check(&again, &m)?;
                prop_assert_eq!(again, value);
            }
            other => prop_assert!(false, "{:?} for {:?}", other, String::from_utf8_lossy(&m.bytes)),
        }
        let mut framer = AmiFramer::default();
        let mut buf = HeaderBuf::new();
        framer.push(&m.bytes);
        let parsed = framer.next_message(&mut buf).unwrap().unwrap();
        check(&parsed, &m)?;
        prop_assert!(framer.next_frame().is_none());
        prop_assert!(framer.finish().is_none());
    }

    #[test]
    fn generated_actions_round_trip(h in headers(), action in "[A-Za-z]{1,20}", id in "[!-~]{1,20}") {
        let mut a = Action::new(&action, ActionId::new(id).unwrap()).unwrap();
        for (n, v) in &h {
            a = a.header(n, v).unwrap();
        }
        let bytes = a.to_bytes();
        let m = AmiMessage::parse(&bytes).unwrap();
        prop_assert!(m.headers().eq(a.headers()));
        prop_assert!(a.action_id().matches(&m));
    }

    #[test]
    fn every_strict_prefix_is_incomplete(m in message()) {
        for k in 0..m.bytes.len() {
            prop_assert_eq!(parse_ami(&m.bytes[..k]), Ok(Parsed::Incomplete), "prefix {}", k);
            // And the framer never hands a prefix out as a frame.
            let mut framer = AmiFramer::default();
            framer.push(&m.bytes[..k]);
            prop_assert!(framer.next_frame().is_none());
        }
    }

    #[test]
    fn chunking_does_not_change_frames(
        greeting in any::<bool>(),
        msgs in proptest::collection::vec((message(), 0usize..3), 1..10),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let mut stream = Vec::new();
        if greeting {
            stream.extend_from_slice(b"Asterisk Call Manager/6.0.0\r\n");
        }
        for (m, blanks) in &msgs {
            stream.extend_from_slice(&m.bytes);
            // Extra blank lines between messages are skipped.
            for _ in 0..*blanks {
                stream.extend_from_slice(b"\r\n");
            }
        }
        let whole = frames_chunked(&[&stream], Limits::default());
        prop_assert_eq!(&frames_chunked(&chunks(&stream, &cuts), Limits::default()), &whole);
        let mut it = whole.iter().map(|(_, f)| f);
        if greeting {
            prop_assert!(matches!(it.next(), Some(Owned::Greeting(g)) if g == b"Asterisk Call Manager/6.0.0"));
        }
        for (m, _) in &msgs {
            let f = it.next().unwrap();
            prop_assert!(matches!(f, Owned::Message(..)), "{:?}", f);
            check(f.message().unwrap(), m)?;
        }
        prop_assert!(it.next().is_none());
    }

    #[test]
    fn memory_stays_bounded(
        bytes in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b':'), Just(b' '), any::<u8>()], 0..2000),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
        max_message in 1usize..200,
        max_headers in 0usize..10,
    ) {
        let limits = Limits { max_message, max_headers };
        let mut framer = AmiFramer::new(limits);
        let mut total = 0u64;
        for chunk in chunks(&bytes, &cuts) {
            framer.push(chunk);
            while let Some(f) = framer.next_frame() {
                if let ami_proto::Frame::Message { bytes, .. } = f {
                    prop_assert!(bytes.len() <= max_message);
                }
            }
            // At most one maximum message, a short pending blank line and a byte.
            prop_assert!(framer.buffered() <= max_message + 66, "{} buffered", framer.buffered());
            total += chunk.len() as u64;
            prop_assert_eq!(framer.consumed() + framer.buffered() as u64, total);
        }
        let _ = framer.finish();
        prop_assert_eq!(framer.consumed(), total);
    }
}
