//! The PBX's time zone: how a call's local times (as the PBX writes them) map to UTC.
//!
//! SMDR and Asterisk's CDR write the PBX's wall clock without an offset. A [`PbxZone`] says which
//! clock that is, so every call also carries its start and end in UTC ([`Call::start_utc`],
//! [`Call::end_utc`]) and the offset that was in force ([`Call::utc_offset`]): calls from PBXes
//! in different zones then sort on one axis.
//!
//! **Gaps and overlaps.** Where a zone changes its offset, some local times happen twice (the
//! clocks go back: an overlap) and some never happen (the clocks go forward: a gap). A
//! [`PbxZone::Named`] zone resolves both the same way every time, as `java.time`, the JavaScript
//! Temporal API ("compatible") and RFC 5545 do:
//! * in an overlap, the **earlier** instant (the offset before the change, e.g. summer time);
//! * in a gap, the offset **before** the change, so the instant is where the time would have
//!   been had the clocks not moved (Europe/Berlin's `02:30` on the spring day, which does not
//!   exist, is `01:30Z`, that is `03:30` summer time).
//!
//! The zone is configuration passed in: nothing here reads the clock or the environment.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use compact_str::{CompactString, ToCompactString};

#[cfg(doc)]
use crate::Call;

/// The zone of a PBX's clock: a fixed offset from UTC or an IANA time zone (with its daylight
/// saving rules, from the tz database compiled into `chrono-tz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PbxZone {
    /// A fixed offset (`+01:00`); UTC is `Fixed(+00:00)`, the default.
    Fixed(FixedOffset),
    /// An IANA zone (`Europe/London`), daylight saving included.
    Named(chrono_tz::Tz),
}

impl Default for PbxZone {
    /// UTC.
    fn default() -> Self {
        Self::UTC
    }
}

/// A zone text that is neither an IANA zone name nor an offset (`+HH:MM`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time zone {0:?}: expected an IANA name (Europe/London), UTC, or an offset (+HH:MM)")]
pub struct ParseZoneError(String);

impl PbxZone {
    /// UTC.
    pub const UTC: Self = Self::Fixed(match FixedOffset::east_opt(0) {
        Some(o) => o,
        None => unreachable!(),
    });

    /// A fixed offset of `secs` seconds east of UTC; UTC when it is not within a day.
    pub fn fixed_secs(secs: i32) -> Self {
        FixedOffset::east_opt(secs).map_or(Self::UTC, Self::Fixed)
    }

    /// The UTC instant of the PBX's local time `local` (gaps and overlaps as the module docs
    /// say).
    pub fn to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let offset = self.offset_of_local(local);
        let utc = local
            .checked_sub_signed(TimeDelta::seconds(i64::from(offset.local_minus_utc())))
            .unwrap_or(local);
        utc.and_utc()
    }

    /// The PBX's local time at the UTC instant `utc` (no ambiguity this way round).
    pub fn to_local(&self, utc: NaiveDateTime) -> NaiveDateTime {
        let offset = match self {
            Self::Fixed(o) => *o,
            Self::Named(tz) => tz.offset_from_utc_datetime(&utc).fix(),
        };
        utc.checked_add_signed(TimeDelta::seconds(i64::from(offset.local_minus_utc())))
            .unwrap_or(utc)
    }

    /// The offset from UTC the PBX's clock had at its local time `local` (gaps and overlaps as
    /// the module docs say).
    pub fn offset_of_local(&self, local: NaiveDateTime) -> FixedOffset {
        match self {
            Self::Fixed(o) => *o,
            Self::Named(tz) => match tz.offset_from_local_datetime(&local) {
                LocalResult::Single(o) => o.fix(),
                // Both are valid: the earlier instant has the larger offset.
                LocalResult::Ambiguous(a, b) => {
                    let (a, b) = (a.fix(), b.fix());
                    if a.local_minus_utc() >= b.local_minus_utc() {
                        a
                    } else {
                        b
                    }
                }
                // A gap: the offset in force before it (a day earlier; no zone changes its
                // offset twice within a day around a gap).
                LocalResult::None => {
                    let before = local
                        .checked_sub_signed(TimeDelta::days(1))
                        .unwrap_or(local);
                    tz.offset_from_utc_datetime(&before).fix()
                }
            },
        }
    }

    /// The UTC start and end of a call that started at `start` and ended at `end` (PBX local
    /// times), and the offset at its start as `+HH:MM`: the values of [`Call::start_utc`],
    /// [`Call::end_utc`] and [`Call::utc_offset`].
    ///
    /// The end is the start plus the call's length (`end - start`), not `end` read in the zone
    /// again: the sources give a call's end as its start plus its seconds (SMDR) or in the
    /// offset of its start, so a call across a daylight-saving change keeps its true length.
    pub fn call_times(
        &self,
        start: NaiveDateTime,
        end: NaiveDateTime,
    ) -> (
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<CompactString>,
    ) {
        let start_utc = self.to_utc(start);
        let end_utc = start_utc
            .checked_add_signed(end.signed_duration_since(start))
            .unwrap_or(start_utc);
        (
            Some(start_utc),
            Some(end_utc),
            Some(self.offset_of_local(start).to_compact_string()),
        )
    }
}

impl FromStr for PbxZone {
    type Err = ParseZoneError;

    /// An IANA name (`Europe/London`, `America/New_York`), `UTC` or `Z`, or a fixed offset
    /// (`+01:00`, `-0500`, `+01`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("z") {
            return Ok(Self::UTC);
        }
        if t.starts_with(['+', '-']) {
            return parse_offset(t)
                .map(Self::Fixed)
                .ok_or_else(|| ParseZoneError(s.to_owned()));
        }
        t.parse::<chrono_tz::Tz>()
            .map(Self::Named)
            .map_err(|_| ParseZoneError(s.to_owned()))
    }
}

/// `+HH:MM`, `+HHMM` or `+HH` (or `-`), under 24 hours.
fn parse_offset(t: &str) -> Option<FixedOffset> {
    let (sign, rest) = t.split_at_checked(1)?;
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let hours: i32 = digits.get(..2)?.parse().ok()?;
    let minutes: i32 = digits
        .get(2..)
        .filter(|m| !m.is_empty())
        .map_or(Some(0), |m| m.parse().ok())?;
    if minutes >= 60 {
        return None;
    }
    let secs = (hours * 60 + minutes) * 60;
    FixedOffset::east_opt(if sign == "-" { -secs } else { secs })
}

impl fmt::Display for PbxZone {
    /// The IANA name, `UTC`, or the offset (`+01:00`): text [`PbxZone::from_str`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(o) if o.local_minus_utc() == 0 => f.write_str("UTC"),
            Self::Fixed(o) => write!(f, "{o}"),
            Self::Named(tz) => f.write_str(tz.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn utc(zone: &str, local: &str) -> String {
        let z: PbxZone = zone.parse().unwrap();
        z.to_utc(t(local))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    #[test]
    fn reads_names_offsets_and_utc() {
        assert_eq!("UTC".parse::<PbxZone>().unwrap(), PbxZone::UTC);
        assert_eq!(" z ".parse::<PbxZone>().unwrap(), PbxZone::UTC);
        assert_eq!(PbxZone::default(), PbxZone::UTC);
        for (text, secs) in [("+01:00", 3600), ("-0530", -19_800), ("+14", 50_400)] {
            assert_eq!(text.parse::<PbxZone>().unwrap(), PbxZone::fixed_secs(secs));
        }
        let london: PbxZone = "Europe/London".parse().unwrap();
        assert_eq!(london.to_string(), "Europe/London");
        assert_eq!(PbxZone::fixed_secs(-18_000).to_string(), "-05:00");
        assert_eq!(PbxZone::UTC.to_string(), "UTC");
        for bad in ["", "Mars/Olympus", "+25:00", "+01:75", "+1", "+01:0x", "-"] {
            assert!(bad.parse::<PbxZone>().is_err(), "{bad:?}");
        }
        assert_eq!(PbxZone::fixed_secs(86_400), PbxZone::UTC);
    }

    #[test]
    fn local_times_go_to_utc_with_the_offset_of_their_day() {
        assert_eq!(
            utc("Europe/London", "2017-01-10 12:00:00"),
            "2017-01-10T12:00:00Z"
        );
        assert_eq!(
            utc("Europe/London", "2017-05-26 12:54:46"),
            "2017-05-26T11:54:46Z"
        );
        assert_eq!(
            utc("America/New_York", "2017-05-26 12:54:46"),
            "2017-05-26T16:54:46Z"
        );
        assert_eq!(utc("+05:30", "2017-05-26 12:00:00"), "2017-05-26T06:30:00Z");
        assert_eq!(utc("UTC", "2017-05-26 12:00:00"), "2017-05-26T12:00:00Z");
    }

    #[test]
    fn an_overlap_takes_the_earlier_instant() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        assert_eq!(
            utc("Europe/Berlin", "2026-10-25 02:30:00"),
            "2026-10-25T00:30:00Z"
        );
        let z: PbxZone = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            z.offset_of_local(t("2026-10-25 02:30:00")).to_string(),
            "+02:00"
        );
        // Either side of the overlap is unambiguous.
        assert_eq!(
            utc("Europe/Berlin", "2026-10-25 01:59:59"),
            "2026-10-24T23:59:59Z"
        );
        assert_eq!(
            utc("Europe/Berlin", "2026-10-25 03:00:00"),
            "2026-10-25T02:00:00Z"
        );
    }

    #[test]
    fn a_gap_takes_the_offset_before_it() {
        // Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 never happens.
        assert_eq!(
            utc("Europe/Berlin", "2026-03-29 02:30:00"),
            "2026-03-29T01:30:00Z"
        );
        assert_eq!(
            utc("Europe/Berlin", "2026-03-29 01:59:59"),
            "2026-03-29T00:59:59Z"
        );
        assert_eq!(
            utc("Europe/Berlin", "2026-03-29 03:00:00"),
            "2026-03-29T01:00:00Z"
        );
        // America/New_York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
        assert_eq!(
            utc("America/New_York", "2026-03-08 02:15:00"),
            "2026-03-08T07:15:00Z"
        );
        // Lord Howe moves by half an hour.
        assert_eq!(
            utc("Australia/Lord_Howe", "2026-10-04 02:10:00"),
            "2026-10-03T15:40:00Z"
        );
    }

    #[test]
    fn call_times_give_both_ends_and_the_start_offset() {
        let z: PbxZone = "Europe/London".parse().unwrap();
        let (s, e, off) = z.call_times(t("2017-05-26 23:59:00"), t("2017-05-27 00:01:00"));
        assert_eq!(s.unwrap().to_rfc3339(), "2017-05-26T22:59:00+00:00");
        assert_eq!(e.unwrap().to_rfc3339(), "2017-05-26T23:01:00+00:00");
        assert_eq!(off.unwrap(), "+01:00");
        // Across the autumn change: 00:50 BST plus two hours is 01:50 GMT (01:50Z), though
        // the start plus the seconds reads 02:50 on the local clock.
        let (s, e, _) = z.call_times(t("2026-10-25 00:50:00"), t("2026-10-25 02:50:00"));
        assert_eq!(s.unwrap().to_rfc3339(), "2026-10-24T23:50:00+00:00");
        assert_eq!(e.unwrap().to_rfc3339(), "2026-10-25T01:50:00+00:00");
        let extreme = PbxZone::fixed_secs(3600).call_times(NaiveDateTime::MIN, NaiveDateTime::MAX);
        assert!(extreme.0.is_some() && extreme.1.is_some());
    }
}
