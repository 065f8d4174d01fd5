//! SIGTERM and SIGINT turn into a shutdown signal the run loop watches.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// A receiver that turns `true` on the first SIGTERM or SIGINT. Must be called inside a tokio
/// runtime.
pub fn shutdown_on_signal() -> std::io::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}
