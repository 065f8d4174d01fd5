//! Splitting a line into fields (a SWAR comma search over `u64` words) and the typed fields: the
//! nom grammars that define them, and fast paths for the shapes IP Office writes, checked
//! against the grammars.

use std::net::{IpAddr, Ipv4Addr};

use chrono::{NaiveDate, NaiveDateTime};
use nom::branch::alt;
use nom::bytes::complete::{tag, take_while_m_n, take_while1};
use nom::character::complete::{i64 as nom_i64, satisfy, u32 as nom_u32, u64 as nom_u64};
use nom::combinator::{all_consuming, map_opt, value};
use nom::{IResult, Parser};

use crate::{
    Device, DeviceKind, Direction, Field, ParseError, ParseErrorKind, Parsed, SmdrRecord, Text,
};

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

/// Every byte of a `u64` set to `,`.
const COMMAS: u64 = u64::from_ne_bytes([b','; 8]);
/// The low seven bits of every byte.
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// SWAR: the high bit of byte `k` of the result is set exactly when byte `k` of `word` is a comma.
///
/// Exact (no false positives from borrows, unlike the `(x - 0x01..) & !x & 0x80..` test): the
/// addition cannot carry out of a byte, because `(b & 0x7f) + 0x7f <= 0xfe`.
#[inline(always)]
const fn comma_mask(word: u64) -> u64 {
    let x = word ^ COMMAS;
    // High bit of each byte set when the byte of `x` is non-zero, that is not a comma.
    let not_comma = ((x & LOW7).wrapping_add(LOW7)) | x;
    !not_comma & !LOW7
}

/// Room for the comma positions of [`KNOWN_FIELDS`] fields and the up to 8 more that the word
/// holding the last of them may add (a power of two, so an index taken modulo it needs no check).
const SLOTS: usize = 64;

/// The comma-separated fields of one line, as positions, with no copying.
struct Fields<'a> {
    line: &'a [u8],
    /// `ends[i]` is the offset of the comma (or line end) after field `i + 1`; field `i + 1`
    /// starts one byte after `ends[i - 1]` (field 1 at 0). Entries from `count` on are scratch.
    ends: [u32; SLOTS],
    count: usize,
    extra: Option<&'a [u8]>,
}

/// Appends the offsets of the commas flagged in `mask` (a [`comma_mask`] of the word at offset
/// `base`). No bounds or limit test per comma: callers stop after the word that reaches
/// [`KNOWN_FIELDS`] commas, so `commas` stays below `KNOWN_FIELDS + 8 <= SLOTS`.
#[inline(always)]
fn push_commas(ends: &mut [u32; SLOTS], commas: &mut usize, mut mask: u64, base: u32) {
    while mask != 0 {
        if let Some(e) = ends.get_mut(*commas % SLOTS) {
            // `trailing_zeros` is at most 63, so this adds a byte index of at most 7.
            *e = base.wrapping_add(mask.trailing_zeros() / 8);
        }
        mask &= mask.wrapping_sub(1);
        *commas = commas.wrapping_add(1);
    }
}

impl<'a> Fields<'a> {
    /// Finds the commas eight bytes at a time (SWAR over `u64` words, one pass, no calls).
    /// `line` is at most `u32::MAX` bytes (`parse_record` checks).
    fn split(line: &'a [u8]) -> Self {
        let mut ends = [0u32; SLOTS];
        let mut commas = 0usize;
        let mut words = line.chunks_exact(8);
        let mut base = 0u32;
        for chunk in &mut words {
            let word = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
            push_commas(&mut ends, &mut commas, comma_mask(word), base);
            if commas >= KNOWN_FIELDS {
                break;
            }
            base = base.wrapping_add(8);
        }
        if commas < KNOWN_FIELDS {
            // The last 0 to 7 bytes, zero-padded (zero is not a comma). Assembled by hand: a
            // `copy_from_slice` of a variable length is a `memcpy` call.
            let word = words
                .remainder()
                .iter()
                .rev()
                .fold(0u64, |w, &b| (w << 8) | u64::from(b));
            push_commas(&mut ends, &mut commas, comma_mask(word), base);
        }
        let (count, extra) = if commas >= KNOWN_FIELDS {
            // The comma closing field 37: what follows it is kept whole.
            let at = ends
                .get(KNOWN_FIELDS - 1)
                .map_or(line.len(), |&e| e as usize);
            (
                KNOWN_FIELDS,
                Some(line.get(at.wrapping_add(1)..).unwrap_or_default()),
            )
        } else {
            // The last field runs to the end of the line.
            if let Some(e) = ends.get_mut(commas) {
                *e = line.len() as u32;
            }
            (commas.wrapping_add(1), None)
        };
        Self {
            line,
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
        let s = match i.checked_sub(1) {
            Some(prev) => (*self.ends.get(prev)? as usize).wrapping_add(1),
            None => 0,
        };
        let e = *self.ends.get(i)? as usize;
        Some((self.line.get(s..e)?, s))
    }

    #[inline]
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

/// The nom parser of a field's grammar (the reference, and the slow path).
type Grammar<T> = for<'i> fn(&'i [u8]) -> IResult<&'i [u8], T>;

/// How a typed field is read: the nom grammar that defines it, a fast path for the shapes IP
/// Office writes, and what the error says.
///
/// The fast path may only return `Some(v)` where the grammar (run over the whole field) gives
/// `v`; on anything else it returns `None` and the grammar decides, so values and errors (field,
/// offset, wording) are exactly the grammar's. The `fast_path_*` tests check this on random input.
struct Typed<T> {
    expected: &'static str,
    fast: fn(&[u8]) -> Option<T>,
    grammar: Grammar<T>,
}

/// Runs the grammar over the whole field, mapping a failure to [`ParseErrorKind::InvalidField`].
#[cold]
#[inline(never)]
fn slow<T>(
    field: Field,
    (bytes, offset): (&[u8], usize),
    expected: &'static str,
    grammar: Grammar<T>,
) -> Result<T, ParseError> {
    match all_consuming(grammar).parse(bytes) {
        Ok((_, v)) => Ok(v),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
            let at = offset.saturating_add(bytes.len().saturating_sub(e.input.len()));
            Err(invalid(field, at, expected))
        }
        Err(nom::Err::Incomplete(_)) => Err(invalid(field, offset, expected)),
    }
}

impl<T> Typed<T> {
    /// Reads field `field` from `(bytes, offset)`; `FAST = false` runs only the grammar.
    #[inline(always)]
    fn read<const FAST: bool>(
        &self,
        field: Field,
        bytes_at: (&[u8], usize),
    ) -> Result<T, ParseError> {
        if FAST {
            if let Some(v) = (self.fast)(bytes_at.0) {
                return Ok(v);
            }
        }
        slow(field, bytes_at, self.expected, self.grammar)
    }

    /// Like [`Typed::read`] for a field that may be empty or absent.
    #[inline(always)]
    fn read_opt<const FAST: bool>(
        &self,
        fields: &Fields<'_>,
        field: Field,
    ) -> Result<Option<T>, ParseError> {
        match fields.get(field) {
            Some((&[], _)) | None => Ok(None),
            Some(f) => self.read::<FAST>(field, f).map(Some),
        }
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

fn u32_grammar(i: &[u8]) -> IResult<&[u8], u32> {
    nom_u32(i)
}

fn u64_grammar(i: &[u8]) -> IResult<&[u8], u64> {
    nom_u64(i)
}

// Fast paths. Each accepts a subset of its grammar's language and returns the grammar's value
// there; everything else (including every error) goes to the grammar.

/// The value of an ASCII digit.
#[inline(always)]
fn digit(c: u8) -> Option<u32> {
    let d = c.wrapping_sub(b'0');
    (d < 10).then_some(u32::from(d))
}

/// Two ASCII digits as a number.
#[inline(always)]
fn two_digits(hi: u8, lo: u8) -> Option<u32> {
    Some(digit(hi)?.wrapping_mul(10).wrapping_add(digit(lo)?))
}

/// 1 to `max` (at most 19) ASCII digits: no sign, so no overflow is possible.
#[inline(always)]
fn fast_decimal(b: &[u8], max: usize) -> Option<u64> {
    if b.is_empty() || b.len() > max {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        Some(acc.wrapping_mul(10).wrapping_add(u64::from(digit(c)?)))
    })
}

/// Fast [`timestamp`]: exactly `DDDD/DD/DD DD:DD:DD`, then the same calendar check.
fn fast_timestamp(b: &[u8]) -> Option<NaiveDateTime> {
    let &[
        y3,
        y2,
        y1,
        y0,
        b'/',
        mo1,
        mo0,
        b'/',
        d1,
        d0,
        b' ',
        h1,
        h0,
        b':',
        mi1,
        mi0,
        b':',
        s1,
        s0,
    ] = b
    else {
        return None;
    };
    let year = two_digits(y3, y2)?
        .wrapping_mul(100)
        .wrapping_add(two_digits(y1, y0)?);
    NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        two_digits(mo1, mo0)?,
        two_digits(d1, d0)?,
    )?
    .and_hms_opt(
        two_digits(h1, h0)?,
        two_digits(mi1, mi0)?,
        two_digits(s1, s0)?,
    )
}

/// Fast [`hms`]: exactly `HH:MM:SS` (two-digit hours).
fn fast_hms(b: &[u8]) -> Option<u32> {
    let &[h1, h0, b':', m1, m0, b':', s1, s0] = b else {
        return None;
    };
    let (h, m, s) = (
        two_digits(h1, h0)?,
        two_digits(m1, m0)?,
        two_digits(s1, s0)?,
    );
    if m >= 60 || s >= 60 {
        return None;
    }
    // At most 99 * 3600 + 59 * 60 + 59.
    Some(
        h.wrapping_mul(3600)
            .wrapping_add(m.wrapping_mul(60))
            .wrapping_add(s),
    )
}

/// Fast `u32`: 1 to 9 digits (so it cannot overflow).
fn fast_u32(b: &[u8]) -> Option<u32> {
    u32::try_from(fast_decimal(b, 9)?).ok()
}

/// Fast `u64`: 1 to 19 digits (so it cannot overflow).
fn fast_u64(b: &[u8]) -> Option<u64> {
    fast_decimal(b, 19)
}

fn fast_flag(b: &[u8]) -> Option<bool> {
    match b {
        b"0" => Some(false),
        b"1" => Some(true),
        _ => None,
    }
}

fn fast_direction(b: &[u8]) -> Option<Direction> {
    match b {
        b"I" => Some(Direction::Inbound),
        b"O" => Some(Direction::Outbound),
        _ => None,
    }
}

/// Fast [`device`]: an uppercase letter, an optional `-` and 1 to 18 digits.
fn fast_device(b: &[u8]) -> Option<Device> {
    let (&k, rest) = b.split_first()?;
    let kind = match k {
        b'E' => DeviceKind::Extension,
        b'T' => DeviceKind::Trunk,
        b'V' => DeviceKind::Voice,
        b'A'..=b'Z' => DeviceKind::Other(k),
        _ => return None,
    };
    let (negative, digits) = match rest {
        [b'-', d @ ..] => (true, d),
        d => (false, d),
    };
    // At most 18 digits, so the magnitude fits an `i64` either way.
    let magnitude = i64::try_from(fast_decimal(digits, 18)?).ok()?;
    let number = if negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    Some(Device { kind, number })
}

/// The octet at the start of `b` as the standard library reads it in an IPv4 address (1 to 3
/// digits, no leading zero, at most 255), and its length.
#[inline(always)]
fn leading_octet(b: &[u8]) -> Option<(u8, usize)> {
    let (value, len) = match *b {
        [d2 @ b'1'..=b'9', d1 @ b'0'..=b'9', d0 @ b'0'..=b'9', ..] => (
            digit(d2)?
                .wrapping_mul(100)
                .wrapping_add(two_digits(d1, d0)?),
            3,
        ),
        [d1 @ b'1'..=b'9', d0 @ b'0'..=b'9', ..] => (two_digits(d1, d0)?, 2),
        [d0 @ b'0'..=b'9', ..] => (digit(d0)?, 1),
        _ => return None,
    };
    Some((u8::try_from(value).ok()?, len))
}

/// Fast [`ip`]: dotted-quad IPv4 as the standard library accepts it (four parts of 1 to 3
/// digits, at most 255, no leading zero). IPv6 and anything unusual go to the grammar.
fn fast_ipv4(b: &[u8]) -> Option<IpAddr> {
    let mut octets = [0u8; 4];
    let mut rest = b;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            rest = rest.strip_prefix(b".")?;
        }
        let (value, len) = leading_octet(rest)?;
        *octet = value;
        rest = rest.get(len..)?;
    }
    rest.is_empty()
        .then_some(IpAddr::V4(Ipv4Addr::from(octets)))
}

const TIMESTAMP: Typed<NaiveDateTime> = Typed {
    expected: "a date and time as YYYY/MM/DD HH:MM:SS",
    fast: fast_timestamp,
    grammar: timestamp,
};
const HMS: Typed<u32> = Typed {
    expected: "a duration as HH:MM:SS",
    fast: fast_hms,
    grammar: hms,
};
const SECONDS: Typed<u32> = Typed {
    expected: "a whole number of seconds",
    fast: fast_u32,
    grammar: u32_grammar,
};
const FLAG: Typed<bool> = Typed {
    expected: "0 or 1",
    fast: fast_flag,
    grammar: flag,
};
const DIRECTION: Typed<Direction> = Typed {
    expected: "I or O",
    fast: fast_direction,
    grammar: direction,
};
const CALL_ID: Typed<u64> = Typed {
    expected: "a call id (digits)",
    fast: fast_u64,
    grammar: u64_grammar,
};
const DEVICE: Typed<Device> = Typed {
    expected: "a device: a letter and a number, such as E232 or T9001",
    fast: fast_device,
    grammar: device,
};
const NUMBER: Typed<u32> = Typed {
    expected: "a whole number",
    fast: fast_u32,
    grammar: u32_grammar,
};
const NUMBER64: Typed<u64> = Typed {
    expected: NUMBER.expected,
    fast: fast_u64,
    grammar: u64_grammar,
};
const IP: Typed<IpAddr> = Typed {
    expected: "an IP address",
    fast: fast_ipv4,
    grammar: ip,
};

/// Parses one record from a line (with or without its `\r\n`).
///
/// Never inlined: merged into a caller's loop, the record building gets worse code (measured
/// about 10% slower in the framer bench).
#[inline(never)]
pub(crate) fn parse_record(raw: &[u8]) -> Result<SmdrRecord<'_>, ParseError> {
    parse_record_with::<true, _>(raw, |r| r)
}

/// [`parse_record`] for [`crate::parse_smdr`]: the record comes wrapped in
/// [`Parsed::Complete`] and error offsets are counted from `base`, so that the record (some 600
/// bytes) is built where the caller returns it instead of being copied there. Never inlined,
/// as [`parse_record`].
#[inline(never)]
pub(crate) fn parse_complete(
    raw: &[u8],
    base: usize,
    consumed: usize,
) -> Result<Parsed<SmdrRecord<'_>>, ParseError> {
    match parse_record_with::<true, _>(raw, |value| Parsed::Complete { value, consumed }) {
        Ok(parsed) => Ok(parsed),
        Err(e) => Err(e.with_base(base)),
    }
}

/// [`parse_record`]; with `FAST = false`, every typed field goes through its nom grammar only
/// (the reference the tests compare the fast paths with).
#[inline(always)]
fn parse_record_with<'a, const FAST: bool, W>(
    raw: &'a [u8],
    wrap: impl FnOnce(SmdrRecord<'a>) -> W,
) -> Result<W, ParseError> {
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
    let req = |field| f.required(field);
    let dev = |field| -> Result<Option<Device>, ParseError> {
        match f.required(field) {
            (&[], _) => Ok(None),
            b => DEVICE.read::<FAST>(field, b).map(Some),
        }
    };
    // Fields are read in wire order, so the first bad field is the one reported.
    Ok(wrap(SmdrRecord {
        call_start: TIMESTAMP.read::<FAST>(Field::CallStart, req(Field::CallStart))?,
        connected_time: HMS.read::<FAST>(Field::ConnectedTime, req(Field::ConnectedTime))?,
        ring_time: SECONDS.read::<FAST>(Field::RingTime, req(Field::RingTime))?,
        caller: text(Field::Caller),
        direction: DIRECTION.read::<FAST>(Field::Direction, req(Field::Direction))?,
        called_number: text(Field::CalledNumber),
        dialled_number: text(Field::DialledNumber),
        account: text(Field::Account),
        is_internal: FLAG.read::<FAST>(Field::IsInternal, req(Field::IsInternal))?,
        call_id: CALL_ID.read::<FAST>(Field::CallId, req(Field::CallId))?,
        continuation: FLAG.read::<FAST>(Field::Continuation, req(Field::Continuation))?,
        party1_device: dev(Field::Party1Device)?,
        party1_name: text(Field::Party1Name),
        party2_device: dev(Field::Party2Device)?,
        party2_name: text(Field::Party2Name),
        hold_time: SECONDS.read::<FAST>(Field::HoldTime, req(Field::HoldTime))?,
        park_time: SECONDS.read::<FAST>(Field::ParkTime, req(Field::ParkTime))?,
        auth_valid: opt_text(&f, Field::AuthValid),
        auth_code: opt_text(&f, Field::AuthCode),
        user_charged: opt_text(&f, Field::UserCharged),
        call_charge: opt_text(&f, Field::CallCharge),
        currency: opt_text(&f, Field::Currency),
        amount_at_last_user_change: opt_text(&f, Field::AmountAtLastUserChange),
        call_units: NUMBER.read_opt::<FAST>(&f, Field::CallUnits)?,
        units_at_last_user_change: NUMBER.read_opt::<FAST>(&f, Field::UnitsAtLastUserChange)?,
        cost_per_unit: NUMBER.read_opt::<FAST>(&f, Field::CostPerUnit)?,
        mark_up: NUMBER.read_opt::<FAST>(&f, Field::MarkUp)?,
        external_targeting_cause: opt_text(&f, Field::ExternalTargetingCause),
        external_targeter_id: opt_text(&f, Field::ExternalTargeterId),
        external_targeted_number: opt_text(&f, Field::ExternalTargetedNumber),
        calling_party_server_ip: IP.read_opt::<FAST>(&f, Field::CallingPartyServerIp)?,
        unique_call_id_caller: NUMBER64.read_opt::<FAST>(&f, Field::UniqueCallIdCaller)?,
        called_party_server_ip: IP.read_opt::<FAST>(&f, Field::CalledPartyServerIp)?,
        unique_call_id_called: NUMBER64.read_opt::<FAST>(&f, Field::UniqueCallIdCalled)?,
        smdr_record_time: TIMESTAMP.read_opt::<FAST>(&f, Field::SmdrRecordTime)?,
        caller_consent_directive: opt_text(&f, Field::CallerConsentDirective),
        calling_number_verification: opt_text(&f, Field::CallingNumberVerification),
        extra: f.extra.map(Text::new),
        // `count` is at most KNOWN_FIELDS (37).
        field_count: f.count as u8,
    }))
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

    // The fast paths against the grammars, and the SWAR split against a plain memchr split.

    use proptest::prelude::*;

    /// The split as it was before the SWAR scan: memchr for every comma.
    fn reference_split(line: &[u8]) -> (Vec<&[u8]>, Option<&[u8]>) {
        let mut fields = Vec::new();
        let mut start = 0;
        for comma in memchr::memchr_iter(b',', line) {
            fields.push(&line[start..comma]);
            start = comma + 1;
            if fields.len() == KNOWN_FIELDS {
                return (fields, Some(&line[start..]));
            }
        }
        fields.push(&line[start..]);
        (fields, None)
    }

    fn split_as_slices(line: &[u8]) -> (Vec<&[u8]>, Option<&[u8]>) {
        let f = Fields::split(line);
        let fields = (1..=f.count)
            .map(|n| f.get(Field::ALL[n - 1]).unwrap().0)
            .collect();
        (fields, f.extra)
    }

    /// The grammar over the whole field, as the slow path runs it.
    fn grammar<T>(t: &Typed<T>, b: &[u8]) -> Option<T> {
        all_consuming(t.grammar).parse(b).ok().map(|(_, v)| v)
    }

    /// Fast path `Some(v)` implies grammar `v`; and on `well_formed` input the fast path answers.
    fn check_fast<T: PartialEq + std::fmt::Debug>(
        t: &Typed<T>,
        b: &[u8],
    ) -> Result<(), TestCaseError> {
        if let Some(v) = (t.fast)(b) {
            prop_assert_eq!(
                Some(v),
                grammar(t, b),
                "input {:?}",
                String::from_utf8_lossy(b)
            );
        }
        Ok(())
    }

    /// Short byte strings over the characters the typed fields use, and a few that are not.
    fn near_field(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(alphabet), 0..=max)
    }

    const DIGITS_AND_SEPS: &[u8] = b"0123456789012345678901234567890123456789/: -+.xA\xff";

    /// Every real fixture line, for the whole-record comparisons.
    fn fixture_lines() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/smdr");
        let mut lines = Vec::new();
        for d in [dir.clone(), dir.join("ccbc")] {
            let mut files: Vec<_> = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .collect();
            files.sort();
            for p in files {
                let bytes = std::fs::read(p).unwrap();
                lines.extend(bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec));
            }
        }
        assert!(lines.len() > 5000);
        lines
    }

    fn same_result(line: &[u8]) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            parse_record_with::<true, _>(line, |r| r),
            parse_record_with::<false, _>(line, |r| r),
            "line {:?}",
            String::from_utf8_lossy(line)
        );
        Ok(())
    }

    #[test]
    fn comma_mask_is_exact() {
        for b in 0..=255u8 {
            for lane in 0..8 {
                let mut bytes = [b'a'; 8];
                bytes[lane] = b;
                let m = comma_mask(u64::from_le_bytes(bytes));
                let want = if b == b',' { 0x80u64 << (8 * lane) } else { 0 };
                assert_eq!(m, want, "byte {b:#x} in lane {lane}");
            }
        }
        assert_eq!(comma_mask(COMMAS), !LOW7);
    }

    #[test]
    fn fast_paths_answer_on_every_fixture_line() {
        // The fast paths are only fast if they take what IP Office writes: no fixture field
        // should need the grammar.
        for line in fixture_lines() {
            let line = trim_line(&line);
            let f = Fields::split(line);
            if f.count < MIN_FIELDS {
                continue;
            }
            let field = |x| f.get(x).map_or(&[][..], |(b, _)| b);
            let ok = fast_timestamp(field(Field::CallStart)).is_some()
                && fast_hms(field(Field::ConnectedTime)).is_some()
                && fast_u32(field(Field::RingTime)).is_some()
                && fast_u64(field(Field::CallId)).is_some()
                && [Field::CallingPartyServerIp, Field::CalledPartyServerIp]
                    .into_iter()
                    .all(|x| field(x).is_empty() || fast_ipv4(field(x)).is_some());
            let is_record = parse_record_with::<false, _>(line, |r| r).is_ok();
            assert!(
                ok || !is_record,
                "slow path on {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn fixture_lines_parse_the_same_fast_and_slow() {
        for line in fixture_lines() {
            same_result(&line).unwrap();
            assert_eq!(split_as_slices(&line), reference_split(&line));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn split_matches_memchr(
            line in proptest::collection::vec(
                proptest::sample::select(&b",,,,a0 \x00\xac\x2d\x6c\xff"[..]), 0..400)
        ) {
            prop_assert_eq!(split_as_slices(&line), reference_split(&line));
        }

        #[test]
        fn fast_path_timestamp(
            b in near_field(DIGITS_AND_SEPS, 21),
            y in 0u32..10000, mo in 0u32..14, d in 0u32..33, h in 0u32..26, mi in 0u32..62, s in 0u32..62,
        ) {
            check_fast(&TIMESTAMP, &b)?;
            let well_formed = format!("{y:04}/{mo:02}/{d:02} {h:02}:{mi:02}:{s:02}");
            check_fast(&TIMESTAMP, well_formed.as_bytes())?;
            prop_assert_eq!(
                fast_timestamp(well_formed.as_bytes()),
                grammar(&TIMESTAMP, well_formed.as_bytes())
            );
        }

        #[test]
        fn fast_path_hms(b in near_field(DIGITS_AND_SEPS, 10), h in 0u32..1000, m in 0u32..70, s in 0u32..70) {
            check_fast(&HMS, &b)?;
            let well_formed = format!("{h:02}:{m:02}:{s:02}");
            check_fast(&HMS, well_formed.as_bytes())?;
            if h < 100 {
                prop_assert_eq!(fast_hms(well_formed.as_bytes()), grammar(&HMS, well_formed.as_bytes()));
            }
        }

        #[test]
        fn fast_path_numbers(b in near_field(DIGITS_AND_SEPS, 22), n in any::<u64>()) {
            for t in [&SECONDS, &NUMBER] {
                check_fast(t, &b)?;
                check_fast(t, n.to_string().as_bytes())?;
                check_fast(t, (n % 1_000_000_000).to_string().as_bytes())?;
            }
            check_fast(&CALL_ID, &b)?;
            check_fast(&CALL_ID, n.to_string().as_bytes())?;
            check_fast(&NUMBER64, n.to_string().as_bytes())?;
            let small = (n % 10_000_000_000_000_000_000).to_string();
            prop_assert_eq!(fast_u64(small.as_bytes()), grammar(&CALL_ID, small.as_bytes()));
        }

        #[test]
        fn fast_path_flags_and_direction(b in near_field(b"01IO ", 2)) {
            check_fast(&FLAG, &b)?;
            check_fast(&DIRECTION, &b)?;
            prop_assert_eq!(fast_flag(&b), grammar(&FLAG, &b));
            prop_assert_eq!(fast_direction(&b), grammar(&DIRECTION, &b));
        }

        #[test]
        fn fast_path_device(
            b in near_field(b"ETVXaz-+0123456789012345678901234567890123456789", 22),
            kind in b'A'..=b'Z',
            n in any::<i64>(),
        ) {
            check_fast(&DEVICE, &b)?;
            let mut well_formed = vec![kind];
            well_formed.extend_from_slice((n / 10).to_string().as_bytes());
            check_fast(&DEVICE, &well_formed)?;
            prop_assert_eq!(fast_device(&well_formed), grammar(&DEVICE, &well_formed));
        }

        #[test]
        fn fast_path_ip(
            b in near_field(b"0123456789012345678901234567890123456789....:af", 20),
            octets in any::<[u8; 4]>(),
            parts in proptest::collection::vec(
                proptest::sample::select(
                    &["", "0", "00", "01", "007", "1", "9", "10", "99", "100", "199", "255", "256",
                      "300", "999", "1000", "0255", "1a", ":"][..]),
                1..6),
        ) {
            check_fast(&IP, &b)?;
            check_fast(&IP, parts.join(".").as_bytes())?;
            let well_formed = Ipv4Addr::from(octets).to_string();
            check_fast(&IP, well_formed.as_bytes())?;
            prop_assert_eq!(fast_ipv4(well_formed.as_bytes()), grammar(&IP, well_formed.as_bytes()));
        }

        #[test]
        fn mutated_fixture_lines_parse_the_same_fast_and_slow(
            pick in any::<proptest::sample::Index>(),
            edits in proptest::collection::vec(
                (any::<proptest::sample::Index>(),
                 proptest::sample::select(&b"0123456789,:/ -.IOET\xff"[..]),
                 0u8..3),
                1..4),
        ) {
            thread_local! {
                static LINES: Vec<Vec<u8>> = fixture_lines();
            }
            let mut line = LINES.with(|l| pick.get(l).clone());
            for (at, byte, op) in edits {
                let i = at.index(line.len() + 1);
                match op {
                    0 if i < line.len() => line[i] = byte,
                    1 => line.insert(i, byte),
                    _ if i < line.len() => {
                        line.remove(i);
                    }
                    _ => line.push(byte),
                }
            }
            same_result(&line)?;
            prop_assert_eq!(split_as_slices(&line), reference_split(&line));
        }
    }
}
