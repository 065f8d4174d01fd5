use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::*;
use crate::settings::SinkSpec;

fn args(v: &[&str]) -> Args {
    let mut all = vec!["smdr-relay"];
    all.extend_from_slice(v);
    Args::try_parse_from(all).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn defaults_listen_store_and_serve() {
    let c = Config::resolve(&args(&[])).unwrap();
    assert_eq!(c.source, SourceConfig::Listen(DEFAULT_SMDR_LISTEN.into()));
    assert_eq!(c.sinks, vec![SinkSpec::Store]);
    assert_eq!(c.db, default_db());
    assert_eq!(c.http.as_deref(), Some(DEFAULT_HTTP));
    assert!(c.webhook.is_none());
    assert_eq!(c.retry.max_attempts, 25);
    assert_eq!(c.retry.base, Duration::from_secs(30));
    assert_eq!(c.sentry_cron_interval, Duration::from_secs(180));
}

#[test]
fn a_webhook_url_adds_the_webhook_sink() {
    let c = Config::resolve(&args(&[
        "--webhook-url",
        "http://127.0.0.1:9/hook",
        "--webhook-key",
        "k",
        "--smdr-addr",
        "pbx.example:5000",
    ]))
    .unwrap();
    assert_eq!(c.sinks, vec![SinkSpec::Store, SinkSpec::Webhook]);
    assert_eq!(c.source, SourceConfig::Connect("pbx.example:5000".into()));
    assert_eq!(c.webhook.unwrap().authorization.as_deref(), Some("k"));
}

#[test]
fn webhook_concurrency_defaults_to_16_within_1_to_256() {
    let concurrency = |extra: &[&str]| {
        let mut v = vec!["--webhook-url", "http://127.0.0.1:9/hook"];
        v.extend_from_slice(extra);
        Config::resolve(&args(&v))
            .unwrap()
            .webhook
            .unwrap()
            .concurrency
    };
    assert_eq!(concurrency(&[]), 16);
    assert_eq!(concurrency(&["--webhook-concurrency", "1"]), 1);
    assert_eq!(concurrency(&["--webhook-concurrency", "64"]), 64);
    assert_eq!(concurrency(&["--webhook-concurrency", "0"]), 1);
    assert_eq!(concurrency(&["--webhook-concurrency", "100000"]), 256);
}

#[test]
fn file_settings_are_overridden_by_flags() {
    let dir = std::env::temp_dir().join(format!("cdr-relay-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relay.toml");
    std::fs::write(
        &path,
        "smdr_listen = \"127.0.0.1:7000\"\nsite = \"hq\"\nsinks = [\"store\", \"jsonl:-\"]\nwebhook_max_retries = 3\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let c = Config::resolve(&args(&["--config", p, "--site", "branch"])).unwrap();
    assert_eq!(c.source, SourceConfig::Listen("127.0.0.1:7000".into()));
    assert_eq!(c.site, "branch");
    assert_eq!(c.sinks, vec![SinkSpec::Store, SinkSpec::Jsonl(None)]);
    assert_eq!(c.retry.max_attempts, 3);
    std::fs::write(&path, "smdr_lisen = \"typo\"\n").unwrap();
    let e = Config::resolve(&args(&["--config", p])).unwrap_err();
    assert!(e.0.contains("smdr_lisen"), "{e}");
}

#[test]
fn contradictions_are_refused_clearly() {
    let e = Config::resolve(&args(&["--smdr-addr", "a:1", "--smdr-listen", "b:2"])).unwrap_err();
    assert!(e.0.contains("not both"), "{e}");
    let e = Config::resolve(&args(&["--sink", "webhook"])).unwrap_err();
    assert!(e.0.contains("SMDR_WEBHOOK_URL"), "{e}");
    let e = Config::resolve(&args(&["--webhook-url", "ftp://x"])).unwrap_err();
    assert!(e.0.contains("http"), "{e}");
}

#[test]
fn an_sql_url_adds_the_sql_sink_with_its_settings() {
    let c = Config::resolve(&args(&[
        "--sql-url",
        "postgres://cdr:hunter2@db.example:5432/reports",
        "--sql-tls",
        "verify-full",
        "--sql-table-prefix",
        "cdr_",
        "--sql-utc-offset",
        "+02:00",
    ]))
    .unwrap();
    assert_eq!(c.sinks, vec![SinkSpec::Store, SinkSpec::Sql]);
    let q = c.sql.unwrap();
    assert_eq!(q.tls, Some(cdr_sinks::sql::SqlTls::Verify));
    assert_eq!(q.table_prefix, "cdr_");
    assert_eq!(q.utc_offset.local_minus_utc(), 7200);
    assert!(!format!("{q:?}").contains("hunter2"));
    let e = Config::resolve(&args(&["--sink", "sql"])).unwrap_err();
    assert!(e.0.contains("SQL_URL"), "{e}");
    let e = Config::resolve(&args(&["--sql-url", "oracle://x/y"])).unwrap_err();
    assert!(e.0.contains("SQL_URL"), "{e}");
    let e = Config::resolve(&args(&[
        "--sql-url",
        "mysql://x/y",
        "--sql-table-prefix",
        "No Spaces",
    ]))
    .unwrap_err();
    assert!(e.0.contains("prefix"), "{e}");
    let e = Config::resolve(&args(&[
        "--sql-url",
        "mysql://x/y",
        "--sql-utc-offset",
        "CET",
    ]))
    .unwrap_err();
    assert!(e.0.contains("SQL_UTC_OFFSET"), "{e}");
}

fn ami(v: &[&str]) -> Result<Config, ConfigError> {
    let mut all = vec!["ami-relay"];
    all.extend_from_slice(v);
    // A value clap refuses (an enum-like setting) is an error like the others.
    let args = AmiArgs::try_parse_from(all).map_err(|e| ConfigError(e.to_string()))?;
    Config::resolve_ami(&args)
}

/// ami-relay's zone: UTC by default, AMI_UTC_OFFSET as before, PBX_TZ (a named zone with
/// daylight saving) over it; a bad zone is refused by name.
#[test]
fn ami_zone_from_pbx_tz_over_the_utc_offset() {
    use call_assembler::PbxZone;
    let with = |more: &[&str]| {
        let mut v = vec![
            "--ami-host",
            "pbx.example",
            "--ami-username",
            "relay",
            "--ami-password",
            "pw",
        ];
        v.extend_from_slice(more);
        ami(&v)
    };
    assert_eq!(with(&[]).unwrap().ami.zone, PbxZone::UTC);
    let fixed = with(&["--utc-offset", "+02:00"]).unwrap();
    assert_eq!(fixed.ami.zone, PbxZone::fixed_secs(7200));
    let named = with(&["--utc-offset", "+02:00", "--pbx-tz", "Europe/Berlin"]).unwrap();
    assert_eq!(named.ami.zone.to_string(), "Europe/Berlin");
    assert!(
        named.describe().contains("PBX time zone: Europe/Berlin"),
        "{}",
        named.describe()
    );
    let e = with(&["--pbx-tz", "Europe/Berlni"]).unwrap_err();
    assert!(e.0.contains("PBX_TZ") && e.0.contains("Berlni"), "{e}");
}

#[test]
fn cel_mode_db_reads_the_db_settings() {
    let c = ami(&[
        "--cel-mode",
        "db",
        "--db-type",
        "mariadb",
        "--db-user",
        "reader",
    ])
    .unwrap();
    let SourceConfig::CelDb(d) = &c.source else {
        panic!("{:?}", c.source);
    };
    assert_eq!(d.kind, DbKind::MySql);
    assert_eq!((d.host.as_str(), d.port), ("127.0.0.1", 3306));
    assert_eq!(d.database, "asterisk");
    assert_eq!(
        (d.cel_table.as_str(), d.cdr_table.as_deref()),
        ("cel", Some("cdr"))
    );
    assert_eq!(d.tls, DbTls::Prefer);
    assert_eq!(d.poll, Duration::from_millis(1000));
    assert_eq!(d.batch, 1000);
    assert_eq!(d.lookback, Duration::from_secs(60));
    assert_eq!(d.start, DbStart::Beginning);
    assert!(
        c.describe()
            .contains("mysql://reader@127.0.0.1:3306/asterisk")
    );
    let c = ami(&[
        "--cel-mode",
        "db",
        "--db-type",
        "postgres",
        "--db-table-cdr",
        "",
        "--db-password",
        "s3cret",
        "--db-tls",
        "verify",
        "--db-backfill-from",
        "2026-11-22 13:54:08",
        "--once",
    ])
    .unwrap();
    let SourceConfig::CelDb(d) = &c.source else {
        panic!("{:?}", c.source);
    };
    assert_eq!(
        (d.kind, d.port, d.tls),
        (DbKind::Postgres, 5432, DbTls::Verify)
    );
    assert_eq!(d.cdr_table, None, "an empty DB_TABLE_CDR: no CDR table");
    assert_eq!(
        d.start,
        DbStart::From(parse_db_time("2026-11-22 13:54:08").unwrap())
    );
    assert!(d.once);
    assert!(!format!("{d:?}").contains("s3cret"));
    assert!(!c.describe().contains("s3cret"));
    let c = ami(&[
        "--cel-mode",
        "db",
        "--db-type",
        "mysql",
        "--db-password",
        "",
    ])
    .unwrap();
    let SourceConfig::CelDb(d) = &c.source else {
        panic!("{:?}", c.source);
    };
    assert_eq!(d.password, None, "an empty DB_PASSWORD is no password");
    for (args, says) in [
        (vec!["--cel-mode", "db"], "needs DB_TYPE"),
        (vec!["--cel-mode", "db", "--db-type", "oracle"], "DB_TYPE"),
        (
            vec![
                "--cel-mode",
                "db",
                "--db-type",
                "mysql",
                "--db-tls",
                "maybe",
            ],
            "DB_TLS",
        ),
        (
            vec![
                "--cel-mode",
                "db",
                "--db-type",
                "mysql",
                "--db-backfill-from",
                "yesterday",
            ],
            "DB_BACKFILL_FROM",
        ),
        (
            vec![
                "--cel-mode",
                "db",
                "--db-type",
                "mysql",
                "--db-backfill-from",
                "2026-01-01",
                "--db-fresh-start",
                "true",
            ],
            "not both",
        ),
    ] {
        let e = ami(&args).unwrap_err();
        assert!(e.0.contains(says), "{args:?}: {e}");
    }
}

#[test]
fn a_recordings_table_takes_the_db_settings_in_any_cel_mode() {
    // CEL_MODE=ami (a replay) with an empty DB_TABLE_CDR: no reconciliation, the table read.
    let c = ami(&[
        "--replay",
        "x.raw",
        "--db-type",
        "postgresql",
        "--db-name",
        "pbx",
        "--db-password",
        "s3cret",
        "--db-table-cdr",
        "",
        "--db-table-recordings",
        "public.recs",
        "--recordings-max-age-hours",
        "2",
    ])
    .unwrap();
    assert!(
        c.reconcile.is_none(),
        "an empty DB_TABLE_CDR: no reconciliation"
    );
    assert!(c.recordings.is_none());
    let t = c.recordings_table.as_ref().unwrap();
    assert_eq!(t.table, "public.recs");
    assert_eq!(t.max_age, Duration::from_secs(7200));
    assert_eq!(
        (t.db.kind, t.db.database.as_str()),
        (DbKind::Postgres, "pbx")
    );
    let d = c.describe();
    assert!(
        d.contains("recordings table: the table public.recs at postgresql://127.0.0.1:5432/pbx"),
        "{d}"
    );
    assert!(!d.contains("s3cret"), "{d}");
    // The cdr_csv file still reconciles when the database's CDR table is off.
    let c = ami(&[
        "--replay",
        "x.raw",
        "--db-type",
        "mysql",
        "--db-table-cdr",
        "",
        "--cdr-csv-path",
        "/tmp/Master.csv",
    ])
    .unwrap();
    assert!(matches!(
        c.reconcile.as_ref().map(|r| &r.cdr),
        Some(ReconcileCdr::Csv(_))
    ));
    assert!(c.recordings_table.is_none());
    // With the CDR table (the default), AMI is reconciled with it as before.
    let c = ami(&["--replay", "x.raw", "--db-type", "mysql"]).unwrap();
    assert!(matches!(
        c.reconcile.as_ref().map(|r| &r.cdr),
        Some(ReconcileCdr::Db(_))
    ));
    // CEL_MODE=db and csv read it too.
    for mode in ["db", "csv"] {
        let c = ami(&[
            "--cel-mode",
            mode,
            "--db-type",
            "mariadb",
            "--db-table-recordings",
            "recs",
        ])
        .unwrap();
        assert_eq!(c.recordings_table.unwrap().db.kind, DbKind::MySql, "{mode}");
    }
    let e = ami(&["--replay", "x.raw", "--db-table-recordings", "recs"]).unwrap_err();
    assert!(e.0.contains("DB_TABLE_RECORDINGS needs DB_TYPE"), "{e}");
}

#[test]
fn retention_defaults_flags_and_file() {
    let c = Config::resolve(&args(&[])).unwrap();
    assert_eq!(
        c.retention.max_age,
        Some(Duration::from_secs(30 * 24 * 3600))
    );
    assert_eq!(c.retention.max_bytes, Some(500 << 20));
    let c = Config::resolve(&args(&["--retention-days", "0", "--max-db-mb", "2"])).unwrap();
    assert_eq!(c.retention.max_age, None, "0 keeps forever");
    assert_eq!(c.retention.max_bytes, Some(2 << 20));
    let dir = std::env::temp_dir().join(format!("cdr-relay-retention-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relay.toml");
    std::fs::write(&path, "retention_days = 7\nmax_db_mb = 0\n").unwrap();
    let c = Config::resolve(&args(&["--config", path.to_str().unwrap()])).unwrap();
    assert_eq!(
        c.retention.max_age,
        Some(Duration::from_secs(7 * 24 * 3600))
    );
    assert_eq!(c.retention.max_bytes, None, "0: no size limit");
    assert!(
        c.describe()
            .contains("retention: keep 7 days, no size limit"),
        "{}",
        c.describe()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_database_defaults_to_the_service_state_directory() {
    use std::ffi::OsStr;
    assert_eq!(default_db_in(None), PathBuf::from(DEFAULT_DB));
    assert_eq!(
        default_db_in(Some(OsStr::new(""))),
        PathBuf::from(DEFAULT_DB)
    );
    assert_eq!(
        default_db_in(Some(OsStr::new("/var/lib/cdr-relay/smdr-relay"))),
        PathBuf::from("/var/lib/cdr-relay/smdr-relay/cdr-relay.db")
    );
    // systemd lists several directories (several StateDirectory= entries) with `:`.
    assert_eq!(
        default_db_in(Some(OsStr::new("/var/lib/a:/var/lib/b"))),
        PathBuf::from("/var/lib/a/cdr-relay.db")
    );
}
