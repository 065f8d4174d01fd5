//! Assembling Asterisk AMI events (channel events, `Cdr` and `CEL`) into calls.
//!
//! # Model
//!
//! * **Calls are keyed by Linkedid**, channels by Uniqueid. A channel whose Linkedid changes
//!   (it joined a bridge with an older call) takes its whole call with it: the younger call is
//!   merged into the older one and its Linkedid becomes an alias. A `LINKEDID_END` for an alias
//!   (the "merged" kind) is ignored. Asterisk 11 events carry no Linkedid: a channel then starts
//!   a provisional call of its own, merged into its caller's call by `Dial` (Begin),
//!   `LocalBridge` or a CEL event carrying the real `LinkedID`.
//! * **Channels are tracked by Uniqueid**, so renames and masquerades only change a leg's name
//!   (after a masquerade the *name* `SIP/x-1` carries another Uniqueid, and the old Uniqueid,
//!   now `...<ZOMBIE>`, hangs up: that ends only its own leg).
//! * **A call is finished** when CEL's `LINKEDID_END` for its Linkedid arrives, or when every
//!   leg has hung up (`Hangup`, CEL `HANGUP` or `CHAN_END`), whichever comes first; it is emitted
//!   [`AmiAssemblerConfig::grace`] later, so `Cdr` and `Hangup` events that Asterisk sends
//!   just after `LINKEDID_END` still join it. A call with no event for
//!   [`AmiAssemblerConfig::idle_timeout`] is emitted incomplete ([`FlushReason::IdleTimeout`]).
//! * **After a call is emitted**, any event about one of its channels is late: it is dropped
//!   and reported ([`Anomaly::AmiLateEvent`]), so it never reopens the call. A *new* channel
//!   with the Linkedid of an emitted call starts a later part of it ([`Call::part`] 1, 2, ...)
//!   with an id of its own, so no two records share an id. Both are remembered for the last
//!   [`AmiAssemblerConfig::remember_emitted`] calls' channels and keys.
//!
//! # Times
//!
//! Wall-clock times in calls are **PBX local time**, like Asterisk's own CDR rows. An event's
//! time is, in order of preference: its `Timestamp:` header (`timestampevents=yes`; epoch with
//! microseconds, UTC, shifted by [`AmiAssemblerConfig::utc_offset_secs`]); for CEL its
//! `EventTime` (local `YYYY-MM-DD HH:MM:SS[.ffffff]`, or epoch as in cel.csv, shifted); else the
//! monotonic `now` it arrived at, placed on the wall clock by the latest event that had a
//! time. A time that came with the event wins over one inferred from `now`.
//!
//! # The call's figures
//!
//! * `start_time`: the earliest leg creation; `end_time`: the latest leg hangup (or the last
//!   event, for a call flushed incomplete).
//! * **Connected** (a party answered): the first two-party bridge between two non-Local
//!   channels if there is one (Local channel bridges are call setup when Asterisk optimises
//!   them away), else the first two-party bridge of any channels, else the first `DialEnd`
//!   with `ANSWER`, else, for a call that never dialled anyone (no `DialBegin`, no channel but
//!   the caller and its Local half), the caller's own answer (an IVR or voicemail call).
//!   Within a kind, times that came with the event (CEL, `Timestamp:`) win over inferred
//!   ones. `answered` is whether the call was connected.
//! * `answer_time`: when the PBX answered the **calling channel** (the caller leg's own
//!   answer, else the connection): Asterisk's CDR `answer`. A queue, an IVR or a `Wait` that
//!   answers the caller counts, even when an agent picks up later.
//! * `duration` = end − start and `billsec` = end − `answer_time` (0 when the caller was never
//!   answered), in whole seconds (truncated, as Asterisk does), as Asterisk's CDR bills the
//!   call; `ring` = duration − billsec. `talk_secs` = end − connected (0 when nobody answered)
//!   and `wait_secs` = connected − start (the whole call when nobody answered).
//! * `disposition`, as Asterisk's rows of the calling channel say it: `ANSWERED` when the
//!   call was connected, or when the caller was answered and its dialplan ran without dialling
//!   anyone (a `Wait`, an IVR) or went on after its last dial (Asterisk then writes a row of
//!   the caller alone, `ANSWERED`); else from the dial statuses (`BUSY` before `CONGESTION`
//!   before `FAILED` (CHANUNAVAIL) before `NO ANSWER`), else from the caller's hangup cause
//!   (17 BUSY, 34/38/42 CONGESTION, 1/3/27/28 FAILED), else `NO ANSWER`.
//! * `answered_by`: the far end of the answering bridge, seen from the caller (following a
//!   Local channel `;1`/`;2` pair to its other half); `device` is its channel name and `name`
//!   its number (the Local channel's extension, else its caller id number).
//! * `caller`: the caller leg's first caller id number (the caller leg is the one whose
//!   Uniqueid is the Linkedid); `called`: the last extension (not `s`/`h`) its dialplan ran.
//! * `direction`, by the first rule that applies:
//!   1. inbound when the caller leg is a trunk;
//!   2. outbound when another leg is a trunk (a trunk is a channel whose name when created
//!      starts with one of [`AmiAssemblerConfig::trunk_channel_prefixes`] or whose first
//!      context is one of [`AmiAssemblerConfig::trunk_contexts`]);
//!   3. with [`AmiAssemblerConfig::internal_number_max_len`] set to `n`: inbound when `caller`
//!      has more than `n` digits, else outbound when `called` has more than `n` digits (only
//!      the ASCII digits count: `+44 20 7946 0000` has 12);
//!   4. else internal.
//! * `tenant`: the latest non-empty `TenantID` (Asterisk 22, on channel events) of the caller
//!   leg, else of the first other leg that has one (in order of creation); else the first of
//!   [`AmiAssemblerConfig::tenant_rules`] that matches the caller leg, else the first that
//!   matches another leg, in order of creation (see [`TenantRule`]); else empty.
//!
//! # Progressive mode
//!
//! With [`AmiAssemblerConfig::progress_interval`] set to `Some(iv)`, a call is reported while
//! it lasts as well as when it is over. Every record of one call has the same [`Call::id`] and
//! a [`Call::update`] with a sequence number counting from 0:
//!
//! * `Started` (0), right after the input that created the call (its first channel), a
//!   snapshot as the call stands then;
//! * `Updated` (1, 2, ...) every `iv` after the call's creation on the monotonic `now` (at
//!   creation + iv, + 2·iv, ...; a late [`AmiAssembler::handle_timeout`] sends one and skips
//!   to the next point after it), while the call is open and not finished (none while it waits
//!   out its grace period); [`AmiAssembler::poll_timeout`] includes the next one;
//! * `Ended`, the final record: the same call complete mode would emit (complete, or flushed
//!   with its reason), with the next sequence number.
//!
//! Snapshots are incomplete (`complete: false`, no `flush_reason`), and their `end_time` is the
//! time the snapshot was taken (or the last event, if later), so `duration` grows. A call's id
//! is fixed by its first record: if its Linkedid changes afterwards (an Asterisk 11
//! provisional call, or a channel that joins a call begun before the connection), later
//! records keep that id while `call_id` and `linkedid` show the new Linkedid. When calls merge,
//! the surviving (older) call's records go on with its sequence; the merged call's records
//! simply stop: its `Started` (and any `Updated`) is superseded by the survivor's records and
//! no `Ended` follows under its id.
//!
//! # Reconnects and journaling
//!
//! After the AMI connection was lost, [`AmiAssembler::resync`] with the PBX's channel list
//! closes the calls that ended during the gap ([`FlushReason::Resync`]) and adopts the channels
//! that began during it. For a relay that journals open calls across restarts,
//! [`AmiAssembler::last_key`] names the call each input was applied to and
//! [`AmiAssembler::take_retired`] the keys whose calls are done (the contract, and what a
//! replayed journal does not restore, are on [`AmiAssembler::last_key`]).
//!
//! # Reconciliation with the CDR
//!
//! A call Asterisk's CDR has but the live source missed (its events were lost while the
//! connection was down) can be rebuilt from the CDR rows of its Linkedid with
//! [`AmiAssembler::call_from_cdr`]: a complete call with [`Call::reconciled`] set and the id
//! the AMI path would have given it, its figures worked out by the same rules as far as the
//! CDR's columns allow.
//!
//! # Where the code is
//!
//! * `settings`: [`AmiAssemblerConfig`], [`TenantRule`], [`RuleField`];
//! * `input`: decoding what comes in ([`CelRow`], AMI messages, the resync's channel list)
//!   into one owned event, by the header lookup AMI messages and CEL rows share; times and
//!   hangup causes as the PBX writes them;
//! * `state`: open calls, their legs (channels), answer candidates and times;
//! * `machine`: [`AmiAssembler`] and its `handle_*` / `poll_*` API, [`AmiStats`];
//!   `apply` (what an event does to the calls: locating, merging), `lifecycle` (deadlines,
//!   progressive snapshots, emitting, ids), `resync` ([`AmiAssembler::resync`]);
//! * `classify`: direction, disposition, tenant, the answering party; `record`: the [`Call`]
//!   built from an open call;
//! * `cdr`: calls rebuilt from CDR rows ([`AmiAssembler::call_from_cdr`]);
//! * `cel_columns`: `cel_custom.conf` column mappings ([`CelColumns`]);
//! * `tests`: the unit tests, on a clock moved by hand.

#[cfg(doc)]
use crate::{Anomaly, Call, FlushReason};

mod apply;
mod cdr;
mod cel_columns;
mod classify;
mod input;
mod lifecycle;
mod machine;
mod record;
mod resync;
mod settings;
mod state;
#[cfg(test)]
mod tests;

pub use cel_columns::{CelColumns, CelColumnsError};
pub use input::CelRow;
pub use machine::{AmiAssembler, AmiStats};
pub use settings::{AmiAssemblerConfig, RuleField, TenantRule};
