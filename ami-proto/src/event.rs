//! Typed views of the events call tracking needs: [`Event`] and one view per event shape.
//!
//! A view borrows its message and reads fields on demand (no copying, nothing parsed up
//! front). Every field is an `Option`: Asterisk's field names changed between versions, and a
//! view accepts every spelling the fixtures contain (lookups ignore case, so `UniqueID` and
//! `Uniqueid` are one name; where the name itself changed, the view tries each).

use chrono::NaiveDateTime;

use crate::{AmiMessage, CelView, parse_local_datetime};

/// What a message is, with a typed view for the events call tracking uses.
///
/// Get it with [`AmiMessage::typed`]. Precedence: the greeting, then an `Event` header (so
/// `OriginateResponse`, which also has `Response`, is an event), then `Response`, then
/// `Action`. Event names are matched exactly as Asterisk writes them.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'m> {
    /// The greeting line (`Asterisk Call Manager/9.0.0`; up to its first byte that is not
    /// UTF-8, if any).
    Greeting(&'m str),
    /// A response to an action (`Response: Success` / `Error` / `Follows` / `Goodbye`, ...).
    Response(ResponseView<'m>),
    /// An action (what a client sends; seen in captures and by a test server).
    Action(ActionView<'m>),
    /// `Newchannel`: a channel was created.
    Newchannel(ChannelEventView<'m>),
    /// `Newstate`: a channel's state changed (Ring, Ringing, Up, ...).
    Newstate(ChannelEventView<'m>),
    /// `NewCallerid`: a channel's caller id changed.
    NewCallerid(ChannelEventView<'m>),
    /// `DialBegin` (Asterisk 12+), or `Dial` with `SubEvent: Begin` (1.8 to 11), or `Dial`
    /// without `SubEvent` (1.4).
    DialBegin(DialView<'m>),
    /// `DialEnd` (Asterisk 12+), or `Dial` with `SubEvent: End` (1.8 to 11).
    DialEnd(DialView<'m>),
    /// `BridgeEnter` (Asterisk 12+): a channel joined a bridge.
    BridgeEnter(BridgeView<'m>),
    /// `BridgeLeave` (Asterisk 12+): a channel left a bridge.
    BridgeLeave(BridgeView<'m>),
    /// `Bridge` with `Bridgestate: Link`/`Unlink` (1.8 to 11), or `Link`/`Unlink` (1.4): two
    /// channels were joined or split.
    LegacyBridge(LegacyBridgeView<'m>),
    /// `HangupRequest`: a hangup was asked for (by the channel's own side).
    HangupRequest(HangupView<'m>),
    /// `SoftHangupRequest`: a hangup was asked for (by Asterisk or the other side).
    SoftHangupRequest(HangupView<'m>),
    /// `Hangup`: a channel is gone.
    Hangup(HangupView<'m>),
    /// `BlindTransfer` (Asterisk 12+).
    BlindTransfer(BlindTransferView<'m>),
    /// `AttendedTransfer` (Asterisk 12+).
    AttendedTransfer(AttendedTransferView<'m>),
    /// `Transfer` (1.8 to 11; blind or attended).
    LegacyTransfer(LegacyTransferView<'m>),
    /// `Rename`: a channel's name changed (masquerades, Local channel optimisation).
    Rename(RenameView<'m>),
    /// `Masquerade` (up to 11): one channel took over another.
    Masquerade(MasqueradeView<'m>),
    /// `VarSet`: a channel variable was set.
    VarSet(VarSetView<'m>),
    /// `Cdr`: one CDR row (from cdr_manager).
    Cdr(CdrView<'m>),
    /// `CEL`: one channel event log entry (from cel_manager).
    Cel(CelView<'m>),
    /// `CoreShowChannel`: one channel in the answer to a `CoreShowChannels` action.
    CoreShowChannel(CoreShowChannelView<'m>),
    /// `CoreShowChannelsComplete`: the end of that answer.
    CoreShowChannelsComplete(ListCompleteView<'m>),
    /// Any other event.
    Other {
        /// The event's name.
        name: &'m str,
        /// The whole message.
        message: &'m AmiMessage<'m>,
    },
    /// Neither greeting, event, response nor action (or an `Event` that is not UTF-8).
    Unknown(&'m AmiMessage<'m>),
}

impl<'a> AmiMessage<'a> {
    /// What the message is, with a typed view (see [`Event`]).
    ///
    /// ```
    /// use ami_proto::{AmiMessage, Event};
    /// let msg = AmiMessage::parse(b"Event: Hangup\r\nChannel: SIP/1-0001\r\n\
    ///     Uniqueid: 1414510601.2\r\nLinkedid: 1414510600.0\r\nCause: 16\r\n").unwrap();
    /// let Event::Hangup(h) = msg.typed() else { panic!() };
    /// assert_eq!(h.channel().uniqueid(), Some("1414510601.2"));
    /// assert_eq!(h.channel().linkedid(), Some("1414510600.0"));
    /// assert_eq!(h.cause(), Some(16));
    /// ```
    pub fn typed(&self) -> Event<'_> {
        let msg: &AmiMessage<'_> = self;
        if let Some(g) = msg.greeting_line() {
            let valid = match std::str::from_utf8(g) {
                Ok(s) => s,
                Err(e) => std::str::from_utf8(g.get(..e.valid_up_to()).unwrap_or_default())
                    .unwrap_or_default(),
            };
            return Event::Greeting(valid);
        }
        if let Some(name) = msg.get("Event") {
            let Ok(name) = std::str::from_utf8(name) else {
                return Event::Unknown(msg);
            };
            return event(name, msg);
        }
        if msg.contains("Response") {
            return Event::Response(ResponseView { msg });
        }
        if msg.contains("Action") {
            return Event::Action(ActionView { msg });
        }
        Event::Unknown(msg)
    }
}

fn event<'m>(name: &'m str, msg: &'m AmiMessage<'m>) -> Event<'m> {
    match name {
        "Newchannel" => Event::Newchannel(ChannelEventView { msg }),
        "Newstate" => Event::Newstate(ChannelEventView { msg }),
        "NewCallerid" => Event::NewCallerid(ChannelEventView { msg }),
        "DialBegin" => Event::DialBegin(DialView { msg }),
        "DialEnd" => Event::DialEnd(DialView { msg }),
        "Dial" => match msg.get("SubEvent") {
            Some(s) if s.eq_ignore_ascii_case(b"End") => Event::DialEnd(DialView { msg }),
            Some(s) if s.eq_ignore_ascii_case(b"Begin") => Event::DialBegin(DialView { msg }),
            None => Event::DialBegin(DialView { msg }),
            Some(_) => Event::Other { name, message: msg },
        },
        "BridgeEnter" => Event::BridgeEnter(BridgeView { msg }),
        "BridgeLeave" => Event::BridgeLeave(BridgeView { msg }),
        "Bridge" | "Link" | "Unlink" => Event::LegacyBridge(LegacyBridgeView { msg }),
        "HangupRequest" => Event::HangupRequest(HangupView { msg }),
        "SoftHangupRequest" => Event::SoftHangupRequest(HangupView { msg }),
        "Hangup" => Event::Hangup(HangupView { msg }),
        "BlindTransfer" => Event::BlindTransfer(BlindTransferView { msg }),
        "AttendedTransfer" => Event::AttendedTransfer(AttendedTransferView { msg }),
        "Transfer" => Event::LegacyTransfer(LegacyTransferView { msg }),
        "Rename" => Event::Rename(RenameView { msg }),
        "Masquerade" => Event::Masquerade(MasqueradeView { msg }),
        "VarSet" => Event::VarSet(VarSetView { msg }),
        "Cdr" => Event::Cdr(CdrView { msg }),
        "CEL" => Event::Cel(CelView::new(msg)),
        "CoreShowChannel" => Event::CoreShowChannel(CoreShowChannelView { msg }),
        "CoreShowChannelsComplete" => Event::CoreShowChannelsComplete(ListCompleteView { msg }),
        _ => Event::Other { name, message: msg },
    }
}

fn utf8(b: Option<&[u8]>) -> Option<&str> {
    std::str::from_utf8(b?).ok()
}

/// Defines a view struct around a message.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<'m> {
            msg: &'m AmiMessage<'m>,
        }

        impl<'m> $name<'m> {
            /// The whole message, for fields the view does not name.
            pub fn message(&self) -> &'m AmiMessage<'m> {
                self.msg
            }
        }
    };
}

/// Accessors: `fn name() -> Option<&'m str>` from the first present of the given header names.
macro_rules! str_fields {
    ($($(#[$doc:meta])* $fn:ident: $($key:literal)|+;)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(&self) -> Option<&'m str> {
                self.msg.first_str(&[$($key),+])
            }
        )*
    };
}

/// Accessors: `fn name() -> Option<&'m [u8]>` (values that may not be UTF-8).
macro_rules! bytes_fields {
    ($($(#[$doc:meta])* $fn:ident: $($key:literal)|+;)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(&self) -> Option<&'m [u8]> {
                self.msg.first(&[$($key),+])
            }
        )*
    };
}

/// Accessors: `fn name() -> Option<T>`, the value parsed.
macro_rules! parsed_fields {
    ($($(#[$doc:meta])* $fn:ident -> $ty:ty: $($key:literal)|+;)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(&self) -> Option<$ty> {
                self.msg.first_str(&[$($key),+])?.trim().parse().ok()
            }
        )*
    };
}

/// The channel fields Asterisk 12+ writes in most events (`Channel`, `ChannelState`,
/// `CallerIDNum`, ..., `Uniqueid`, `Linkedid`), read with a prefix: none for the event's own
/// channel, `Dest` for the dialled one, `Transferer`/`Transferee`/... in transfers. Older
/// events carry fewer of them.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSnapshot<'m> {
    msg: &'m AmiMessage<'m>,
    prefix: &'static str,
}

impl<'m> ChannelSnapshot<'m> {
    /// The snapshot of `msg` whose header names start with `prefix` (`""`, `"Dest"`, ...).
    pub fn new(msg: &'m AmiMessage<'m>, prefix: &'static str) -> Self {
        Self { msg, prefix }
    }

    fn get(&self, name: &str) -> Option<&'m [u8]> {
        self.msg.get_prefixed(self.prefix, name)
    }

    /// The header-name prefix of this snapshot.
    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// `Channel`: the channel's name (`SIP/trunk-0000000a`, `Local/2001@internal-0000002c;1`).
    pub fn name(&self) -> Option<&'m str> {
        utf8(self.get("Channel"))
    }

    /// `Uniqueid` (also `UniqueID`): the channel's id, stable across renames.
    pub fn uniqueid(&self) -> Option<&'m str> {
        utf8(self.get("Uniqueid"))
    }

    /// `Linkedid` (Asterisk 12+; also `LinkedID`): the id of the call the channel belongs to.
    pub fn linkedid(&self) -> Option<&'m str> {
        utf8(self.get("Linkedid"))
    }

    /// `ChannelState`: 0 Down, 4 Ring, 5 Ringing, 6 Up, ...
    pub fn state(&self) -> Option<u8> {
        utf8(self.get("ChannelState"))?.trim().parse().ok()
    }

    /// `ChannelStateDesc`: `Down`, `Ring`, `Ringing`, `Up`, ...
    pub fn state_desc(&self) -> Option<&'m str> {
        utf8(self.get("ChannelStateDesc"))
    }

    /// `CallerIDNum`.
    pub fn caller_id_num(&self) -> Option<&'m [u8]> {
        self.get("CallerIDNum")
    }

    /// `CallerIDName` (any bytes: names arrive in whatever code page the phone used).
    pub fn caller_id_name(&self) -> Option<&'m [u8]> {
        self.get("CallerIDName")
    }

    /// `ConnectedLineNum`.
    pub fn connected_line_num(&self) -> Option<&'m [u8]> {
        self.get("ConnectedLineNum")
    }

    /// `ConnectedLineName`.
    pub fn connected_line_name(&self) -> Option<&'m [u8]> {
        self.get("ConnectedLineName")
    }

    /// `AccountCode`.
    pub fn account_code(&self) -> Option<&'m [u8]> {
        self.get("AccountCode")
    }

    /// `Language`.
    pub fn language(&self) -> Option<&'m str> {
        utf8(self.get("Language"))
    }

    /// `Context`: the dialplan context.
    pub fn context(&self) -> Option<&'m str> {
        utf8(self.get("Context"))
    }

    /// `Exten`: the dialplan extension.
    pub fn exten(&self) -> Option<&'m [u8]> {
        self.get("Exten")
    }

    /// `Priority`: the dialplan priority.
    pub fn priority(&self) -> Option<u32> {
        utf8(self.get("Priority"))?.trim().parse().ok()
    }

    /// The channel variables sent with the event (`ChanVariable: NAME=value`, or
    /// `ChanVariable(channel): NAME=value` in older versions), as `(NAME, value)`.
    pub fn variables(&self) -> impl Iterator<Item = (&'m [u8], &'m [u8])> + 'm {
        let (msg, prefix) = (self.msg, self.prefix.as_bytes());
        msg.headers().filter_map(move |(name, value)| {
            let name = name.as_bytes();
            let (p, rest) = name.split_at_checked(prefix.len())?;
            if !p.eq_ignore_ascii_case(prefix) {
                return None;
            }
            let (key, tail) = rest.split_at_checked(12)?;
            if !key.eq_ignore_ascii_case(b"ChanVariable")
                || !(tail.is_empty() || tail.starts_with(b"("))
            {
                return None;
            }
            let eq = memchr::memchr(b'=', value)?;
            let (k, v) = value.split_at_checked(eq)?;
            Some((k, v.get(1..).unwrap_or_default()))
        })
    }

    /// The value of channel variable `name` sent with the event (see
    /// [`ChannelSnapshot::variables`]).
    pub fn variable(&self, name: &str) -> Option<&'m [u8]> {
        self.variables()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| v)
    }
}

view! {
    /// `Newchannel`, `Newstate` and `NewCallerid`: the channel's fields.
    ChannelEventView
}

impl<'m> ChannelEventView<'m> {
    /// The channel the event is about.
    pub fn channel(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "")
    }

    str_fields! {
        /// `CID-CallingPres` (`NewCallerid`): presentation, such as
        /// `0 (Presentation Allowed, Not Screened)`.
        calling_pres: "CID-CallingPres";
    }
}

view! {
    /// `DialBegin`/`DialEnd` (12+) and `Dial` (1.4 to 11): a channel dials another.
    DialView
}

impl<'m> DialView<'m> {
    /// The calling channel (with Asterisk 12+'s full snapshot; older versions give only name,
    /// uniqueid and caller id).
    pub fn caller(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "")
    }

    /// The dialled channel's snapshot (`Dest...` fields, 12+).
    pub fn dest(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "Dest")
    }

    str_fields! {
        /// The calling channel's name: `Channel`, or `Source` (1.4).
        channel: "Channel" | "Source";
        /// The calling channel's uniqueid: `Uniqueid`/`UniqueID`, or `SrcUniqueID` (1.4).
        uniqueid: "Uniqueid" | "SrcUniqueID";
        /// The dialled channel's name: `DestChannel` (12+) or `Destination` (older).
        dest_channel: "DestChannel" | "Destination";
        /// The dialled channel's uniqueid: `DestUniqueid` (12+) or `DestUniqueID` (older).
        dest_uniqueid: "DestUniqueid";
        /// The dial string (`DialString`, `Dialstring` before 12): `SIP/phone1`, `ddddd`.
        dial_string: "DialString";
        /// `DialStatus` (end of dial): `ANSWER`, `BUSY`, `NOANSWER`, `CANCEL`, `CONGESTION`,
        /// `CHANUNAVAIL`, ...; 12+ also sends progress such as `RINGING` in `DialState`.
        dial_status: "DialStatus";
        /// `SubEvent` (1.8 to 11): `Begin` or `End`.
        sub_event: "SubEvent";
        /// `Forward` (12+): where the call was forwarded, if it was.
        forward: "Forward";
    }
}

view! {
    /// `BridgeEnter`/`BridgeLeave` (12+): a channel joins or leaves a bridge.
    BridgeView
}

impl<'m> BridgeView<'m> {
    /// The channel that entered or left.
    pub fn channel(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "")
    }

    str_fields! {
        /// `BridgeUniqueid`: the bridge's id (a UUID).
        bridge_uniqueid: "BridgeUniqueid";
        /// `BridgeType`: `basic`, `stasis`, `parking`, ...
        bridge_type: "BridgeType";
        /// `BridgeTechnology`: `simple_bridge`, `native_rtp`, `softmix`, `holding_bridge`, ...
        bridge_technology: "BridgeTechnology";
        /// `BridgeCreator`: the application that made it (`<unknown>` for a plain call).
        bridge_creator: "BridgeCreator";
        /// `BridgeName`.
        bridge_name: "BridgeName";
        /// `SwapUniqueid` (`BridgeEnter`): the channel this one replaced in the bridge.
        swap_uniqueid: "SwapUniqueid";
    }

    parsed_fields! {
        /// `BridgeNumChannels`: channels in the bridge after the event.
        num_channels -> u32: "BridgeNumChannels";
    }
}

view! {
    /// `Bridge` (1.8 to 11, with `Bridgestate`) and `Link`/`Unlink` (1.4).
    LegacyBridgeView
}

impl<'m> LegacyBridgeView<'m> {
    /// Whether the channels were joined (`Bridgestate: Link`, or a `Link` event); `None` when
    /// the state is missing or unknown.
    pub fn is_link(&self) -> Option<bool> {
        let state = self
            .msg
            .get("Bridgestate")
            .or_else(|| self.msg.get("Event"))?;
        if state.eq_ignore_ascii_case(b"Link") {
            Some(true)
        } else if state.eq_ignore_ascii_case(b"Unlink") {
            Some(false)
        } else {
            None
        }
    }

    str_fields! {
        /// `Bridgetype`: `core`, `native`, ...
        bridge_type: "Bridgetype";
        /// `Channel1`: the first channel (the caller).
        channel1: "Channel1";
        /// `Channel2`: the second channel.
        channel2: "Channel2";
        /// `Uniqueid1`.
        uniqueid1: "Uniqueid1";
        /// `Uniqueid2`.
        uniqueid2: "Uniqueid2";
    }

    bytes_fields! {
        /// `CallerID1`.
        caller_id1: "CallerID1";
        /// `CallerID2`.
        caller_id2: "CallerID2";
    }
}

view! {
    /// `Hangup`, `HangupRequest` and `SoftHangupRequest`.
    HangupView
}

impl<'m> HangupView<'m> {
    /// The channel that hung up (or is asked to).
    pub fn channel(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "")
    }

    parsed_fields! {
        /// `Cause`: the Q.850 cause (16 Normal Clearing, 17 Busy, 19 No Answer, 21 Rejected,
        /// 26 answered elsewhere, ...).
        cause -> u16: "Cause";
    }

    str_fields! {
        /// `Cause-txt`: the cause in words (`Hangup` only).
        cause_txt: "Cause-txt";
    }
}

view! {
    /// `BlindTransfer` (12+): the transferer sent the transferee to an extension.
    BlindTransferView
}

impl<'m> BlindTransferView<'m> {
    /// The channel that did the transfer (`Transferer...`).
    pub fn transferer(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "Transferer")
    }

    /// The channel that was transferred (`Transferee...`); missing when the bridge had more
    /// than one other channel.
    pub fn transferee(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "Transferee")
    }

    /// `IsExternal: Yes`: the transfer came from outside Asterisk (AMI, a SIP REFER, ...).
    pub fn is_external(&self) -> Option<bool> {
        yes_no(self.msg.get("IsExternal"))
    }

    str_fields! {
        /// `Result`: `Success`, `Fail`, `Invalid`, `Not Permitted`.
        result: "Result";
        /// `BridgeUniqueid`: the bridge the transferer was in.
        bridge_uniqueid: "BridgeUniqueid";
        /// `Context`: where the transferee was sent.
        context: "Context";
        /// `Extension`: where the transferee was sent.
        extension: "Extension";
    }
}

fn yes_no(v: Option<&[u8]>) -> Option<bool> {
    let v = v?;
    if v.eq_ignore_ascii_case(b"Yes") {
        Some(true)
    } else if v.eq_ignore_ascii_case(b"No") {
        Some(false)
    } else {
        None
    }
}

view! {
    /// `AttendedTransfer` (12+): the transferer joined the transferee to a second call.
    AttendedTransferView
}

impl<'m> AttendedTransferView<'m> {
    /// The transferer's channel in the first call (`OrigTransferer...`).
    pub fn orig_transferer(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "OrigTransferer")
    }

    /// The transferer's channel in the second (consultation) call (`SecondTransferer...`).
    pub fn second_transferer(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "SecondTransferer")
    }

    /// The transferred party (`Transferee...`), when there was exactly one.
    pub fn transferee(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "Transferee")
    }

    /// The target of the transfer (`TransferTarget...`), when there was exactly one.
    pub fn transfer_target(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "TransferTarget")
    }

    /// The first half of the Local channel pair made for a `Link` transfer (`LocalOne...`).
    pub fn local_one(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "LocalOne")
    }

    /// The second half of that pair (`LocalTwo...`).
    pub fn local_two(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "LocalTwo")
    }

    /// `IsExternal: Yes`: the transfer came from outside Asterisk.
    pub fn is_external(&self) -> Option<bool> {
        yes_no(self.msg.get("IsExternal"))
    }

    str_fields! {
        /// `Result`: `Success`, `Fail`, `Invalid`, `Not Permitted`.
        result: "Result";
        /// `OrigBridgeUniqueid`: the first call's bridge.
        orig_bridge_uniqueid: "OrigBridgeUniqueid";
        /// `SecondBridgeUniqueid`: the consultation call's bridge.
        second_bridge_uniqueid: "SecondBridgeUniqueid";
        /// `DestType`: how it was completed: `Bridge` (merged), `App`, `Link`, `Threeway`, `Fail`.
        dest_type: "DestType";
        /// `DestBridgeUniqueid` (`DestType: Bridge`): the surviving bridge.
        dest_bridge_uniqueid: "DestBridgeUniqueid";
        /// `DestApp` (`DestType: App`): the application the transferee was sent to.
        dest_app: "DestApp";
        /// `DestTransfererChannel` (`DestType: Threeway`).
        dest_transferer_channel: "DestTransfererChannel";
    }
}

view! {
    /// `Transfer` (1.8 to 11).
    LegacyTransferView
}

impl<'m> LegacyTransferView<'m> {
    str_fields! {
        /// `TransferType`: `Blind` or `Attended`.
        transfer_type: "TransferType";
        /// `TransferMethod`: `SIP`, `Core`, ...
        transfer_method: "TransferMethod";
        /// `Channel`: the transferer.
        channel: "Channel";
        /// `Uniqueid`: the transferer's uniqueid.
        uniqueid: "Uniqueid";
        /// `TargetChannel`: the channel transferred.
        target_channel: "TargetChannel";
        /// `TargetUniqueid`.
        target_uniqueid: "TargetUniqueid";
        /// `TransferExten` (blind): where to.
        transfer_exten: "TransferExten";
        /// `TransferContext` (blind).
        transfer_context: "TransferContext";
    }
}

view! {
    /// `Rename`: a channel's name changed; its uniqueid did not.
    RenameView
}

impl<'m> RenameView<'m> {
    str_fields! {
        /// The old name: `Channel` (11+) or `Oldname` (1.8).
        old_name: "Channel" | "Oldname";
        /// `Newname`.
        new_name: "Newname";
        /// `Uniqueid`: the channel's id (unchanged).
        uniqueid: "Uniqueid";
    }
}

view! {
    /// `Masquerade` (up to 11): `Clone` takes over `Original`'s place; see the `Rename` events
    /// around it for the uniqueids.
    MasqueradeView
}

impl<'m> MasqueradeView<'m> {
    str_fields! {
        /// `Clone`: the channel that moves in.
        clone_channel: "Clone";
        /// `CloneState`.
        clone_state: "CloneState";
        /// `Original`: the channel whose place it takes.
        original_channel: "Original";
        /// `OriginalState`.
        original_state: "OriginalState";
    }
}

view! {
    /// `VarSet`: a channel variable was set (`MIXMONITOR_FILENAME`, `BRIDGEPEER`, ...).
    VarSetView
}

impl<'m> VarSetView<'m> {
    /// The channel whose variable it is (12+ sends the full snapshot, older versions `Channel`
    /// and `Uniqueid`).
    pub fn channel(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "")
    }

    str_fields! {
        /// `Variable`: the variable's name.
        variable: "Variable";
    }

    bytes_fields! {
        /// `Value`: the new value.
        value: "Value";
    }
}

view! {
    /// `Cdr`: one CDR row as cdr_manager sends it. It has no Linkedid and no Sequence: group
    /// rows through `UniqueID` and the channel events.
    CdrView
}

impl<'m> CdrView<'m> {
    /// `StartTime`, parsed (the PBX's local time).
    pub fn start_time(&self) -> Option<NaiveDateTime> {
        parse_local_datetime(self.msg.get("StartTime")?)
    }

    /// `AnswerTime`, parsed; `None` when the call was not answered (the field is empty).
    pub fn answer_time(&self) -> Option<NaiveDateTime> {
        parse_local_datetime(self.msg.get("AnswerTime")?)
    }

    /// `EndTime`, parsed.
    pub fn end_time(&self) -> Option<NaiveDateTime> {
        parse_local_datetime(self.msg.get("EndTime")?)
    }

    str_fields! {
        /// `Channel`.
        channel: "Channel";
        /// `DestinationChannel` (empty when nobody was dialled).
        destination_channel: "DestinationChannel";
        /// `DestinationContext`.
        destination_context: "DestinationContext";
        /// `LastApplication`: `Dial`, `Queue`, `Wait`, ...
        last_application: "LastApplication";
        /// `Disposition`: `ANSWERED`, `NO ANSWER`, `BUSY`, `FAILED`, `CONGESTION`.
        disposition: "Disposition";
        /// `AMAFlags`: `DOCUMENTATION`, `BILLING`, `OMIT`.
        ama_flags: "AMAFlags";
        /// `UniqueID`: the channel's uniqueid.
        uniqueid: "UniqueID";
    }

    bytes_fields! {
        /// `AccountCode`.
        account_code: "AccountCode";
        /// `Source`: the caller's number.
        source: "Source";
        /// `Destination`: the dialled extension.
        destination: "Destination";
        /// `CallerID`: `"Alice" <1001>`.
        caller_id: "CallerID";
        /// `LastData`: the last application's arguments.
        last_data: "LastData";
        /// `UserField`.
        user_field: "UserField";
        /// `StartTime` as written.
        start_time_raw: "StartTime";
        /// `AnswerTime` as written (empty when not answered).
        answer_time_raw: "AnswerTime";
        /// `EndTime` as written.
        end_time_raw: "EndTime";
    }

    parsed_fields! {
        /// `Duration`: seconds from start to end.
        duration -> u64: "Duration";
        /// `BillableSeconds`: seconds from answer to end.
        billable_seconds -> u64: "BillableSeconds";
    }
}

view! {
    /// `CoreShowChannel`: one channel in the answer to `CoreShowChannels`.
    CoreShowChannelView
}

impl<'m> CoreShowChannelView<'m> {
    /// The channel (full snapshot, 12+).
    pub fn channel(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "")
    }

    /// `Duration` (`HH:MM:SS`) in seconds.
    pub fn duration(&self) -> Option<u64> {
        let d = self.msg.get_str("Duration")?;
        let mut parts = d.split(':').map(|p| p.parse::<u64>().ok());
        let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
        if parts.next().is_some() {
            return None;
        }
        h.checked_mul(3600)?
            .checked_add(m.checked_mul(60)?)?
            .checked_add(s)
    }

    str_fields! {
        /// `ActionID` of the `CoreShowChannels` action.
        action_id: "ActionID";
        /// `Application`: what the channel runs.
        application: "Application";
        /// `BridgeId`: the bridge it is in (empty if none).
        bridge_id: "BridgeId";
    }

    bytes_fields! {
        /// `ApplicationData`.
        application_data: "ApplicationData";
    }
}

view! {
    /// The last event of a list answer (`CoreShowChannelsComplete`, `EventList: Complete`).
    ListCompleteView
}

impl<'m> ListCompleteView<'m> {
    str_fields! {
        /// `ActionID` of the action that asked for the list.
        action_id: "ActionID";
        /// `EventList`: `Complete`.
        event_list: "EventList";
    }

    parsed_fields! {
        /// `ListItems`: how many events the list had.
        list_items -> u64: "ListItems";
    }
}

/// The kind of a response: `Response: Success`, `Error`, `Follows` (old command output),
/// `Goodbye` (to `Logoff`), `Pong` (to `Ping`, Asterisk 1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus<'m> {
    /// `Success`.
    Success,
    /// `Error`.
    Error,
    /// `Follows`.
    Follows,
    /// `Goodbye`.
    Goodbye,
    /// `Pong`.
    Pong,
    /// Anything else, as written.
    Other(&'m str),
}

view! {
    /// A response to an action.
    ResponseView
}

impl<'m> ResponseView<'m> {
    /// The `Response` header as a [`ResponseStatus`] (`None` if missing or not UTF-8).
    pub fn status(&self) -> Option<ResponseStatus<'m>> {
        let r = self.msg.get_str("Response")?;
        Some(match r {
            _ if r.eq_ignore_ascii_case("Success") => ResponseStatus::Success,
            _ if r.eq_ignore_ascii_case("Error") => ResponseStatus::Error,
            _ if r.eq_ignore_ascii_case("Follows") => ResponseStatus::Follows,
            _ if r.eq_ignore_ascii_case("Goodbye") => ResponseStatus::Goodbye,
            _ if r.eq_ignore_ascii_case("Pong") => ResponseStatus::Pong,
            other => ResponseStatus::Other(other),
        })
    }

    /// Whether the action succeeded (`Success`, `Follows`, `Goodbye` or `Pong`).
    pub fn is_success(&self) -> bool {
        matches!(
            self.status(),
            Some(
                ResponseStatus::Success
                    | ResponseStatus::Follows
                    | ResponseStatus::Goodbye
                    | ResponseStatus::Pong
            )
        )
    }

    /// Whether this is the answer to the action with `id` (its `ActionID`).
    pub fn answers(&self, id: &crate::ActionId) -> bool {
        id.matches(self.msg)
    }

    str_fields! {
        /// `ActionID`: the action this answers.
        action_id: "ActionID";
        /// `Challenge` (to `Challenge`): the string to hash with the secret for an MD5 login.
        challenge: "Challenge";
        /// `EventList` (`start`): a list of events with the same `ActionID` follows.
        event_list: "EventList";
    }

    bytes_fields! {
        /// `Message`: the human-readable text (`Authentication accepted`).
        message_text: "Message";
    }
}

view! {
    /// An action, as a client writes it.
    ActionView
}

impl<'m> ActionView<'m> {
    str_fields! {
        /// `Action`: its name (`Login`, `Ping`, ... in any case).
        name: "Action";
        /// `ActionID`.
        action_id: "ActionID";
    }
}

#[cfg(test)]
mod tests;
