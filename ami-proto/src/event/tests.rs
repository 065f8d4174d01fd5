//! Unit tests of the typed event views.

use super::*;

fn msg(text: &str) -> AmiMessage<'_> {
    AmiMessage::parse(text.as_bytes()).unwrap()
}

#[test]
fn precedence() {
    let m = msg("Event: OriginateResponse\nResponse: Success\nActionID: 1\n");
    assert!(matches!(
        m.typed(),
        Event::Other {
            name: "OriginateResponse",
            ..
        }
    ));
    let m = msg("Response: Success\nActionID: 1\nPing: Pong\n");
    let Event::Response(r) = m.typed() else {
        panic!()
    };
    assert_eq!(r.status(), Some(ResponseStatus::Success));
    assert!(r.is_success());
    let m = msg("Action: Ping\nActionID: 9\n");
    let Event::Action(a) = m.typed() else {
        panic!()
    };
    assert_eq!((a.name(), a.action_id()), (Some("Ping"), Some("9")));
    assert!(matches!(msg("Foo: bar\n").typed(), Event::Unknown(_)));
    let m = msg("Asterisk Call Manager/1.3\n");
    assert!(matches!(
        m.typed(),
        Event::Greeting("Asterisk Call Manager/1.3")
    ));
}

#[test]
fn dial_across_versions() {
    // Asterisk 12+.
    let m = msg(
        "Event: DialEnd\nChannel: SIP/9170-12-0000003c\nUniqueid: 1598887681.60\n\
        Linkedid: 1598887681.60\nDestChannel: SIP/okon-0000003d\nDestUniqueid: 1598887681.61\n\
        DestLinkedid: 1598887681.60\nDialStatus: ANSWER\n",
    );
    let Event::DialEnd(d) = m.typed() else {
        panic!()
    };
    assert_eq!(d.dest_channel(), Some("SIP/okon-0000003d"));
    assert_eq!(d.dest().uniqueid(), Some("1598887681.61"));
    assert_eq!(d.dest().linkedid(), Some("1598887681.60"));
    assert_eq!(d.caller().uniqueid(), Some("1598887681.60"));
    assert_eq!(d.dial_status(), Some("ANSWER"));
    // 1.8 to 11.
    let m = msg(
        "Event: Dial\nSubEvent: Begin\nChannel: Local/259@default-00000000;2\n\
        Destination: SIP/ddddd-00000000\nUniqueID: 1414510600.1\nDestUniqueID: 1414510601.2\n\
        Dialstring: ddddd\n",
    );
    let Event::DialBegin(d) = m.typed() else {
        panic!()
    };
    assert_eq!(d.uniqueid(), Some("1414510600.1"));
    assert_eq!(d.dest_channel(), Some("SIP/ddddd-00000000"));
    assert_eq!(d.dest_uniqueid(), Some("1414510601.2"));
    assert_eq!(d.dial_string(), Some("ddddd"));
    let m = msg("Event: Dial\nSubEvent: End\nUniqueID: 1414510600.1\nDialStatus: ANSWER\n");
    assert!(matches!(m.typed(), Event::DialEnd(_)));
    // 1.4.
    let m = msg("Event: Dial\nSource: SIP/1-1\nDestination: SIP/2-2\nSrcUniqueID: 1.1\n");
    let Event::DialBegin(d) = m.typed() else {
        panic!()
    };
    assert_eq!((d.channel(), d.uniqueid()), (Some("SIP/1-1"), Some("1.1")));
}

#[test]
fn channel_snapshot_and_variables() {
    let m = msg(
        "Event: Newstate\nChannel: SIP/a-1\nChannelState: 6\nChannelStateDesc: Up\n\
        Priority: 3\nChanVariable: realm=x\nChanVariable(SIP/a-1): B=c=d\nChanVariable: none\n\
        DestChanVariable: D=1\n",
    );
    let Event::Newstate(v) = m.typed() else {
        panic!()
    };
    let c = v.channel();
    assert_eq!(
        (c.state(), c.state_desc(), c.priority()),
        (Some(6), Some("Up"), Some(3))
    );
    let vars: Vec<_> = c.variables().collect();
    assert_eq!(vars, vec![(&b"realm"[..], &b"x"[..]), (b"B", b"c=d")]);
    assert_eq!(c.variable("B"), Some(&b"c=d"[..]));
    assert_eq!(
        ChannelSnapshot::new(&m, "Dest").variable("D"),
        Some(&b"1"[..])
    );
}

#[test]
fn legacy_bridge_rename_masquerade() {
    let m = msg(
        "Event: Bridge\nBridgestate: Unlink\nChannel1: A\nChannel2: B\nUniqueid1: 1\nUniqueid2: 2\n",
    );
    let Event::LegacyBridge(b) = m.typed() else {
        panic!()
    };
    assert_eq!(b.is_link(), Some(false));
    assert_eq!((b.uniqueid1(), b.uniqueid2()), (Some("1"), Some("2")));
    let m = msg("Event: Link\nChannel1: A\nChannel2: B\n");
    let Event::LegacyBridge(b) = m.typed() else {
        panic!()
    };
    assert_eq!(b.is_link(), Some(true));
    let m = msg("Event: Rename\nOldname: SIP/a\nNewname: SIP/b\nUniqueid: 5\n");
    let Event::Rename(r) = m.typed() else {
        panic!()
    };
    assert_eq!(
        (r.old_name(), r.new_name(), r.uniqueid()),
        (Some("SIP/a"), Some("SIP/b"), Some("5"))
    );
    let m = msg(
        "Event: Masquerade\nClone: SIP/d\nCloneState: Up\nOriginal: Local/1;1\nOriginalState: Up\n",
    );
    let Event::Masquerade(v) = m.typed() else {
        panic!()
    };
    assert_eq!(
        (v.clone_channel(), v.original_channel()),
        (Some("SIP/d"), Some("Local/1;1"))
    );
}

#[test]
fn cdr_fields() {
    let m = msg(
        "Event: Cdr\nSource: 1003\nStartTime: 2026-11-22 13:54:32\nAnswerTime: \n\
        EndTime: 2026-11-22 13:54:40\nDuration: 8\nBillableSeconds: 0\nDisposition: NO ANSWER\n\
        UniqueID: 1795355672.127\n",
    );
    let Event::Cdr(c) = m.typed() else { panic!() };
    assert_eq!(c.start_time().unwrap().to_string(), "2026-11-22 13:54:32");
    assert_eq!(c.answer_time(), None);
    assert_eq!(c.answer_time_raw(), Some(&b""[..]));
    assert_eq!((c.duration(), c.billable_seconds()), (Some(8), Some(0)));
    assert_eq!(c.disposition(), Some("NO ANSWER"));
    assert_eq!(c.uniqueid(), Some("1795355672.127"));
}

#[test]
fn core_show_channel_duration() {
    let m = msg("Event: CoreShowChannel\nActionID: r1\nDuration: 01:02:03\nUniqueid: 1.2\n");
    let Event::CoreShowChannel(c) = m.typed() else {
        panic!()
    };
    assert_eq!(c.duration(), Some(3723));
    assert_eq!(c.channel().uniqueid(), Some("1.2"));
    let m =
        msg("Event: CoreShowChannelsComplete\nEventList: Complete\nListItems: 2\nActionID: r1\n");
    let Event::CoreShowChannelsComplete(c) = m.typed() else {
        panic!()
    };
    assert_eq!(c.list_items(), Some(2));
}
