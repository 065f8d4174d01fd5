//! Recording detection for Asterisk calls: the paths of a call's recordings are added to
//! [`Call::recordings`] (after the names AMI reported, without repeats) from three places.
//!
//! * **Directories (`RECORDINGS_DIRS`).** Files that MixMonitor, Monitor or a PBX distribution
//!   wrote under the configured directories belong to a call when their name holds the call's
//!   Linkedid or one of its legs' Uniqueids as a whole token: `1795355648.116.wav`,
//!   `out-2001-1001-20261122-135408-1795355648.116.wav` and `q800-1795355648.116-in.wav`
//!   match `1795355648.116`, but `1795355648.1160.wav` does not. The directories are walked
//!   recursively, at most every [`RESCAN`], when a batch with calls is about to be committed
//!   (the files are usually complete by then: MixMonitor closes its file at hangup, before the
//!   call is emitted). Subdirectories not modified within `max_age` are skipped, so
//!   date-structured trees (`monitor/2026/11/22/`) cost only their recent days; so are files
//!   older than that. Each walk replaces what the previous one found.
//! * **A recordings table (`DB_TABLE_RECORDINGS`).** [`super::recordings_db`] reads it in the
//!   background and hands its (Uniqueid or Linkedid, path) pairs to [`RecordingIndex::add`].
//!   They are kept apart from the files found, so a walk of the directories does not drop
//!   them, and bounded: past [`MAX_TABLE_KEYS`] ids the ones added first are forgotten.
//! * **FreePBX's `recordingfile` CDR column.** When one of a call's CDR rows ([`Call::cdr`])
//!   has a non-empty `recordingfile` value, that value is added as it is (FreePBX writes the
//!   file name only), unless a path already attached ends with it. Nothing is read for it.
//!
//! Ids are matched without Asterisk's `systemname-` prefix.
//!
//! What it does not do: wait for a recording that appears after its call was delivered.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use call_assembler::{Call, Source};

/// The shortest time between two walks of the directories.
pub const RESCAN: Duration = Duration::from_secs(1);

/// The most ids whose recordings from the table are kept; past it the ids added first are
/// forgotten.
pub const MAX_TABLE_KEYS: usize = 200_000;

/// FreePBX's CDR column holding the call's recording file.
const RECORDINGFILE: &str = "recordingfile";

/// Where recordings are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingsConfig {
    /// The directories, walked recursively.
    pub dirs: Vec<PathBuf>,
    /// Files and subdirectories not modified within this long are not looked at.
    pub max_age: Duration,
}

/// The recordings known: the files found in the directories, by the Uniqueid-like tokens in
/// their names, and the paths a recordings table gave, by their id.
#[derive(Debug)]
pub struct RecordingIndex {
    config: RecordingsConfig,
    by_token: HashMap<String, Vec<PathBuf>>,
    scanned: Option<Instant>,
    /// From the table: paths by id (not touched by a walk).
    by_key: HashMap<String, Vec<String>>,
    /// The ids of `by_key` in the order they were first added, to forget the oldest.
    keys: VecDeque<String>,
}

impl RecordingIndex {
    /// An empty index over `config`'s directories (none: only what [`RecordingIndex::add`]
    /// and the calls' CDR rows give).
    pub fn new(config: RecordingsConfig) -> Self {
        Self {
            config,
            by_token: HashMap::new(),
            scanned: None,
            by_key: HashMap::new(),
            keys: VecDeque::new(),
        }
    }

    /// Adds a recording `path` for the call or channel `id` (a Uniqueid or Linkedid, with or
    /// without the `systemname-` prefix), as a recordings table gives it. Kept until more than
    /// [`MAX_TABLE_KEYS`] ids were added after it; walks of the directories leave it alone.
    /// Returns false when it was known already (or `id` or `path` is empty).
    pub fn add(&mut self, id: &str, path: &str) -> bool {
        let (id, path) = (key(id.trim()), path.trim());
        if id.is_empty() || path.is_empty() {
            return false;
        }
        if let Some(paths) = self.by_key.get_mut(id) {
            if paths.iter().any(|p| p == path) {
                return false;
            }
            paths.push(path.to_owned());
            return true;
        }
        while self.keys.len() >= MAX_TABLE_KEYS {
            match self.keys.pop_front() {
                Some(old) => {
                    self.by_key.remove(&old);
                }
                None => break,
            }
        }
        self.by_key.insert(id.to_owned(), vec![path.to_owned()]);
        self.keys.push_back(id.to_owned());
        true
    }

    /// How many ids have recordings from a table.
    pub fn table_keys(&self) -> usize {
        self.by_key.len()
    }

    /// Walks the directories again unless that was done less than [`RESCAN`] ago (nothing to
    /// do without directories).
    pub fn refresh(&mut self) {
        if self.config.dirs.is_empty() || self.scanned.is_some_and(|t| t.elapsed() < RESCAN) {
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

    /// The paths a recordings table gave for `id`.
    pub fn find_added(&self, id: &str) -> &[String] {
        self.by_key.get(key(id)).map_or(&[], Vec::as_slice)
    }

    /// Adds the recordings of every Asterisk call in `calls` to it (refreshing the index first
    /// when any call is there): files of the directories, then paths from the table, then the
    /// CDR rows' `recordingfile`. Returns how many paths were added.
    pub fn attach(&mut self, calls: &mut [Call]) -> usize {
        if !calls.iter().any(|c| c.source == Source::Ami) {
            return 0;
        }
        self.refresh();
        let mut added = 0;
        for call in calls.iter_mut().filter(|c| c.source == Source::Ami) {
            let mut ids: Vec<String> = vec![call.linkedid.to_string()];
            ids.extend(call.legs.iter().map(|l| l.uniqueid.to_string()));
            let mut found: Vec<String> = Vec::new();
            for id in ids.iter().filter(|i| !i.is_empty()) {
                let id = key(id);
                found.extend(
                    self.by_token
                        .get(id)
                        .into_iter()
                        .flatten()
                        .map(|p| p.to_string_lossy().into_owned()),
                );
                found.extend(self.by_key.get(id).into_iter().flatten().cloned());
            }
            for p in found {
                if !call.recordings.iter().any(|r| r.as_str() == p) {
                    call.recordings.push(p.into());
                    added += 1;
                }
            }
            added += attach_recordingfile(call);
        }
        added
    }
}

/// Adds the non-empty `recordingfile` values of `call`'s CDR rows (FreePBX's column) to its
/// recordings, unless a path there already is that file. Returns how many were added.
fn attach_recordingfile(call: &mut Call) -> usize {
    let files: Vec<String> = call
        .cdr
        .iter()
        .flat_map(|row| {
            row.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(RECORDINGFILE))
                .map(|(_, v)| v.trim().to_owned())
        })
        .filter(|v| !v.is_empty())
        .collect();
    let mut added = 0;
    for file in files {
        let known = call.recordings.iter().any(|r| {
            r.as_str() == file
                || r.strip_suffix(file.as_str())
                    .is_some_and(|dir| dir.ends_with('/'))
        });
        if !known {
            call.recordings.push(file.into());
            added += 1;
        }
    }
    added
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

    /// An Asterisk call with Linkedid `1795355648.116` and a second leg `1795355648.117`.
    fn call(cdr: serde_json::Value) -> Call {
        serde_json::from_value(serde_json::json!({
            "id": "x", "source": "ami", "call_id": "1795355648.116", "start": "",
            "start_time": "2026-11-22T13:54:08", "end_time": "2026-11-22T13:54:13",
            "duration": 5, "ring": 0, "hold": 0, "park": 0, "direction": "internal",
            "caller": "1001", "called": "2001", "answered": true, "complete": true,
            "linkedid": "1795355648.116",
            "legs": [
                {"uniqueid": "1795355648.116", "channel": "PJSIP/1001-00000001"},
                {"uniqueid": "1795355648.117", "channel": "PJSIP/2001-00000002"}
            ],
            "cdr": cdr,
        }))
        .unwrap()
    }

    fn paths(call: &Call) -> Vec<&str> {
        call.recordings.iter().map(|r| r.as_str()).collect()
    }

    #[test]
    fn table_entries_attach_by_linkedid_or_leg_and_survive_a_walk() {
        let dir = std::env::temp_dir().join(format!("cdr-relay-rec-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("1795355648.116.wav"), b"").unwrap();
        let mut index = RecordingIndex::new(RecordingsConfig {
            dirs: vec![dir.clone()],
            max_age: Duration::from_secs(3600),
        });
        assert!(index.add("pbx1-1795355648.116", "/rec/a.wav"));
        assert!(index.add("1795355648.117", "/rec/b.wav"));
        assert!(!index.add("1795355648.117", "/rec/b.wav"), "known already");
        assert!(!index.add("1795355648.118", " "), "no path");
        assert!(index.add("1795355648.999", "/rec/other.wav"));
        index.refresh();
        assert_eq!(index.find_added("1795355648.116"), ["/rec/a.wav"]);
        let mut calls = vec![call(serde_json::json!([]))];
        assert_eq!(index.attach(&mut calls), 3);
        let file = dir
            .join("1795355648.116.wav")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            paths(&calls[0]),
            [file.as_str(), "/rec/a.wav", "/rec/b.wav"]
        );
        // Once more: nothing new.
        assert_eq!(index.attach(&mut calls), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_table_entries_are_bounded_oldest_first() {
        let mut index = RecordingIndex::new(RecordingsConfig {
            dirs: Vec::new(),
            max_age: Duration::from_secs(3600),
        });
        for i in 0..=MAX_TABLE_KEYS {
            index.add(&format!("1795355648.{i}"), "/rec/x.wav");
        }
        assert_eq!(index.table_keys(), MAX_TABLE_KEYS);
        assert!(index.find_added("1795355648.0").is_empty());
        assert_eq!(index.find_added("1795355648.1"), ["/rec/x.wav"]);
    }

    #[test]
    fn freepbx_recordingfile_is_attached_once_and_empty_ones_are_not() {
        let mut index = RecordingIndex::new(RecordingsConfig {
            dirs: Vec::new(),
            max_age: Duration::from_secs(3600),
        });
        let name = "out-2001-1001-20261122-135408-1795355648.116.wav";
        let mut calls = vec![call(serde_json::json!([
            {"uniqueid": "1795355648.116", "recordingfile": name},
            {"uniqueid": "1795355648.117", "recordingfile": ""},
            {"uniqueid": "1795355648.117", "RecordingFile": name},
        ]))];
        assert_eq!(index.attach(&mut calls), 1);
        assert_eq!(paths(&calls[0]), [name]);
        // Already attached with its directory (from a walk or the table): not again.
        let mut calls = vec![call(serde_json::json!([{"recordingfile": name}]))];
        calls[0]
            .recordings
            .push(format!("/var/spool/asterisk/monitor/2026/11/22/{name}").into());
        assert_eq!(index.attach(&mut calls), 0);
        // Another name that merely ends the same is no match.
        let mut calls = vec![call(serde_json::json!([{"recordingfile": name}]))];
        calls[0].recordings.push(format!("/rec/x{name}").into());
        assert_eq!(index.attach(&mut calls), 1);
    }
}
