//! Splitting a line into fields (SIMD comma search) and the nom grammars of the typed fields.

use std::net::IpAddr;

use chrono::{NaiveDate, NaiveDateTime};
use nom::branch::alt;
use nom::bytes::complete::{tag, take_while_m_n, take_while1};
use nom::character::complete::{i64 as nom_i64, satisfy, u32 as nom_u32, u64 as nom_u64};
use nom::combinator::{all_consuming, map_opt, value};
use nom::{IResult, Parser};

use crate::{Device, DeviceKind, Direction, Field, ParseError, ParseErrorKind, SmdrRecord, Text};

/// Fields every record has.
pub const MIN_FIELDS: usize = 17;
/// Fields IP Office has defined so far; more are kept in [`SmdrRecord::extra`].
pub const KNOWN_FIELDS: usize = 37;

/// Strips the line terminator (`\n`, `\r\n`) and trailing spaces or tabs.
pub(crate) fn trim_line(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., last] = line {
        if matches!(last, b'\n' | b'\r' | b' ' | b'\t') {
            line = rest;
        } else {
            break;
        }
    }
    line
}

/// The comma-separated fields of one line, as positions, with no copying.
struct Fields<'a> {
    line: &'a [u8],
    /// Start offset of each field; `ends[i]` is the offset of the comma (or line end) after it.
    starts: [u32; KNOWN_FIELDS],
    ends: [u32; KNOWN_FIELDS],
    count: usize,
    extra: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    fn split(line: &'a [u8]) -> Self {
        let mut starts = [0u32; KNOWN_FIELDS];
        let mut ends = [0u32; KNOWN_FIELDS];
        let mut count = 0usize;
        let mut start = 0usize;
        let mut extra = None;
        // Lines are bounded by the framer, and `parse_record` refuses anything over u32 range,
        // so the casts below cannot truncate.
        for comma in memchr::memchr_iter(b',', line) {
            if let (Some(s), Some(e)) = (starts.get_mut(count), ends.get_mut(count)) {
                *s = start as u32;
                *e = comma as u32;
            }
            count += 1;
            start = comma + 1;
            if count == KNOWN_FIELDS {
                extra = Some(line.get(start..).unwrap_or_default());
                break;
            }
        }
        if count < KNOWN_FIELDS {
            if let (Some(s), Some(e)) = (starts.get_mut(count), ends.get_mut(count)) {
                *s = start as u32;
                *e = line.len() as u32;
            }
            count += 1;
        }
        Self {
            line,
            starts,
            ends,
            count,
            extra,
        }
    }

    /// The bytes of field `f` and its offset, or `None` past the end of the line.
    #[inline]
    fn get(&self, f: Field) -> Option<(&'a [u8], usize)> {
        let i = usize::from(f.number()).checked_sub(1)?;
        if i >= self.count {
            return None;
        }
        let s = *self.starts.get(i)? as usize;
        let e = *self.ends.get(i)? as usize;
        Some((self.line.get(s..e)?, s))
    }

    fn required(&self, f: Field) -> (&'a [u8], usize) {
        // `parse_record` checks `count >= MIN_FIELDS` before asking for required fields.
        self.get(f).unwrap_or((&[], self.line.len()))
    }
}

fn invalid(field: Field, offset: usize, expected: &'static str) -> ParseError {
    ParseError {
        offset,
        kind: ParseErrorKind::InvalidField { field, expected },
    }
}

/// Runs `p` over the whole field, mapping a failure to [`ParseErrorKind::InvalidField`].
#[inline]
fn typed<'a, T>(
    field: Field,
    (bytes, offset): (&'a [u8], usize),
    expected: &'static str,
    p: impl Parser<&'a [u8], Output = T, Error = nom::error::Error<&'a [u8]>>,
) -> Result<T, ParseError> {
    match all_consuming(p).parse(bytes) {
        Ok((_, v)) => Ok(v),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
            let at = offset.saturating_add(bytes.len().saturating_sub(e.input.len()));
            Err(invalid(field, at, expected))
        }
        Err(nom::Err::Incomplete(_)) => Err(invalid(field, offset, expected)),
    }
}

/// Like [`typed`] for a field that may be empty or absent.
#[inline]
fn opt_typed<'a, T>(
    fields: &Fields<'a>,
    field: Field,
    expected: &'static str,
    p: impl Parser<&'a [u8], Output = T, Error = nom::error::Error<&'a [u8]>>,
) -> Result<Option<T>, ParseError> {
    match fields.get(field) {
        Some((&[], _)) | None => Ok(None),
        Some(f) => typed(field, f, expected, p).map(Some),
    }
}

fn opt_text<'a>(fields: &Fields<'a>, field: Field) -> Option<Text<'a>> {
    match fields.get(field) {
        Some((b, _)) if !b.is_empty() => Some(Text::new(b)),
        _ => None,
    }
}

fn digits<const N: usize>(i: &[u8]) -> IResult<&[u8], u32> {
    let (i, d) = take_while_m_n(N, N, |b: u8| b.is_ascii_digit()).parse(i)?;
    Ok((
        i,
        d.iter().fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0')),
    ))
}

/// `YYYY/MM/DD HH:MM:SS`, validated as a real date and time.
pub(crate) fn timestamp(i: &[u8]) -> IResult<&[u8], NaiveDateTime> {
    map_opt(
        (
            digits::<4>,
            tag(&b"/"[..]),
            digits::<2>,
            tag(&b"/"[..]),
            digits::<2>,
            tag(&b" "[..]),
            digits::<2>,
            tag(&b":"[..]),
            digits::<2>,
            tag(&b":"[..]),
            digits::<2>,
        ),
        |(y, _, mo, _, d, _, h, _, mi, _, s)| {
            NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, d)?.and_hms_opt(h, mi, s)
        },
    )
    .parse(i)
}

/// `HH:MM:SS` (hours may have more digits) as seconds.
fn hms(i: &[u8]) -> IResult<&[u8], u32> {
    map_opt(
        (
            take_while_m_n(1, 6, |b: u8| b.is_ascii_digit()),
            tag(&b":"[..]),
            digits::<2>,
            tag(&b":"[..]),
            digits::<2>,
        ),
        |(h, _, m, _, s): (&[u8], _, u32, _, u32)| {
            if m >= 60 || s >= 60 {
                return None;
            }
            let h = h.iter().fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
            h.checked_mul(3600)?.checked_add(m * 60 + s)
        },
    )
    .parse(i)
}

fn flag(i: &[u8]) -> IResult<&[u8], bool> {
    alt((value(false, tag(&b"0"[..])), value(true, tag(&b"1"[..])))).parse(i)
}

fn direction(i: &[u8]) -> IResult<&[u8], Direction> {
    alt((
        value(Direction::Inbound, tag(&b"I"[..])),
        value(Direction::Outbound, tag(&b"O"[..])),
    ))
    .parse(i)
}

fn device(i: &[u8]) -> IResult<&[u8], Device> {
    let (i, k) = satisfy(|c| c.is_ascii_uppercase()).parse(i)?;
    let (i, number) = nom_i64(i)?;
    // `satisfy` only accepts ASCII uppercase, which `from_byte` maps to a kind.
    let kind = DeviceKind::from_byte(k as u8).unwrap_or(DeviceKind::Other(k as u8));
    Ok((i, Device { kind, number }))
}

fn ip(i: &[u8]) -> IResult<&[u8], IpAddr> {
    map_opt(
        take_while1(|b: u8| b.is_ascii_hexdigit() || b == b'.' || b == b':'),
        |b: &[u8]| std::str::from_utf8(b).ok()?.parse().ok(),
    )
    .parse(i)
}

const E_TIMESTAMP: &str = "a date and time as YYYY/MM/DD HH:MM:SS";
const E_HMS: &str = "a duration as HH:MM:SS";
const E_SECONDS: &str = "a whole number of seconds";
const E_FLAG: &str = "0 or 1";
const E_DIRECTION: &str = "I or O";
const E_CALL_ID: &str = "a call id (digits)";
const E_DEVICE: &str = "a device: a letter and a number, such as E232 or T9001";
const E_NUMBER: &str = "a whole number";
const E_IP: &str = "an IP address";

/// Parses one record from a line (with or without its `\r\n`).
pub(crate) fn parse_record(raw: &[u8]) -> Result<SmdrRecord<'_>, ParseError> {
    let line = trim_line(raw);
    if line.is_empty() {
        return Err(ParseError {
            offset: 0,
            kind: ParseErrorKind::EmptyLine,
        });
    }
    if u32::try_from(line.len()).is_err() {
        return Err(ParseError {
            offset: 0,
            kind: ParseErrorKind::LineTooLong {
                max: u32::MAX as usize,
            },
        });
    }
    let f = Fields::split(line);
    if f.count < MIN_FIELDS {
        return Err(ParseError {
            offset: line.len(),
            kind: ParseErrorKind::TooFewFields { found: f.count },
        });
    }
    let text = |field| Text::new(f.required(field).0);
    let dev = |field| -> Result<Option<Device>, ParseError> {
        let (b, off) = f.required(field);
        if b.is_empty() {
            Ok(None)
        } else {
            typed(field, (b, off), E_DEVICE, device).map(Some)
        }
    };
    Ok(SmdrRecord {
        call_start: typed(
            Field::CallStart,
            f.required(Field::CallStart),
            E_TIMESTAMP,
            timestamp,
        )?,
        connected_time: typed(
            Field::ConnectedTime,
            f.required(Field::ConnectedTime),
            E_HMS,
            hms,
        )?,
        ring_time: typed(
            Field::RingTime,
            f.required(Field::RingTime),
            E_SECONDS,
            nom_u32,
        )?,
        caller: text(Field::Caller),
        direction: typed(
            Field::Direction,
            f.required(Field::Direction),
            E_DIRECTION,
            direction,
        )?,
        called_number: text(Field::CalledNumber),
        dialled_number: text(Field::DialledNumber),
        account: text(Field::Account),
        is_internal: typed(
            Field::IsInternal,
            f.required(Field::IsInternal),
            E_FLAG,
            flag,
        )?,
        call_id: typed(Field::CallId, f.required(Field::CallId), E_CALL_ID, nom_u64)?,
        continuation: typed(
            Field::Continuation,
            f.required(Field::Continuation),
            E_FLAG,
            flag,
        )?,
        party1_device: dev(Field::Party1Device)?,
        party1_name: text(Field::Party1Name),
        party2_device: dev(Field::Party2Device)?,
        party2_name: text(Field::Party2Name),
        hold_time: typed(
            Field::HoldTime,
            f.required(Field::HoldTime),
            E_SECONDS,
            nom_u32,
        )?,
        park_time: typed(
            Field::ParkTime,
            f.required(Field::ParkTime),
            E_SECONDS,
            nom_u32,
        )?,
        auth_valid: opt_text(&f, Field::AuthValid),
        auth_code: opt_text(&f, Field::AuthCode),
        user_charged: opt_text(&f, Field::UserCharged),
        call_charge: opt_text(&f, Field::CallCharge),
        currency: opt_text(&f, Field::Currency),
        amount_at_last_user_change: opt_text(&f, Field::AmountAtLastUserChange),
        call_units: opt_typed(&f, Field::CallUnits, E_NUMBER, nom_u32)?,
        units_at_last_user_change: opt_typed(&f, Field::UnitsAtLastUserChange, E_NUMBER, nom_u32)?,
        cost_per_unit: opt_typed(&f, Field::CostPerUnit, E_NUMBER, nom_u32)?,
        mark_up: opt_typed(&f, Field::MarkUp, E_NUMBER, nom_u32)?,
        external_targeting_cause: opt_text(&f, Field::ExternalTargetingCause),
        external_targeter_id: opt_text(&f, Field::ExternalTargeterId),
        external_targeted_number: opt_text(&f, Field::ExternalTargetedNumber),
        calling_party_server_ip: opt_typed(&f, Field::CallingPartyServerIp, E_IP, ip)?,
        unique_call_id_caller: opt_typed(&f, Field::UniqueCallIdCaller, E_NUMBER, nom_u64)?,
        called_party_server_ip: opt_typed(&f, Field::CalledPartyServerIp, E_IP, ip)?,
        unique_call_id_called: opt_typed(&f, Field::UniqueCallIdCalled, E_NUMBER, nom_u64)?,
        smdr_record_time: opt_typed(&f, Field::SmdrRecordTime, E_TIMESTAMP, timestamp)?,
        caller_consent_directive: opt_text(&f, Field::CallerConsentDirective),
        calling_number_verification: opt_text(&f, Field::CallingNumberVerification),
        extra: f.extra.map(Text::new),
        // `count` is at most KNOWN_FIELDS (37).
        field_count: f.count as u8,
    })
}

impl Device {
    /// Parses a device as written in a record (`E232`, `T9001`, `V-1610600575`).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        all_consuming(device).parse(bytes).ok().map(|(_, d)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hms_parses_and_rejects() {
        assert_eq!(hms(b"00:00:17").unwrap().1, 17);
        assert_eq!(hms(b"05:15:59").unwrap().1, 5 * 3600 + 15 * 60 + 59);
        assert_eq!(hms(b"123:00:00").unwrap().1, 123 * 3600);
        assert!(all_consuming(hms).parse(&b"00:60:00"[..]).is_err());
        assert!(all_consuming(hms).parse(&b"00:00:7"[..]).is_err());
        assert!(all_consuming(hms).parse(&b"0000:17"[..]).is_err());
    }

    #[test]
    fn timestamp_checks_calendar() {
        assert!(timestamp(b"2017/05/26 00:00:57").is_ok());
        assert!(timestamp(b"2017/02/30 00:00:57").is_err());
        assert!(timestamp(b"2017/05/26 24:00:00").is_err());
        assert!(timestamp(b"2017-05-26 00:00:57").is_err());
    }

    #[test]
    fn devices_of_every_shape() {
        for (s, kind, n) in [
            ("E232", DeviceKind::Extension, 232),
            ("T9001", DeviceKind::Trunk, 9001),
            ("V9542", DeviceKind::Voice, 9542),
            ("V-1610600575", DeviceKind::Voice, -1_610_600_575),
            ("V8000", DeviceKind::Voice, 8000),
            ("X12", DeviceKind::Other(b'X'), 12),
        ] {
            let d = all_consuming(device).parse(s.as_bytes()).unwrap().1;
            assert_eq!((d.kind, d.number), (kind, n), "{s}");
            assert_eq!(d.to_string(), s);
        }
        assert!(all_consuming(device).parse(&b"232"[..]).is_err());
        assert!(all_consuming(device).parse(&b"e232"[..]).is_err());
        assert!(all_consuming(device).parse(&b"E"[..]).is_err());
    }

    #[test]
    fn splits_fields_and_keeps_extra() {
        let line: Vec<u8> = (1..=40)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes();
        let f = Fields::split(&line);
        assert_eq!(f.count, 37);
        assert_eq!(f.get(Field::CallStart).unwrap().0, b"1");
        assert_eq!(f.get(Field::CallingNumberVerification).unwrap().0, b"37");
        assert_eq!(f.extra.unwrap(), b"38,39,40");
        let f = Fields::split(b"a,,c");
        assert_eq!(f.count, 3);
        assert_eq!(f.get(Field::RingTime).unwrap().0, b"c");
        assert!(f.get(Field::Caller).is_none());
    }
}
