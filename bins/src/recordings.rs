//! Recording detection for Asterisk calls (`RECORDINGS_DIRS`): call recordings that MixMonitor,
//! Monitor or a PBX distribution wrote under configured directories are attached to the call
//! whose channel Uniqueid or Linkedid the file name carries.
//!
//! * **Matching.** A file belongs to a call when its name holds the call's Linkedid or one of
//!   its legs' Uniqueids as a whole token: `1795355648.116.wav`,
//!   `out-2001-1001-20261122-135408-1795355648.116.wav` and `q800-1795355648.116-in.wav`
//!   match `1795355648.116`, but `1795355648.1160.wav` does not. The paths are added to
//!   [`Call::recordings`] (after the names AMI reported, without repeats).
//! * **Scanning.** The directories are walked recursively, at most every [`RESCAN`], when a
//!   batch with calls is about to be committed (the files are usually complete by then:
//!   MixMonitor closes its file at hangup, before the call is emitted). Subdirectories not
//!   modified within `max_age` are skipped, so date-structured trees
//!   (`monitor/2026/11/22/`) cost only their recent days; so are files older than that.
//! * **What it does not do:** wait for a recording that appears after its call was delivered,
//!   or read a recordings table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use call_assembler::{Call, Source};

/// The shortest time between two walks of the directories.
pub const RESCAN: Duration = Duration::from_secs(1);

/// Where recordings are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingsConfig {
    /// The directories, walked recursively.
    pub dirs: Vec<PathBuf>,
    /// Files and subdirectories not modified within this long are not looked at.
    pub max_age: Duration,
}

/// The recording files found, by the Uniqueid-like tokens in their names.
#[derive(Debug)]
pub struct RecordingIndex {
    config: RecordingsConfig,
    by_token: HashMap<String, Vec<PathBuf>>,
    scanned: Option<Instant>,
}

impl RecordingIndex {
    /// An empty index over `config`'s directories.
    pub fn new(config: RecordingsConfig) -> Self {
        Self {
            config,
            by_token: HashMap::new(),
            scanned: None,
        }
    }

    /// Walks the directories again unless that was done less than [`RESCAN`] ago.
    pub fn refresh(&mut self) {
        if self.scanned.is_some_and(|t| t.elapsed() < RESCAN) {
            return;
        }
        self.scanned = Some(Instant::now());
        self.by_token.clear();
        let oldest = SystemTime::now().checked_sub(self.config.max_age);
        let dirs = self.config.dirs.clone();
        for dir in &dirs {
            self.walk(dir, oldest, 0);
        }
    }

    fn walk(&mut self, dir: &Path, oldest: Option<SystemTime>, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            if depth == 0 {
                tracing::warn!(dir = %dir.display(), "recordings directory cannot be read");
            }
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(meta) = entry.metadata() else { continue };
            let recent = match (meta.modified(), oldest) {
                (Ok(m), Some(o)) => m >= o,
                _ => true,
            };
            if !recent {
                continue;
            }
            let path = entry.path();
            if meta.is_dir() {
                if depth < 8 {
                    self.walk(&path, oldest, depth + 1);
                }
            } else if meta.is_file()
                && let Some(name) = path.file_name().and_then(|n| n.to_str())
            {
                for token in tokens(name) {
                    self.by_token.entry(token).or_default().push(path.clone());
                }
            }
        }
    }

    /// The files whose names carry `id` as a token.
    pub fn find(&self, id: &str) -> &[PathBuf] {
        self.by_token.get(key(id)).map_or(&[], Vec::as_slice)
    }

    /// Adds the recordings of every Asterisk call in `calls` to it (refreshing the index first
    /// when any call is there). Returns how many paths were added.
    pub fn attach(&mut self, calls: &mut [Call]) -> usize {
        if !calls.iter().any(|c| c.source == Source::Ami) {
            return 0;
        }
        self.refresh();
        let mut added = 0;
        for call in calls.iter_mut().filter(|c| c.source == Source::Ami) {
            let mut ids: Vec<String> = vec![call.linkedid.to_string()];
            ids.extend(call.legs.iter().map(|l| l.uniqueid.to_string()));
            for id in ids.iter().filter(|i| !i.is_empty()) {
                for path in self.by_token.get(key(id)).into_iter().flatten() {
                    let p = path.to_string_lossy();
                    if !call.recordings.iter().any(|r| r.as_str() == p) {
                        call.recordings.push(p.as_ref().into());
                        added += 1;
                    }
                }
            }
        }
        added
    }
}

/// The Uniqueid-shaped tokens of a file name: in each run of digits and dots, every two
/// neighbouring digit groups joined by their dot (`1795355648.116`; a run such as
/// `1795355648.116.1795355648.117` gives both ids, and the harmless `116.1795355648`).
fn tokens(name: &str) -> impl Iterator<Item = String> + '_ {
    name.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .flat_map(|run| {
            let parts: Vec<&str> = run.split('.').collect();
            parts
                .windows(2)
                .filter(|w| w.iter().all(|p| !p.is_empty()))
                .map(|w| w.join("."))
                .collect::<Vec<_>>()
        })
}

/// The part of a Uniqueid the index knows it by: without Asterisk's `systemname-` prefix.
fn key(id: &str) -> &str {
    id.rsplit('-').next().unwrap_or(id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_whole_uniqueids() {
        let t = |n: &str| tokens(n).collect::<Vec<_>>();
        assert_eq!(
            t("out-2001-1001-20261122-135408-1795355648.116.wav"),
            vec!["1795355648.116"]
        );
        assert_eq!(t("1795355648.116.wav"), vec!["1795355648.116"]);
        assert_eq!(t("q800-1795355648.1160-in.wav"), vec!["1795355648.1160"]);
        let both = t("1795355648.116.1795355648.117.wav");
        assert!(both.contains(&"1795355648.116".to_owned()));
        assert!(both.contains(&"1795355648.117".to_owned()));
        assert!(t("20261122-135408.wav").is_empty());
        assert_eq!(key("pbx1-1795355648.116"), "1795355648.116");
    }
}
