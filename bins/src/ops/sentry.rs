//! Sentry: cron check-ins that say whether the relay really works (source connected, outbox
//! moving), and error events for failures and dead letters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cdr_sinks::engine::now_ms;
use cdr_sinks::outbox::{Outbox, SinkCounts};
use cdr_sinks::webhook::{HttpClient, build_client};
use http_body_util::Full;
use hyper::{Method, Request, Uri};
use tokio::sync::watch;

use super::faults::Faults;
use crate::web::health::{Intake, NotReady, readiness};

/// A pending delivery older than this means the outbox is stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(15 * 60);

/// Whether the relay is healthy: the source is connected, and it is ready (the readiness of
/// `/readyz`, [`readiness`]: commits work, every delivery worker runs, no sink's oldest pending
/// delivery is older than [`STUCK_AFTER`]). The reason when not.
pub fn health(
    connected: bool,
    intake: Intake,
    counts: &[SinkCounts],
    now_ms: i64,
) -> Result<(), String> {
    if !connected {
        return Err("the PBX is not connected".to_owned());
    }
    readiness(intake, counts, now_ms, STUCK_AFTER).map_err(|why| match why {
        NotReady::Stuck { sink, limit, .. } => format!(
            "sink {sink} has deliveries pending for more than {} minutes",
            limit.as_secs() / 60
        ),
        other => other.to_string(),
    })
}

/// The check-in URL with `status=` set (any status already in the URL is replaced).
pub fn checkin_url(url: &str, ok: bool) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("status="))
        .collect();
    params.push(if ok { "status=ok" } else { "status=error" });
    format!("{base}?{}", params.join("&"))
}

async fn get(client: &HttpClient, url: &str) -> Result<u16, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

/// Checks in every `interval` until `stop`: `status=ok` when [`health`] holds (the PBX
/// `connected`, no `faults`, the outbox moving), `status=error` otherwise.
pub async fn cron_loop(
    url: String,
    interval: Duration,
    connected: Arc<AtomicBool>,
    faults: Arc<Faults>,
    outbox: Arc<Mutex<Outbox>>,
    mut stop: watch::Receiver<bool>,
) {
    let client = match build_client(None, Duration::from_secs(10), 1) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "sentry cron disabled");
            return;
        }
    };
    loop {
        let counts = {
            let outbox = outbox.clone();
            tokio::task::spawn_blocking(move || {
                outbox
                    .lock()
                    .map_err(|_| "outbox lock poisoned".to_owned())
                    .and_then(|o| {
                        // A paused sink keeps its calls pending on purpose.
                        let paused = o.paused_sinks().map_err(|e| e.to_string())?;
                        let mut counts = o.counts().map_err(|e| e.to_string())?;
                        counts.retain(|c| !paused.contains(&c.sink));
                        Ok(counts)
                    })
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        };
        let status = counts.and_then(|c| {
            health(
                connected.load(Ordering::Relaxed),
                Intake::of(&faults),
                &c,
                now_ms(),
            )
        });
        if let Err(why) = &status {
            tracing::warn!(%why, "reporting error to the Sentry cron monitor");
        }
        match get(&client, &checkin_url(&url, status.is_ok())).await {
            Ok(code) if (200..300).contains(&code) => {}
            Ok(code) => tracing::warn!(code, "Sentry cron check-in refused"),
            Err(e) => tracing::warn!(error = %e, "Sentry cron check-in failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkin_url_sets_status() {
        assert_eq!(
            checkin_url("https://s.example/api/1/cron/relay/key/", true),
            "https://s.example/api/1/cron/relay/key/?status=ok"
        );
        assert_eq!(
            checkin_url("https://s.example/c/?status=ok&env=prod", false),
            "https://s.example/c/?env=prod&status=error"
        );
    }

    #[test]
    fn health_needs_a_connection_and_a_moving_outbox() {
        let now = 10_000_000;
        let fine = Intake::default();
        assert!(health(false, fine, &[], now).is_err());
        assert!(health(true, fine, &[], now).is_ok());
        let stalled = Intake {
            stalled: true,
            workers_down: 0,
        };
        let e = health(true, stalled, &[], now).unwrap_err();
        assert!(e.contains("intake stalled"), "{e}");
        let fresh = SinkCounts {
            sink: "webhook".into(),
            pending: 3,
            oldest_pending_ms: Some(now - 60_000),
            ..SinkCounts::default()
        };
        assert!(health(true, fine, std::slice::from_ref(&fresh), now).is_ok());
        let stuck = SinkCounts {
            oldest_pending_ms: Some(now - 16 * 60_000),
            ..fresh
        };
        let e = health(true, fine, &[stuck], now).unwrap_err();
        assert!(e.contains("webhook"), "{e}");
    }
}
