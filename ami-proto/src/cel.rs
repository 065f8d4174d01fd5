//! The `CEL` event (cel_manager): [`CelView`], its event types and its `Extra` field.

use std::borrow::Cow;
use std::fmt;

use chrono::NaiveDateTime;
use serde::de::{self, Deserializer, Visitor};

use crate::{AmiMessage, ChannelSnapshot, ExtraError, Timestamp, parse_local_datetime};

/// The type of a CEL event (its `EventName`), Asterisk 10 to 22 names included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CelEventKind {
    /// `CHAN_START`: a channel was created.
    ChanStart,
    /// `CHAN_END`: a channel was destroyed.
    ChanEnd,
    /// `ANSWER`: a channel was answered.
    Answer,
    /// `HANGUP`: a channel hung up (`Extra`: cause, source, dial status).
    Hangup,
    /// `BRIDGE_ENTER` (12+): a channel joined a bridge.
    BridgeEnter,
    /// `BRIDGE_EXIT` (12+): a channel left a bridge.
    BridgeExit,
    /// `BRIDGE_START` (before 12): two channels were bridged.
    BridgeStart,
    /// `BRIDGE_END` (before 12).
    BridgeEnd,
    /// `BRIDGE_UPDATE` (before 12).
    BridgeUpdate,
    /// `LINKEDID_END`: the last channel of a linkedid is gone. A call may also end this way
    /// when its channels moved to an older linkedid.
    LinkedidEnd,
    /// `BLINDTRANSFER` (12+).
    BlindTransfer,
    /// `ATTENDEDTRANSFER` (12+).
    AttendedTransfer,
    /// `TRANSFER` (before 12).
    Transfer,
    /// `PARK_START`.
    ParkStart,
    /// `PARK_END`.
    ParkEnd,
    /// `PICKUP`.
    Pickup,
    /// `FORWARD`.
    Forward,
    /// `LOCAL_OPTIMIZE`.
    LocalOptimize,
    /// `APP_START`.
    AppStart,
    /// `APP_END`.
    AppEnd,
    /// `USER_DEFINED`.
    UserDefined,
    /// Any other name (see [`CelView::event_name`]).
    Other,
}

impl CelEventKind {
    /// The kind for an `EventName`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "CHAN_START" => Self::ChanStart,
            "CHAN_END" => Self::ChanEnd,
            "ANSWER" => Self::Answer,
            "HANGUP" => Self::Hangup,
            "BRIDGE_ENTER" => Self::BridgeEnter,
            "BRIDGE_EXIT" => Self::BridgeExit,
            "BRIDGE_START" => Self::BridgeStart,
            "BRIDGE_END" => Self::BridgeEnd,
            "BRIDGE_UPDATE" => Self::BridgeUpdate,
            "LINKEDID_END" => Self::LinkedidEnd,
            "BLINDTRANSFER" => Self::BlindTransfer,
            "ATTENDEDTRANSFER" => Self::AttendedTransfer,
            "TRANSFER" => Self::Transfer,
            "PARK_START" => Self::ParkStart,
            "PARK_END" => Self::ParkEnd,
            "PICKUP" => Self::Pickup,
            "FORWARD" => Self::Forward,
            "LOCAL_OPTIMIZE" => Self::LocalOptimize,
            "APP_START" => Self::AppStart,
            "APP_END" => Self::AppEnd,
            "USER_DEFINED" => Self::UserDefined,
            _ => Self::Other,
        }
    }
}

/// A `CEL` event: one channel event log entry.
#[derive(Debug, Clone, Copy)]
pub struct CelView<'m> {
    msg: &'m AmiMessage<'m>,
}

macro_rules! cel_str {
    ($($(#[$doc:meta])* $fn:ident: $key:literal;)*) => {
        $($(#[$doc])* pub fn $fn(&self) -> Option<&'m str> { self.msg.get_str($key) })*
    };
}

macro_rules! cel_bytes {
    ($($(#[$doc:meta])* $fn:ident: $key:literal;)*) => {
        $($(#[$doc])* pub fn $fn(&self) -> Option<&'m [u8]> { self.msg.get($key) })*
    };
}

impl<'m> CelView<'m> {
    pub(crate) fn new(msg: &'m AmiMessage<'m>) -> Self {
        Self { msg }
    }

    /// The whole message, for fields the view does not name.
    pub fn message(&self) -> &'m AmiMessage<'m> {
        self.msg
    }

    /// The event's type, from `EventName`.
    pub fn kind(&self) -> CelEventKind {
        self.event_name()
            .map_or(CelEventKind::Other, CelEventKind::from_name)
    }

    /// The channel's fields under CEL's names (`UniqueID`, `LinkedID`, `Channel`, `Context`,
    /// `Exten`; CEL has no `ChannelState`).
    pub fn channel(&self) -> ChannelSnapshot<'m> {
        ChannelSnapshot::new(self.msg, "")
    }

    /// `EventTime` in the local date-time form (`2026-11-22 13:54:52`, the PBX's time zone).
    pub fn event_time(&self) -> Option<NaiveDateTime> {
        parse_local_datetime(self.msg.get("EventTime")?)
    }

    /// `EventTime` in epoch form (`1335310195.513823`), as some configurations write it.
    pub fn event_timestamp(&self) -> Option<Timestamp> {
        Timestamp::parse(self.msg.get("EventTime")?)
    }

    cel_str! {
        /// `EventName`: `CHAN_START`, `ANSWER`, `LINKEDID_END`, ...
        event_name: "EventName";
        /// `Channel`.
        channel_name: "Channel";
        /// `UniqueID`: the channel's id.
        uniqueid: "UniqueID";
        /// `LinkedID`: the call's id.
        linkedid: "LinkedID";
        /// `Context`.
        context: "Context";
        /// `Application`.
        application: "Application";
        /// `AMAFlags`.
        ama_flags: "AMAFlags";
        /// `Peer`: the bridged peer's channel name, if any.
        peer: "Peer";
        /// `UserDefType` (`USER_DEFINED` events).
        user_def_type: "UserDefType";
        /// `TenantID` (Asterisk 22).
        tenant_id: "TenantID";
    }

    cel_bytes! {
        /// `EventTime` as written.
        event_time_raw: "EventTime";
        /// `AccountCode`.
        account_code: "AccountCode";
        /// `CallerIDnum`.
        caller_id_num: "CallerIDnum";
        /// `CallerIDname`.
        caller_id_name: "CallerIDname";
        /// `CallerIDani`.
        caller_id_ani: "CallerIDani";
        /// `CallerIDrdnis`.
        caller_id_rdnis: "CallerIDrdnis";
        /// `CallerIDdnid`.
        caller_id_dnid: "CallerIDdnid";
        /// `Exten`.
        exten: "Exten";
        /// `AppData`.
        app_data: "AppData";
        /// `Userfield`.
        user_field: "Userfield";
        /// `PeerAccount`.
        peer_account: "PeerAccount";
        /// `Extra` as written.
        extra_raw: "Extra";
    }

    /// `Extra`, read: the JSON object of Asterisk 12+, or the `cause,source,dialstatus` text
    /// of a `HANGUP` before 12; empty or other text gives only [`CelExtra::raw`].
    pub fn extra(&self) -> Result<CelExtra<'m>, ExtraError> {
        CelExtra::parse(self.msg.get("Extra").unwrap_or_default(), self.kind())
    }

    /// `Extra` as a JSON value (every key, not only those [`CelExtra`] names); `None` when it
    /// is not JSON.
    pub fn extra_json(&self) -> Option<Result<serde_json::Value, ExtraError>> {
        let raw = self.msg.get("Extra")?.trim_ascii();
        raw.starts_with(b"{")
            .then(|| serde_json::from_slice(raw).map_err(ExtraError::from))
    }
}

/// The CEL `Extra` field's known keys. Strings borrow from the message unless they hold JSON
/// escapes. Keys not named here are ignored (see [`CelView::extra_json`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct CelExtra<'m> {
    /// The field as written.
    #[serde(skip)]
    pub raw: &'m [u8],
    /// `hangupcause` (`HANGUP`): the Q.850 cause.
    #[serde(default, deserialize_with = "opt_u16")]
    pub hangupcause: Option<u16>,
    /// `hangupsource` (`HANGUP`): the channel that asked for the hangup (may be empty).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub hangupsource: Option<Cow<'m, str>>,
    /// `dialstatus` (`HANGUP`): the last Dial's status (`ANSWER`, `NOANSWER`, ... or empty).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub dialstatus: Option<Cow<'m, str>>,
    /// `bridge_id` (bridge and transfer events).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub bridge_id: Option<Cow<'m, str>>,
    /// `bridge_technology` (`BRIDGE_ENTER`/`BRIDGE_EXIT`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub bridge_technology: Option<Cow<'m, str>>,
    /// `extension` (`BLINDTRANSFER`): where to.
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub extension: Option<Cow<'m, str>>,
    /// `context` (`BLINDTRANSFER`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub context: Option<Cow<'m, str>>,
    /// `transferee_channel_name` (transfers).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub transferee_channel_name: Option<Cow<'m, str>>,
    /// `transferee_channel_uniqueid` (transfers).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub transferee_channel_uniqueid: Option<Cow<'m, str>>,
    /// `bridge1_id` (`ATTENDEDTRANSFER`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub bridge1_id: Option<Cow<'m, str>>,
    /// `bridge2_id` (`ATTENDEDTRANSFER`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub bridge2_id: Option<Cow<'m, str>>,
    /// `channel2_name` (`ATTENDEDTRANSFER`): the transferer's second channel.
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub channel2_name: Option<Cow<'m, str>>,
    /// `channel2_uniqueid` (`ATTENDEDTRANSFER`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub channel2_uniqueid: Option<Cow<'m, str>>,
    /// `transfer_target_channel_name` (`ATTENDEDTRANSFER`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub transfer_target_channel_name: Option<Cow<'m, str>>,
    /// `transfer_target_channel_uniqueid` (`ATTENDEDTRANSFER`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub transfer_target_channel_uniqueid: Option<Cow<'m, str>>,
    /// `parker_dial_string` (`PARK_START`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub parker_dial_string: Option<Cow<'m, str>>,
    /// `parking_lot` (`PARK_START`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub parking_lot: Option<Cow<'m, str>>,
    /// `forward` (`FORWARD`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub forward: Option<Cow<'m, str>>,
    /// `pickup_channel` (`PICKUP`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub pickup_channel: Option<Cow<'m, str>>,
    /// `local_two` (`LOCAL_OPTIMIZE`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub local_two: Option<Cow<'m, str>>,
    /// `local_two_uniqueid` (`LOCAL_OPTIMIZE`).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub local_two_uniqueid: Option<Cow<'m, str>>,
}

impl<'m> CelExtra<'m> {
    /// Reads an `Extra` value of a CEL event of type `kind`.
    pub fn parse(raw: &'m [u8], kind: CelEventKind) -> Result<Self, ExtraError> {
        let trimmed = raw.trim_ascii();
        if trimmed.starts_with(b"{") {
            let mut extra: Self = serde_json::from_slice(trimmed)?;
            extra.raw = raw;
            return Ok(extra);
        }
        let mut extra = Self {
            raw,
            ..Self::default()
        };
        if kind == CelEventKind::Hangup {
            // Before Asterisk 12: `cause,hangupsource,dialstatus`.
            if let Ok(text) = std::str::from_utf8(trimmed) {
                if let Some((cause, rest)) = text.split_once(',') {
                    let (source, status) = rest.rsplit_once(',').unwrap_or((rest, ""));
                    extra.hangupcause = cause.trim().parse().ok();
                    extra.hangupsource = Some(Cow::Borrowed(source));
                    extra.dialstatus = Some(Cow::Borrowed(status));
                }
            }
        }
        Ok(extra)
    }
}

/// A string that borrows when it can; numbers and booleans become text; `null` is `None`.
fn opt_cow<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_option(V)
}

/// A small number, written as a JSON number or a numeric string; `null` is `None`.
fn opt_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    match opt_cow(d)? {
        None => Ok(None),
        Some(s) => s.trim().parse().map(Some).map_err(de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    const HANGUP_12: &[u8] = b"Event: CEL\r\nEventName: HANGUP\r\nChannel: SIP/trunk-00000027\r\n\
        EventTime: 2026-11-22 13:58:10\r\nUniqueID: 1795355890.181\r\nLinkedID: 1795355890.181\r\n\
        Extra: {\"hangupcause\":16,\"hangupsource\":\"SIP/trunk-00000027\",\"dialstatus\":\"ANSWER\"}\r\n";

    #[test]
    fn json_extra_borrows() {
        let m = AmiMessage::parse(HANGUP_12).unwrap();
        let Event::Cel(c) = m.typed() else { panic!() };
        assert_eq!(c.kind(), CelEventKind::Hangup);
        assert_eq!(c.uniqueid(), Some("1795355890.181"));
        assert_eq!(c.channel().linkedid(), Some("1795355890.181"));
        assert_eq!(c.event_time().unwrap().to_string(), "2026-11-22 13:58:10");
        let x = c.extra().unwrap();
        assert_eq!(x.hangupcause, Some(16));
        assert!(matches!(
            x.hangupsource,
            Some(Cow::Borrowed("SIP/trunk-00000027"))
        ));
        assert_eq!(x.dialstatus.as_deref(), Some("ANSWER"));
        assert_eq!(x.raw.first(), Some(&b'{'));
        let v = c.extra_json().unwrap().unwrap();
        assert_eq!(v["hangupcause"], 16);
    }

    #[test]
    fn transfer_extra_and_escapes() {
        let raw = br#"{"extension":"2003","context":"internal","bridge_id":"9d63","transferee_channel_name":"Local\/2002@internal-00000034;2","transferee_channel_uniqueid":"1795355692.133","new_key":[1,2]}"#;
        let x = CelExtra::parse(raw, CelEventKind::BlindTransfer).unwrap();
        assert_eq!(x.extension.as_deref(), Some("2003"));
        assert!(
            matches!(x.transferee_channel_name, Some(Cow::Owned(ref s)) if s == "Local/2002@internal-00000034;2")
        );
        assert_eq!(
            x.transferee_channel_uniqueid.as_deref(),
            Some("1795355692.133")
        );
    }

    #[test]
    fn legacy_and_empty_extra() {
        let x = CelExtra::parse(b"16,dialplan/builtin,", CelEventKind::Hangup).unwrap();
        assert_eq!(x.hangupcause, Some(16));
        assert_eq!(x.hangupsource.as_deref(), Some("dialplan/builtin"));
        assert_eq!(x.dialstatus.as_deref(), Some(""));
        let x = CelExtra::parse(b"16,,ANSWER", CelEventKind::Hangup).unwrap();
        assert_eq!(
            (x.hangupsource.as_deref(), x.dialstatus.as_deref()),
            (Some(""), Some("ANSWER"))
        );
        assert_eq!(
            CelExtra::parse(b"", CelEventKind::ChanStart).unwrap(),
            CelExtra::default()
        );
        let x = CelExtra::parse(b"some text", CelEventKind::UserDefined).unwrap();
        assert_eq!((x.raw, x.hangupcause), (&b"some text"[..], None));
        assert!(CelExtra::parse(b"{not json", CelEventKind::Hangup).is_err());
        assert!(CelExtra::parse(b"{\"hangupcause\":\"x\"}", CelEventKind::Hangup).is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!(
            CelEventKind::from_name("LINKEDID_END"),
            CelEventKind::LinkedidEnd
        );
        assert_eq!(
            CelEventKind::from_name("BRIDGE_START"),
            CelEventKind::BridgeStart
        );
        assert_eq!(CelEventKind::from_name("nope"), CelEventKind::Other);
    }
}
