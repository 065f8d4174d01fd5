//! The CSV follower (`ami-relay` with `CEL_MODE=csv`): follows Asterisk's cdr_csv and
//! cel_custom files like `tail -F`, handing over complete lines with the file position after
//! them.
//!
//! * **Where it starts.** The follower waits for the positions the outbox saved (the
//!   feed saves `(inode, offset)` per file with every batch, see
//!   [`call_assembler::feed::CelFeed`]): the run loop reads them when it builds the feed, and
//!   the build closure sends them on the `start` channel ([`follow`]). A saved inode that is
//!   still the path's: start at the saved offset (at 0 when the file is now shorter: it was
//!   truncated). A saved inode that is no longer the path's (rotated while the relay was down):
//!   the old file is looked for in the same directory by its inode and finished from the offset
//!   first; then the new file is read from 0. Nothing saved: the files are read from 0.
//! * **Lines.** Only complete records are handed over (up to a `\n` outside double quotes: a
//!   quoted field may hold newlines); a last line still being written is kept until its
//!   newline arrives, so the saved offset is always at a record's start. Records are found with
//!   [`call_assembler::csv::RecordReader`], which goes on where it stopped (nothing is scanned
//!   again after each read) and bounds a record: one longer than 1 MiB, or whose quote is still
//!   open after 100 newlines (a cut line, a stray `"`), is handed over as
//!   [`CelData::Rejected`] (its byte offset and first bytes, kept as a reject and logged) and
//!   reading resumes at the line after its first one. At most one unfinished record is held.
//! * **Rotation.** When the path names another inode, the old file (still open) is read to its
//!   end (a last line without a newline is then handed over as it is), and the new file is read
//!   from 0.
//! * **Truncation.** When the file is shorter than what was read, it is read again from 0.
//! * **Polling.** Every [`POLL`]; the cdr_csv file first, so that a call's CDR rows are usually
//!   in before its CEL end. A missing cdr_csv file is logged once and its rows are simply not
//!   attached; a missing cel_custom file is waited for.
//! * **`--once`.** Both files are read to their current end, then [`SourceEvent::End`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use call_assembler::csv::{Item, RecordReader};
use call_assembler::feed::{CelData, CelInput, CsvFile, FilePos};

use super::tcp::SourceEvent;

/// Where `ami-relay` reads with `CEL_MODE=csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CelCsvSource {
    /// The cel_custom file.
    pub cel: PathBuf,
    /// The cdr_csv file (may be missing).
    pub cdr: PathBuf,
    /// Read to the current end and exit instead of following.
    pub once: bool,
    /// The cel_custom file's columns, in order.
    pub columns: call_assembler::CelColumns,
}

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_millis(250);

const CHUNK: usize = 64 * 1024;

/// The most bytes one look at a file hands over before the others get their turn.
const MAX_PER_POLL: usize = 16 * CHUNK;

/// Where the followed files start: the positions saved in the outbox, by file.
pub type StartPositions = HashMap<CsvFile, FilePos>;

/// One followed file.
#[derive(Debug)]
struct Follower {
    file: CsvFile,
    path: PathBuf,
    handle: Option<File>,
    pos: FilePos,
    /// Bytes read after `pos.offset`, not yet a complete record, and the bounded scan of them.
    reader: RecordReader,
    missing_logged: bool,
}

impl Follower {
    fn new(file: CsvFile, path: PathBuf) -> Self {
        Self {
            file,
            path,
            handle: None,
            pos: FilePos::default(),
            reader: RecordReader::new(),
            missing_logged: false,
        }
    }

    /// Opens the file at a saved position (see the module documentation).
    fn start_at(&mut self, saved: Option<FilePos>) {
        let Some(saved) = saved else { return };
        let current = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if current == Some(saved.inode) {
            if let Ok(mut f) = File::open(&self.path) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let offset = if len >= saved.offset {
                    saved.offset
                } else {
                    tracing::warn!(path = %self.path.display(), "truncated while the relay was down: reading it from the start");
                    0
                };
                if f.seek(SeekFrom::Start(offset)).is_ok() {
                    self.pos = FilePos {
                        inode: saved.inode,
                        offset,
                    };
                    self.reader = RecordReader::at(offset);
                    self.handle = Some(f);
                }
            }
            return;
        }
        match find_inode(&self.path, saved.inode) {
            Some(old) => {
                if let Ok(mut f) = File::open(&old)
                    && f.seek(SeekFrom::Start(saved.offset)).is_ok()
                {
                    tracing::info!(path = %old.display(), offset = saved.offset, "finishing the file rotated while the relay was down");
                    self.pos = saved;
                    self.reader = RecordReader::at(saved.offset);
                    self.handle = Some(f);
                }
            }
            None => tracing::warn!(
                path = %self.path.display(),
                "rotated while the relay was down and the old file is gone: reading the new one from the start"
            ),
        }
    }

    /// Opens the path from its start; false when it is not there.
    fn open_path(&mut self) -> bool {
        match File::open(&self.path) {
            Ok(f) => {
                let inode = f.metadata().map(|m| m.ino()).unwrap_or(0);
                tracing::info!(path = %self.path.display(), "following");
                self.pos = FilePos { inode, offset: 0 };
                self.reader = RecordReader::new();
                self.handle = Some(f);
                self.missing_logged = false;
                true
            }
            Err(e) => {
                if !self.missing_logged {
                    self.missing_logged = true;
                    match self.file {
                        CsvFile::Cdr => {
                            tracing::warn!(path = %self.path.display(), error = %e, "no cdr_csv file: calls carry no CDR rows until it appears")
                        }
                        CsvFile::Cel => {
                            tracing::warn!(path = %self.path.display(), error = %e, "no cel_custom file yet: waiting for it")
                        }
                    }
                }
                false
            }
        }
    }

    /// Hands out what the reader has (`at_end`: the file is finished, see
    /// [`RecordReader::next`]): complete records in chunks, rejected records on their own,
    /// each with the position after it.
    fn take_records(&mut self, at_end: bool, out: &mut Vec<(CelData, FilePos)>) {
        let mut chunk = Vec::new();
        while let Some(item) = self.reader.next(at_end) {
            match item {
                Item::Record(range) => {
                    chunk.extend_from_slice(self.reader.get(range));
                    if at_end && chunk.last() != Some(&b'\n') {
                        // A last line without its newline is handed over as it is.
                        chunk.push(b'\n');
                    }
                }
                Item::Rejected(r) => {
                    if !chunk.is_empty() {
                        let at = FilePos {
                            offset: r.offset,
                            ..self.pos
                        };
                        out.push((CelData::Bytes(std::mem::take(&mut chunk)), at));
                    }
                    tracing::warn!(
                        path = %self.path.display(),
                        offset = r.offset,
                        bytes = r.len,
                        "a record longer than 1 MiB or with a quote left open: rejected, reading on from the next line"
                    );
                    self.pos.offset = self.reader.position();
                    out.push((CelData::Rejected(r), self.pos));
                }
            }
        }
        self.pos.offset = self.reader.position();
        if !chunk.is_empty() {
            out.push((CelData::Bytes(chunk), self.pos));
        }
    }

    /// Reads what is there: chunks of complete lines (or rejected records) with the position
    /// after each, and whether there is more to read right away.
    fn poll(&mut self) -> (Vec<(CelData, FilePos)>, bool) {
        let mut out = Vec::new();
        let mut budget = MAX_PER_POLL;
        loop {
            if self.handle.is_none() && !self.open_path() {
                return (out, false);
            }
            let mut buf = vec![0u8; CHUNK];
            loop {
                let Some(handle) = self.handle.as_mut() else {
                    return (out, false);
                };
                let n = match handle.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(path = %self.path.display(), error = %e, "read failed");
                        return (out, false);
                    }
                };
                if n == 0 {
                    break;
                }
                self.reader.push(buf.get(..n).unwrap_or_default());
                self.take_records(false, &mut out);
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    return (out, true);
                }
            }
            // At the end of the open file: has the path moved on?
            let read = self.reader.read_to();
            match std::fs::metadata(&self.path) {
                Ok(m) if m.ino() != self.pos.inode => {
                    self.take_records(true, &mut out);
                    tracing::info!(path = %self.path.display(), "rotated: finished the old file, reading the new one");
                    self.handle = None;
                }
                Ok(m) if m.len() < read => {
                    tracing::info!(path = %self.path.display(), "truncated: reading it from the start");
                    self.reader = RecordReader::new();
                    self.pos.offset = 0;
                    if let Some(h) = self.handle.as_mut()
                        && h.seek(SeekFrom::Start(0)).is_err()
                    {
                        self.handle = None;
                    }
                }
                _ => return (out, false),
            }
        }
    }
}

/// A file in `path`'s directory with inode `inode` (a rotated `Master.csv.1`, say).
fn find_inode(path: &Path, inode: u64) -> Option<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.metadata().is_ok_and(|m| m.ino() == inode && m.is_file()))
        .map(|e| e.path())
}

/// Follows the files of `config` (see the module documentation), from the positions sent on
/// `start`, until `shutdown` (or, with `once`, until their current end).
pub async fn follow(
    config: CelCsvSource,
    start: oneshot::Receiver<StartPositions>,
    tx: mpsc::Sender<SourceEvent<CelInput>>,
    shutdown: watch::Receiver<bool>,
) {
    let files = vec![(CsvFile::Cdr, config.cdr), (CsvFile::Cel, config.cel)];
    follow_files(files, config.once, start, tx, shutdown).await;
}

/// Follows `files` in this order (see the module documentation), from the positions sent on
/// `start`, until `shutdown` (or, with `once`, until their current end). The source counts as
/// connected once the cel_custom file (or, without one, the first file) is open.
pub async fn follow_files(
    files: Vec<(CsvFile, PathBuf)>,
    once: bool,
    start: oneshot::Receiver<StartPositions>,
    tx: mpsc::Sender<SourceEvent<CelInput>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(saved) = start.await else { return };
    let primary = if files.iter().any(|(f, _)| *f == CsvFile::Cel) {
        CsvFile::Cel
    } else {
        files.first().map_or(CsvFile::Cel, |(f, _)| *f)
    };
    let mut followers: Vec<Follower> = files
        .into_iter()
        .map(|(file, path)| Follower::new(file, path))
        .collect();
    for f in &mut followers {
        f.start_at(saved.get(&f.file).copied());
    }
    let mut connected = false;
    loop {
        let mut more = false;
        for slot in &mut followers {
            let mut f = std::mem::replace(slot, Follower::new(slot.file, slot.path.clone()));
            let Ok((f2, chunks, m)) = tokio::task::spawn_blocking(move || {
                let (chunks, m) = f.poll();
                (f, chunks, m)
            })
            .await
            else {
                return;
            };
            *slot = f2;
            more |= m;
            if !connected && slot.file == primary && slot.handle.is_some() {
                connected = true;
                if tx
                    .send(SourceEvent::Connected(slot.path.display().to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            for (data, pos) in chunks {
                let input = CelInput {
                    file: slot.file,
                    data,
                    pos: Some(pos),
                    state: None,
                };
                if tx.send(SourceEvent::Data(input)).await.is_err() {
                    return;
                }
            }
        }
        if more {
            continue;
        }
        if once {
            for f in &followers {
                if f.reader.held() > 0 {
                    tracing::warn!(path = %f.path.display(), bytes = f.reader.held(), "the last line has no end yet: left for the next run");
                }
            }
            let _ = tx.send(SourceEvent::End).await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_quoted_field_with_a_newline_is_never_cut_at_it() {
        let dir = std::env::temp_dir().join(format!("cdr-relay-csv-nl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("Master.csv");
        let first = "\"CHAN_START\",\"1.5\"\n";
        std::fs::write(&path, format!("{first}\"HANGUP\",\"two\nlines")).unwrap();
        let mut f = Follower::new(CsvFile::Cel, path.clone());
        let (chunks, _) = f.poll();
        // Only the first record: the second's newline is inside its quotes and it is not
        // finished yet.
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].0, CelData::Bytes(first.as_bytes().to_vec()));
        assert_eq!(chunks[0].1.offset, first.len() as u64);
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(b"\",\"x\"\n").unwrap();
        let (chunks, _) = f.poll();
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            chunks[0].0,
            CelData::Bytes(b"\"HANGUP\",\"two\nlines\",\"x\"\n".to_vec())
        );
        assert_eq!(
            chunks[0].1.offset,
            std::fs::metadata(&path).unwrap().len(),
            "the saved offset is at the end of the whole record"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
