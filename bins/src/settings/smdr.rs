//! `smdr-relay`'s settings ([`Args`]): the PBX's SMDR over TCP, connecting or listening.

use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use super::common::CommonArgs;
use super::overlay::{layer, read_file, text};
use super::{Config, ConfigError, DEFAULT_SMDR_LISTEN, SourceConfig};

/// Collects Avaya IP Office SMDR, assembles the records of each call into one completed call,
/// keeps every call in a local store with a web page, and delivers it to webhooks and other sinks.
///
/// With no configuration it listens for the PBX on 0.0.0.0:5100, stores calls in
/// ./cdr-relay.db and serves the web page on http://127.0.0.1:8080. Point the IP Office SMDR
/// output at this machine (Manager: System > CDR/SMDR > IP address and port), or set SMDR_ADDR
/// when the PBX listens and the relay should connect. Every option can also be set by the
/// environment variable shown (the SMDR webhook logger's SMDR_WEBHOOK_URL, SMDR_SITE, ... work
/// too), or in a TOML file given with --config (keys as the long flags, with `_` for `-`).
#[derive(Debug, Clone, Default, Parser, Serialize, Deserialize)]
#[serde(default)]
#[command(name = "smdr-relay", version = crate::VERSION, about, long_about)]
pub struct Args {
    /// Settings every relay shares.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonArgs,

    /// Connect to the PBX at HOST:PORT (the PBX listens; IP Office with SMDR IP 0.0.0.0).
    #[arg(long, env = "SMDR_ADDR", value_name = "HOST:PORT")]
    pub smdr_addr: Option<String>,

    /// Listen for the PBX on ADDR:PORT [default: 0.0.0.0:5100 when SMDR_ADDR is not set].
    #[arg(long, env = "SMDR_LISTEN", value_name = "ADDR:PORT")]
    pub smdr_listen: Option<String>,

    /// Seconds without any byte from the PBX after which the connection is re-established
    /// (0 = never) [default: 0].
    #[arg(long, env = "SMDR_READ_TIMEOUT", value_name = "SECONDS")]
    pub read_timeout: Option<u64>,

    /// Listen mode: only these addresses or networks may connect (comma-separated, e.g.
    /// `192.0.2.10,10.1.0.0/16`); anyone else is disconnected at once and counted in
    /// cdr_relay_smdr_refused_total [default: anyone, with a warning at start when listening on
    /// a non-loopback address].
    #[arg(long, env = "SMDR_ALLOW", value_name = "ADDR[/PREFIX],...")]
    pub smdr_allow: Option<String>,

    /// Listen mode: a new connection while the PBX's is live is refused, unless the live one has
    /// sent nothing for this many seconds (a socket left half-open by a network break); then the
    /// new one replaces it [default: 300].
    #[arg(long, env = "SMDR_TAKEOVER_AFTER", value_name = "SECONDS")]
    pub smdr_takeover_after: Option<u64>,

    /// The most SMDR records one call holds; a call with more is delivered in parts of at most
    /// this many (each later part under its own id, with an anomaly logged) [default: 1000].
    #[arg(long, env = "SMDR_MAX_RECORDS_PER_CALL", value_name = "N")]
    pub smdr_max_records_per_call: Option<usize>,

    /// The PBX's time zone, an IANA name (`Europe/London`), `UTC` or a fixed offset (`+01:00`):
    /// SMDR times are the PBX's wall clock, read in this zone for each call's `start_utc` and
    /// `end_utc` (daylight saving included; a time in the spring gap takes the offset before
    /// it, one in the autumn overlap the earlier instant) [default: this machine's zone (`TZ`,
    /// else /etc/localtime), UTC when it cannot be told].
    #[arg(long, env = "PBX_TZ", value_name = "ZONE", allow_hyphen_values = true)]
    pub pbx_tz: Option<String>,
}

/// The SMDR source's guard settings ([`Config::smdr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmdrSettings {
    /// Listen mode: the peers allowed to connect (empty: anyone).
    pub allow: Vec<ipnet::IpNet>,
    /// Listen mode: how long the live connection must be silent before a newcomer replaces it.
    pub takeover_after: Duration,
    /// The most records per call part.
    pub max_records_per_call: usize,
    /// The PBX's time zone (`PBX_TZ`, else the machine's).
    pub zone: call_assembler::PbxZone,
}

impl Default for SmdrSettings {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            takeover_after: Duration::from_secs(300),
            max_records_per_call: 1_000,
            zone: call_assembler::PbxZone::UTC,
        }
    }
}

/// Parses `SMDR_ALLOW`: addresses (one host each) and networks, comma-separated.
pub fn parse_allow(list: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError(format!(
                        "SMDR_ALLOW: {s:?} is neither an address nor a network (ADDR/PREFIX)"
                    ))
                })
        })
        .collect()
}
/// This machine's time zone, as the C library takes it: `TZ` when it names a zone (an IANA
/// name, optionally after `:`), else the system's zone (/etc/localtime), else UTC.
pub fn machine_zone() -> call_assembler::PbxZone {
    let from_env = std::env::var("TZ")
        .ok()
        .and_then(|tz| tz.trim_start_matches(':').parse().ok());
    from_env
        .or_else(|| {
            iana_time_zone::get_timezone()
                .ok()
                .and_then(|name| name.parse().ok())
        })
        .unwrap_or_default()
}

impl Config {
    /// Resolves `smdr-relay`'s flags and environment (already in `args`) over the legacy
    /// `SMDR_*` names, over the TOML file, over defaults.
    pub fn resolve(args: &Args) -> Result<Self, ConfigError> {
        let file: Args = read_file(args.common.config.as_deref())?;
        let legacy = Args {
            common: CommonArgs::legacy_env("SMDR_"),
            ..Args::default()
        };
        let args = &layer(args, &[&legacy, &file])?;
        let source = if let Some(path) = &args.common.replay {
            SourceConfig::Replay(path.clone())
        } else if let Some(addr) = text(&args.smdr_addr) {
            if text(&args.smdr_listen).is_some() {
                return Err(ConfigError(
                    "set either SMDR_ADDR (connect to the PBX) or SMDR_LISTEN (the PBX connects to us), not both".into(),
                ));
            }
            SourceConfig::Connect(addr)
        } else {
            SourceConfig::Listen(
                text(&args.smdr_listen).unwrap_or_else(|| DEFAULT_SMDR_LISTEN.into()),
            )
        };
        let mut c = Self::resolve_common(&args.common, source)?;
        c.read_timeout = args
            .read_timeout
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let defaults = SmdrSettings::default();
        c.smdr = SmdrSettings {
            allow: text(&args.smdr_allow)
                .map(|s| parse_allow(&s))
                .transpose()?
                .unwrap_or_default(),
            takeover_after: args
                .smdr_takeover_after
                .map_or(defaults.takeover_after, Duration::from_secs),
            max_records_per_call: args
                .smdr_max_records_per_call
                .unwrap_or(defaults.max_records_per_call)
                .max(1),
            zone: match text(&args.pbx_tz) {
                Some(tz) => tz
                    .parse()
                    .map_err(|e| ConfigError(format!("PBX_TZ: {e}")))?,
                None => machine_zone(),
            },
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        let mut all = vec!["smdr-relay"];
        all.extend_from_slice(v);
        Args::try_parse_from(all).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_listener_guard_settings_from_flags_and_the_file() {
        let c = Config::resolve(&args(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.smdr,
            SmdrSettings {
                zone: machine_zone(),
                ..SmdrSettings::default()
            }
        );
        let c = Config::resolve(&args(&[
            "--smdr-allow",
            "192.0.2.10, 10.1.0.0/16,::1",
            "--smdr-takeover-after",
            "60",
            "--smdr-max-records-per-call",
            "50",
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        let allow: Vec<String> = c.smdr.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["192.0.2.10/32", "10.1.0.0/16", "::1/128"]);
        assert_eq!(c.smdr.takeover_after, Duration::from_secs(60));
        assert_eq!(c.smdr.max_records_per_call, 50);
        let e = Config::resolve(&args(&["--smdr-allow", "pbx.example"])).unwrap_err();
        assert!(
            e.0.contains("SMDR_ALLOW") && e.0.contains("pbx.example"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("cdr-relay-smdr-guard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            "smdr_allow = \"127.0.0.2\"\nsmdr_takeover_after = 30\nsmdr_max_records_per_call = 7\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let p = path.to_str().unwrap_or_default();
        let c = Config::resolve(&args(&["--config", p])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.smdr.allow.len(), 1);
        assert_eq!(c.smdr.takeover_after, Duration::from_secs(30));
        assert_eq!(c.smdr.max_records_per_call, 7);
    }

    #[test]
    fn the_pbx_zone_from_pbx_tz() {
        let c = Config::resolve(&args(&["--pbx-tz", "Europe/London"]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.smdr.zone.to_string(), "Europe/London");
        let c = Config::resolve(&args(&["--pbx-tz", "-05:00"])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.smdr.zone, call_assembler::PbxZone::fixed_secs(-18_000));
        let e = Config::resolve(&args(&["--pbx-tz", "Europe/Lodnon"])).unwrap_err();
        assert!(e.0.contains("PBX_TZ") && e.0.contains("Lodnon"), "{e}");
    }
}
