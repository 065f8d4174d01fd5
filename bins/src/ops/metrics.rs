//! The relay's Prometheus metrics, in the OpenMetrics text format.
//!
//! The runtime owns one [`Metrics`] per process and updates it as records, bad lines and calls
//! go by; each sink's delivery worker counts into its own [`SinkStats`], which is registered here
//! once. The outbox families (depth, oldest pending delivery, dead letters) are read from the
//! database when `/metrics` is scraped and passed to [`Metrics::render`].
//!
//! Families (all prefixed `cdr_relay_`, all carrying a constant `source` label):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `records_in_total` | counter | |
//! | `bad_lines_total` | counter | |
//! | `calls_out_total` | counter | `complete="true"\|"false"` |
//! | `open_calls` | gauge | |
//! | `source_connected` | gauge (0 or 1) | |
//! | `smdr_refused_total` | counter | `reason="not_allowed"\|"busy"` |
//! | `anomalies_total` | counter | `kind` (the assembler's anomaly, e.g. `unconfirmed_restart`, `call_split`) |
//! | `deliveries_total` | counter | `sink`, `result="delivered"\|"failed"\|"dead"` |
//! | `sink_blocked` | gauge (0 or 1) | `sink` |
//! | `sink_paused` | gauge (0 or 1): paused by an operator | `sink` |
//! | `outbox_pending` | gauge | `sink` |
//! | `outbox_oldest_pending_age_seconds` | gauge | `sink` |
//! | `outbox_dead` | gauge | `sink` |
//! | `commit_failures_total`, `intake_stalled`, `worker_restarts_total`, `workers_down` | | see [`Faults`] |
//! | `pruned_rows_total` | counter | `table` (calls, updates, deliveries, inputs, source_records, rejects) |
//! | `db_size_bytes` | gauge | the database file (without its WAL) |
//! | `db_used_bytes` | gauge | its pages in use (what `CDR_RELAY_MAX_DB_MB` limits) |

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cdr_sinks::engine::SinkStats;
use cdr_sinks::outbox::SinkCounts;

use super::faults::Faults;
use cdr_sinks::retention::{DbSize, Pruned, RetentionPolicy};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

/// The prefix of every metric name.
pub const PREFIX: &str = "cdr_relay";

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The relay's metrics: a prometheus-client registry plus the per-sink counters it reads at
/// scrape time. Cheap to update from any thread (atomics only).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    source: String,
    records_in: Counter,
    bad_lines: Counter,
    open_calls: Gauge,
    source_connected: Gauge,
    connected: AtomicBool,
    reconcile: Family<[(&'static str, &'static str); 1], Counter>,
    smdr_refused: Family<[(&'static str, &'static str); 1], Counter>,
    anomalies: Family<[(&'static str, &'static str); 1], Counter>,
    pruned: Family<[(&'static str, &'static str); 1], Counter>,
    db_size: Gauge,
    db_used: Gauge,
    retention: Mutex<RetentionStatus>,
    dynamic: Arc<Dynamic>,
    faults: Arc<Faults>,
}

/// What retention keeps and how the database stands, as the last pruning pass saw it (for the
/// web page and the JSON status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStatus {
    /// The policy.
    pub policy: RetentionPolicy,
    /// The database's size at the last pass.
    pub size: Option<DbSize>,
    /// When the oldest kept call was stored (ms since the epoch).
    pub oldest_call_ms: Option<i64>,
    /// When the last pass ran (ms since the epoch).
    pub checked_ms: Option<i64>,
    /// Rows pruned since the start, per table.
    pub pruned: Pruned,
}

/// The families whose label sets are known only at run time, kept in a stable order.
#[derive(Debug, Default)]
struct Dynamic {
    calls_complete: AtomicU64,
    calls_incomplete: AtomicU64,
    /// Registered sinks, sorted by name.
    sinks: Mutex<Vec<(String, Arc<SinkStats>)>>,
}

impl Collector for Dynamic {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "calls_out",
                "Calls emitted by the assembler, complete or flushed incomplete.",
                None,
                MetricType::Counter,
            )?;
            for (complete, n) in [
                ("true", &self.calls_complete),
                ("false", &self.calls_incomplete),
            ] {
                ConstCounter::new(n.load(Ordering::Relaxed))
                    .encode(family.encode_family(&[("complete", complete)])?)?;
            }
        }
        let sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        if sinks.is_empty() {
            return Ok(());
        }
        {
            let mut family = encoder.encode_descriptor(
                "deliveries",
                "Delivery attempts per sink and result (failed counts every failed attempt).",
                None,
                MetricType::Counter,
            )?;
            for (name, stats) in sinks.iter() {
                let sink = label_value(name);
                for (result, n) in [
                    ("delivered", &stats.delivered),
                    ("failed", &stats.failed),
                    ("dead", &stats.dead),
                ] {
                    ConstCounter::new(n.load(Ordering::Relaxed)).encode(
                        family.encode_family(&[("sink", sink.as_ref()), ("result", result)])?,
                    )?;
                }
            }
        }
        for (family, help, flag) in [
            (
                "sink_blocked",
                "Whether the sink is paused or unreachable right now (1) or not (0).",
                (|s: &SinkStats| &s.blocked) as fn(&SinkStats) -> &AtomicBool,
            ),
            (
                "sink_paused",
                "Whether an operator paused the sink (1): nothing is sent until it is resumed.",
                |s: &SinkStats| &s.paused,
            ),
        ] {
            let mut family = encoder.encode_descriptor(family, help, None, MetricType::Gauge)?;
            for (name, stats) in sinks.iter() {
                let on = i64::from(flag(stats).load(Ordering::Relaxed));
                ConstGauge::new(on)
                    .encode(family.encode_family(&[("sink", label_value(name).as_ref())])?)?;
            }
        }
        Ok(())
    }
}

/// The outbox families of one scrape.
#[derive(Debug)]
struct OutboxFamilies<'a> {
    counts: &'a [SinkCounts],
    now_ms: i64,
}

impl OutboxFamilies<'_> {
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        if self.counts.is_empty() {
            return Ok(());
        }
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.gauge(
            encoder,
            "outbox_pending",
            "Deliveries waiting in the outbox (first try or retry).",
            None,
            |c| ConstGauge::new(count(c.pending)),
        )?;
        self.gauge(
            encoder,
            "outbox_oldest_pending_age",
            "Age of the oldest pending delivery (0 when none is pending).",
            Some(&Unit::Seconds),
            |c| {
                let age_ms = c
                    .oldest_pending_ms
                    .map_or(0, |t| self.now_ms.saturating_sub(t).max(0));
                ConstGauge::new(age_ms as f64 / 1000.0)
            },
        )?;
        self.gauge(
            encoder,
            "outbox_dead",
            "Deliveries given up on (dead letters) kept in the outbox.",
            None,
            |c| ConstGauge::new(count(c.dead)),
        )
    }

    fn gauge<M: EncodeMetric>(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        value: impl Fn(&SinkCounts) -> M,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for c in self.counts {
            value(c).encode(family.encode_family(&[("sink", label_value(&c.sink).as_ref())])?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// New metrics for a relay reading `source` (for example `smdr`), which becomes the constant
    /// `source` label of every family. The source starts disconnected.
    pub fn new(source: &str) -> Arc<Self> {
        let mut registry = Registry::with_prefix_and_labels(
            PREFIX,
            [(
                Cow::Borrowed("source"),
                Cow::Owned(label_value(source).into_owned()),
            )]
            .into_iter(),
        );
        let records_in = Counter::default();
        let bad_lines = Counter::default();
        let open_calls = Gauge::default();
        let source_connected = Gauge::default();
        registry.register(
            "records_in",
            "Records read from the source",
            records_in.clone(),
        );
        registry.register(
            "bad_lines",
            "Input lines rejected (unparsable or too long)",
            bad_lines.clone(),
        );
        registry.register(
            "open_calls",
            "Calls the assembler holds open, waiting for their last record",
            open_calls.clone(),
        );
        registry.register(
            "source_connected",
            "Whether the source is connected (1) or not (0)",
            source_connected.clone(),
        );
        let reconcile = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "reconcile",
            "AMI calls compared with Asterisk's CDR, by outcome: matched, disagreement (per \
             field), reconciled (rebuilt from the CDR), unusable, missing_from_cdr",
            reconcile.clone(),
        );
        let smdr_refused = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "smdr_refused",
            "Connections to the SMDR listener closed at once, by reason: not_allowed (not in \
             SMDR_ALLOW), busy (the PBX's connection is live)",
            smdr_refused.clone(),
        );
        let anomalies = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "anomalies",
            "Surprising input the assembler reported and handled, by kind",
            anomalies.clone(),
        );
        let pruned = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "pruned_rows",
            "Rows removed by retention (CDR_RELAY_RETENTION_DAYS, CDR_RELAY_MAX_DB_MB), per table",
            pruned.clone(),
        );
        let db_size = Gauge::default();
        registry.register_with_unit(
            "db_size",
            "Size of the database file (without its WAL file)",
            Unit::Bytes,
            db_size.clone(),
        );
        let db_used = Gauge::default();
        registry.register_with_unit(
            "db_used",
            "Bytes of the database's pages in use (free pages excluded)",
            Unit::Bytes,
            db_used.clone(),
        );
        let dynamic = Arc::new(Dynamic::default());
        registry.register_collector(Box::new(dynamic.clone()));
        let faults = Arc::new(Faults::default());
        registry.register_collector(Box::new(faults.clone()));
        Arc::new(Self {
            registry,
            source: source.to_owned(),
            records_in,
            bad_lines,
            open_calls,
            source_connected,
            connected: AtomicBool::new(false),
            reconcile,
            smdr_refused,
            anomalies,
            pruned,
            db_size,
            db_used,
            retention: Mutex::new(RetentionStatus::default()),
            dynamic,
            faults,
        })
    }

    /// The counter of connections the SMDR listener refused for `reason` (`not_allowed`,
    /// `busy`), to count into from the listener.
    pub fn smdr_refused(&self, reason: &'static str) -> Counter {
        self.smdr_refused
            .get_or_create(&[("reason", reason)])
            .clone()
    }

    /// Counts an anomaly the assembler reported.
    pub fn anomaly(&self, kind: &'static str) {
        self.anomalies.get_or_create(&[("kind", kind)]).inc();
    }

    /// The fault state (failed commits, failed workers) that `/readyz` reads.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The source name given to [`Metrics::new`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Counts `n` records read from the source.
    pub fn record_in(&self, n: u64) {
        self.records_in.inc_by(n);
    }

    /// Counts one rejected input line.
    pub fn bad_line(&self) {
        self.bad_lines.inc();
    }

    /// Counts one call emitted by the assembler (`complete` false when it was flushed).
    pub fn call_out(&self, complete: bool) {
        let n = if complete {
            &self.dynamic.calls_complete
        } else {
            &self.dynamic.calls_incomplete
        };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one outcome of the comparison of AMI with the CDR (`reconcile_total{outcome}`).
    pub fn reconciled(&self, outcome: &'static str) {
        self.reconcile.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// Sets the retention policy shown with [`Metrics::retention`].
    pub fn set_retention_policy(&self, policy: RetentionPolicy) {
        self.retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .policy = policy;
    }

    /// Records a pruning pass at `now_ms`: the rows it removed, the database's size and the
    /// oldest call kept after it.
    pub fn pruned(&self, pruned: &Pruned, size: DbSize, oldest_call_ms: Option<i64>, now_ms: i64) {
        for (table, n) in pruned.by_table() {
            if n > 0 {
                self.pruned.get_or_create(&[("table", table)]).inc_by(n);
            }
        }
        let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.db_size.set(bytes(size.file_bytes()));
        self.db_used.set(bytes(size.used_bytes()));
        let mut status = self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        status.size = Some(size);
        status.oldest_call_ms = oldest_call_ms;
        status.checked_ms = Some(now_ms);
        status.pruned.add(pruned);
    }

    /// What retention keeps and the database's size at the last pass.
    pub fn retention(&self) -> RetentionStatus {
        *self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the number of calls the assembler holds open.
    pub fn set_open_calls(&self, n: u64) {
        self.open_calls.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets whether the source is connected (a metric and the Sentry check-in; not readiness).
    pub fn set_source_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        self.source_connected.set(i64::from(up));
    }

    /// Whether the source is connected (the last [`Metrics::set_source_connected`]).
    pub fn is_source_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Registers the counters of the sink `name` (its name in the outbox); registering a name
    /// again replaces its counters.
    pub fn register_sink(&self, name: &str, stats: Arc<SinkStats>) {
        let mut sinks = self
            .dynamic
            .sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match sinks.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => {
                if let Some(slot) = sinks.get_mut(i) {
                    slot.1 = stats;
                }
            }
            Err(i) => sinks.insert(i, (name.to_owned(), stats)),
        }
    }

    /// Deliveries finished so far (delivered or dead-lettered) over every registered sink: it
    /// changes when a delivery has made a call prunable.
    pub fn deliveries_done(&self) -> u64 {
        self.dynamic
            .sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, s)| s.delivered.load(Ordering::Relaxed) + s.dead.load(Ordering::Relaxed))
            .sum()
    }

    /// The names of the registered sinks, sorted.
    pub fn sink_names(&self) -> Vec<String> {
        self.dynamic
            .sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Renders every family as OpenMetrics text (ending in `# EOF`). The outbox families come
    /// from `counts` (read with `Outbox::counts()` at scrape time; one label set per entry, so
    /// pass an empty slice when the outbox could not be read) and `now_ms` (ms since the epoch).
    pub fn render(&self, counts: &[SinkCounts], now_ms: i64) -> String {
        let mut out = String::with_capacity(2048);
        // Writing to a String cannot fail; the encoders only pass its result on.
        let _ = text::encode_registry(&mut out, &self.registry);
        if !counts.is_empty() {
            let mut scrape = Registry::with_prefix_and_labels(
                PREFIX,
                [(
                    Cow::Borrowed("source"),
                    Cow::Owned(label_value(&self.source).into_owned()),
                )]
                .into_iter(),
            );
            scrape.register_collector(Box::new(OutboxCollector {
                counts: counts.to_vec(),
                now_ms,
            }));
            let _ = text::encode_registry(&mut out, &scrape);
        }
        let _ = text::encode_eof(&mut out);
        out
    }
}

#[derive(Debug)]
struct OutboxCollector {
    counts: Vec<SinkCounts>,
    now_ms: i64,
}

impl Collector for OutboxCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        OutboxFamilies {
            counts: &self.counts,
            now_ms: self.now_ms,
        }
        .encode(&mut encoder)
    }
}

/// A label value escaped for the OpenMetrics text format (prometheus-client writes label
/// values as they are).
fn label_value(s: &str) -> Cow<'_, str> {
    if !s.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("webhook"), "webhook");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn renders_every_family_with_its_values() {
        let m = Metrics::new("smdr");
        m.record_in(5);
        m.bad_line();
        m.call_out(true);
        m.call_out(true);
        m.call_out(false);
        m.set_open_calls(7);
        m.set_source_connected(true);
        let stats = Arc::new(SinkStats::default());
        stats.delivered.store(3, Ordering::Relaxed);
        stats.failed.store(2, Ordering::Relaxed);
        stats.blocked.store(true, Ordering::Relaxed);
        m.register_sink("webhook", stats);
        let counts = [SinkCounts {
            sink: "webhook".into(),
            pending: 4,
            delivered: 3,
            dead: 1,
            oldest_pending_ms: Some(10_000),
        }];
        let text = m.render(&counts, 70_500);
        for line in [
            r#"cdr_relay_records_in_total{source="smdr"} 5"#,
            r#"cdr_relay_bad_lines_total{source="smdr"} 1"#,
            r#"cdr_relay_open_calls{source="smdr"} 7"#,
            r#"cdr_relay_source_connected{source="smdr"} 1"#,
            r#"cdr_relay_calls_out_total{source="smdr",complete="true"} 2"#,
            r#"cdr_relay_calls_out_total{source="smdr",complete="false"} 1"#,
            r#"cdr_relay_deliveries_total{source="smdr",sink="webhook",result="delivered"} 3"#,
            r#"cdr_relay_deliveries_total{source="smdr",sink="webhook",result="failed"} 2"#,
            r#"cdr_relay_deliveries_total{source="smdr",sink="webhook",result="dead"} 0"#,
            r#"cdr_relay_sink_blocked{source="smdr",sink="webhook"} 1"#,
            r#"cdr_relay_sink_paused{source="smdr",sink="webhook"} 0"#,
            r#"cdr_relay_outbox_pending{source="smdr",sink="webhook"} 4"#,
            r#"cdr_relay_outbox_oldest_pending_age_seconds{source="smdr",sink="webhook"} 60.5"#,
            r#"cdr_relay_outbox_dead{source="smdr",sink="webhook"} 1"#,
            "# TYPE cdr_relay_outbox_oldest_pending_age_seconds gauge",
            "# UNIT cdr_relay_outbox_oldest_pending_age_seconds seconds",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn pruned_rows_and_db_size_are_counted() {
        let m = Metrics::new("smdr");
        let size = DbSize {
            page_size: 4096,
            pages: 10,
            free_pages: 4,
        };
        let pruned = Pruned {
            calls: 3,
            deliveries: 3,
            rejects: 2,
            ..Pruned::default()
        };
        m.pruned(&pruned, size, Some(5), 100);
        m.pruned(&pruned, size, Some(6), 200);
        let text = m.render(&[], 0);
        for line in [
            r#"cdr_relay_pruned_rows_total{source="smdr",table="calls"} 6"#,
            r#"cdr_relay_pruned_rows_total{source="smdr",table="rejects"} 4"#,
            r#"cdr_relay_db_size_bytes{source="smdr"} 40960"#,
            r#"cdr_relay_db_used_bytes{source="smdr"} 24576"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let status = m.retention();
        assert_eq!(
            (status.oldest_call_ms, status.checked_ms),
            (Some(6), Some(200))
        );
        assert_eq!(status.pruned.calls, 6);
    }

    #[test]
    fn outbox_families_only_for_the_sinks_counted() {
        let m = Metrics::new("smdr");
        let text = m.render(&[], 0);
        assert!(!text.contains("outbox_"), "{text}");
        assert!(!text.contains("deliveries_total"), "{text}");
        assert!(text.contains(r#"cdr_relay_source_connected{source="smdr"} 0"#));
    }

    #[test]
    fn registering_a_sink_again_replaces_it_and_order_is_stable() {
        let m = Metrics::new("smdr");
        m.register_sink("zeta", Arc::new(SinkStats::default()));
        m.register_sink("alpha", Arc::new(SinkStats::default()));
        let again = Arc::new(SinkStats::default());
        again.dead.store(9, Ordering::Relaxed);
        m.register_sink("zeta", again);
        assert_eq!(m.sink_names(), ["alpha", "zeta"]);
        let text = m.render(&[], 0);
        let a = text.find(r#"sink="alpha""#).unwrap_or(usize::MAX);
        let z = text.find(r#"sink="zeta""#).unwrap_or(0);
        assert!(a < z, "{text}");
        assert!(text.contains(r#"sink="zeta",result="dead"} 9"#), "{text}");
    }
}
