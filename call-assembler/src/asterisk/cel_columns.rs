//! Which column of a CEL row holds what: [`CelColumns`] for `cel_custom` CSV lines, and
//! [`CelRow::from_named`] for database rows (column name to value).

use std::fmt;

use compact_str::CompactString;

use super::CelRow;

/// The columns of the lab captures' `cel_custom` lines (the classic mapping; see
/// [`CelColumns::sample`]).
const SAMPLE: [&str; 20] = [
    "eventtype",
    "eventtime",
    "cid_name",
    "cid_num",
    "cid_ani",
    "cid_rdnis",
    "cid_dnid",
    "exten",
    "context",
    "channame",
    "appname",
    "appdata",
    "amaflags",
    "accountcode",
    "uniqueid",
    "linkedid",
    "peer",
    "userfield",
    "userdeftype",
    "extra",
];

/// The ordered column names of a `cel_custom` CSV line, to read its fields with
/// [`CelRow::from_fields`].
///
/// Names are the classic CEL column names (those of Asterisk's `cel` database table):
/// `eventtype`, `eventtime`, `cid_name`, `cid_num`, `cid_ani`, `cid_rdnis`, `cid_dnid`,
/// `exten`, `context`, `channame`, `appname`, `appdata`, `amaflags`, `accountcode`,
/// `peeraccount`, `uniqueid`, `linkedid`, `userfield`, `peer`, `userdeftype` and `extra`.
/// Other spellings of them are read as them, case-insensitively: `eventextra` for `extra`,
/// `CALLERID(name)`, `CALLERID(num)`, `CALLERID(ANI)`, `CALLERID(RDNIS)` and `CALLERID(DNID)`
/// for the `cid_*` columns, `CHANNEL(x)` for `x` (with `CHANNEL(name)` for `channame`), and
/// `BRIDGEPEER` for `peer`. Any other name (or expression) is kept as written: it names a
/// column that is read by nothing, so its fields are ignored.
///
/// ```
/// use call_assembler::CelColumns;
///
/// let cols = CelColumns::from_mapping(
///     "Master.csv => ${CSV_QUOTE(${eventtype})},${CSV_QUOTE(${eventtime})},\
///      ${CSV_QUOTE(${CALLERID(num)})},${CSV_QUOTE(${CHANNEL(uniqueid)})},\
///      ${CSV_QUOTE(${BRIDGEPEER})},${CSV_QUOTE(${eventextra})}",
/// )
/// .unwrap();
/// assert_eq!(cols.to_string(), "eventtype,eventtime,cid_num,uniqueid,peer,extra");
/// assert_eq!(CelColumns::parse_list("EventType, eventtime,uniqueid").unwrap().len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CelColumns {
    names: Vec<CompactString>,
}

/// Why a column list or `cel_custom` mapping could not be read ([`CelColumns::parse_list`],
/// [`CelColumns::from_mapping`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CelColumnsError {
    /// There was no column at all.
    #[error("the CEL column list is empty")]
    Empty,
    /// An opening bracket (`{`, `(` or `[`) of a dialplan expression is never closed.
    #[error("`{open}` at byte {at} of the cel_custom mapping is never closed")]
    Unclosed {
        /// The bracket.
        open: char,
        /// Its byte offset in the text.
        at: usize,
    },
    /// A closing bracket (`}`, `)` or `]`) does not match an opening one.
    #[error("`{close}` at byte {at} of the cel_custom mapping has no opening bracket to match")]
    Unopened {
        /// The bracket.
        close: char,
        /// Its byte offset in the text.
        at: usize,
    },
    /// A plain column list ([`CelColumns::parse_list`]) holds a dialplan expression.
    #[error(
        "CEL column {index} (`{text}`) is a dialplan expression, not a column name \
         (a cel_custom mapping is read by CelColumns::from_mapping)"
    )]
    NotAName {
        /// The column's index, from 0.
        index: usize,
        /// The text of the column.
        text: String,
    },
    /// A column every CEL row needs is missing.
    #[error("there is no `{column}` column; CEL rows need eventtype and uniqueid")]
    Missing {
        /// The missing column's name.
        column: &'static str,
    },
}

impl CelColumns {
    /// The columns of the lab captures' `cel_custom.conf` (the classic legacy mapping; see the
    /// fixtures' README): eventtype, eventtime, cid_name, cid_num, cid_ani, cid_rdnis,
    /// cid_dnid, exten, context, channame, appname, appdata, amaflags, accountcode, uniqueid,
    /// linkedid, peer, userfield, userdeftype, extra (`${eventextra}`).
    pub fn sample() -> Self {
        Self {
            names: SAMPLE.iter().copied().map(CompactString::from).collect(),
        }
    }

    /// Columns from a comma-separated list of names (`eventtype,eventtime,...`; spaces around
    /// names are ignored, other spellings are read as in the type docs). Fails for an empty
    /// list, a list without `eventtype` or `uniqueid`, or a name that is a dialplan
    /// expression (`${...}`: use [`CelColumns::from_mapping`]).
    pub fn parse_list(text: &str) -> Result<Self, CelColumnsError> {
        let mut names = Vec::new();
        for (index, item) in text.split(',').enumerate() {
            let item = item.trim();
            if item.contains('$') || item.contains('{') || item.contains('}') {
                return Err(CelColumnsError::NotAName {
                    index,
                    text: item.to_owned(),
                });
            }
            names.push(canonical(item));
        }
        Self::checked(names)
    }

    /// Columns from the right-hand side of a `cel_custom.conf` `[mappings]` line (a whole
    /// `Master.csv => ...` line is accepted too), such as
    /// `${CSV_QUOTE(${eventtype})},${CSV_QUOTE(${CALLERID(name)})},...`.
    ///
    /// Each comma-separated item (commas inside `${...}`, `$[...]` and parentheses do not
    /// separate) gives one column: surrounding double quotes (the old `"${eventtype}"` style)
    /// and a `CSV_QUOTE(...)`, `QUOTE(...)` or `SQL_ESC(...)` around the value are taken off,
    /// then `${name}` or `${FUNCTION(arg)}` names the column as in the type docs. A bare name
    /// is a column name (the "advanced" form `eventtype,eventtime,...`). Anything else is kept
    /// as an unknown column. Fails for unbalanced brackets, an empty mapping, or a mapping
    /// without `eventtype` or `uniqueid`.
    pub fn from_mapping(text: &str) -> Result<Self, CelColumnsError> {
        let mut rhs = text;
        let mut base = 0usize;
        if let Some((left, right)) = text.split_once("=>") {
            if !left.contains(['$', '"', ',']) {
                rhs = right;
                base = left.len().saturating_add(2);
            }
        }
        let items = split_top_level(rhs, base)?;
        let names = items.into_iter().map(column_of_item).collect();
        Self::checked(names)
    }

    fn checked(names: Vec<CompactString>) -> Result<Self, CelColumnsError> {
        if names.iter().all(|n| n.is_empty()) {
            return Err(CelColumnsError::Empty);
        }
        for column in ["eventtype", "uniqueid"] {
            if !names.iter().any(|n| n == column) {
                return Err(CelColumnsError::Missing { column });
            }
        }
        Ok(Self { names })
    }

    /// The column names in order (known ones in their classic spelling).
    pub fn names(&self) -> &[CompactString] {
        &self.names
    }

    /// How many columns.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no columns (never true of columns built by this type's
    /// constructors).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The index of the first column called `name` (any spelling the type docs list).
    pub fn position(&self, name: &str) -> Option<usize> {
        let name = canonical(name);
        self.names.iter().position(|n| *n == name)
    }
}

impl Default for CelColumns {
    /// [`CelColumns::sample`].
    fn default() -> Self {
        Self::sample()
    }
}

impl fmt::Display for CelColumns {
    /// The names separated by commas (what [`CelColumns::parse_list`] reads back, unknown
    /// expressions aside).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.names.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(n)?;
        }
        Ok(())
    }
}

/// The classic name of a column name or expression, or the text itself (trimmed) when it
/// names no known column.
fn canonical(text: &str) -> CompactString {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    let arg = |function: &str| {
        lower
            .strip_prefix(function)
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
            .map(str::trim)
    };
    let known = if let Some(arg) = arg("callerid") {
        match arg {
            "name" => Some("cid_name"),
            "num" | "number" => Some("cid_num"),
            "ani" | "ani-num" => Some("cid_ani"),
            "rdnis" => Some("cid_rdnis"),
            "dnid" | "dnid-num" => Some("cid_dnid"),
            _ => None,
        }
    } else if let Some(arg) = arg("channel") {
        match arg {
            "name" => Some("channame"),
            other => known_name(other),
        }
    } else {
        known_name(&lower)
    };
    match known {
        Some(n) => CompactString::from(n),
        None => CompactString::from(text),
    }
}

/// A classic column name, or another spelling of one (lowercase in, classic name out).
fn known_name(lower: &str) -> Option<&'static str> {
    Some(match lower {
        "eventtype" | "eventname" => "eventtype",
        "eventtime" => "eventtime",
        "cid_name" | "calleridname" => "cid_name",
        "cid_num" | "calleridnum" => "cid_num",
        "cid_ani" | "calleridani" => "cid_ani",
        "cid_rdnis" | "calleridrdnis" => "cid_rdnis",
        "cid_dnid" | "calleriddnid" => "cid_dnid",
        "exten" | "extension" => "exten",
        "context" => "context",
        "channame" | "channel" => "channame",
        "appname" | "application" => "appname",
        "appdata" => "appdata",
        "amaflags" => "amaflags",
        "accountcode" => "accountcode",
        "peeraccount" => "peeraccount",
        "uniqueid" => "uniqueid",
        "linkedid" => "linkedid",
        "userfield" => "userfield",
        "peer" | "bridgepeer" => "peer",
        "userdeftype" => "userdeftype",
        "extra" | "eventextra" => "extra",
        _ => return None,
    })
}

/// Splits a mapping at the commas outside brackets; `base` is the text's offset in what the
/// caller was given (for error positions).
fn split_top_level(text: &str, base: usize) -> Result<Vec<&str>, CelColumnsError> {
    let mut items = Vec::new();
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut start = 0usize;
    for (i, c) in text.char_indices() {
        let at = base.saturating_add(i);
        match c {
            '{' | '(' | '[' => open.push((c, at)),
            '}' | ')' | ']' => {
                let want = match c {
                    '}' => '{',
                    ')' => '(',
                    _ => '[',
                };
                match open.pop() {
                    Some((o, _)) if o == want => {}
                    _ => return Err(CelColumnsError::Unopened { close: c, at }),
                }
            }
            ',' if open.is_empty() => {
                items.push(text.get(start..i).unwrap_or_default());
                start = i.saturating_add(1);
            }
            _ => {}
        }
    }
    if let Some(&(open, at)) = open.first() {
        return Err(CelColumnsError::Unclosed { open, at });
    }
    items.push(text.get(start..).unwrap_or_default());
    Ok(items)
}

/// The column one mapping item writes.
fn column_of_item(item: &str) -> CompactString {
    let mut v = item.trim();
    if let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        v = inner.trim();
    }
    let Some(expr) = variable(v) else {
        // A bare name (the advanced form), or text that is not one expression.
        return canonical(v);
    };
    // `${CSV_QUOTE(${x})}`: the value inside the quoting function.
    let lower = expr.to_ascii_lowercase();
    for function in ["csv_quote", "quote", "sql_esc"] {
        let inner = lower
            .strip_prefix(function)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'));
        if inner.is_some() {
            // The same span of the original text (the prefix and `(`/`)` are ASCII).
            let arg = expr
                .get(function.len().saturating_add(1)..expr.len().saturating_sub(1))
                .unwrap_or_default()
                .trim();
            return match variable(arg) {
                Some(name) => canonical(name),
                None => canonical(arg),
            };
        }
    }
    canonical(expr)
}

/// The inside of `${...}` when `text` is exactly one such expression.
fn variable(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("${")?;
    let mut depth = 1usize;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth = depth.saturating_add(1),
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    // It must be the last character.
                    return (i.saturating_add(1) == inner.len())
                        .then(|| inner.get(..i))
                        .flatten()
                        .map(str::trim);
                }
            }
            _ => {}
        }
    }
    None
}

impl CelRow {
    /// A row from a database (column name to value, as a `cel` table row comes from a query).
    /// Columns are named as in Asterisk's `cel` table (`eventtype`, `eventtime`, `cid_name`,
    /// `cid_num`, `cid_ani`, `cid_rdnis`, `cid_dnid`, `exten`, `context`, `channame`,
    /// `appname`, `appdata`, `amaflags`, `accountcode`, `peeraccount`, `uniqueid`, `linkedid`,
    /// `userfield`, `peer`, `extra` or `eventextra`, `userdeftype`) or any other spelling
    /// [`CelColumns`] knows, case-insensitively; other columns (`id`, ...) are ignored. When a
    /// column comes twice, its first non-empty value counts.
    ///
    /// `eventtime` may be epoch with microseconds or local `YYYY-MM-DD HH:MM:SS[.ffffff]` (a
    /// `T` instead of the space, and a zone offset such as `+00` or `+01:00`, are understood
    /// too). `eventtype` must be the event's name (`CHAN_START`): the numbers some backends
    /// store instead differ between Asterisk versions and are not understood.
    ///
    /// `None` when `eventtype` or `uniqueid` is missing or empty.
    pub fn from_named<'k, 'v, I>(row: I) -> Option<Self>
    where
        I: IntoIterator<Item = (&'k str, &'v str)>,
    {
        let mut out = Self::default();
        for (name, value) in row {
            out.set(&canonical(name), value);
        }
        out.checked()
    }

    /// A row from the fields of a CSV line (split with [`crate::csv::split_record`]) whose
    /// columns are `columns`. Fields past the last column are ignored; columns past the last
    /// field are empty. `None` when `eventtype` or `uniqueid` is empty, and for a header line
    /// (whose `eventtype` field is a name of that column).
    pub fn from_fields(columns: &CelColumns, fields: &[&str]) -> Option<Self> {
        let mut out = Self::default();
        for (name, value) in columns.names().iter().zip(fields) {
            out.set(name, value);
        }
        if canonical(&out.eventtype) == "eventtype" {
            return None;
        }
        out.checked()
    }

    /// Sets the field of classic column `name` unless it holds a value already.
    fn set(&mut self, name: &str, value: &str) {
        let slot = match name {
            "eventtype" => &mut self.eventtype,
            "eventtime" => &mut self.eventtime,
            "cid_name" => &mut self.cid_name,
            "cid_num" => &mut self.cid_num,
            "exten" => &mut self.exten,
            "context" => &mut self.context,
            "channame" => &mut self.channame,
            "appname" => &mut self.appname,
            "appdata" => &mut self.appdata,
            "uniqueid" => &mut self.uniqueid,
            "linkedid" => &mut self.linkedid,
            "peer" => &mut self.peer,
            "extra" => &mut self.extra,
            _ => return,
        };
        if slot.is_empty() {
            value.clone_into(slot);
        }
    }

    fn checked(self) -> Option<Self> {
        (!self.eventtype.trim().is_empty() && !self.uniqueid.trim().is_empty()).then_some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping of the lab's cel_custom.conf (fixtures README).
    const LAB: &str = "Master.csv => ${CSV_QUOTE(${eventtype})},${CSV_QUOTE(${eventtime})},${CSV_QUOTE(${CALLERID(name)})},${CSV_QUOTE(${CALLERID(num)})},${CSV_QUOTE(${CALLERID(ANI)})},${CSV_QUOTE(${CALLERID(RDNIS)})},${CSV_QUOTE(${CALLERID(DNID)})},${CSV_QUOTE(${CHANNEL(exten)})},${CSV_QUOTE(${CHANNEL(context)})},${CSV_QUOTE(${CHANNEL(channame)})},${CSV_QUOTE(${CHANNEL(appname)})},${CSV_QUOTE(${CHANNEL(appdata)})},${CSV_QUOTE(${CHANNEL(amaflags)})},${CSV_QUOTE(${CHANNEL(accountcode)})},${CSV_QUOTE(${CHANNEL(uniqueid)})},${CSV_QUOTE(${CHANNEL(linkedid)})},${CSV_QUOTE(${BRIDGEPEER})},${CSV_QUOTE(${CHANNEL(userfield)})},${CSV_QUOTE(${userdeftype})},${CSV_QUOTE(${eventextra})}";

    #[test]
    fn the_labs_mapping_is_the_sample() {
        assert_eq!(CelColumns::from_mapping(LAB).unwrap(), CelColumns::sample());
        let rhs = LAB.split_once("=>").unwrap().1;
        assert_eq!(CelColumns::from_mapping(rhs).unwrap(), CelColumns::sample());
        // Without CSV_QUOTE, and in the old hand-quoted style.
        let plain: Vec<&str> = rhs
            .split(',')
            .map(|item| {
                item.trim()
                    .strip_prefix("${CSV_QUOTE(")
                    .and_then(|i| i.strip_suffix(")}"))
                    .unwrap()
            })
            .collect();
        assert_eq!(plain[2], "${CALLERID(name)}");
        assert_eq!(
            CelColumns::from_mapping(&plain.join(",")).unwrap(),
            CelColumns::sample()
        );
        let quoted: Vec<String> = plain.iter().map(|s| format!("\"{s}\"")).collect();
        assert_eq!(
            CelColumns::from_mapping(&quoted.join(",")).unwrap(),
            CelColumns::sample()
        );
        // The advanced form, and the plain list.
        let list = CelColumns::sample().to_string();
        assert_eq!(
            CelColumns::from_mapping(&list).unwrap(),
            CelColumns::sample()
        );
        assert_eq!(CelColumns::parse_list(&list).unwrap(), CelColumns::sample());
        let spelled = list.replace("extra", "eventextra").to_uppercase();
        assert_eq!(
            CelColumns::parse_list(&spelled).unwrap(),
            CelColumns::sample()
        );
    }

    #[test]
    fn unknown_expressions_are_kept_and_ignored() {
        let cols = CelColumns::from_mapping(
            "${eventtype},${CUT(foo,:,1)},${CHANNEL(peeraccount)},${eventenum},,x${uniqueid},${CHANNEL(uniqueid)}",
        )
        .unwrap();
        assert_eq!(
            cols.names(),
            [
                "eventtype",
                "CUT(foo,:,1)",
                "peeraccount",
                "eventenum",
                "",
                "x${uniqueid}",
                "uniqueid"
            ]
        );
        assert_eq!(cols.position("UniqueID"), Some(6));
        let row = CelRow::from_fields(&cols, &["ANSWER", "a", "b", "c", "d", "e", "1.2"]).unwrap();
        assert_eq!(
            (row.eventtype.as_str(), row.uniqueid.as_str()),
            ("ANSWER", "1.2")
        );
        assert_eq!(row.eventtime, "");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(CelColumns::parse_list(""), Err(CelColumnsError::Empty));
        assert_eq!(CelColumns::from_mapping(" , "), Err(CelColumnsError::Empty));
        assert_eq!(
            CelColumns::parse_list("eventtype,eventtime"),
            Err(CelColumnsError::Missing { column: "uniqueid" })
        );
        assert_eq!(
            CelColumns::from_mapping("${uniqueid},${eventtime}"),
            Err(CelColumnsError::Missing {
                column: "eventtype"
            })
        );
        assert_eq!(
            CelColumns::parse_list("eventtype,${uniqueid}"),
            Err(CelColumnsError::NotAName {
                index: 1,
                text: "${uniqueid}".into()
            })
        );
        let err =
            CelColumns::from_mapping("x => ${eventtype},${CSV_QUOTE(${uniqueid}").unwrap_err();
        assert_eq!(err, CelColumnsError::Unclosed { open: '{', at: 19 });
        assert_eq!(
            err.to_string(),
            "`{` at byte 19 of the cel_custom mapping is never closed"
        );
        assert_eq!(
            CelColumns::from_mapping("${eventtype}),${uniqueid}"),
            Err(CelColumnsError::Unopened { close: ')', at: 12 })
        );
        assert!(
            CelColumnsError::Missing { column: "uniqueid" }
                .to_string()
                .contains("need eventtype and uniqueid")
        );
    }

    #[test]
    fn rows_from_fields_and_from_names() {
        let fields = [
            "CHAN_START",
            "1795355648.579430",
            "Alice",
            "1001",
            "",
            "",
            "",
            "2001",
            "internal",
            "Local/2001@internal-0000002c;1",
            "",
            "",
            "3",
            "",
            "1795355648.116",
            "1795355648.116",
            "",
            "",
            "",
            "{\"x\":1}",
        ];
        let row = CelRow::from_fields(&CelColumns::sample(), &fields).unwrap();
        assert_eq!(row, CelRow::from_csv_fields(&fields).unwrap());
        // A header line, and rows without the needed fields.
        let header: Vec<&str> = SAMPLE.to_vec();
        assert_eq!(CelRow::from_fields(&CelColumns::sample(), &header), None);
        assert_eq!(
            CelRow::from_fields(&CelColumns::sample(), &fields[..14]),
            None
        );
        assert_eq!(CelRow::from_fields(&CelColumns::sample(), &[]), None);

        // A database row: names, any case, extra columns, eventextra.
        let db = CelRow::from_named([
            ("id", "17"),
            ("EventType", "CHAN_START"),
            ("eventtime", "2026-11-22 13:54:08.579430"),
            ("cid_name", "Alice"),
            ("cid_num", "1001"),
            ("exten", "2001"),
            ("context", "internal"),
            ("channame", "Local/2001@internal-0000002c;1"),
            ("amaflags", "DOCUMENTATION"),
            ("uniqueid", "1795355648.116"),
            ("linkedid", "1795355648.116"),
            ("peeraccount", ""),
            ("eventextra", "{\"x\":1}"),
            ("extra", "ignored: eventextra came first"),
        ])
        .unwrap();
        assert_eq!(
            db,
            CelRow {
                eventtime: "2026-11-22 13:54:08.579430".into(),
                ..row
            }
        );
        assert_eq!(CelRow::from_named([("eventtype", "ANSWER")]), None);
        assert_eq!(
            CelRow::from_named([("eventtype", " "), ("uniqueid", "1.1")]),
            None
        );
    }
}
