//! The watermarks' cursors, pure (time is an argument): by id with the gaps it waits on, by
//! time with the rows seen inside the lookback window.

use super::*;

/// What reading a page of ids decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdTake {
    /// How many of the page's rows to ship now (a prefix).
    pub take: usize,
    /// Reading stopped at a gap that has not stayed [`GAP_WAIT`] yet.
    pub blocked: bool,
    /// Gaps moved past, as (first missing id, last missing id).
    pub skipped: Vec<(i64, i64)>,
}

/// The id watermark with the gaps it is waiting on. Pure: time is an argument.
#[derive(Debug, Clone, Default)]
pub struct IdCursor {
    /// The last id shipped.
    pub last: i64,
    /// Rows that follow a gap, by id, with when they were first seen.
    pub(super) gaps: BTreeMap<i64, Instant>,
}

impl IdCursor {
    /// A cursor after `last`.
    pub fn new(last: i64) -> Self {
        Self {
            last,
            gaps: BTreeMap::new(),
        }
    }

    /// Walks the ids of a page read after [`IdCursor::last`] (ascending) and moves past the
    /// rows to ship now: up to the first gap that has not stayed `wait` since the row after
    /// it was first seen.
    pub fn take(&mut self, now: Instant, ids: &[i64], wait: Duration) -> IdTake {
        let mut out = IdTake::default();
        for &id in ids {
            if id <= self.last {
                // Not after the watermark (cannot happen with a key column): shipped already.
                out.take += 1;
                continue;
            }
            let expected = self.last.saturating_add(1);
            if id > expected {
                let since = *self.gaps.entry(id).or_insert(now);
                if now.saturating_duration_since(since) < wait {
                    out.blocked = true;
                    break;
                }
                out.skipped.push((expected, id - 1));
            }
            self.last = id;
            out.take += 1;
        }
        let last = self.last;
        self.gaps.retain(|id, _| *id > last);
        out
    }

    /// Whether a gap is being waited on.
    pub fn is_waiting(&self) -> bool {
        !self.gaps.is_empty()
    }
}
/// The position inside one read of a time-ordered table, between pages.
#[derive(Debug, Clone, Default)]
pub(super) struct Pass {
    /// Rows from this time...
    pub(super) cursor: Option<String>,
    /// ...after skipping this many (those at exactly `cursor` already read in this pass).
    pub(super) offset: i64,
}

/// The time watermark with what is needed to read it.
#[derive(Debug, Clone, Default)]
pub(super) struct TimeCursor {
    pub(super) max: Option<String>,
    pub(super) floor: Option<String>,
    pub(super) seen: BTreeMap<String, Vec<u64>>,
    pub(super) seen_keys: HashSet<u64>,
    pub(super) pass: Option<Pass>,
}

impl TimeCursor {
    pub(super) fn from_mark(
        max: Option<String>,
        floor: Option<String>,
        seen: BTreeMap<String, Vec<u64>>,
    ) -> Self {
        let seen_keys = seen.values().flatten().copied().collect();
        Self {
            max,
            floor,
            seen,
            seen_keys,
            pass: None,
        }
    }

    pub(super) fn mark(&self) -> Watermark {
        Watermark::Time {
            max: self.max.clone(),
            floor: self.floor.clone(),
            seen: self.seen.clone(),
        }
    }

    /// Records a row read at `time` with `key`; true when it was not seen before.
    pub(super) fn see(&mut self, time: &str, key: u64) -> bool {
        if !self.seen_keys.insert(key) {
            return false;
        }
        self.seen.entry(time.to_owned()).or_default().push(key);
        if self
            .max
            .as_deref()
            .is_none_or(|m| compare_times(time, m).is_gt())
        {
            self.max = Some(time.to_owned());
        }
        true
    }

    /// Forgets the rows older than the window.
    pub(super) fn prune(&mut self, lookback: Duration) {
        let Some(from) = read_from(self.max.as_deref(), None, lookback) else {
            return;
        };
        let old: Vec<String> = self
            .seen
            .keys()
            .filter(|t| compare_times(t, &from).is_lt())
            .cloned()
            .collect();
        for t in old {
            if let Some(keys) = self.seen.remove(&t) {
                for k in keys {
                    self.seen_keys.remove(&k);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Cursor {
    /// Not known yet (no saved watermark, or one that does not fit the table).
    Unset,
    Id(IdCursor),
    Time(TimeCursor),
}

/// Where `--once` stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Until {
    /// The table was empty.
    Nothing,
    Id(i64),
    Time(String),
}
