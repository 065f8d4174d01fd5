//! The grammar of one frame (nom, run with `parse_complete` over exactly the frame's bytes) and
//! the small line tests the framer shares with it.
//!
//! ```text
//! frame        = greeting / message / command
//! greeting     = "Asterisk Call Manager/" *(any byte but LF) [EOL] *blank
//! message      = 1*header-line [header-last] *blank
//! header-line  = name ":" [SP] value EOL
//! header-last  = name ":" [SP] value                ; a truncated frame's last line
//! name         = (VCHAR but ":") *(VCHAR / SP but ":")
//! value        = *(any byte but LF)                 ; one CR before LF belongs to EOL
//! command      = response-follows *(privilege / actionid)
//!                [output "--END COMMAND--" [EOL]] *blank
//! output       = *(any byte)                        ; up to the first "--END COMMAND--" at a line end
//! EOL          = [CR] LF
//! blank        = *(SP / HTAB / CR) LF               ; at most 64 bytes before the LF
//! ```
//!
//! [`header_line`] is the grammar of one line; [`fast_header_line`] is the same written out by
//! hand for speed (tests check that they agree), and the grammar runs whenever the fast path
//! declines, so errors are always the grammar's.

use nom::bytes::{tag, take_while, take_while1};
use nom::combinator::{opt, verify};
use nom::error::{Error as NomError, ErrorKind};
use nom::{IResult, Parser};

use crate::{ParseError, ParseErrorKind};

/// How every greeting line starts.
pub(crate) const GREETING_PREFIX: &[u8] = b"Asterisk Call Manager/";
/// The line that ends old-style (`Response: Follows`) command output.
pub(crate) const END_COMMAND: &[u8] = b"--END COMMAND--";

/// Where one header's name and value are in its frame (byte offsets, end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) name_start: u32,
    pub(crate) name_end: u32,
    pub(crate) value_start: u32,
    pub(crate) value_end: u32,
}

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The greeting: the line's range (terminator excluded).
    Greeting(u32, u32),
    /// Headers only.
    Headers,
    /// `Response: Follows` command output: the output's range (up to `--END COMMAND--`).
    Command(u32, u32),
}

/// Bytes a header name may hold: printable ASCII and space, but not `:`.
#[inline]
pub(crate) const fn is_name_byte(b: u8) -> bool {
    matches!(b, 0x20..=0x7e) && b != b':'
}

/// Whether `name` is a valid header name (what [`name`] accepts).
pub(crate) fn is_valid_name(name: &[u8]) -> bool {
    matches!(name.first(), Some(&b) if b != b' ') && name.iter().all(|&b| is_name_byte(b))
}

/// `line` without one trailing `\r`.
#[inline]
pub(crate) fn strip_cr(line: &[u8]) -> &[u8] {
    match line {
        [rest @ .., b'\r'] => rest,
        _ => line,
    }
}

/// The longest line (without its `\n`) that can be blank.
pub(crate) const MAX_BLANK_LINE: usize = 64;

/// Whether a line (without its `\n`) is blank: empty, or at most [`MAX_BLANK_LINE`] spaces,
/// tabs and `\r` (a line of a few spaces ends a message as an empty one does; no header can be
/// all spaces). The bound keeps the framer exact and its buffer bounded: a partial line that may
/// still become blank is at most that long.
#[inline]
pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.len() <= MAX_BLANK_LINE && line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// For a line that has not ended yet: whether it starts a message ([`is_message_start`]), once
/// that no longer depends on the bytes still to come (`None` before).
pub(crate) fn message_start_decided(partial: &[u8]) -> Option<bool> {
    (partial.len() >= GREETING_PREFIX.len() || partial.contains(&b':'))
        .then(|| is_message_start(partial))
}

/// Whether a line (without its `\n`) can only start a message: the greeting, or an `Event`,
/// `Response` or `Action` header.
pub(crate) fn is_message_start(line: &[u8]) -> bool {
    if is_greeting(line) {
        return true;
    }
    match header_line.parse_complete(line) {
        Ok((_, (name, _))) => [&b"Event"[..], b"Response", b"Action"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n)),
        Err(_) => false,
    }
}

/// Whether a line (without its `\n`) is the greeting.
#[inline]
pub(crate) fn is_greeting(line: &[u8]) -> bool {
    line.starts_with(GREETING_PREFIX)
}

/// Whether a line (without its `\n`) ends old-style command output (the marker may follow the
/// last output line directly, as Asterisk writes it when the output has no final newline).
#[inline]
pub(crate) fn ends_command(line: &[u8]) -> bool {
    strip_cr(line).ends_with(END_COMMAND)
}

/// Whether a line (without its `\n`) is `Response: Follows` (name and value in any case).
pub(crate) fn is_follows(line: &[u8]) -> bool {
    match header_line.parse_complete(line) {
        Ok((_, (name, value))) => {
            name.eq_ignore_ascii_case(b"Response") && value.eq_ignore_ascii_case(b"Follows")
        }
        Err(_) => false,
    }
}

/// A header name: [`is_name_byte`]s, not starting with a space.
fn name(i: &[u8]) -> IResult<&[u8], &[u8]> {
    verify(take_while1(is_name_byte), |n: &[u8]| {
        n.first() != Some(&b' ')
    })
    .parse_complete(i)
}

/// Every byte of a `u64` set to `\n`.
const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
/// The low seven bits of every byte.
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The index of the first `\n` in `hay`. Lines are short (20 to 40 bytes), so the first 64
/// bytes are searched eight at a time in a `u64` (SWAR, an exact mask: the addition cannot carry
/// out of a byte); longer lines go on with memchr.
#[inline]
pub(crate) fn find_nl(hay: &[u8]) -> Option<usize> {
    let mut words = hay.chunks_exact(8);
    let mut at = 0usize;
    for w in (&mut words).take(8) {
        let word = <[u8; 8]>::try_from(w).map_or(0, u64::from_le_bytes);
        let x = word ^ LFS;
        let found = !(((x & LOW7).wrapping_add(LOW7)) | x) & !LOW7;
        if found != 0 {
            return Some(at.wrapping_add((found.trailing_zeros() / 8) as usize));
        }
        at = at.wrapping_add(8);
    }
    if at < 64 {
        // The whole haystack was searched but its last 0 to 7 bytes.
        return words
            .remainder()
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| at.wrapping_add(i));
    }
    let rest = hay.get(at..).unwrap_or_default();
    memchr::memchr(b'\n', rest).map(|i| at.wrapping_add(i))
}

/// Fast [`header_line`]: the same result wherever that succeeds (`(name, value, rest)`), `None`
/// wherever it fails; written out by hand (the grammar stays the reference, and the error path).
/// The `fast_header_line_*` tests check that the two agree.
#[inline]
pub(crate) fn fast_header_line(i: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let colon = i.iter().position(|&b| !is_name_byte(b))?;
    if colon == 0 || i.first() == Some(&b' ') || i.get(colon) != Some(&b':') {
        return None;
    }
    let (name, after) = i.split_at_checked(colon)?;
    let after = after.get(1..).unwrap_or_default();
    let after = after.strip_prefix(b" ").unwrap_or(after);
    Some(match find_nl(after) {
        Some(nl) => {
            let (value, rest) = after.split_at_checked(nl)?;
            (name, strip_cr(value), rest.get(1..).unwrap_or_default())
        }
        None => (name, strip_cr(after), &[][..]),
    })
}

/// The rest of a line: everything up to `\n` less one `\r` before it; at the end of input
/// without `\n`, everything (less one trailing `\r`). Never fails.
fn line_rest(i: &[u8]) -> IResult<&[u8], &[u8]> {
    match find_nl(i) {
        Some(nl) => {
            let (line, rest) = i.split_at_checked(nl).unwrap_or((i, &[]));
            Ok((rest.get(1..).unwrap_or_default(), strip_cr(line)))
        }
        None => Ok((&[], strip_cr(i))),
    }
}

/// `name ":" [SP] value EOL`: one header line, or the last line of a truncated frame.
pub(crate) fn header_line(i: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
    let (i, n) = name(i)?;
    let (i, _) = tag(&b":"[..]).parse_complete(i)?;
    let (i, _) = opt(tag(&b" "[..])).parse_complete(i)?;
    let (i, v) = line_rest(i)?;
    Ok((i, (n, v)))
}

/// A blank line: `*(SP / HTAB / CR) LF`, at most [`MAX_BLANK_LINE`] bytes before the `LF`.
fn blank_line(i: &[u8]) -> IResult<&[u8], ()> {
    let (rest, ws) = take_while(|b: u8| matches!(b, b' ' | b'\t' | b'\r')).parse_complete(i)?;
    match rest {
        [b'\n', rest @ ..] if ws.len() <= MAX_BLANK_LINE => Ok((rest, ())),
        _ => Err(nom::Err::Error(NomError::new(i, ErrorKind::CrLf))),
    }
}

/// The offset of `rest` (a suffix of `frame`) within `frame`.
#[inline]
fn offset_in(frame: &[u8], rest: &[u8]) -> usize {
    frame.len().saturating_sub(rest.len())
}

/// Checks that only blank lines are left, from offset `at` of `frame`.
fn only_blank_lines(frame: &[u8], mut rest: &[u8], kind: ParseErrorKind) -> Result<(), ParseError> {
    while !rest.is_empty() {
        match blank_line(rest) {
            Ok((r, ())) => rest = r,
            // A blank line cut short at the very end.
            Err(_) if is_blank(rest) => return Ok(()),
            Err(_) => return Err(ParseError::new(offset_in(frame, rest), kind)),
        }
    }
    Ok(())
}

/// Why the header line at `rest` failed.
#[cold]
#[inline(never)]
fn line_error(frame: &[u8], rest: &[u8]) -> ParseError {
    let line = memchr::memchr(b'\n', rest).map_or(rest, |nl| rest.get(..nl).unwrap_or(rest));
    let at = offset_in(frame, rest);
    if is_blank(line) {
        return ParseError::new(at, ParseErrorKind::BlankLine);
    }
    match memchr::memchr(b':', line) {
        None => ParseError::new(at, ParseErrorKind::MissingColon),
        Some(colon) => {
            // The first byte of the name that is not allowed (a leading space counts).
            let bad = line
                .get(..colon)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .position(|(k, &b)| !is_name_byte(b) || (k == 0 && b == b' '))
                .unwrap_or(0);
            ParseError::new(at.saturating_add(bad), ParseErrorKind::InvalidName)
        }
    }
}

/// The span of `name`/`value` (sub-slices of `frame`).
#[inline]
fn span_of(frame: &[u8], name: &[u8], value: &[u8], line: &[u8]) -> Span {
    // `line` starts at the name; the value starts after the name, the colon and the optional
    // space, and ends before the line's terminator. Frames are at most `u32::MAX` bytes.
    let name_start = offset_in(frame, line);
    let name_end = name_start.saturating_add(name.len());
    let gap = usize::from(line.get(name.len().saturating_add(1)) == Some(&b' '));
    let value_start = name_end.saturating_add(1).saturating_add(gap);
    let value_end = value_start.saturating_add(value.len());
    Span {
        name_start: name_start as u32,
        name_end: name_end as u32,
        value_start: value_start as u32,
        value_end: value_end as u32,
    }
}

/// Parses one frame into `spans` (cleared first), with at most `max_headers` headers.
///
/// The frame may carry its terminating blank line(s) or not; a last line without `\n` is taken
/// as it is (a truncated frame).
pub(crate) fn parse_frame(
    frame: &[u8],
    spans: &mut Vec<Span>,
    max_headers: usize,
) -> Result<Shape, ParseError> {
    spans.clear();
    if u32::try_from(frame.len()).is_err() {
        return Err(ParseError::new(
            0,
            ParseErrorKind::MessageTooLarge {
                max: u32::MAX as usize,
            },
        ));
    }
    if is_greeting(frame) {
        let (rest, line) = line_rest(frame).unwrap_or_default();
        only_blank_lines(frame, rest, ParseErrorKind::DataAfterGreeting)?;
        return Ok(Shape::Greeting(0, line.len() as u32));
    }
    let mut rest = frame;
    let mut follows = false;
    while !rest.is_empty() {
        let line = rest;
        let parsed = match fast_header_line(line) {
            Some((n, v, r)) => Ok((r, (n, v))),
            None => header_line.parse_complete(line),
        };
        match parsed {
            Ok((r, (n, v))) => {
                if spans.is_empty() {
                    follows =
                        n.eq_ignore_ascii_case(b"Response") && v.eq_ignore_ascii_case(b"Follows");
                } else if follows
                    && !(n.eq_ignore_ascii_case(b"Privilege")
                        || n.eq_ignore_ascii_case(b"ActionID"))
                {
                    // Command output starts here.
                    break;
                }
                if spans.len() >= max_headers {
                    return Err(ParseError::new(
                        offset_in(frame, line),
                        ParseErrorKind::TooManyHeaders { max: max_headers },
                    ));
                }
                spans.push(span_of(frame, n, v, line));
                rest = r;
            }
            Err(_) if spans.is_empty() && blank_line(line).is_ok() => {
                return Err(ParseError::new(0, ParseErrorKind::Empty));
            }
            Err(_) if !follows && blank_line(line).is_ok() => {
                only_blank_lines(frame, line, ParseErrorKind::BlankLine)?;
                return Ok(Shape::Headers);
            }
            Err(_) if follows => break,
            Err(_) => return Err(line_error(frame, line)),
        }
    }
    if spans.is_empty() {
        return Err(ParseError::new(0, ParseErrorKind::Empty));
    }
    if !follows {
        return Ok(Shape::Headers);
    }
    // A `Response: Follows` with nothing after its headers (no output, no marker).
    if only_blank_lines(frame, rest, ParseErrorKind::BlankLine).is_ok() {
        return Ok(Shape::Headers);
    }
    // Old-style command output: up to the first `--END COMMAND--` that ends a line.
    let start = offset_in(frame, rest);
    let mut from = 0usize;
    loop {
        let hay = rest.get(from..).unwrap_or_default();
        let Some(k) = memchr::memmem::find(hay, END_COMMAND) else {
            return Err(ParseError::new(
                frame.len(),
                ParseErrorKind::MissingEndCommand,
            ));
        };
        let marker = from.saturating_add(k);
        let after = rest
            .get(marker.saturating_add(END_COMMAND.len())..)
            .unwrap_or_default();
        let after_line = match after {
            [] | [b'\r'] => Some(&[][..]),
            [b'\n', r @ ..] | [b'\r', b'\n', r @ ..] => Some(r),
            _ => None,
        };
        if let Some(tail) = after_line {
            only_blank_lines(frame, tail, ParseErrorKind::BlankLine)?;
            let end = start.saturating_add(marker);
            return Ok(Shape::Command(start as u32, end as u32));
        }
        from = marker.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers = Vec<(String, Vec<u8>)>;

    fn parse(frame: &[u8]) -> Result<(Shape, Headers), ParseError> {
        let mut spans = Vec::new();
        let shape = parse_frame(frame, &mut spans, 64)?;
        let headers = spans
            .iter()
            .map(|s| {
                (
                    String::from_utf8(frame[s.name_start as usize..s.name_end as usize].to_vec())
                        .unwrap(),
                    frame[s.value_start as usize..s.value_end as usize].to_vec(),
                )
            })
            .collect();
        Ok((shape, headers))
    }

    fn h(name: &str, value: &[u8]) -> (String, Vec<u8>) {
        (name.to_owned(), value.to_vec())
    }

    #[test]
    fn header_line_shapes() {
        assert_eq!(
            header_line(b"Key: value\r\nrest"),
            Ok((&b"rest"[..], (&b"Key"[..], &b"value"[..])))
        );
        // No space after the colon; an empty value; a value holding ": ".
        assert_eq!(
            header_line(b"Key:value\n"),
            Ok((&b""[..], (&b"Key"[..], &b"value"[..])))
        );
        assert_eq!(
            header_line(b"AccountCode:\n"),
            Ok((&b""[..], (&b"AccountCode"[..], &b""[..])))
        );
        assert_eq!(
            header_line(b"AppData: a: b: c\r\n"),
            Ok((&b""[..], (&b"AppData"[..], &b"a: b: c"[..])))
        );
        // Only one space belongs to the separator; a CR inside the value stays.
        assert_eq!(
            header_line(b"K:  two\r\r\n"),
            Ok((&b""[..], (&b"K"[..], &b" two\r"[..])))
        );
        // Digits, dashes, parentheses and the rest of printable ASCII in names.
        assert_eq!(
            header_line(b"ChanVariable(Local/2@x-1;2): A=b\n")
                .unwrap()
                .1
                .0,
            b"ChanVariable(Local/2@x-1;2)"
        );
        assert_eq!(header_line(b"100rel: yes\n").unwrap().1.0, b"100rel");
        assert_eq!(header_line(b"Cause-txt: x\n").unwrap().1.0, b"Cause-txt");
        // Not headers.
        assert!(header_line(b"no colon here\n").is_err());
        assert!(header_line(b": empty name\n").is_err());
        assert!(header_line(b" Key: leading space\n").is_err());
        assert!(header_line(b"K\xc3\xa9y: x\n").is_err());
        assert!(header_line(b"\r\n").is_err());
    }

    #[test]
    fn find_nl_matches_a_plain_search() {
        let mut hay = vec![b'a'; 200];
        assert_eq!(find_nl(&hay), None);
        for at in [0, 1, 7, 8, 9, 15, 63, 64, 65, 71, 72, 199] {
            hay[at] = b'\n';
            assert_eq!(find_nl(&hay), Some(at), "{at}");
            assert_eq!(find_nl(&hay[..at]), None);
            hay[at] = b'a';
        }
        // Bytes one away from `\n` and with the high bit set are not matches.
        assert_eq!(find_nl(&[0x0b, 0x09, 0x8a, 0xff, 0x0a]), Some(4));
        assert_eq!(find_nl(b""), None);
    }

    proptest::proptest! {
        #[test]
        fn fast_header_line_agrees_with_the_grammar(
            line in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b": \r\nAaZz09-()".to_vec()),
                    proptest::prelude::any::<u8>(),
                ],
                0..120,
            )
        ) {
            let fast = fast_header_line(&line).map(|(n, v, r)| (r, (n, v)));
            proptest::prop_assert_eq!(fast, header_line(&line).ok());
            let nl = line.iter().position(|&b| b == b'\n');
            proptest::prop_assert_eq!(find_nl(&line), nl);
        }
    }

    #[test]
    fn fast_header_line_on_the_shapes() {
        for line in [
            &b"Key: value\r\nrest"[..],
            b"Key:value\n",
            b"AccountCode:\n",
            b"K:  two\r\r\n",
            b"A b : c",
            b": x\n",
            b" K: x\n",
            b"K\xc3: x\n",
            b"no colon",
            b"\r\n",
            b"",
            b"K:",
        ] {
            let fast = fast_header_line(line).map(|(n, v, r)| (r, (n, v)));
            assert_eq!(fast, header_line(line).ok(), "{line:?}");
        }
    }

    #[test]
    fn line_tests() {
        assert!(is_blank(b"") && is_blank(b"\r") && is_blank(b" \t\r") && !is_blank(b" x"));
        assert!(is_blank(&[b' '; 64]) && !is_blank(&[b' '; 65]));
        assert_eq!(message_start_decided(b"Even"), None);
        assert_eq!(message_start_decided(b"Event:"), Some(true));
        assert_eq!(message_start_decided(b"Privilege:"), Some(false));
        assert_eq!(message_start_decided(b"Asterisk Call Manager/"), Some(true));
        assert_eq!(
            message_start_decided(b"Asterisk Call Manager-"),
            Some(false)
        );
        assert!(is_message_start(b"Event: X\r") && is_message_start(b"action:Ping"));
        assert!(is_message_start(b"Asterisk Call Manager/1.0"));
        assert!(!is_message_start(b"Privilege: x") && !is_message_start(b"row 1"));
        assert!(is_follows(b"Response: Follows\r"));
        assert!(is_follows(b"response:follows"));
        assert!(!is_follows(b"Response: Success"));
        assert!(ends_command(b"--END COMMAND--\r"));
        assert!(ends_command(b"last output line--END COMMAND--"));
        assert!(!ends_command(b"--END COMMAND-- "));
        assert!(is_valid_name(b"A b") && !is_valid_name(b" A") && !is_valid_name(b""));
        assert!(!is_valid_name(b"A:b"));
    }

    #[test]
    fn messages() {
        let (shape, headers) = parse(b"Event: Hangup\r\nCause: 16\r\n").unwrap();
        assert_eq!(shape, Shape::Headers);
        assert_eq!(headers, vec![h("Event", b"Hangup"), h("Cause", b"16")]);
        // The terminating blank lines may be part of the frame; a last line may lack its EOL.
        assert_eq!(parse(b"A: 1\n\n\r\n").unwrap().1, vec![h("A", b"1")]);
        assert_eq!(
            parse(b"A: 1\nB: 2").unwrap().1,
            vec![h("A", b"1"), h("B", b"2")]
        );
        // Repeated keys stay, in order.
        assert_eq!(
            parse(b"Variable: a=1\nVariable: b=2\n").unwrap().1,
            vec![h("Variable", b"a=1"), h("Variable", b"b=2")]
        );
        // Bytes that are not UTF-8 stay as they are.
        assert_eq!(
            parse(b"CallerIDName: \xcf\xf0\xe8\xe2\xe5\xf2\xd0\n")
                .unwrap()
                .1,
            vec![h("CallerIDName", b"\xcf\xf0\xe8\xe2\xe5\xf2\xd0")]
        );
    }

    #[test]
    fn errors_name_the_offset() {
        let e = parse(b"Event: X\r\nstray row\r\n").unwrap_err();
        assert_eq!(e, ParseError::new(10, ParseErrorKind::MissingColon));
        let e = parse(b"Event: X\r\nK\xe9y: v\r\n").unwrap_err();
        assert_eq!(e, ParseError::new(11, ParseErrorKind::InvalidName));
        let e = parse(b"Event: X\r\n Key: v\r\n").unwrap_err();
        assert_eq!(e, ParseError::new(10, ParseErrorKind::InvalidName));
        let e = parse(b"Event: X\r\n\r\nK: v\r\n").unwrap_err();
        assert_eq!(e, ParseError::new(12, ParseErrorKind::BlankLine));
        assert_eq!(parse(b"").unwrap_err().kind, ParseErrorKind::Empty);
        assert_eq!(parse(b"\r\n").unwrap_err().kind, ParseErrorKind::Empty);
        let mut spans = Vec::new();
        let e = parse_frame(b"A: 1\nB: 2\nC: 3\n", &mut spans, 2).unwrap_err();
        assert_eq!(
            e,
            ParseError::new(10, ParseErrorKind::TooManyHeaders { max: 2 })
        );
    }

    #[test]
    fn greeting() {
        let (shape, headers) = parse(b"Asterisk Call Manager/9.0.0\r\n").unwrap();
        assert_eq!(shape, Shape::Greeting(0, 27));
        assert!(headers.is_empty());
        assert_eq!(
            parse(b"Asterisk Call Manager/1.3").unwrap().0,
            Shape::Greeting(0, 25)
        );
        assert_eq!(
            parse(b"Asterisk Call Manager/1.3\nAction: x\n").unwrap_err(),
            ParseError::new(26, ParseErrorKind::DataAfterGreeting)
        );
    }

    #[test]
    fn command_output() {
        let frame = b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\n\
                      Uptime: 5 s\r\n\r\nline 2\r\n--END COMMAND--\r\n\r\n";
        let (shape, headers) = parse(frame).unwrap();
        assert_eq!(
            headers,
            vec![
                h("Response", b"Follows"),
                h("Privilege", b"Command"),
                h("ActionID", b"7")
            ]
        );
        let Shape::Command(s, e) = shape else {
            panic!("{shape:?}")
        };
        assert_eq!(
            &frame[s as usize..e as usize],
            b"Uptime: 5 s\r\n\r\nline 2\r\n"
        );
        // The marker glued to the last output line; no headers before the output.
        let frame = b"Response: Follows\nabc--END COMMAND--\n";
        let Shape::Command(s, e) = parse(frame).unwrap().0 else {
            panic!()
        };
        assert_eq!(&frame[s as usize..e as usize], b"abc");
        // A marker that does not end its line is output.
        let frame = b"Response: Follows\n--END COMMAND-- x\n--END COMMAND--";
        let Shape::Command(s, e) = parse(frame).unwrap().0 else {
            panic!()
        };
        assert_eq!(&frame[s as usize..e as usize], b"--END COMMAND-- x\n");
        assert_eq!(
            parse(b"Response: Follows\nno end\n").unwrap_err().kind,
            ParseErrorKind::MissingEndCommand
        );
        // No output and no marker (goami2's capture): a plain response.
        let (shape, headers) = parse(b"Response: Follows\r\nPrivilege: Command\r\n\r\n").unwrap();
        assert_eq!((shape, headers.len()), (Shape::Headers, 2));
        assert_eq!(
            parse(b"Response: Follows\n--END COMMAND--\nA: b\n")
                .unwrap_err()
                .kind,
            ParseErrorKind::BlankLine
        );
    }
}
