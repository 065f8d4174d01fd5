//! Sinks chosen on the command line with `--sink KIND[:ARG]` or in the configuration file.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A sink as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `store`: the built-in call store (the SQLite file behind the web page and API).
    Store,
    /// `webhook`: POST each call to the configured webhook URL.
    Webhook,
    /// `jsonl:PATH` (`jsonl:-` or `jsonl` alone: standard output): one call per line, appended.
    Jsonl(Option<PathBuf>),
    /// `redis`: push each call's JSON to the configured Redis list (`REDIS_URL`,
    /// `REDIS_LIST_KEY`).
    Redis,
    /// `http-cdr`: post each call's records in Cisco Meeting Server CDR format to the
    /// configured receivers (`HTTP_CDR_URLS`).
    HttpCdr,
    /// `sql`: write each call as rows of `calls` and `call_legs` in the configured PostgreSQL
    /// or MySQL/MariaDB database (`SQL_URL`).
    Sql,
    /// `nats`: publish each call to JetStream (`NATS_URL`, `NATS_SUBJECT`, `NATS_STREAM`).
    Nats,
}

impl FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("store", None) => Ok(Self::Store),
            ("webhook", None) => Ok(Self::Webhook),
            ("redis", None) => Ok(Self::Redis),
            ("http-cdr", None) => Ok(Self::HttpCdr),
            ("sql", None) => Ok(Self::Sql),
            ("nats", None) => Ok(Self::Nats),
            ("jsonl", None | Some("-")) => Ok(Self::Jsonl(None)),
            ("jsonl", Some("")) => Err("jsonl:PATH needs a path (or - for stdout)".into()),
            ("jsonl", Some(path)) => Ok(Self::Jsonl(Some(PathBuf::from(path)))),
            (other, _) => Err(format!(
                "unknown sink {other:?}; known sinks: store, webhook, redis, http-cdr, sql, nats, jsonl[:PATH]"
            )),
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store => f.write_str("store"),
            Self::Webhook => f.write_str("webhook"),
            Self::Redis => f.write_str("redis"),
            Self::HttpCdr => f.write_str("http-cdr"),
            Self::Sql => f.write_str("sql"),
            Self::Nats => f.write_str("nats"),
            Self::Jsonl(None) => f.write_str("jsonl:-"),
            Self::Jsonl(Some(p)) => write!(f, "jsonl:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sink_specs() {
        assert_eq!("store".parse(), Ok(SinkSpec::Store));
        assert_eq!("webhook".parse(), Ok(SinkSpec::Webhook));
        assert_eq!("redis".parse(), Ok(SinkSpec::Redis));
        assert_eq!("http-cdr".parse(), Ok(SinkSpec::HttpCdr));
        assert_eq!("sql".parse(), Ok(SinkSpec::Sql));
        assert_eq!(SinkSpec::Sql.to_string(), "sql");
        assert_eq!("nats".parse(), Ok(SinkSpec::Nats));
        assert_eq!("jsonl".parse(), Ok(SinkSpec::Jsonl(None)));
        assert_eq!("jsonl:-".parse(), Ok(SinkSpec::Jsonl(None)));
        assert_eq!(
            "jsonl:out.jsonl".parse(),
            Ok(SinkSpec::Jsonl(Some("out.jsonl".into())))
        );
        assert_eq!(SinkSpec::Jsonl(Some("a".into())).to_string(), "jsonl:a");
        assert!("jsonl:".parse::<SinkSpec>().is_err());
        assert!("carrier-pigeon".parse::<SinkSpec>().is_err());
    }
}
