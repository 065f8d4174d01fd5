//! The typed record and its small value types.

use std::fmt;
use std::net::IpAddr;

use chrono::NaiveDateTime;

use crate::Text;

/// Direction of a call segment as IP Office reports it (field 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// `I`: the call was received by the system.
    Inbound,
    /// `O`: the call was made by the system.
    Outbound,
}

impl Direction {
    /// The letter used on the wire.
    pub const fn as_char(self) -> char {
        match self {
            Self::Inbound => 'I',
            Self::Outbound => 'O',
        }
    }
}

/// What kind of device a party is (the letter in front of a party device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// `E`: an extension (`E232` is extension 232).
    Extension,
    /// `T`: a trunk line (`T9001`: 9000 + line number).
    Trunk,
    /// `V`: voicemail, conference or another internal resource (`V9542`, `V11001`, `V8000`,
    /// `V-1610600575`).
    Voice,
    /// Any other uppercase ASCII letter, kept so that a future firmware's device kind still parses.
    Other(u8),
}

impl DeviceKind {
    /// The letter used on the wire.
    pub const fn as_byte(self) -> u8 {
        match self {
            Self::Extension => b'E',
            Self::Trunk => b'T',
            Self::Voice => b'V',
            Self::Other(b) => b,
        }
    }

    /// The kind for a letter, if it is an uppercase ASCII letter.
    pub const fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'E' => Some(Self::Extension),
            b'T' => Some(Self::Trunk),
            b'V' => Some(Self::Voice),
            b'A'..=b'Z' => Some(Self::Other(b)),
            _ => None,
        }
    }
}

/// A party device (fields 12 and 14): a kind letter and a (possibly negative) number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Device {
    /// What the device is.
    pub kind: DeviceKind,
    /// Its number: extension number, 9000 + line, voicemail or conference channel, ...
    pub number: i64,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", char::from(self.kind.as_byte()), self.number)
    }
}

/// The 37 fields IP Office has defined, in wire order, for error messages and docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)] // the names are the documentation; see `Field::name`
pub enum Field {
    CallStart = 1,
    ConnectedTime,
    RingTime,
    Caller,
    Direction,
    CalledNumber,
    DialledNumber,
    Account,
    IsInternal,
    CallId,
    Continuation,
    Party1Device,
    Party1Name,
    Party2Device,
    Party2Name,
    HoldTime,
    ParkTime,
    AuthValid,
    AuthCode,
    UserCharged,
    CallCharge,
    Currency,
    AmountAtLastUserChange,
    CallUnits,
    UnitsAtLastUserChange,
    CostPerUnit,
    MarkUp,
    ExternalTargetingCause,
    ExternalTargeterId,
    ExternalTargetedNumber,
    CallingPartyServerIp,
    UniqueCallIdCaller,
    CalledPartyServerIp,
    UniqueCallIdCalled,
    SmdrRecordTime,
    CallerConsentDirective,
    CallingNumberVerification,
}

impl Field {
    /// Every field, in wire order.
    pub const ALL: [Self; 37] = [
        Self::CallStart,
        Self::ConnectedTime,
        Self::RingTime,
        Self::Caller,
        Self::Direction,
        Self::CalledNumber,
        Self::DialledNumber,
        Self::Account,
        Self::IsInternal,
        Self::CallId,
        Self::Continuation,
        Self::Party1Device,
        Self::Party1Name,
        Self::Party2Device,
        Self::Party2Name,
        Self::HoldTime,
        Self::ParkTime,
        Self::AuthValid,
        Self::AuthCode,
        Self::UserCharged,
        Self::CallCharge,
        Self::Currency,
        Self::AmountAtLastUserChange,
        Self::CallUnits,
        Self::UnitsAtLastUserChange,
        Self::CostPerUnit,
        Self::MarkUp,
        Self::ExternalTargetingCause,
        Self::ExternalTargeterId,
        Self::ExternalTargetedNumber,
        Self::CallingPartyServerIp,
        Self::UniqueCallIdCaller,
        Self::CalledPartyServerIp,
        Self::UniqueCallIdCalled,
        Self::SmdrRecordTime,
        Self::CallerConsentDirective,
        Self::CallingNumberVerification,
    ];

    /// 1-based position on the line.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The name Avaya's "SMDR Fields" documentation uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CallStart => "Call Start",
            Self::ConnectedTime => "Connected Time",
            Self::RingTime => "Ring Time",
            Self::Caller => "Caller",
            Self::Direction => "Direction",
            Self::CalledNumber => "Called Number",
            Self::DialledNumber => "Dialled Number",
            Self::Account => "Account",
            Self::IsInternal => "Is Internal",
            Self::CallId => "Call ID",
            Self::Continuation => "Continuation",
            Self::Party1Device => "Party1Device",
            Self::Party1Name => "Party1Name",
            Self::Party2Device => "Party2Device",
            Self::Party2Name => "Party2Name",
            Self::HoldTime => "Hold Time",
            Self::ParkTime => "Park Time",
            Self::AuthValid => "AuthValid",
            Self::AuthCode => "AuthCode",
            Self::UserCharged => "User Charged",
            Self::CallCharge => "Call Charge",
            Self::Currency => "Currency",
            Self::AmountAtLastUserChange => "Amount at Last User Change",
            Self::CallUnits => "Call Units",
            Self::UnitsAtLastUserChange => "Units at Last User Change",
            Self::CostPerUnit => "Cost per Unit",
            Self::MarkUp => "Mark Up",
            Self::ExternalTargetingCause => "External Targeting Cause",
            Self::ExternalTargeterId => "External Targeter Id",
            Self::ExternalTargetedNumber => "External Targeted Number",
            Self::CallingPartyServerIp => "Calling Party Server IP Address",
            Self::UniqueCallIdCaller => "Unique Call ID for the Caller Extension",
            Self::CalledPartyServerIp => "Called Party Server IP Address",
            Self::UniqueCallIdCalled => "Unique Call ID for the Called Extension",
            Self::SmdrRecordTime => "SMDR Record Time",
            Self::CallerConsentDirective => "Caller Consent Directive",
            Self::CallingNumberVerification => "Calling Number Verification",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field {} ({})", self.number(), self.name())
    }
}

/// One IP Office SMDR record (one call segment), borrowing its text from the line.
///
/// Fields 1 to 17 are present in every record; IP Office has appended fields over the years
/// (30 on older firmware, 34 with the server IP and unique call id fields, 35 with the UTC record
/// time, 37 with the STIR/SHAKEN fields). A later field is `None` when the line ends before it
/// *or* when the field is empty; [`SmdrRecord::field_count`] says how many fields the line had,
/// so [`SmdrRecord::write`] reproduces the same shape.
///
/// Durations are whole seconds. Timestamps are the PBX's local wall clock, except
/// [`SmdrRecord::smdr_record_time`], which IP Office writes in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct SmdrRecord<'a> {
    /// 1, Call Start: when the call started (PBX local time). Every record of a call carries the
    /// same value.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "start", with = "crate::serde_impl::timestamp")
    )]
    #[cfg_attr(
        feature = "schemars",
        schemars(schema_with = "crate::serde_impl::schema::timestamp")
    )]
    pub call_start: NaiveDateTime,
    /// 2, Connected Time (`HH:MM:SS` on the wire): seconds the parties were connected, excluding
    /// hold and park.
    #[cfg_attr(feature = "serde", serde(rename = "duration"))]
    pub connected_time: u32,
    /// 3, Ring Time: seconds of ringing before answer or before the segment ended.
    #[cfg_attr(feature = "serde", serde(rename = "ring"))]
    pub ring_time: u32,
    /// 4, Caller: the caller's number (CLI, extension or SIP URI).
    pub caller: Text<'a>,
    /// 5, Direction: `I` or `O`.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_impl::direction"))]
    #[cfg_attr(
        feature = "schemars",
        schemars(schema_with = "crate::serde_impl::schema::direction")
    )]
    pub direction: Direction,
    /// 6, Called Number: the number called (after short-code processing).
    #[cfg_attr(feature = "serde", serde(rename = "called"))]
    pub called_number: Text<'a>,
    /// 7, Dialled Number: the digits as dialled (inbound: the DDI).
    #[cfg_attr(feature = "serde", serde(rename = "dialled"))]
    pub dialled_number: Text<'a>,
    /// 8, Account: the last account code attached to the call.
    pub account: Text<'a>,
    /// 9, Is Internal: both ends were on the system (or across an SCN).
    pub is_internal: bool,
    /// 10, Call ID: allocated when the call starts; restarts at 1000000 when the PBX reboots.
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_impl::call_id"))]
    #[cfg_attr(
        feature = "schemars",
        schemars(schema_with = "crate::serde_impl::schema::call_id")
    )]
    pub call_id: u64,
    /// 11, Continuation: `true` when a later record for the same call will follow.
    #[cfg_attr(feature = "serde", serde(rename = "continued"))]
    pub continuation: bool,
    /// 12, Party1Device, `None` when empty.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "party_1_device", with = "crate::serde_impl::device")
    )]
    #[cfg_attr(
        feature = "schemars",
        schemars(schema_with = "crate::serde_impl::schema::device")
    )]
    pub party1_device: Option<Device>,
    /// 13, Party1Name.
    #[cfg_attr(feature = "serde", serde(rename = "party_1_name"))]
    pub party1_name: Text<'a>,
    /// 14, Party2Device, `None` when empty.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "party_2_device", with = "crate::serde_impl::device")
    )]
    #[cfg_attr(
        feature = "schemars",
        schemars(schema_with = "crate::serde_impl::schema::device")
    )]
    pub party2_device: Option<Device>,
    /// 15, Party2Name.
    #[cfg_attr(feature = "serde", serde(rename = "party_2_name"))]
    pub party2_name: Text<'a>,
    /// 16, Hold Time in seconds.
    pub hold_time: u32,
    /// 17, Park Time in seconds.
    pub park_time: u32,
    /// 18, AuthValid: `1` when the authorization code was valid, `0` when not; `None` when empty
    /// or absent. Kept as written, since test streams put other values here and a record must not
    /// be lost over an informational field; [`SmdrRecord::is_auth_valid`] reads it as a flag.
    pub auth_valid: Option<Text<'a>>,
    /// 19, AuthCode (shown as `n/a` when the system hides it).
    pub auth_code: Option<Text<'a>>,
    /// 20, User Charged: the user the call charge was assigned to (ISDN AOC).
    pub user_charged: Option<Text<'a>>,
    /// 21, Call Charge: the total call cost, as a decimal in [`SmdrRecord::currency`].
    pub call_charge: Option<Text<'a>>,
    /// 22, Currency.
    pub currency: Option<Text<'a>>,
    /// 23, Amount at Last User Change: the AOC amount at the last change of user.
    pub amount_at_last_user_change: Option<Text<'a>>,
    /// 24, Call Units: the AOC units.
    pub call_units: Option<u32>,
    /// 25, Units at Last User Change.
    pub units_at_last_user_change: Option<u32>,
    /// 26, Cost per Unit, in 1/10000ths of the currency.
    pub cost_per_unit: Option<u32>,
    /// 27, Mark Up, in 1/100ths.
    pub mark_up: Option<u32>,
    /// 28, External Targeting Cause: who (`U`, `HG`, `LINE`, `AA`, `ICR`, `RAS`, `?`) and why
    /// (`fu`, `fnr`, `fb`, `fdnd`, `FBN`, `XfP`, `Xfd`, `CfP`, `Cfd`, `MT`, `PBR`, `MbT`, ...),
    /// separated by a space.
    pub external_targeting_cause: Option<Text<'a>>,
    /// 29, External Targeter Id: the name of the user, group or line that targeted the call.
    pub external_targeter_id: Option<Text<'a>>,
    /// 30, External Targeted Number: the external number called by the targeting.
    pub external_targeted_number: Option<Text<'a>>,
    /// 31, Calling Party Server IP Address.
    pub calling_party_server_ip: Option<IpAddr>,
    /// 32, Unique Call ID for the Caller Extension (`0` when there is none).
    pub unique_call_id_caller: Option<u64>,
    /// 33, Called Party Server IP Address.
    pub called_party_server_ip: Option<IpAddr>,
    /// 34, Unique Call ID for the Called Extension (`0` when there is none).
    pub unique_call_id_called: Option<u64>,
    /// 35, SMDR Record Time: when the record was written, in **UTC**.
    #[cfg_attr(
        feature = "serde",
        serde(with = "crate::serde_impl::opt_timestamp", default)
    )]
    #[cfg_attr(
        feature = "schemars",
        schemars(schema_with = "crate::serde_impl::schema::opt_timestamp")
    )]
    pub smdr_record_time: Option<NaiveDateTime>,
    /// 36, Caller Consent Directive.
    pub caller_consent_directive: Option<Text<'a>>,
    /// 37, Calling Number Verification (STIR/SHAKEN attestation).
    pub calling_number_verification: Option<Text<'a>>,
    /// Everything after field 37 (without its leading comma), for fields a later firmware adds.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub extra: Option<Text<'a>>,
    /// How many fields the line had (17 to 37; more are in [`SmdrRecord::extra`]).
    pub field_count: u8,
}

impl SmdrRecord<'_> {
    /// An owned copy that no longer borrows from the input line.
    pub fn into_owned(self) -> SmdrRecord<'static> {
        fn own(t: Option<Text<'_>>) -> Option<Text<'static>> {
            t.map(Text::into_owned)
        }
        SmdrRecord {
            call_start: self.call_start,
            connected_time: self.connected_time,
            ring_time: self.ring_time,
            caller: self.caller.into_owned(),
            direction: self.direction,
            called_number: self.called_number.into_owned(),
            dialled_number: self.dialled_number.into_owned(),
            account: self.account.into_owned(),
            is_internal: self.is_internal,
            call_id: self.call_id,
            continuation: self.continuation,
            party1_device: self.party1_device,
            party1_name: self.party1_name.into_owned(),
            party2_device: self.party2_device,
            party2_name: self.party2_name.into_owned(),
            hold_time: self.hold_time,
            park_time: self.park_time,
            auth_valid: own(self.auth_valid),
            auth_code: own(self.auth_code),
            user_charged: own(self.user_charged),
            call_charge: own(self.call_charge),
            currency: own(self.currency),
            amount_at_last_user_change: own(self.amount_at_last_user_change),
            call_units: self.call_units,
            units_at_last_user_change: self.units_at_last_user_change,
            cost_per_unit: self.cost_per_unit,
            mark_up: self.mark_up,
            external_targeting_cause: own(self.external_targeting_cause),
            external_targeter_id: own(self.external_targeter_id),
            external_targeted_number: own(self.external_targeted_number),
            calling_party_server_ip: self.calling_party_server_ip,
            unique_call_id_caller: self.unique_call_id_caller,
            called_party_server_ip: self.called_party_server_ip,
            unique_call_id_called: self.unique_call_id_called,
            smdr_record_time: self.smdr_record_time,
            caller_consent_directive: own(self.caller_consent_directive),
            calling_number_verification: own(self.calling_number_verification),
            extra: own(self.extra),
            field_count: self.field_count,
        }
    }

    /// Field 18 as a flag: `Some(true)` for `1`, `Some(false)` for `0`, `None` otherwise.
    pub fn is_auth_valid(&self) -> Option<bool> {
        match self.auth_valid.as_ref().map(Text::as_bytes) {
            Some(b"1") => Some(true),
            Some(b"0") => Some(false),
            _ => None,
        }
    }

    /// Ring + connected + hold + park: how long this segment lasted, in seconds (saturating).
    pub fn segment_seconds(&self) -> u32 {
        self.ring_time
            .saturating_add(self.connected_time)
            .saturating_add(self.hold_time)
            .saturating_add(self.park_time)
    }
}
