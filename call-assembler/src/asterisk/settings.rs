//! The settings of an [`AmiAssembler`]: timers, limits, trunk rules and tenant rules.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::PbxZone;

#[cfg(doc)]
use super::{AmiAssembler, CelRow};
#[cfg(doc)]
use crate::call::{Call, FlushReason};

/// Settings of an [`AmiAssembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiAssemblerConfig {
    /// The site name that goes into every call and its id (one per PBX).
    pub site: String,
    /// How long a finished call waits for late events (`Cdr`, `Hangup`) before it is emitted.
    pub grace: Duration,
    /// How long a call may go without any event before it is emitted incomplete.
    pub idle_timeout: Duration,
    /// The most calls kept open at once; past it the one with the earliest deadline is emitted
    /// incomplete ([`FlushReason::Evicted`]).
    pub max_open_calls: usize,
    /// The most legs kept per call (more are counted and dropped).
    pub max_legs_per_call: usize,
    /// The most `Cdr` rows, answer candidates, transfers and recordings kept per call.
    pub max_items_per_call: usize,
    /// How many emitted calls' Uniqueids are remembered to report late events.
    pub remember_emitted: usize,
    /// Contexts in which trunk channels start (e.g. `from-trunk`).
    pub trunk_contexts: Vec<String>,
    /// Channel name prefixes of trunks (e.g. `SIP/trunk`, `PJSIP/provider`).
    pub trunk_channel_prefixes: Vec<String>,
    /// The PBX's time zone (a fixed offset, or an IANA zone with its daylight saving rules):
    /// epoch times (`Timestamp:`, epoch CEL times, times with an offset from a database) are
    /// turned into PBX local time with it, so that every time in a call is PBX local time, and
    /// local times (CDR rows, CEL tables and CSV files) are taken to UTC with it for
    /// [`Call::start_utc`]. UTC by default.
    pub zone: PbxZone,
    /// `None` (the default): complete mode, one record per call when it is over. `Some(iv)`:
    /// progressive mode, a `Started` snapshot when a call is first seen, an `Updated` one every
    /// `iv` (from the call's creation, on the monotonic clock) while it lasts, and the final
    /// record as `Ended` (see [`Call::update`] and the module docs, "Progressive mode"). A zero
    /// interval sends `Started` and `Ended` only.
    pub progress_interval: Option<Duration>,
    /// Direction by number length, when no trunk rule decided: a call whose caller number has
    /// more digits than this is inbound, else one whose called number has more digits is
    /// outbound, else internal (see the module docs, "The call's figures"). `None`: no such
    /// rule (a call no trunk rule decided is internal).
    pub internal_number_max_len: Option<usize>,
    /// Rules giving a call its tenant when no channel carries Asterisk 22's `TenantID`, tried
    /// in order (see [`TenantRule`]).
    pub tenant_rules: Vec<TenantRule>,
}

/// A rule giving a call its tenant ([`Call::tenant`]): when `field` of a channel (for
/// [`RuleField::Called`], the call's `called`) starts with `prefix`, the tenant is `tenant`.
///
/// Rules are tried in order on the caller leg first: the first rule that matches it decides.
/// If none matches the caller leg, the other legs are tried the same way in order of creation.
/// An empty `prefix` matches anything (a catch-all rule, best put last). A non-empty
/// `TenantID` on any channel (Asterisk 22) wins over every rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRule {
    /// Which value of the channel is compared.
    pub field: RuleField,
    /// What it must start with (case-sensitive).
    pub prefix: String,
    /// The tenant the rule gives.
    pub tenant: String,
}

/// The channel value a [`TenantRule`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleField {
    /// The dialplan context the channel started in.
    Context,
    /// The channel's name when it was created (`PJSIP/acme-00000001`).
    Channel,
    /// The channel's caller id number.
    Caller,
    /// The call's `called` number (the same for every leg).
    Called,
    /// The channel's latest non-empty `AccountCode` (AMI events only: [`CelRow`] has none).
    Accountcode,
}

impl Default for AmiAssemblerConfig {
    fn default() -> Self {
        Self {
            site: String::new(),
            grace: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(4 * 3600),
            max_open_calls: 100_000,
            max_legs_per_call: 256,
            max_items_per_call: 256,
            remember_emitted: 10_000,
            trunk_contexts: vec![
                "from-trunk".into(),
                "from-pstn".into(),
                "from-external".into(),
            ],
            trunk_channel_prefixes: Vec::new(),
            zone: PbxZone::UTC,
            progress_interval: None,
            internal_number_max_len: None,
            tenant_rules: Vec::new(),
        }
    }
}
