//! Calls rebuilt from Asterisk's own CDR rows, for reconciliation: a call the CDR has but the
//! live source (AMI) missed ([`AmiAssembler::call_from_cdr`]).

use std::collections::BTreeMap;

use chrono::{NaiveDateTime, TimeDelta};
use compact_str::CompactString;

use super::AmiAssembler;
use super::classify::local_exten;
use super::input::parse_time;
use super::lifecycle::call_id;
use super::state::RuleLeg;
use crate::call::{Call, Leg, Party, Source, format_timestamp};
use crate::zone::PbxZone;

/// One CDR row, read.
#[derive(Debug)]
struct Row<'r> {
    index: usize,
    sequence: Option<u64>,
    start: Option<NaiveDateTime>,
    answer: Option<NaiveDateTime>,
    end: Option<NaiveDateTime>,
    uniqueid: &'r str,
    linkedid: &'r str,
    channel: &'r str,
    dstchannel: &'r str,
    src: &'r str,
    dst: &'r str,
    dcontext: &'r str,
    clid: &'r str,
    lastapp: &'r str,
    disposition: &'r str,
    accountcode: &'r str,
}

impl<'r> Row<'r> {
    fn read(index: usize, row: &'r BTreeMap<CompactString, CompactString>, zone: &PbxZone) -> Self {
        let get = |names: &[&str]| column(row, names);
        let time = |names: &[&str]| Some(get(names)).filter(|t| !t.is_empty());
        let start = time(&["start", "StartTime", "calldate"]).and_then(|t| parse_time(t, zone));
        let end = time(&["end", "EndTime"])
            .and_then(|t| parse_time(t, zone))
            .or_else(|| {
                // No end: the start plus the duration.
                let secs: i64 = get(&["duration", "Duration"]).parse().ok()?;
                start?.checked_add_signed(TimeDelta::try_seconds(secs)?)
            });
        Self {
            index,
            sequence: get(&["sequence", "Sequence"]).parse().ok(),
            start,
            answer: time(&["answer", "AnswerTime"]).and_then(|t| parse_time(t, zone)),
            end,
            uniqueid: get(&["uniqueid", "UniqueID"]),
            linkedid: get(&["linkedid", "LinkedID"]),
            channel: get(&["channel", "Channel"]),
            dstchannel: get(&["dstchannel", "DestinationChannel"]),
            src: get(&["src", "Source"]),
            dst: get(&["dst", "Destination"]),
            dcontext: get(&["dcontext", "DestinationContext"]),
            clid: get(&["clid", "CallerID"]),
            lastapp: get(&["lastapp", "LastApplication"]),
            disposition: get(&["disposition", "Disposition"]),
            accountcode: get(&["accountcode", "AccountCode"]),
        }
    }

    fn answered(&self) -> bool {
        self.disposition.eq_ignore_ascii_case("ANSWERED")
    }

    fn queue(&self) -> bool {
        self.lastapp.eq_ignore_ascii_case("Queue")
    }
}

/// The first non-empty value (trimmed) of a column called one of `names`, exactly, else in
/// any case; empty when there is none.
fn column<'r>(row: &'r BTreeMap<CompactString, CompactString>, names: &[&str]) -> &'r str {
    let exact = names
        .iter()
        .filter_map(|n| row.get(*n))
        .map(|v| v.trim())
        .find(|v| !v.is_empty());
    exact
        .or_else(|| {
            row.iter()
                .filter(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
                .map(|(_, v)| v.trim())
                .find(|v| !v.is_empty())
        })
        .unwrap_or_default()
}

/// The name in a CDR `clid` (`"Alice" <1001>` gives `Alice`); empty for a bare number.
fn clid_name(clid: &str) -> &str {
    match clid.split_once('<') {
        Some((name, _)) => name.trim().trim_matches('"').trim(),
        None => "",
    }
}

/// The other half's name of a Local channel (`;1` for `;2` and back).
fn local_pair_name(channel: &str) -> Option<String> {
    if !channel.starts_with("Local/") {
        return None;
    }
    let (base, half) = channel.rsplit_once(';')?;
    let other = match half {
        "1" => "2",
        "2" => "1",
        _ => return None,
    };
    Some(format!("{base};{other}"))
}

/// A real extension (not empty, not `s` or `h`).
fn is_exten(e: &str) -> bool {
    !e.is_empty() && e != "s" && e != "h"
}

/// The row with the earliest answer (the first in order of those), and that answer.
fn earliest<'a, 'r>(
    rows: impl Iterator<Item = &'a Row<'r>>,
) -> Option<(NaiveDateTime, &'a Row<'r>)> {
    rows.filter_map(|r| r.answer.map(|a| (a, r)))
        .min_by_key(|(a, _)| *a)
}

fn earlier(a: Option<NaiveDateTime>, b: Option<NaiveDateTime>) -> Option<NaiveDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn later(a: Option<NaiveDateTime>, b: Option<NaiveDateTime>) -> Option<NaiveDateTime> {
    a.max(b)
}

impl AmiAssembler {
    /// Rebuilds a whole call from Asterisk's own CDR rows of **one Linkedid**, for a call the
    /// CDR has but the live source (AMI) missed (an outage, a lost connection). It reads
    /// nothing of the assembler's state, only its configuration.
    ///
    /// `rows` are as `cdr_csv` or the `cdr` database table give them, column name to value:
    /// `accountcode`, `src`, `dst`, `dcontext`, `clid`, `channel`, `dstchannel`, `lastapp`,
    /// `lastdata`, `start` (or `calldate`), `answer`, `end`, `duration`, `billsec`,
    /// `disposition`, `amaflags`, `uniqueid`, `userfield`, `peeraccount`, `linkedid`,
    /// `sequence` (names in any case; `cdr_manager`'s names such as `StartTime` work too).
    /// Times are PBX local `YYYY-MM-DD HH:MM:SS` (other forms as [`CelRow::eventtime`]
    /// describes); an empty or zero `answer` means not answered. Rows are taken in order of
    /// `sequence`, then `start`.
    ///
    /// The call is complete, with [`Call::reconciled`] set, source [`Source::Ami`], the
    /// configured site, part 0 and the **same [`Call::id`] the AMI path gives the Linkedid**
    /// (so a sink can tell it apart from, or match it with, a call it already has).
    ///
    /// * `linkedid` and `call_id`: the rows' `linkedid` (the first row's `uniqueid` when no
    ///   row has one).
    /// * `start_time`: the earliest `start`; `end_time`: the latest `end` (a row without one
    ///   ends at `start` + `duration`).
    /// * The connection (a party answered), by the first rule that gives one: the earliest
    ///   `answer` of an `ANSWERED` row, leaving out `Queue` rows (their answer is the
    ///   caller's, at queue entry) and rows of the caller's channel or its Local `;2` half
    ///   without a `dstchannel` (the dialplan answering the caller); else of an `ANSWERED`
    ///   `Queue` row with a `dstchannel` (a member answered, but the CDR only has the queue
    ///   row's time); else, when no row has a `dstchannel` (nobody was dialled: an IVR,
    ///   voicemail), of any `ANSWERED` row. `answered` is whether there is one.
    /// * `answer_time`: the earliest `answer` of the caller channel's rows, whatever their
    ///   disposition (the PBX answering the caller), else the connection.
    /// * `duration` = end − start, `billsec` = end − `answer_time` (whole seconds), `ring` the
    ///   rest; `talk_secs` = end − connection, `wait_secs` = connection − start (the whole
    ///   call when nobody answered).
    /// * `disposition`: `ANSWERED` when connected or when a row of the caller channel is
    ///   `ANSWERED` (the caller channel is the one whose `uniqueid` is the Linkedid; all rows
    ///   when none is); else the first of `BUSY`, `CONGESTION`, `FAILED`, `NO ANSWER` among
    ///   its rows, else among all rows, else `NO ANSWER`. (A caller answered by the dialplan,
    ///   say before `Queue()`, whose dialplan went on after the queue has an `ANSWERED` row of
    ///   its own: Asterisk's books say `ANSWERED`, though nobody answered.)
    /// * `caller`: for a Local `;1` caller channel the first non-empty `src` of its `;2`
    ///   half's rows (the `;1`'s follows connected-line updates), else of the caller
    ///   channel's rows (an attended transfer blanks it on later rows); `called` and `dialled`: the first
    ///   `dst` of its rows that is an extension (not `s` or `h`). After a transfer Asterisk
    ///   may have rewritten `dst` to the transfer target, where AMI reports the number first
    ///   called.
    /// * `legs`: one per channel, in order of start: every row's `channel` (its `uniqueid`,
    ///   `context`/`exten` from its first row's `dcontext`/`dst`, caller id from
    ///   `src`/`clid`, the earliest start and answer and the latest end of its rows), and
    ///   every `dstchannel` that has no row of its own, **with an empty `uniqueid`** (the CDR
    ///   does not give it), `dialed_by` the `uniqueid` of the row naming it, and that row's
    ///   times. Hangup causes, dial statuses, transfers and recordings are not in the CDR and
    ///   stay empty.
    /// * `answered_by`: the far end of the answering row (its `dstchannel`, or its channel
    ///   when it has none or the `dstchannel` is the caller's), a Local `;1` followed to its
    ///   `;2` half; named by the Local channel's extension, else its leg's caller id number
    ///   (empty for a channel only seen as a `dstchannel`). `parties` as for AMI calls.
    /// * `direction` and `tenant` by the same rules as AMI calls (trunk contexts and channel
    ///   prefixes, number length, [`AmiAssemblerConfig::tenant_rules`]), a leg's context
    ///   being its first row's `dcontext` (which a transfer may already have changed) and its
    ///   account code its rows' `accountcode`; there is no `TenantID` in the CDR.
    /// * `cdr`: the rows as given.
    ///
    /// `None` for no rows, rows of which none has a parseable `start`, or no `linkedid` and
    /// `uniqueid` to key the call by. Rows of another Linkedid are not detected: group the
    /// rows first.
    ///
    /// [`CelRow::eventtime`]: super::CelRow::eventtime
    /// [`AmiAssemblerConfig::tenant_rules`]: super::AmiAssemblerConfig::tenant_rules
    pub fn call_from_cdr(&self, rows: &[BTreeMap<CompactString, CompactString>]) -> Option<Call> {
        let zone = self.config.zone;
        let mut read: Vec<Row<'_>> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| Row::read(i, r, &zone))
            .collect();
        read.sort_by_key(|r| {
            (
                r.sequence.is_none(),
                r.sequence,
                r.start.is_none(),
                r.start,
                r.index,
            )
        });
        let read = read;
        let linkedid = read
            .iter()
            .map(|r| r.linkedid)
            .find(|l| !l.is_empty())
            .or_else(|| read.first().map(|r| r.uniqueid).filter(|u| !u.is_empty()))?;
        let start_time = read.iter().filter_map(|r| r.start).min()?;
        let end_time = read
            .iter()
            .filter_map(|r| r.end)
            .max()
            .unwrap_or(start_time)
            .max(start_time);

        // The caller channel: the one whose uniqueid is the Linkedid.
        let mut caller_rows: Vec<&Row<'_>> =
            read.iter().filter(|r| r.uniqueid == linkedid).collect();
        if caller_rows.is_empty() {
            caller_rows = read.iter().collect();
        }
        let first = caller_rows.first()?;
        let caller_channel = first.channel;
        let caller_pair = local_pair_name(caller_channel);
        let in_caller_chain = |channel: &str| {
            !channel.is_empty()
                && (channel == caller_channel || caller_pair.as_deref() == Some(channel))
        };

        // The answer (see the docs for the order of the rules).
        let connected = earliest(read.iter().filter(|r| {
            r.answered()
                && !r.queue()
                && !(r.dstchannel.is_empty()
                    && (r.uniqueid == linkedid || in_caller_chain(r.channel)))
        }))
        .or_else(|| {
            earliest(
                read.iter()
                    .filter(|r| r.answered() && r.queue() && !r.dstchannel.is_empty()),
            )
        });
        let dialled_anyone = read.iter().any(|r| !r.dstchannel.is_empty());
        let own_answer = if connected.is_none() && !dialled_anyone {
            earliest(read.iter().filter(|r| r.answered()))
        } else {
            None
        };
        let connected_at = connected
            .or(own_answer)
            .map(|(a, _)| a.clamp(start_time, end_time));
        // The PBX's answer of the calling channel, which Asterisk's billsec counts from: the
        // earliest answer of its rows (whatever their disposition: a `Queue` row to a member
        // who never answered still carries the caller's answer).
        let answer_time = caller_rows
            .iter()
            .filter_map(|r| r.answer)
            .min()
            .map(|a| a.clamp(start_time, end_time))
            .or(connected_at);

        let secs = |a: NaiveDateTime, b: NaiveDateTime| {
            u32::try_from((b - a).num_seconds().max(0)).unwrap_or(u32::MAX)
        };
        let duration = secs(start_time, end_time);
        let billsec = answer_time.map_or(0, |a| secs(a, end_time));
        let talk = connected_at.map_or(0, |c| secs(c, end_time));
        let wait = connected_at.map_or(duration, |c| secs(start_time, c));
        // The calling channel's rows with those of its Local half (the `;2` that runs the
        // dialplan, as a trunk channel would), the most telling disposition first.
        let chain: Vec<&Row<'_>> = read
            .iter()
            .filter(|r| r.uniqueid == linkedid || in_caller_chain(r.channel))
            .collect();
        let all: Vec<&Row<'_>> = read.iter().collect();
        let has =
            |rows: &[&Row<'_>], d: &str| rows.iter().any(|r| r.disposition.eq_ignore_ascii_case(d));
        const WORDS: [&str; 5] = ["ANSWERED", "BUSY", "CONGESTION", "FAILED", "NO ANSWER"];
        let disposition = if connected_at.is_some() {
            "ANSWERED"
        } else {
            WORDS
                .into_iter()
                .find(|d| has(&chain, d))
                .or_else(|| WORDS.into_iter().skip(1).find(|d| has(&all, d)))
                .unwrap_or("NO ANSWER")
        };
        // The caller id of a Local `;1` follows connected-line updates (after a parked call is
        // picked up it shows the retriever) and an attended transfer blanks it: its `;2` half,
        // which runs the dialplan as a trunk channel would, keeps the caller's. So the first
        // `src` of the `;2` half's rows, then of the calling channel's.
        let half: Vec<&Row<'_>> = read
            .iter()
            .filter(|r| caller_channel.ends_with(";1") && caller_pair.as_deref() == Some(r.channel))
            .collect();
        let caller = CompactString::from(
            half.iter()
                .chain(&caller_rows)
                .map(|r| r.src)
                .find(|s| !s.is_empty())
                .unwrap_or_default(),
        );
        let called = CompactString::from(
            caller_rows
                .iter()
                .chain(&chain)
                .map(|r| r.dst)
                .find(|d| is_exten(d))
                .unwrap_or_default(),
        );

        // Legs: the rows' channels, then the dialled channels that have no row of their own.
        let mut legs: Vec<(Leg, &str)> = Vec::new();
        for r in &read {
            let answer = r.answer.filter(|_| r.answered());
            let found = legs.iter_mut().find(|(l, _)| {
                (!r.uniqueid.is_empty() && l.uniqueid == r.uniqueid)
                    || (l.uniqueid.is_empty() && !r.channel.is_empty() && l.channel == r.channel)
            });
            match found {
                Some((l, account)) => {
                    if l.uniqueid.is_empty() {
                        l.uniqueid = r.uniqueid.into();
                    }
                    if l.caller_num.is_empty() {
                        l.caller_num = r.src.into();
                        l.caller_name = clid_name(r.clid).into();
                    }
                    if l.context.is_empty() {
                        l.context = r.dcontext.into();
                    }
                    if l.exten.is_empty() && is_exten(r.dst) {
                        l.exten = r.dst.into();
                    }
                    if account.is_empty() {
                        *account = r.accountcode;
                    }
                    l.start = earlier(l.start, r.start);
                    l.answer = earlier(l.answer, answer);
                    l.end = later(l.end, r.end);
                }
                None => legs.push((
                    Leg {
                        uniqueid: r.uniqueid.into(),
                        channel: r.channel.into(),
                        caller_num: r.src.into(),
                        caller_name: clid_name(r.clid).into(),
                        context: r.dcontext.into(),
                        exten: if is_exten(r.dst) {
                            r.dst.into()
                        } else {
                            CompactString::default()
                        },
                        start: r.start,
                        answer,
                        end: r.end,
                        ..Leg::default()
                    },
                    r.accountcode,
                )),
            }
            if r.dstchannel.is_empty() {
                continue;
            }
            match legs.iter_mut().find(|(l, _)| l.channel == r.dstchannel) {
                Some((l, _)) => {
                    if l.dialed_by.is_empty() && l.uniqueid != r.uniqueid {
                        l.dialed_by = r.uniqueid.into();
                    }
                }
                None => legs.push((
                    Leg {
                        channel: r.dstchannel.into(),
                        start: r.start,
                        answer,
                        end: r.end,
                        dialed_by: r.uniqueid.into(),
                        ..Leg::default()
                    },
                    "",
                )),
            }
        }
        legs.sort_by_key(|(l, _)| (l.start.is_none(), l.start));

        let answered_by = connected.map(|(_, r)| {
            let far = if r.dstchannel.is_empty() || in_caller_chain(r.dstchannel) {
                r.channel
            } else {
                r.dstchannel
            };
            let device = match local_pair_name(far) {
                Some(two) if far.ends_with(";1") && legs.iter().any(|(l, _)| l.channel == two) => {
                    CompactString::from(two)
                }
                _ => CompactString::from(far),
            };
            let name = local_exten(&device)
                .map(CompactString::from)
                .or_else(|| {
                    legs.iter()
                        .find(|(l, _)| l.channel == device)
                        .map(|(l, _)| l.caller_num.clone())
                })
                .unwrap_or_default();
            Party { device, name }
        });

        fn rule<'a>((l, account): &'a (Leg, &'a str)) -> RuleLeg<'a> {
            RuleLeg {
                channel: l.channel.as_str(),
                context: l.context.as_str(),
                caller: l.caller_num.as_str(),
                accountcode: account,
            }
        }
        let caller_at = legs
            .iter()
            .position(|(l, _)| l.uniqueid == linkedid)
            .or(if legs.is_empty() { None } else { Some(0) });
        let caller_leg = caller_at.and_then(|i| legs.get(i));
        let direction = self.direction(
            caller_leg.map(rule).as_ref(),
            legs.iter().map(rule),
            &caller,
            &called,
        );
        let tenant = self.tenant_by_rules(
            caller_leg
                .into_iter()
                .chain(
                    legs.iter()
                        .enumerate()
                        .filter(|(i, _)| Some(*i) != caller_at)
                        .map(|(_, l)| l),
                )
                .map(rule),
            &called,
        );

        let mut parties: Vec<Party> = Vec::new();
        let is_local = |l: &Leg| l.channel.starts_with("Local/");
        let non_local = legs.iter().any(|(l, _)| !is_local(l));
        for (l, _) in &legs {
            if (non_local && is_local(l)) || parties.iter().any(|p| p.device == l.channel) {
                continue;
            }
            parties.push(Party {
                device: l.channel.clone(),
                name: l.caller_name.clone(),
            });
        }

        let start_bytes = format_timestamp(&start_time, b'-', b' ');
        let (start_utc, end_utc, utc_offset) = self.config.zone.call_times(start_time, end_time);
        Some(Call {
            id: call_id(&self.config.site, linkedid, 0),
            source: Source::Ami,
            site: CompactString::from(self.config.site.as_str()),
            call_id: linkedid.into(),
            boot_epoch: 0,
            part: 0,
            start: CompactString::from_utf8_lossy(&start_bytes),
            start_time,
            end_time,
            start_utc,
            end_utc,
            utc_offset,
            duration,
            ring: duration.saturating_sub(billsec),
            hold: 0,
            park: 0,
            direction,
            tenant,
            caller,
            called: called.clone(),
            dialled: called,
            answered: connected_at.is_some(),
            answered_by,
            parties,
            complete: true,
            flush_reason: None,
            reconciled: true,
            records: Vec::new(),
            linkedid: linkedid.into(),
            answer_time,
            billsec: Some(billsec),
            talk_secs: Some(talk),
            wait_secs: Some(wait),
            disposition: disposition.into(),
            legs: legs.into_iter().map(|(l, _)| l).collect(),
            related_calls: Vec::new(),
            transfers: Vec::new(),
            recordings: Vec::new(),
            cdr: rows.to_vec(),
            update: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallDirection;
    use crate::{AmiAssemblerConfig, RuleField, TenantRule};

    fn row(fields: &[(&str, &str)]) -> BTreeMap<CompactString, CompactString> {
        fields
            .iter()
            .map(|(k, v)| (CompactString::from(*k), CompactString::from(*v)))
            .collect()
    }

    fn asm() -> AmiAssembler {
        AmiAssembler::new(AmiAssemblerConfig {
            site: "hq".into(),
            ..AmiAssemblerConfig::default()
        })
    }

    #[test]
    fn no_rows_or_no_start_is_none() {
        let asm = asm();
        assert_eq!(asm.call_from_cdr(&[]), None);
        let r = row(&[("uniqueid", "1.1"), ("linkedid", "1.1"), ("start", "")]);
        assert_eq!(asm.call_from_cdr(&[r]), None);
        let r = row(&[("start", "2026-11-22 13:54:08")]);
        assert_eq!(asm.call_from_cdr(&[r]), None, "nothing to key the call by");
    }

    #[test]
    fn queue_caller_nobody_answered_is_billed_as_asterisk_does() {
        // The dialplan answered the caller before Queue(); the one member rung did not answer.
        let rows = [
            row(&[
                ("channel", "SIP/trunk-1"),
                ("dstchannel", "SIP/agent-2"),
                ("src", "0201234567"),
                ("dst", "800"),
                ("dcontext", "from-trunk"),
                ("lastapp", "Queue"),
                ("start", "2026-11-22 10:00:00"),
                ("answer", "2026-11-22 10:00:00"),
                ("end", "2026-11-22 10:00:20"),
                ("disposition", "NO ANSWER"),
                ("uniqueid", "9.1"),
                ("linkedid", "9.1"),
                ("sequence", "5"),
            ]),
            row(&[
                ("channel", "SIP/trunk-1"),
                ("src", "0201234567"),
                ("dst", "800"),
                ("dcontext", "from-trunk"),
                ("lastapp", "Hangup"),
                ("start", "2026-11-22 10:00:20"),
                ("answer", "2026-11-22 10:00:20"),
                ("end", "2026-11-22 10:00:20"),
                ("disposition", "ANSWERED"),
                ("uniqueid", "9.1"),
                ("linkedid", "9.1"),
                ("sequence", "7"),
            ]),
        ];
        let c = asm().call_from_cdr(&rows).unwrap();
        // Nobody answered, but the trunk was answered before `Queue()` and its dialplan went
        // on (`Hangup()`): Asterisk's books bill the 20 s and say ANSWERED.
        assert!(!c.answered);
        assert_eq!(c.disposition, "ANSWERED");
        assert_eq!((c.duration, c.billsec), (20, Some(20)));
        assert_eq!((c.talk_secs, c.wait_secs), (Some(0), Some(20)));
        assert_eq!(c.direction, CallDirection::Inbound);
        assert_eq!(c.answered_by, None);
        assert_eq!(
            c.legs
                .iter()
                .map(|l| l.channel.as_str())
                .collect::<Vec<_>>(),
            ["SIP/trunk-1", "SIP/agent-2"]
        );
        assert_eq!(c.legs[1].uniqueid, "");
        assert_eq!(c.legs[1].dialed_by, "9.1");
        assert_eq!(c.id, call_id("hq", "9.1", 0));
        assert!(c.reconciled && c.complete);
    }

    #[test]
    fn a_call_nobody_was_dialled_for_is_answered_by_the_dialplan() {
        // An IVR: one row, no dstchannel; MySQL's `calldate` for the start; no sequence.
        let rows = [row(&[
            ("Channel", "PJSIP/alice-1"),
            ("src", "1001"),
            ("clid", "\"Alice\" <1001>"),
            ("dst", "s"),
            ("dcontext", "ivr"),
            ("lastapp", "Playback"),
            ("calldate", "2026-11-22 10:00:00"),
            ("answer", "2026-11-22 10:00:01"),
            ("end", "2026-11-22 10:00:31"),
            ("disposition", "ANSWERED"),
            ("uniqueid", "7.1"),
            ("accountcode", "acme-1"),
        ])];
        let mut config = AmiAssemblerConfig::default();
        config.tenant_rules.push(TenantRule {
            field: RuleField::Accountcode,
            prefix: "acme".into(),
            tenant: "Acme".into(),
        });
        config.internal_number_max_len = Some(4);
        let c = AmiAssembler::new(config).call_from_cdr(&rows).unwrap();
        assert!(c.answered);
        assert_eq!((c.duration, c.billsec, c.ring), (31, Some(30), 1));
        assert_eq!(c.answered_by, None);
        assert_eq!(
            c.linkedid, "7.1",
            "the uniqueid keys a call without linkedid"
        );
        assert_eq!((c.caller.as_str(), c.called.as_str()), ("1001", ""));
        assert_eq!(c.tenant, "Acme");
        assert_eq!(c.direction, CallDirection::Internal);
        assert_eq!(
            c.parties,
            [Party {
                device: "PJSIP/alice-1".into(),
                name: "Alice".into()
            }]
        );
    }

    #[test]
    fn outbound_by_number_length_and_zero_answer_dates() {
        let rows = [row(&[
            ("channel", "PJSIP/bob-1"),
            ("dstchannel", "PJSIP/provider-2"),
            ("src", "1002"),
            ("dst", "00442079460000"),
            ("start", "2026-11-22 10:00:00"),
            ("answer", "0000-00-00 00:00:00"),
            ("end", "2026-11-22 10:00:05"),
            ("disposition", "BUSY"),
            ("uniqueid", "8.1"),
            ("linkedid", "8.1"),
        ])];
        let config = AmiAssemblerConfig {
            internal_number_max_len: Some(6),
            ..AmiAssemblerConfig::default()
        };
        let c = AmiAssembler::new(config).call_from_cdr(&rows).unwrap();
        assert!(!c.answered);
        assert_eq!(c.disposition, "BUSY");
        assert_eq!(c.direction, CallDirection::Outbound);
        assert_eq!(c.called, "00442079460000");
        assert_eq!(c.answer_time, None);
    }
}
