//! How a table is read: which of its columns fill which field of the line cel_custom or
//! cdr_csv would have written (the fields the feed is handed), and the SQL reading a page of it
//! (built from the column names `information_schema` gave and placeholders, nothing else).

use super::*;

/// A field of the line: its name and the columns that may hold it, first found wins.
pub(super) struct Field {
    pub(super) columns: &'static [&'static str],
    pub(super) format: Format,
}

pub(super) const fn text(columns: &'static [&'static str]) -> Field {
    Field {
        columns,
        format: Format::Text,
    }
}

/// cel_custom's sample mapping, in order.
pub(super) const CEL_FIELDS: [Field; 20] = [
    text(&["eventtype"]),
    Field {
        columns: &["eventtime"],
        format: Format::Micros,
    },
    text(&["cid_name"]),
    text(&["cid_num"]),
    text(&["cid_ani"]),
    text(&["cid_rdnis"]),
    text(&["cid_dnid"]),
    text(&["exten"]),
    text(&["context"]),
    text(&["channame"]),
    text(&["appname"]),
    text(&["appdata"]),
    text(&["amaflags"]),
    text(&["accountcode"]),
    text(&["uniqueid"]),
    text(&["linkedid"]),
    text(&["peer"]),
    text(&["userfield"]),
    text(&["userdeftype"]),
    text(&["extra", "eventextra"]),
];

/// cdr_csv's columns with `loguniqueid`, `loguserfield` and `newcdrcolumns`, in order.
pub(super) const CDR_FIELDS: [Field; 21] = [
    text(&["accountcode"]),
    text(&["src"]),
    text(&["dst"]),
    text(&["dcontext"]),
    text(&["clid"]),
    text(&["channel"]),
    text(&["dstchannel"]),
    text(&["lastapp"]),
    text(&["lastdata"]),
    Field {
        columns: &["start", "calldate"],
        format: Format::Seconds,
    },
    Field {
        columns: &["answer"],
        format: Format::Seconds,
    },
    Field {
        columns: &["end"],
        format: Format::Seconds,
    },
    text(&["duration"]),
    text(&["billsec"]),
    text(&["disposition"]),
    text(&["amaflags"]),
    text(&["uniqueid"]),
    text(&["userfield"]),
    text(&["peeraccount"]),
    text(&["linkedid"]),
    text(&["sequence"]),
];

/// The index of `amaflags` in [`CDR_FIELDS`].
pub(super) const CDR_AMAFLAGS: usize = 15;

/// cdr_csv's word for a numeric AMA flag.
pub(super) fn amaflags_word(value: &str) -> Option<&'static str> {
    match value.trim() {
        "1" => Some("OMIT"),
        "2" => Some("BILLING"),
        "3" => Some("DOCUMENTATION"),
        _ => None,
    }
}

/// How a table is read, worked out from its columns: the SQL is built here, with nothing but
/// the column names from `information_schema` and placeholders in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub(super) kind: DbKind,
    pub(super) which: CsvFile,
    /// The quoted table name.
    pub(super) table: String,
    /// The select expression of each field of the line (`None`: the table lacks it).
    pub(super) fields: Vec<Option<String>>,
    /// The `id` column, quoted, when the table is read by id.
    pub(super) id: Option<String>,
    /// The time column: quoted, its select expression (microseconds), and the SQL its
    /// placeholder is compared through.
    pub(super) time: Option<TimeColumn>,
    /// Extra ORDER BY columns after the time (uniqueid, sequence), quoted.
    pub(super) tiebreak: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TimeColumn {
    pub(super) quoted: String,
    pub(super) select: String,
    /// The type a placeholder compared with it is cast to (PostgreSQL's time types; MySQL
    /// converts by itself).
    pub(super) cast: Option<String>,
}

impl Layout {
    /// How to read the table `name` holding `which` rows, from its columns; `None` when it has
    /// neither an integer `id` nor a time column to keep a watermark by.
    pub fn new(kind: DbKind, which: CsvFile, name: &str, columns: &[Column]) -> Option<Self> {
        let find = |n: &str| columns.iter().find(|c| c.name.eq_ignore_ascii_case(n));
        let spec: &[Field] = match which {
            CsvFile::Cel => &CEL_FIELDS,
            CsvFile::Cdr => &CDR_FIELDS,
        };
        let fields = spec
            .iter()
            .map(|f| {
                f.columns
                    .iter()
                    .find_map(|n| find(n))
                    .map(|c| select_expr(kind, c, f.format))
            })
            .collect();
        let id = find("id")
            .filter(|c| c.is_integer())
            .map(|c| quote_ident(kind, &c.name));
        let time_names: &[&str] = match which {
            CsvFile::Cel => &["eventtime"],
            CsvFile::Cdr => &["end", "calldate", "start"],
        };
        let time = time_names.iter().find_map(|n| find(n)).map(|c| {
            let quoted = quote_ident(kind, &c.name);
            TimeColumn {
                // Compared as text when it is not a time type.
                quoted: if c.is_time() || kind == DbKind::MySql {
                    quoted
                } else {
                    format!("CAST({quoted} AS text)")
                },
                select: select_expr(kind, c, Format::Micros),
                cast: (kind == DbKind::Postgres && c.is_time()).then(|| c.data_type.clone()),
            }
        });
        if id.is_none() && time.is_none() {
            return None;
        }
        let tiebreak = ["uniqueid", "sequence"]
            .iter()
            .filter_map(|n| find(n))
            .map(|c| quote_ident(kind, &c.name))
            .collect();
        Some(Self {
            kind,
            which,
            table: quote_table(kind, name),
            fields,
            id,
            time,
            tiebreak,
        })
    }

    /// Whether the table is read by id.
    pub fn by_id(&self) -> bool {
        self.id.is_some()
    }

    /// Placeholder `n` for a value compared with the time column.
    pub(super) fn placeholder_time(&self, n: usize) -> String {
        match self.time.as_ref().and_then(|t| t.cast.as_ref()) {
            Some(ty) => format!("CAST({} AS {ty})", ph(self.kind, n)),
            None => ph(self.kind, n),
        }
    }

    /// `lead` and the fields' expressions, each named `c0`, `c1`, ... so that ORDER BY a column
    /// name means the column, not an output of the same name (a text cast of `id` would
    /// order `10` before `2`).
    pub(super) fn select_list(&self, lead: &str) -> String {
        std::iter::once(lead)
            .chain(self.fields.iter().flatten().map(String::as_str))
            .enumerate()
            .map(|(i, e)| format!("{e} AS c{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Rows after an id: `(id, fields...)`, in id order; params: after, [until], limit.
    pub(super) fn id_page_sql(&self, until: bool) -> Option<String> {
        let id = self.id.as_ref()?;
        let k = self.kind;
        let lead = match k {
            DbKind::Postgres => format!("CAST({id} AS text)"),
            DbKind::MySql => format!("CAST({id} AS CHAR)"),
        };
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {id} > {}",
            self.select_list(&lead),
            self.table,
            ph(k, 1)
        );
        let mut n = 2;
        if until {
            sql.push_str(&format!(" AND {id} <= {}", ph(k, n)));
            n += 1;
        }
        sql.push_str(&format!(" ORDER BY {id} LIMIT {}", ph(k, n)));
        Some(sql)
    }

    /// Rows from a time: `(time, fields...)`, in time order; params: [from], [until], limit,
    /// offset.
    pub(super) fn time_page_sql(&self, from: bool, until: bool) -> Option<String> {
        let t = self.time.as_ref()?;
        let k = self.kind;
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {} IS NOT NULL",
            self.select_list(&t.select),
            self.table,
            t.quoted
        );
        let mut n = 1;
        if from {
            sql.push_str(&format!(
                " AND {} >= {}",
                t.quoted,
                self.placeholder_time(n)
            ));
            n += 1;
        }
        if until {
            sql.push_str(&format!(
                " AND {} <= {}",
                t.quoted,
                self.placeholder_time(n)
            ));
            n += 1;
        }
        let mut order = vec![t.quoted.clone()];
        order.extend(self.tiebreak.iter().cloned());
        sql.push_str(&format!(
            " ORDER BY {} LIMIT {} OFFSET {}",
            order.join(", "),
            ph(k, n),
            ph(k, n + 1)
        ));
        Some(sql)
    }

    /// The newest id, as text.
    pub(super) fn max_id_sql(&self) -> Option<String> {
        let id = self.id.as_ref()?;
        Some(match self.kind {
            DbKind::Postgres => format!("SELECT CAST(MAX({id}) AS text) FROM {}", self.table),
            DbKind::MySql => format!("SELECT CAST(MAX({id}) AS CHAR) FROM {}", self.table),
        })
    }

    /// The first id, as text.
    pub(super) fn first_id_sql(&self) -> Option<String> {
        let id = self.id.as_ref()?;
        Some(match self.kind {
            DbKind::Postgres => format!("SELECT CAST(MIN({id}) AS text) FROM {}", self.table),
            DbKind::MySql => format!("SELECT CAST(MIN({id}) AS CHAR) FROM {}", self.table),
        })
    }

    /// The first id at or after a time (param 1), as text.
    pub(super) fn first_id_from_sql(&self) -> Option<String> {
        let id = self.id.as_ref()?;
        let t = self.time.as_ref()?;
        let cast = match self.kind {
            DbKind::Postgres => "text",
            DbKind::MySql => "CHAR",
        };
        Some(format!(
            "SELECT CAST(MIN({id}) AS {cast}) FROM {} WHERE {} >= {}",
            self.table,
            t.quoted,
            self.placeholder_time(1)
        ))
    }

    /// The newest time, as the watermark's text.
    pub(super) fn max_time_sql(&self) -> Option<String> {
        let t = self.time.as_ref()?;
        Some(format!(
            "SELECT {} FROM {} WHERE {} IS NOT NULL ORDER BY {} DESC LIMIT 1",
            t.select, self.table, t.quoted, t.quoted
        ))
    }

    /// The fields of a row's line (the row without its leading watermark column), in the
    /// file's layout: what the feed is handed.
    pub(super) fn fields(&self, values: &[Option<String>]) -> Vec<String> {
        let mut it = values.iter();
        let mut out: Vec<String> = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let v = match f {
                Some(_) => it.next().and_then(Option::as_deref).unwrap_or(""),
                None => "",
            };
            out.push(v.to_owned());
        }
        if self.which == CsvFile::Cdr
            && let Some(word) = out.get(CDR_AMAFLAGS).and_then(|v| amaflags_word(v))
            && let Some(slot) = out.get_mut(CDR_AMAFLAGS)
        {
            *slot = word.to_owned();
        }
        out
    }
}
