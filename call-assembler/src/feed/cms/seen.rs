//! Which `recordIndex`es of each CMS session were committed: exact, bounded, saved as a state.
//!
//! A session's committed indexes are kept as disjoint runs (`start..=end`), so CMS's normal
//! numbering (one index after the other) is one run however long the session lives, and an
//! index is a duplicate only when that very index was committed. A forged index far ahead
//! (`recordIndex="99999999"`) is one more run of one index: it hides nothing else.
//!
//! Bounds: at most [`MAX_RUNS`] runs per session and [`MAX_SESSIONS`] sessions. Past a bound the
//! least recently used run (or session) is forgotten: a run or session is "used" when an index
//! in it is committed or found duplicate, so the run CMS is extending and the batch it is
//! resending are never the ones forgotten. An index whose run was forgotten counts as new again:
//! a record resent after that many other runs is kept twice rather than risk dropping a new one
//! (the assembler still drops a record whose index its open call already holds). The state
//! holds the use counter, so a restored feed makes the same decisions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How many sessions are remembered (a Call Bridge starts a new session when it restarts; the
/// least recently used are forgotten first).
pub(super) const MAX_SESSIONS: usize = 1024;

/// How many runs of committed indexes are remembered per session.
pub(super) const MAX_RUNS: usize = 64;

/// One run of committed indexes, `start..=end`, last used at `tick`.
type Run = (u64, u64, u64);

/// The committed indexes of every session (see the module documentation).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Sessions {
    /// Per session: its runs, sorted by start and disjoint (not even adjacent).
    #[serde(default)]
    seen: BTreeMap<String, Vec<Run>>,
    /// The state before exact indexes (the highest index per session and when it was seen):
    /// read once, as the run `0..=highest`, so nothing committed before is taken again.
    #[serde(default, skip_serializing)]
    highest: BTreeMap<String, (u64, u64)>,
    /// The use counter.
    #[serde(default)]
    tick: u64,
}

impl Sessions {
    /// Reads a saved state (either form); `None` when it does not parse.
    pub(super) fn from_saved(bytes: &[u8]) -> Option<Self> {
        let mut s: Self = serde_json::from_slice(bytes).ok()?;
        for (session, (highest, tick)) in std::mem::take(&mut s.highest) {
            s.seen
                .entry(session)
                .or_insert_with(|| vec![(0, highest, tick)]);
        }
        s.bound_sessions();
        Some(s)
    }

    /// Whether `index` of `session` was committed; if not, it now is. Either way its run (or
    /// the new one) is marked used.
    pub(super) fn check_and_insert(&mut self, session: &str, index: u64) -> bool {
        self.tick = self.tick.saturating_add(1);
        let tick = self.tick;
        let is_new_session = !self.seen.contains_key(session);
        let runs = self.seen.entry(session.to_owned()).or_default();
        // The last run starting at or before `index`.
        let at = runs.partition_point(|r| r.0 <= index);
        if let Some(prev) = at.checked_sub(1).and_then(|i| runs.get_mut(i)) {
            if index <= prev.1 {
                prev.2 = tick;
                return true;
            }
        }
        let joins_prev = at
            .checked_sub(1)
            .and_then(|i| runs.get(i))
            .is_some_and(|r| r.1.checked_add(1) == Some(index));
        let joins_next = runs
            .get(at)
            .is_some_and(|r| index.checked_add(1) == Some(r.0));
        match (joins_prev, joins_next) {
            (true, true) => {
                let next_end = runs.get(at).map_or(index, |r| r.1);
                runs.remove(at);
                if let Some(prev) = at.checked_sub(1).and_then(|i| runs.get_mut(i)) {
                    *prev = (prev.0, next_end, tick);
                }
            }
            (true, false) => {
                if let Some(prev) = at.checked_sub(1).and_then(|i| runs.get_mut(i)) {
                    *prev = (prev.0, index, tick);
                }
            }
            (false, true) => {
                if let Some(next) = runs.get_mut(at) {
                    *next = (index, next.1, tick);
                }
            }
            (false, false) => runs.insert(at, (index, index, tick)),
        }
        if runs.len() > MAX_RUNS {
            if let Some(oldest) = runs
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.2)
                .map(|(i, _)| i)
            {
                runs.remove(oldest);
            }
        }
        if is_new_session {
            self.bound_sessions();
        }
        false
    }

    /// Forgets the least recently used sessions past [`MAX_SESSIONS`].
    fn bound_sessions(&mut self) {
        if self.seen.len() <= MAX_SESSIONS {
            return;
        }
        let mut by_use: Vec<(u64, String)> = self
            .seen
            .iter()
            .map(|(s, runs)| (runs.iter().map(|r| r.2).max().unwrap_or(0), s.clone()))
            .collect();
        by_use.sort();
        let excess = self.seen.len().saturating_sub(MAX_SESSIONS);
        for (_, s) in by_use.into_iter().take(excess) {
            self.seen.remove(&s);
        }
    }

    /// How many sessions are remembered.
    #[cfg(test)]
    pub(super) fn sessions(&self) -> usize {
        self.seen.len()
    }

    /// The runs of `session` (start, end), sorted.
    #[cfg(test)]
    pub(super) fn runs(&self, session: &str) -> Vec<(u64, u64)> {
        self.seen
            .get(session)
            .map(|r| r.iter().map(|r| (r.0, r.1)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_forged_high_index_hides_no_later_genuine_one() {
        let mut s = Sessions::default();
        for i in 1..=5 {
            assert!(!s.check_and_insert("a", i));
        }
        assert!(!s.check_and_insert("a", 99_999_999), "forged, first time");
        for i in 6..=10 {
            assert!(
                !s.check_and_insert("a", i),
                "genuine {i} after the forged one"
            );
        }
        assert!(s.check_and_insert("a", 7), "a resent index is a duplicate");
        assert!(s.check_and_insert("a", 99_999_999));
        assert_eq!(s.runs("a"), [(1, 10), (99_999_999, 99_999_999)]);
        assert!(!s.check_and_insert("b", 7), "sessions are separate");
    }

    #[test]
    fn runs_merge_when_a_gap_fills() {
        let mut s = Sessions::default();
        for i in [1, 3, 5, 2, 4] {
            assert!(!s.check_and_insert("a", i));
        }
        assert_eq!(s.runs("a"), [(1, 5)]);
        assert!(!s.check_and_insert("a", u64::MAX));
        assert!(!s.check_and_insert("a", 0));
        assert_eq!(s.runs("a"), [(0, 5), (u64::MAX, u64::MAX)]);
    }

    #[test]
    fn many_forged_indexes_forget_themselves_not_the_live_run() {
        let mut s = Sessions::default();
        for i in 1..=100 {
            assert!(!s.check_and_insert("a", i));
        }
        for k in 0..1000u64 {
            // A forged far index, then the next genuine one and a resend of it.
            assert!(!s.check_and_insert("a", 1_000_000 + 2 * k));
            assert!(!s.check_and_insert("a", 101 + k), "genuine {k}");
            assert!(s.check_and_insert("a", 101 + k), "resend {k}");
        }
        let runs = s.runs("a");
        assert!(runs.len() <= MAX_RUNS, "{}", runs.len());
        assert_eq!(runs.first(), Some(&(1, 1100)), "the live run kept whole");
    }

    #[test]
    fn sessions_are_bounded_least_recently_used_first() {
        let mut s = Sessions::default();
        assert!(!s.check_and_insert("live", 1));
        for n in 0..(MAX_SESSIONS as u64 + 10) {
            assert!(!s.check_and_insert(&format!("forged{n}"), 1));
            if n % 100 == 0 {
                assert!(s.check_and_insert("live", 1), "still known at {n}");
            }
        }
        assert_eq!(s.sessions(), MAX_SESSIONS);
        assert!(s.check_and_insert("live", 1));
        assert!(!s.check_and_insert("forged0", 1), "the oldest forgotten");
    }

    #[test]
    fn the_old_state_reads_as_everything_up_to_its_highest() {
        let old = br#"{"highest":{"s1":[42,7]},"tick":9}"#;
        let mut s = Sessions::from_saved(old).unwrap();
        assert!(s.check_and_insert("s1", 42));
        assert!(s.check_and_insert("s1", 1));
        assert!(!s.check_and_insert("s1", 43));
        let saved = serde_json::to_vec(&s).unwrap();
        assert!(!String::from_utf8_lossy(&saved).contains("highest"));
        assert_eq!(Sessions::from_saved(&saved), Some(s));
    }

    proptest! {
        /// Within the bounds (indexes below 100 make at most 50 runs), exactly the indexes
        /// inserted before are duplicates, and a state saved and read back at any point decides
        /// the same from there on.
        #[test]
        fn agrees_with_a_set(
            ops in proptest::collection::vec((0u8..3, 0u64..100), 0..300),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut s = Sessions::default();
            let mut model = std::collections::BTreeSet::new();
            let cut = cut.index(ops.len() + 1);
            let mut restored: Option<Sessions> = None;
            for (n, (session, index)) in ops.iter().enumerate() {
                if n == cut {
                    restored = Sessions::from_saved(&serde_json::to_vec(&s).unwrap());
                }
                let session = format!("s{session}");
                let dup = s.check_and_insert(&session, *index);
                if let Some(r) = restored.as_mut() {
                    prop_assert_eq!(r.check_and_insert(&session, *index), dup);
                }
                prop_assert_eq!(dup, !model.insert((session.clone(), *index)));
                let runs = s.runs(&session);
                prop_assert!(runs.windows(2).all(|w| w[0].1 + 1 < w[1].0));
            }
        }
    }
}
