//! `--check-config`'s summary of a resolved [`Config`], secrets hidden: every URL is shown
//! through [`redact_url`] (password and token-like query values masked), and keys, secrets and
//! DSNs only as set or not.

use super::{Config, DbStart, ReconcileCdr, RelayKind, SourceConfig};
use crate::settings::SinkSpec;
use cdr_sinks::redact::redact_url;

impl Config {
    /// A human-readable summary (for `--check-config`), secrets hidden.
    pub fn describe(&self) -> String {
        let source = match &self.source {
            SourceConfig::Connect(a) => format!("connect to the PBX at {a}"),
            SourceConfig::Listen(a) => format!("listen for the PBX on {a}"),
            SourceConfig::Replay(p) => format!("replay {}", p.display()),
            SourceConfig::CelCsv(c) => format!(
                "{} the CEL file {} and the CDR file {}",
                if c.once { "read" } else { "follow" },
                c.cel.display(),
                c.cdr.display()
            ),
            SourceConfig::CelDb(d) => format!(
                "{} the CEL table {} and {} at {}{}",
                if d.once { "read" } else { "follow" },
                d.cel_table,
                d.cdr_table.as_deref().map_or_else(
                    || "no CDR table".to_owned(),
                    |t| format!("the CDR table {t}")
                ),
                d.describe(),
                match d.start {
                    DbStart::Beginning => String::new(),
                    DbStart::Fresh => " (without a saved watermark: from the current end)".into(),
                    DbStart::From(t) =>
                        format!(" (without a saved watermark: from the rows of {t})"),
                }
            ),
            SourceConfig::Posts(r) => format!(
                "receive CMS CDR posts on {}{}{}",
                self.receiver_listen
                    .as_deref()
                    .or(self.http.as_deref())
                    .unwrap_or("(web server off)"),
                r.path,
                if r.auth.is_some() {
                    " (authentication required)"
                } else {
                    ""
                }
            ),
            SourceConfig::Nats(n) => format!(
                "consume the JetStream stream {} at {} with the durable consumer {}{}, {} messages at a time",
                n.stream,
                n.server.shown_urls(),
                n.consumer,
                if n.filter_subjects.is_empty() {
                    String::new()
                } else {
                    format!(" (subjects {})", n.filter_subjects.join(", "))
                },
                n.batch
            ),
            SourceConfig::RedisList(r) => format!(
                "drain the Redis list {} at {} through {}, {} items at a time",
                r.key,
                redact_url(&r.url),
                r.processing,
                r.batch
            ),
            SourceConfig::Ami(c) => format!(
                "AMI at {}:{} as {} ({}{} login)",
                c.host,
                c.port,
                c.username,
                if c.tls.is_some() { "TLS, " } else { "" },
                if c.auth == ami_proto::client::Auth::Md5 {
                    "MD5"
                } else {
                    "plain"
                },
            ),
        };
        let sinks: Vec<String> = self.sinks.iter().map(SinkSpec::to_string).collect();
        let mut out = format!(
            "source: {source}\nsinks: {}\ndatabase: {}\nweb: {} (access: {})\nsite: {:?}\nidle timeout: {} s\n",
            sinks.join(", "),
            self.db.display(),
            self.http.as_deref().unwrap_or("off"),
            self.access.describe(),
            self.site,
            self.idle_timeout.as_secs(),
        );
        out.push_str(&format!(
            "retention: keep {} (calls waiting for a sink are always kept)\n",
            self.retention
        ));
        if self.kind == RelayKind::Smdr {
            out.push_str(&format!(
                "PBX time zone: {} (SMDR times are read in it for start_utc and end_utc)\n",
                self.smdr.zone
            ));
        }
        if self.kind == RelayKind::Ami {
            out.push_str(&format!(
                "PBX time zone: {} (epoch times become local time in it; CDR and CEL local \
                 times are read in it for start_utc and end_utc)\n",
                self.ami.zone
            ));
        }
        if let Some(w) = &self.webhook {
            out.push_str(&format!(
                "webhook: {} (key {}, signing {}), {} requests at once, {} attempts, first retry after {} s\n",
                redact_url(&w.url),
                if w.authorization.is_some() {
                    "set"
                } else {
                    "not set"
                },
                if w.secret.is_some() { "on" } else { "off" },
                w.concurrency,
                self.retry.max_attempts,
                self.retry.base.as_secs(),
            ));
        }
        if let Some(r) = &self.reconcile {
            let cdr = match &r.cdr {
                ReconcileCdr::Csv(path) => format!("the CDR file {}", path.display()),
                ReconcileCdr::Db(db) => format!(
                    "the CDR table {} at {}",
                    db.cdr_table.as_deref().unwrap_or_default(),
                    db.describe()
                ),
            };
            out.push_str(&format!(
                "reconcile: AMI with {cdr} ({}; rebuild after {} s, flag after {} s)\n",
                if r.once {
                    "read to its end"
                } else {
                    "followed"
                },
                r.config.wait.as_secs(),
                r.config.flag_after.as_secs(),
            ));
        }
        if let Some(r) = &self.recordings {
            let dirs: Vec<String> = r.dirs.iter().map(|d| d.display().to_string()).collect();
            out.push_str(&format!(
                "recordings: {} (files up to {} h old)\n",
                dirs.join(", "),
                r.max_age.as_secs() / 3600
            ));
        }
        if let Some(t) = &self.recordings_table {
            out.push_str(&format!("recordings table: {}\n", t.describe()));
        }
        if self.kind == RelayKind::Ami {
            let a = &self.ami;
            out.push_str(&match a.progress_interval {
                None => "mode: complete (one record per call)\n".to_owned(),
                Some(iv) => format!(
                    "mode: progressive (started, updated every {} s, ended)\n",
                    iv.as_secs()
                ),
            });
            out.push_str(&format!(
                "trunks: contexts {:?}, channels {:?}, internal numbers up to {}\n",
                a.trunk_contexts,
                a.trunk_channel_prefixes,
                a.internal_number_max_len
                    .map_or_else(|| "any length".to_owned(), |n| format!("{n} digits")),
            ));
            if !a.tenant_rules.is_empty() {
                out.push_str(&format!("tenant rules: {}\n", a.tenant_rules.len()));
            }
        }
        if let Some(h) = &self.http_cdr {
            let urls: Vec<String> = h.urls.iter().map(|u| redact_url(u)).collect();
            out.push_str(&format!("http-cdr sink: {}\n", urls.join(", ")));
        }
        if let Some(n) = &self.nats {
            out.push_str(&format!(
                "nats: {} (auth: {}), stream {}, subject {}{}\n",
                n.server.shown_urls(),
                n.server.auth.describe(),
                n.stream,
                n.subject.as_str(),
                if n.create_stream {
                    format!(
                        ", created with {} replica(s) and a {} s duplicate window",
                        n.replicas,
                        n.duplicate_window.as_secs()
                    )
                } else {
                    String::new()
                }
            ));
        }
        if let Some(r) = &self.redis {
            out.push_str(&format!(
                "redis sink: {:?} {} at {}\n",
                r.side,
                r.key,
                redact_url(&r.url)
            ));
        }
        if let Some(q) = &self.sql {
            out.push_str(&format!(
                "sql sink: {} (tables {}calls, {}call_legs; UTC offset {})\n",
                redact_url(&q.url),
                q.table_prefix,
                q.table_prefix,
                q.utc_offset
            ));
        }
        if self.sentry_dsn.is_some() {
            out.push_str("sentry: errors reported\n");
        }
        if self.sentry_cron_url.is_some() {
            out.push_str(&format!(
                "sentry cron: every {} s\n",
                self.sentry_cron_interval.as_secs()
            ));
        }
        out
    }
}
