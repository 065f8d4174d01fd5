//! The SQL sink's tables and their migrations: `calls` and `call_legs` (each behind the
//! configured prefix) and `schema_migrations`, the list of migrations applied.
//!
//! Every migration is written so that running it again does nothing (`CREATE TABLE IF NOT
//! EXISTS`, `CREATE INDEX IF NOT EXISTS`; on MySQL the indexes are part of `CREATE TABLE`,
//! which MySQL 8 and MariaDB both take), because MySQL commits DDL at once: a relay stopped
//! between a table and the row saying it is there runs the migration again, harmlessly.

use super::Dialect;

/// The newest schema version this sink writes to.
pub(crate) const LATEST: i64 = 1;

/// How a column's value is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// As it is (text, integer, boolean).
    Plain,
    /// A local time given as `YYYY-MM-DD HH:MM:SS` text.
    Local,
    /// A UTC time given as `YYYY-MM-DD HH:MM:SS` text.
    Utc,
    /// JSON given as text.
    Json,
}

/// The columns of `calls` the sink writes, in bind order (`updated_at` is set by the server).
pub(crate) const CALL_COLUMNS: &[(&str, Ty)] = &[
    ("id", Ty::Plain),
    ("revision", Ty::Plain),
    ("source", Ty::Plain),
    ("site", Ty::Plain),
    ("call_id", Ty::Plain),
    ("part", Ty::Plain),
    ("start_local", Ty::Local),
    ("end_local", Ty::Local),
    ("start_utc", Ty::Utc),
    ("end_utc", Ty::Utc),
    ("duration", Ty::Plain),
    ("billsec", Ty::Plain),
    ("ring", Ty::Plain),
    ("hold", Ty::Plain),
    ("park", Ty::Plain),
    ("disposition", Ty::Plain),
    ("direction", Ty::Plain),
    ("caller", Ty::Plain),
    ("called", Ty::Plain),
    ("dialled", Ty::Plain),
    ("answered", Ty::Plain),
    ("answered_by", Ty::Plain),
    ("answered_by_name", Ty::Plain),
    ("tenant", Ty::Plain),
    ("complete", Ty::Plain),
    ("flush_reason", Ty::Plain),
    ("legs", Ty::Plain),
    ("body", Ty::Json),
];

/// The columns of `call_legs`, in bind order.
pub(crate) const LEG_COLUMNS: &[(&str, Ty)] = &[
    ("call_id", Ty::Plain),
    ("leg_no", Ty::Plain),
    ("kind", Ty::Plain),
    ("leg_id", Ty::Plain),
    ("start_local", Ty::Local),
    ("end_local", Ty::Local),
    ("start_utc", Ty::Utc),
    ("end_utc", Ty::Utc),
    ("answered", Ty::Plain),
    ("duration", Ty::Plain),
    ("ring", Ty::Plain),
    ("caller", Ty::Plain),
    ("called", Ty::Plain),
    ("dialled", Ty::Plain),
    ("direction", Ty::Plain),
    ("device", Ty::Plain),
    ("device_name", Ty::Plain),
    ("other_device", Ty::Plain),
    ("other_name", Ty::Plain),
    ("dial_status", Ty::Plain),
    ("hangup_cause", Ty::Plain),
    ("hangup_text", Ty::Plain),
    ("body", Ty::Json),
];

/// The three tables' names with their prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tables {
    pub(crate) prefix: String,
    pub(crate) calls: String,
    pub(crate) legs: String,
    pub(crate) migrations: String,
}

impl Tables {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            calls: format!("{prefix}calls"),
            legs: format!("{prefix}call_legs"),
            migrations: format!("{prefix}schema_migrations"),
        }
    }
}

/// `CREATE TABLE IF NOT EXISTS` of the migrations table.
pub(crate) fn migrations_table(d: Dialect, t: &Tables) -> String {
    let m = d.quote(&t.migrations);
    match d {
        Dialect::Postgres => format!(
            "CREATE TABLE IF NOT EXISTS {m} (version integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now(), description varchar(255) NOT NULL)"
        ),
        Dialect::MySql => format!(
            "CREATE TABLE IF NOT EXISTS {m} (version INT PRIMARY KEY, \
             applied_at DATETIME(6) NOT NULL, description VARCHAR(255) NOT NULL) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        ),
    }
}

/// The statements of migration `version` (1-based), with what it does.
pub(crate) fn migration(
    d: Dialect,
    t: &Tables,
    version: i64,
) -> Option<(&'static str, Vec<String>)> {
    match version {
        1 => Some(("calls and call_legs", v1(d, t))),
        _ => None,
    }
}

/// Version 1: `calls`, `call_legs` and their indexes.
fn v1(d: Dialect, t: &Tables) -> Vec<String> {
    let (calls, legs) = (d.quote(&t.calls), d.quote(&t.legs));
    let p = &t.prefix;
    match d {
        Dialect::Postgres => {
            let mut v = vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {calls} (
  id varchar(64) PRIMARY KEY,
  revision bigint NOT NULL,
  source varchar(16) NOT NULL,
  site varchar(255) NOT NULL DEFAULT '',
  call_id varchar(255) NOT NULL,
  part integer NOT NULL DEFAULT 0,
  start_local timestamp(0) NOT NULL,
  end_local timestamp(0) NOT NULL,
  start_utc timestamptz(0) NOT NULL,
  end_utc timestamptz(0) NOT NULL,
  duration bigint NOT NULL,
  billsec bigint,
  ring bigint NOT NULL,
  hold bigint NOT NULL,
  park bigint NOT NULL,
  disposition varchar(255) NOT NULL DEFAULT '',
  direction varchar(16) NOT NULL,
  caller varchar(255) NOT NULL DEFAULT '',
  called varchar(255) NOT NULL DEFAULT '',
  dialled varchar(255) NOT NULL DEFAULT '',
  answered boolean NOT NULL,
  answered_by varchar(255),
  answered_by_name varchar(255),
  tenant varchar(255) NOT NULL DEFAULT '',
  complete boolean NOT NULL,
  flush_reason varchar(255),
  legs integer NOT NULL,
  body jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
)"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {legs} (
  call_id varchar(64) NOT NULL REFERENCES {calls} (id) ON DELETE CASCADE,
  leg_no integer NOT NULL,
  kind varchar(16) NOT NULL,
  leg_id varchar(255),
  start_local timestamp(0),
  end_local timestamp(0),
  start_utc timestamptz(0),
  end_utc timestamptz(0),
  answered boolean NOT NULL,
  duration bigint,
  ring bigint,
  caller varchar(255),
  called varchar(255),
  dialled varchar(255),
  direction varchar(16),
  device varchar(255),
  device_name varchar(255),
  other_device varchar(255),
  other_name varchar(255),
  dial_status varchar(255),
  hangup_cause integer,
  hangup_text varchar(255),
  body jsonb NOT NULL,
  PRIMARY KEY (call_id, leg_no)
)"
                ),
            ];
            for (table, cols) in [
                (
                    &t.calls,
                    &["start_utc", "start_local", "caller", "called"][..],
                ),
                (&t.legs, &["start_utc", "caller", "called", "device"][..]),
            ] {
                for c in cols {
                    v.push(format!(
                        "CREATE INDEX IF NOT EXISTS {} ON {} ({c})",
                        d.quote(&format!("{table}_{c}_idx")),
                        d.quote(table)
                    ));
                }
            }
            v.push(format!(
                "CREATE INDEX IF NOT EXISTS {} ON {calls} (site, start_utc)",
                d.quote(&format!("{p}calls_site_start_utc_idx"))
            ));
            v
        }
        Dialect::MySql => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {calls} (
  id VARCHAR(64) NOT NULL PRIMARY KEY,
  revision BIGINT NOT NULL,
  source VARCHAR(16) NOT NULL,
  site VARCHAR(255) NOT NULL DEFAULT '',
  call_id VARCHAR(255) NOT NULL,
  part INT NOT NULL DEFAULT 0,
  start_local DATETIME NOT NULL,
  end_local DATETIME NOT NULL,
  start_utc DATETIME NOT NULL,
  end_utc DATETIME NOT NULL,
  duration BIGINT NOT NULL,
  billsec BIGINT NULL,
  ring BIGINT NOT NULL,
  hold BIGINT NOT NULL,
  park BIGINT NOT NULL,
  disposition VARCHAR(255) NOT NULL DEFAULT '',
  direction VARCHAR(16) NOT NULL,
  caller VARCHAR(255) NOT NULL DEFAULT '',
  called VARCHAR(255) NOT NULL DEFAULT '',
  dialled VARCHAR(255) NOT NULL DEFAULT '',
  answered BOOLEAN NOT NULL,
  answered_by VARCHAR(255) NULL,
  answered_by_name VARCHAR(255) NULL,
  tenant VARCHAR(255) NOT NULL DEFAULT '',
  complete BOOLEAN NOT NULL,
  flush_reason VARCHAR(255) NULL,
  legs INT NOT NULL,
  body JSON NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  INDEX calls_start_utc (start_utc),
  INDEX calls_start_local (start_local),
  INDEX calls_caller (caller),
  INDEX calls_called (called),
  INDEX calls_site_start_utc (site, start_utc)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {legs} (
  call_id VARCHAR(64) NOT NULL,
  leg_no INT NOT NULL,
  kind VARCHAR(16) NOT NULL,
  leg_id VARCHAR(255) NULL,
  start_local DATETIME NULL,
  end_local DATETIME NULL,
  start_utc DATETIME NULL,
  end_utc DATETIME NULL,
  answered BOOLEAN NOT NULL,
  duration BIGINT NULL,
  ring BIGINT NULL,
  caller VARCHAR(255) NULL,
  called VARCHAR(255) NULL,
  dialled VARCHAR(255) NULL,
  direction VARCHAR(16) NULL,
  device VARCHAR(255) NULL,
  device_name VARCHAR(255) NULL,
  other_device VARCHAR(255) NULL,
  other_name VARCHAR(255) NULL,
  dial_status VARCHAR(255) NULL,
  hangup_cause INT NULL,
  hangup_text VARCHAR(255) NULL,
  body JSON NOT NULL,
  PRIMARY KEY (call_id, leg_no),
  INDEX call_legs_start_utc (start_utc),
  INDEX call_legs_caller (caller),
  INDEX call_legs_called (called),
  INDEX call_legs_device (device),
  FOREIGN KEY (call_id) REFERENCES {calls} (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ),
        ],
    }
}

/// The placeholder of bind `n` (1-based) for a column of type `ty`.
fn value(d: Dialect, n: usize, ty: Ty) -> String {
    match (d, ty) {
        (Dialect::Postgres, Ty::Plain) => format!("${n}"),
        (Dialect::Postgres, Ty::Local) => format!("CAST(${n} AS timestamp)"),
        (Dialect::Postgres, Ty::Utc) => format!("(CAST(${n} AS timestamp) AT TIME ZONE 'UTC')"),
        (Dialect::Postgres, Ty::Json) => format!("CAST(${n} AS jsonb)"),
        (Dialect::MySql, _) => "?".to_owned(),
    }
}

/// `VALUES (..), (..)` for `rows` rows of `cols`, plus `extra` (an SQL expression per row,
/// unbound) at the end of each.
fn values(d: Dialect, cols: &[(&str, Ty)], rows: usize, extra: Option<&str>) -> String {
    let mut out = String::with_capacity(rows * cols.len() * 8);
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for (i, (_, ty)) in cols.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            n += 1;
            out.push_str(&value(d, n, *ty));
        }
        if let Some(e) = extra {
            out.push_str(", ");
            out.push_str(e);
        }
        out.push(')');
    }
    out
}

fn column_list(d: Dialect, cols: &[(&str, Ty)], extra: Option<&str>) -> String {
    let mut names: Vec<String> = cols.iter().map(|(c, _)| d.quote(c)).collect();
    if let Some(e) = extra {
        names.push(d.quote(e));
    }
    names.join(", ")
}

/// The upsert of `rows` calls: a new id is inserted; a known one is updated when the row's
/// revision is not newer than this one (a progress record never overwrites the final one).
pub(crate) fn upsert_calls(d: Dialect, t: &Tables, rows: usize) -> String {
    let table = d.quote(&t.calls);
    let now = match d {
        Dialect::Postgres => "now()",
        Dialect::MySql => "UTC_TIMESTAMP(6)",
    };
    let head = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        column_list(d, CALL_COLUMNS, Some("updated_at")),
        values(d, CALL_COLUMNS, rows, Some(now))
    );
    let updated: Vec<&str> = CALL_COLUMNS
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| *c != "id" && *c != "revision")
        .chain(["updated_at"])
        .collect();
    let rev = d.quote("revision");
    match d {
        Dialect::Postgres => {
            let sets: Vec<String> = updated
                .iter()
                .chain(["revision"].iter())
                .map(|c| {
                    let q = d.quote(c);
                    format!("{q} = EXCLUDED.{q}")
                })
                .collect();
            format!(
                "{head} ON CONFLICT ({}) DO UPDATE SET {} WHERE {table}.{rev} <= EXCLUDED.{rev}",
                d.quote("id"),
                sets.join(", ")
            )
        }
        Dialect::MySql => {
            // Assignments run left to right on the row as updated so far: `revision` last.
            let mut sets: Vec<String> = updated
                .iter()
                .map(|c| {
                    let q = d.quote(c);
                    format!("{q} = IF({rev} <= VALUES({rev}), VALUES({q}), {q})")
                })
                .collect();
            sets.push(format!("{rev} = GREATEST({rev}, VALUES({rev}))"));
            format!("{head} ON DUPLICATE KEY UPDATE {}", sets.join(", "))
        }
    }
}

/// A plain multi-row `INSERT` of `rows` rows of `cols` into `table` (with `updated_at` set
/// when `updated_at`): the benchmark's baseline.
pub(crate) fn insert_plain(
    d: Dialect,
    table: &str,
    cols: &[(&str, Ty)],
    rows: usize,
    updated_at: bool,
) -> String {
    let now = match d {
        Dialect::Postgres => "now()",
        Dialect::MySql => "UTC_TIMESTAMP(6)",
    };
    let extra = updated_at.then_some(now);
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        d.quote(table),
        column_list(d, cols, updated_at.then_some("updated_at")),
        values(d, cols, rows, extra)
    )
}

/// The insert of `rows` legs.
pub(crate) fn insert_legs(d: Dialect, t: &Tables, rows: usize) -> String {
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        d.quote(&t.legs),
        column_list(d, LEG_COLUMNS, None),
        values(d, LEG_COLUMNS, rows, None)
    )
}

/// `IN (?, ..)` over `n` binds (MySQL).
fn in_list(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The revisions of `n` calls (their ids one [`super::rows::Arg::List`]). PostgreSQL joins the
/// ids as an array, so that the primary key is used whatever the table's statistics say (a long
/// `IN` list on a table not analyzed yet is planned as a sequential scan).
pub(crate) fn select_revisions(d: Dialect, t: &Tables, n: usize) -> String {
    let calls = d.quote(&t.calls);
    match d {
        Dialect::Postgres => format!(
            "SELECT c.\"id\", c.\"revision\" FROM {calls} c \
             JOIN unnest(CAST($1 AS text[])) AS w(id) ON c.\"id\" = w.id"
        ),
        Dialect::MySql => format!(
            "SELECT `id`, `revision` FROM {calls} WHERE `id` IN ({})",
            in_list(n)
        ),
    }
}

/// Deletes the legs of `n` calls (their ids one [`super::rows::Arg::List`]).
pub(crate) fn delete_legs(d: Dialect, t: &Tables, n: usize) -> String {
    let legs = d.quote(&t.legs);
    match d {
        Dialect::Postgres => format!(
            "DELETE FROM {legs} l USING unnest(CAST($1 AS text[])) AS w(id) \
             WHERE l.\"call_id\" = w.id"
        ),
        Dialect::MySql => format!("DELETE FROM {legs} WHERE `call_id` IN ({})", in_list(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_have_one_placeholder_per_bind() {
        let t = Tables::new("cdr_");
        let pg = upsert_calls(Dialect::Postgres, &t, 2);
        assert!(pg.starts_with("INSERT INTO \"cdr_calls\""), "{pg}");
        assert!(pg.contains(&format!("${}", 2 * CALL_COLUMNS.len())), "{pg}");
        assert!(
            !pg.contains(&format!("${}", 2 * CALL_COLUMNS.len() + 1)),
            "{pg}"
        );
        assert!(pg.contains("WHERE \"cdr_calls\".\"revision\" <= EXCLUDED.\"revision\""));
        let my = upsert_calls(Dialect::MySql, &t, 3);
        assert_eq!(my.matches('?').count(), 3 * CALL_COLUMNS.len());
        assert!(
            my.ends_with("`revision` = GREATEST(`revision`, VALUES(`revision`))"),
            "{my}"
        );
        let legs = insert_legs(Dialect::Postgres, &t, 1);
        assert!(legs.contains("CAST($5 AS timestamp)"), "{legs}");
        assert_eq!(
            select_revisions(Dialect::MySql, &t, 2),
            "SELECT `id`, `revision` FROM `cdr_calls` WHERE `id` IN (?, ?)"
        );
        assert!(
            delete_legs(Dialect::Postgres, &t, 2).contains("unnest(CAST($1 AS text[]))"),
            "one array bind"
        );
        assert_eq!(
            delete_legs(Dialect::MySql, &t, 2),
            "DELETE FROM `cdr_call_legs` WHERE `call_id` IN (?, ?)"
        );
    }

    #[test]
    fn every_migration_names_its_tables_with_the_prefix() {
        for d in [Dialect::Postgres, Dialect::MySql] {
            let t = Tables::new("x_");
            let (_, v) = migration(d, &t, LATEST).unwrap();
            assert!(v.iter().all(|s| s.contains("x_call")), "{v:?}");
            assert!(v.iter().all(|s| s.contains("IF NOT EXISTS")), "{v:?}");
            assert!(migration(d, &t, LATEST + 1).is_none());
            assert!(migrations_table(d, &t).contains("x_schema_migrations"));
        }
    }
}
