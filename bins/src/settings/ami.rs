//! `ami-relay`'s settings ([`AmiArgs`]): the Asterisk Manager Interface, or Asterisk's CEL and
//! CDR files (`CEL_MODE=csv`) or tables (`CEL_MODE=db`, with [`super::db`]); the CDR AMI is
//! reconciled with; call recordings; the Asterisk assembler's settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use call_assembler::{AmiAssemblerConfig, TenantRule};
use clap::Parser;
use serde::{Deserialize, Serialize};

use super::common::CommonArgs;
use super::db::{DbArgs, resolve_db};
use super::overlay::{layer, read_file, text};
use super::values::{AmiAuth, CelMode, ChoiceParser, List, ShippingMode, parse_bool};
use super::{
    CelCsvSource, Config, ConfigError, ReconcileCdr, ReconcileSource, RelayKind, SourceConfig,
};

/// Reads the Asterisk Manager Interface (AMI) live, assembles each call's channel, CEL and Cdr
/// events into one completed call (transfers, queues and ring groups included), keeps every
/// call in a local store with a web page, and delivers it to webhooks and other sinks.
///
/// Needs AMI_HOST, AMI_USERNAME and AMI_PASSWORD (a `manager.conf` user with `read = call,cdr`
/// or more), or --replay with a raw AMI capture. Every option can also be set by the
/// environment variable shown, or in a TOML file given with --config (keys as the long flags,
/// with `_` for `-`; tenant rules only there, as `[[tenant_rules]]`).
#[derive(Debug, Clone, Default, Parser, Serialize, Deserialize)]
#[serde(default)]
#[command(name = "ami-relay", version = crate::VERSION, about, long_about)]
pub struct AmiArgs {
    /// Settings every relay shares.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,

    /// The Asterisk server's host name or address.
    #[arg(long, env = "AMI_HOST")]
    pub ami_host: Option<String>,

    /// The AMI port [default: 5038, or 5039 with AMI_TLS].
    #[arg(long, env = "AMI_PORT")]
    pub ami_port: Option<u16>,

    /// The manager user (`[name]` in manager.conf).
    #[arg(long, env = "AMI_USERNAME")]
    pub ami_username: Option<String>,

    /// Its secret.
    #[arg(long, env = "AMI_PASSWORD", hide_env_values = true)]
    pub ami_password: Option<String>,

    /// Connect with TLS (`true`/`false`) [default: false].
    #[arg(long, env = "AMI_TLS", value_name = "BOOL", value_parser = parse_bool)]
    pub ami_tls: Option<bool>,

    /// Extra trusted CA certificates (PEM) for AMI over TLS (a private CA or a self-signed
    /// certificate).
    #[arg(long, env = "AMI_TLS_CA_FILE", value_name = "FILE")]
    pub ami_tls_ca_file: Option<PathBuf>,

    /// Login: `md5` (challenge-response, the secret never crosses the wire) or `plain` (the
    /// secret sent as it is; logged as a warning) [default: md5].
    #[arg(long, env = "AMI_AUTH", value_parser = ChoiceParser::<AmiAuth>::new())]
    pub ami_auth: Option<AmiAuth>,

    /// `complete`: one record per call when it ends; `progressive`: also a `started` record and
    /// an `updated` one every LONG_CALL_UPDATE_INTERVAL while it lasts [default: complete].
    #[arg(long, env = "CALL_SHIPPING_MODE", value_parser = ChoiceParser::<ShippingMode>::new())]
    pub call_shipping_mode: Option<ShippingMode>,

    /// Seconds between progress records of a call in progressive mode [default: 60].
    #[arg(long, env = "LONG_CALL_UPDATE_INTERVAL", value_name = "SECONDS")]
    pub long_call_update_interval: Option<u64>,

    /// Contexts where trunk (outside) channels start, comma separated
    /// [default: from-trunk,from-pstn,from-external].
    #[arg(long, env = "AMI_TRUNK_CONTEXTS", value_name = "LIST")]
    pub trunk_contexts: Option<List>,

    /// Channel name prefixes of trunks, comma separated (e.g. `PJSIP/provider`).
    #[arg(long, env = "AMI_TRUNK_CHANNELS", value_name = "LIST")]
    pub trunk_channels: Option<List>,

    /// Numbers with more digits than this are outside numbers (decides the direction when no
    /// trunk rule does).
    #[arg(long, env = "AMI_INTERNAL_NUMBER_MAX_LEN", value_name = "DIGITS")]
    pub internal_number_max_len: Option<usize>,

    /// The PBX's offset from UTC (`+02:00`), fixed all year, applied to event timestamps so
    /// that call times are PBX local time like Asterisk's CDR, and used to take the local times
    /// of CDR and CEL rows to UTC. PBX_TZ, when set, takes precedence [default: +00:00].
    #[arg(long, env = "AMI_UTC_OFFSET", value_name = "+HH:MM")]
    pub utc_offset: Option<String>,

    /// The PBX's time zone, an IANA name (`Europe/London`), `UTC` or a fixed offset
    /// (`+01:00`): epoch times (AMI `Timestamp:`, epoch CEL times, database times with an
    /// offset) become PBX local time in it, daylight saving included, and the local times of
    /// CDR and CEL CSV files and tables are read in it for each call's `start_utc` (a time in
    /// the spring gap takes the offset before it, one in the autumn overlap the earlier
    /// instant). Takes precedence over AMI_UTC_OFFSET [default: AMI_UTC_OFFSET, else UTC].
    #[arg(long, env = "PBX_TZ", value_name = "ZONE", allow_hyphen_values = true)]
    pub pbx_tz: Option<String>,

    /// Where CEL comes from: `ami` (the Manager Interface), `csv` (follow the cel_custom and
    /// cdr_csv files) or `db` (read Asterisk's `cel` and `cdr` tables in PostgreSQL or
    /// MySQL/MariaDB, see the DB_* settings); AMI_HOST is needed only for `ami` [default: ami].
    #[arg(
        long,
        env = "CEL_MODE",
        value_name = "ami|csv|db",
        value_parser = ChoiceParser::<CelMode>::new()
    )]
    pub cel_mode: Option<CelMode>,

    /// CEL_MODE=csv: the cel_custom file to follow
    /// [default: /var/log/asterisk/cel-custom/Master.csv].
    #[arg(long, env = "CEL_CSV_PATH", value_name = "FILE")]
    pub cel_csv_path: Option<PathBuf>,

    /// CEL_MODE=csv: the cel_custom file's columns, comma separated, in Asterisk's CEL field
    /// names (eventtype,eventtime,cid_name,...,uniqueid,linkedid,...,eventextra) [default:
    /// cel_custom's sample mapping, or CEL_CUSTOM_CONF's].
    #[arg(long, env = "CEL_CSV_COLUMNS", value_name = "NAMES")]
    pub cel_csv_columns: Option<String>,

    /// CEL_MODE=csv: Asterisk's cel_custom.conf, whose `[mappings]` line for CEL_CSV_PATH's
    /// file name (else its first) gives the columns.
    #[arg(long, env = "CEL_CUSTOM_CONF", value_name = "FILE")]
    pub cel_custom_conf: Option<PathBuf>,

    /// CEL_MODE=csv: the cdr_csv file whose rows are attached to their calls (optional: when it
    /// does not exist, calls carry no CDR rows) [default: /var/log/asterisk/cdr-csv/Master.csv].
    /// CEL_MODE=ami (or --replay): when set, AMI's calls are reconciled with this file, the
    /// book of record: calls AMI missed are rebuilt from it and delivered as reconciled.
    #[arg(long, env = "CDR_CSV_PATH", value_name = "FILE")]
    pub cdr_csv_path: Option<PathBuf>,

    /// CEL_MODE=csv: read the files to their current end, deliver every call, and exit (a
    /// backfill) instead of following them. CEL_MODE=db: the same with both tables, read up to
    /// the rows they held at the start.
    #[arg(long)]
    pub once: bool,

    /// Directories (comma separated, walked recursively) where call recordings are looked
    /// for: a file whose name holds a call's Linkedid or a leg's Uniqueid is attached to the
    /// call's `recordings`.
    #[arg(long, env = "RECORDINGS_DIRS", value_name = "DIRS")]
    pub recordings_dirs: Option<String>,

    /// RECORDINGS_DIRS: files and subdirectories not modified within this many hours are not
    /// looked at; DB_TABLE_RECORDINGS: rows older than this (by its time column) are not read
    /// at the start [default: 48].
    #[arg(long, env = "RECORDINGS_MAX_AGE_HOURS", value_name = "HOURS")]
    pub recordings_max_age_hours: Option<u64>,

    /// A table of call recordings (`schema.table` allowed) in the database the DB_* settings
    /// reach, in any CEL_MODE: a `uniqueid` and/or `linkedid` column, a `path` (or `filename`,
    /// `file`, `recordingfile`) column, optionally an integer `id` or a time column (`created`,
    /// `calldate`, `start`, `time`) to read only new rows. Read every DB_POLL_MS; each row's
    /// path is added to the `recordings` of the call whose Linkedid, or a leg's Uniqueid, it
    /// names. A missing table or database is logged and retried.
    #[arg(long, env = "DB_TABLE_RECORDINGS", value_name = "TABLE")]
    pub db_table_recordings: Option<String>,

    /// CEL_MODE=ami with CDR_CSV_PATH set: how long (seconds) a call's CDR rows wait for AMI
    /// to have seen the call before it is rebuilt from them and delivered as reconciled
    /// [default: 60].
    #[arg(long, env = "RECONCILE_WAIT", value_name = "SECS")]
    pub reconcile_wait: Option<u64>,

    /// CEL_MODE=ami with CDR_CSV_PATH set: how long (seconds) a call assembled from AMI waits
    /// for its CDR rows before it is flagged as missing from the CDR [default: 600].
    #[arg(long, env = "RECONCILE_FLAG_AFTER", value_name = "SECS")]
    pub reconcile_flag_after: Option<u64>,

    /// The `DB_*` settings.
    #[command(flatten)]
    #[serde(flatten)]
    pub db: DbArgs,

    /// Tenant rules (the TOML file only, as `[[tenant_rules]]`).
    #[arg(skip)]
    pub tenant_rules: Option<Vec<TenantRule>>,
}
/// The cel_custom columns `ami-relay` reads: `CEL_CSV_COLUMNS`, else the mapping for
/// `CEL_CSV_PATH`'s file name in `CEL_CUSTOM_CONF`, else cel_custom's sample mapping.
fn cel_columns(args: &AmiArgs) -> Result<call_assembler::CelColumns, ConfigError> {
    use call_assembler::CelColumns;
    if let Some(list) = &args.cel_csv_columns {
        return CelColumns::parse_list(list)
            .map_err(|e| ConfigError(format!("CEL_CSV_COLUMNS: {e}")));
    }
    let Some(conf) = &args.cel_custom_conf else {
        return Ok(CelColumns::sample());
    };
    let text = std::fs::read_to_string(conf)
        .map_err(|e| ConfigError(format!("CEL_CUSTOM_CONF {}: {e}", conf.display())))?;
    let file_name = args
        .cel_csv_path
        .as_deref()
        .unwrap_or_else(|| Path::new(DEFAULT_CEL_CSV_PATH))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut in_mappings = false;
    let mut first = None;
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or_default().trim();
        if line.starts_with('[') {
            in_mappings = line.eq_ignore_ascii_case("[mappings]");
            continue;
        }
        let Some((name, mapping)) = line.split_once("=>") else {
            continue;
        };
        if !in_mappings {
            continue;
        }
        let (name, mapping) = (name.trim(), mapping.trim());
        if name == file_name {
            first = Some(mapping);
            break;
        }
        first.get_or_insert(mapping);
    }
    let mapping = first.ok_or_else(|| {
        ConfigError(format!(
            "CEL_CUSTOM_CONF {}: no mapping in its [mappings] section",
            conf.display()
        ))
    })?;
    CelColumns::from_mapping(mapping)
        .map_err(|e| ConfigError(format!("CEL_CUSTOM_CONF {}: {e}", conf.display())))
}

/// The default `CEL_CSV_PATH`: where Asterisk's cel_custom writes with its sample mapping.
pub const DEFAULT_CEL_CSV_PATH: &str = "/var/log/asterisk/cel-custom/Master.csv";

/// The default `CDR_CSV_PATH`: where Asterisk's cdr_csv writes.
pub const DEFAULT_CDR_CSV_PATH: &str = "/var/log/asterisk/cdr-csv/Master.csv";
impl Config {
    /// Resolves `ami-relay`'s flags and environment over the TOML file, over defaults.
    pub fn resolve_ami(args: &AmiArgs) -> Result<Self, ConfigError> {
        let file: AmiArgs = read_file(args.common.config.as_deref())?;
        let mut args = args.clone();
        args.db.empty_cdr_table_from_env();
        let args = &layer(&args, &[&file])?;
        let tls = args.ami_tls.unwrap_or(false);
        let cel_mode = args.cel_mode.unwrap_or(CelMode::Ami);
        let source = if let Some(path) = &args.common.replay {
            SourceConfig::Replay(path.clone())
        } else if cel_mode == CelMode::Csv {
            SourceConfig::CelCsv(CelCsvSource {
                cel: args
                    .cel_csv_path
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CEL_CSV_PATH.into()),
                cdr: args
                    .cdr_csv_path
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CDR_CSV_PATH.into()),
                once: args.once,
                columns: cel_columns(args)?,
            })
        } else if cel_mode == CelMode::Db {
            SourceConfig::CelDb(resolve_db(&args.db, args.once)?)
        } else {
            let host = text(&args.ami_host).ok_or_else(|| {
                ConfigError(
                    "set AMI_HOST (the Asterisk server), or --replay FILE for a capture".into(),
                )
            })?;
            let user = text(&args.ami_username)
                .ok_or_else(|| ConfigError("set AMI_USERNAME (a manager.conf user)".into()))?;
            let secret =
                text(&args.ami_password).ok_or_else(|| ConfigError("set AMI_PASSWORD".into()))?;
            let port = args.ami_port.unwrap_or(if tls { 5039 } else { 5038 });
            let mut client = ami_proto::client::ClientConfig::new(host, port, user, secret);
            client.auth = match args.ami_auth.unwrap_or(AmiAuth::Md5) {
                AmiAuth::Plain => ami_proto::client::Auth::Plain,
                AmiAuth::Md5 => ami_proto::client::Auth::Md5,
            };
            if tls {
                let mut opts = ami_proto::client::TlsOptions::default();
                opts.ca_file = args.ami_tls_ca_file.clone();
                client.tls = Some(opts);
            }
            SourceConfig::Ami(Box::new(client))
        };
        let mut c = Self::resolve_common(&args.common, source)?;
        c.kind = RelayKind::Ami;
        let mode = args.call_shipping_mode.unwrap_or(ShippingMode::Complete);
        let interval = args.long_call_update_interval.unwrap_or(60).max(1);
        let mut ami = AmiAssemblerConfig {
            site: c.site.clone(),
            idle_timeout: c.idle_timeout,
            progress_interval: match mode {
                ShippingMode::Complete => None,
                ShippingMode::Progressive => Some(Duration::from_secs(interval)),
            },
            internal_number_max_len: args.internal_number_max_len,
            tenant_rules: args.tenant_rules.clone().unwrap_or_default(),
            ..AmiAssemblerConfig::default()
        };
        if let Some(v) = &args.trunk_contexts {
            ami.trunk_contexts = v.0.clone();
        }
        if let Some(v) = &args.trunk_channels {
            ami.trunk_channel_prefixes = v.0.clone();
        }
        if let Some(off) = text(&args.utc_offset) {
            let parsed: chrono::FixedOffset = off.trim().parse().map_err(|_| {
                ConfigError(format!("AMI_UTC_OFFSET {off:?}: expected +HH:MM or -HH:MM"))
            })?;
            ami.zone = call_assembler::PbxZone::Fixed(parsed);
        }
        if let Some(tz) = text(&args.pbx_tz) {
            ami.zone = tz
                .parse()
                .map_err(|e| ConfigError(format!("PBX_TZ: {e}")))?;
        }
        c.ami = ami;
        let recordings_max_age =
            Duration::from_secs(args.recordings_max_age_hours.unwrap_or(48).max(1) * 3600);
        if let Some(dirs) = &args.recordings_dirs {
            let dirs: Vec<PathBuf> = dirs
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect();
            if !dirs.is_empty() {
                c.recordings = Some(crate::sources::recordings::RecordingsConfig {
                    dirs,
                    max_age: recordings_max_age,
                });
            }
        }
        if let Some(table) = text(&args.db_table_recordings)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
        {
            if args.db.db_type.is_none() {
                return Err(ConfigError(
                    "DB_TABLE_RECORDINGS needs DB_TYPE (postgresql or mysql) and the other DB_* settings of its database".into(),
                ));
            }
            c.recordings_table = Some(crate::sources::recordings_db::RecordingsTable {
                db: resolve_db(&args.db, args.once)?,
                table,
                max_age: recordings_max_age,
            });
        }
        let reconciles = matches!(c.source, SourceConfig::Ami(_) | SourceConfig::Replay(_));
        let once = args.once || matches!(c.source, SourceConfig::Replay(_));
        // DB_TYPE reconciles with its CDR table, unless DB_TABLE_CDR is empty (the DB_*
        // settings may be there for the recordings table only); then CDR_CSV_PATH may still.
        let db_cdr = match args.db.db_type {
            Some(_) if reconciles => Some(resolve_db(&args.db, args.once)?),
            _ => None,
        }
        .filter(|db| db.cdr_table.is_some());
        let cdr = match db_cdr {
            Some(mut db) => {
                // The CDR table only: AMI brings the calls.
                db.cel_table = String::new();
                db.once = once;
                Some(ReconcileCdr::Db(Box::new(db)))
            }
            None => args.cdr_csv_path.clone().map(ReconcileCdr::Csv),
        };
        if let (true, Some(cdr)) = (reconciles, cdr) {
            let mut config = call_assembler::feed::ReconcileConfig::default();
            if let Some(s) = args.reconcile_wait {
                config.wait = Duration::from_secs(s);
            }
            if let Some(s) = args.reconcile_flag_after {
                config.flag_after = Duration::from_secs(s);
            }
            c.reconcile = Some(ReconcileSource { cdr, once, config });
        }
        Ok(c)
    }
}
