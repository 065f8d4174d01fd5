//! Time fields: epoch timestamps (`Timestamp: 1795355692.479973`) and the local date-times of
//! CEL and Cdr events (`2026-11-22 13:54:52`). Parsed, never read from a clock.

use std::fmt;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use nom::bytes::{tag, take_while_m_n};
use nom::combinator::{all_consuming, map_opt, opt};
use nom::sequence::preceded;
use nom::{IResult, Parser};

/// An epoch time with microseconds, as AMI writes it (`Timestamp:` with `timestampevents = yes`,
/// the epoch part of a `Uniqueid`, CEL `EventTime` when Asterisk is set to write epochs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01 00:00:00 UTC.
    pub secs: u64,
    /// Microseconds (0 to 999,999).
    pub micros: u32,
}

impl Timestamp {
    /// Parses `SECONDS[.FRACTION]` (1 to 20 digits, then up to 6 fraction digits; more are
    /// cut off, not rounded).
    pub fn parse(b: &[u8]) -> Option<Self> {
        all_consuming(timestamp)
            .parse_complete(b)
            .ok()
            .map(|(_, t)| t)
    }

    /// The time since the epoch.
    pub fn since_epoch(&self) -> Duration {
        Duration::new(self.secs, self.micros.saturating_mul(1000))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.secs, self.micros)
    }
}

fn digits_value(d: &[u8]) -> u64 {
    d.iter().fold(0u64, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(b.wrapping_sub(b'0')))
    })
}

fn timestamp(i: &[u8]) -> IResult<&[u8], Timestamp> {
    map_opt(
        (
            take_while_m_n(1, 20, |b: u8| b.is_ascii_digit()),
            opt(preceded(
                tag(&b"."[..]),
                take_while_m_n(1, 64, |b: u8| b.is_ascii_digit()),
            )),
        ),
        |(s, frac): (&[u8], Option<&[u8]>)| {
            let secs = u64::try_from(
                s.iter()
                    .try_fold(0u128, |acc, b| Some(acc * 10 + u128::from(b - b'0')))?,
            )
            .ok()?;
            let frac = frac.unwrap_or_default();
            let six = frac.get(..6).unwrap_or(frac);
            let scale = 10u64.pow(6u32.saturating_sub(six.len() as u32));
            let micros = u32::try_from(digits_value(six).saturating_mul(scale)).ok()?;
            Some(Timestamp { secs, micros })
        },
    )
    .parse_complete(i)
}

fn num<const N: usize>(i: &[u8]) -> IResult<&[u8], u32> {
    let (i, d) = take_while_m_n(N, N, |b: u8| b.is_ascii_digit()).parse_complete(i)?;
    Ok((i, digits_value(d) as u32))
}

/// `YYYY-MM-DD HH:MM:SS`, validated as a real date and time.
fn datetime(i: &[u8]) -> IResult<&[u8], NaiveDateTime> {
    map_opt(
        (
            num::<4>,
            tag(&b"-"[..]),
            num::<2>,
            tag(&b"-"[..]),
            num::<2>,
            tag(&b" "[..]),
            num::<2>,
            tag(&b":"[..]),
            num::<2>,
            tag(&b":"[..]),
            num::<2>,
        ),
        |(y, _, mo, _, d, _, h, _, mi, _, s)| {
            NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, d)?.and_hms_opt(h, mi, s)
        },
    )
    .parse_complete(i)
}

/// Parses the local date-time Asterisk writes in CEL `EventTime` and Cdr `StartTime`,
/// `AnswerTime` and `EndTime`: `YYYY-MM-DD HH:MM:SS`. `None` for anything else (an empty
/// `AnswerTime` of an unanswered call included). The time zone is the PBX's.
pub fn parse_local_datetime(b: &[u8]) -> Option<NaiveDateTime> {
    all_consuming(datetime)
        .parse_complete(b)
        .ok()
        .map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(
            Timestamp::parse(b"1795355692.479973"),
            Some(Timestamp {
                secs: 1_795_355_692,
                micros: 479_973
            })
        );
        assert_eq!(
            Timestamp::parse(b"1409169929.4"),
            Some(Timestamp {
                secs: 1_409_169_929,
                micros: 400_000
            })
        );
        assert_eq!(
            Timestamp::parse(b"12.12345678"),
            Some(Timestamp {
                secs: 12,
                micros: 123_456
            })
        );
        assert_eq!(Timestamp::parse(b"7").map(|t| t.micros), Some(0));
        for bad in [
            &b""[..],
            b"1.",
            b".5",
            b"1.2.3",
            b"-1",
            b"1 ",
            b"99999999999999999999",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad:?}");
        }
        let t = Timestamp::parse(b"1.000001").unwrap();
        assert_eq!(t.to_string(), "1.000001");
        assert_eq!(t.since_epoch(), Duration::new(1, 1000));
    }

    #[test]
    fn local_datetimes() {
        let t = parse_local_datetime(b"2026-11-22 13:54:52").unwrap();
        assert_eq!(t.to_string(), "2026-11-22 13:54:52");
        for bad in [
            &b""[..],
            b"2026-11-22",
            b"2026-02-30 00:00:00",
            b"2026-11-22 13:54:52 ",
        ] {
            assert_eq!(parse_local_datetime(bad), None, "{bad:?}");
        }
    }
}
