//! Scanning a long text from several places at once.
//!
//! A scan is a walk: from a cursor, find the leftmost-first candidate, judge
//! it, resume where the verdict says. The forward search steps a lazy DFA one
//! byte at a time, and each step needs the state the one before produced: a
//! chain of dependent loads, a few cycles per byte however much else the core
//! could do meanwhile. So a long text is walked from `WALKS` places at once,
//! and their DFA steps are interleaved: the chains are independent, and the
//! core runs them side by side.
//!
//! The walks give exactly the result of the one walk from the start, because a
//! walk's next step depends only on its cursor. Say another walk searched from
//! `b` and found a candidate starting at `s`. Then no match starts in `[b, s)`,
//! so for any cursor `c` with `b <= c <= s` no match starts in `[c, s)` either:
//! the walk from `c` finds the same candidate, judges it the same and resumes
//! in the same place, and from there on the two walks are one. Each walk
//! therefore stops once it has passed the next walk's starting point, and the
//! merge joins it to the next walk's steps at the first step where that holds,
//! taking single steps (as [`Detector::scan_walk`] does) until it does.
//!
//! A walk's last search usually runs past the next walk's start, and would
//! repeat the next walk's work up to its first candidate. Walks therefore
//! start just after a space, where mostly nothing is under way: a walk that
//! reaches the next walk's start having found nothing, in the very DFA state
//! the next walk's first search started in, will see exactly what that search
//! sees, so it takes that search's match end and only runs the reverse search
//! from its own cursor (the match may start before the next walk's start).
//! On the bench's varied text this held at 82 % of such meetings.
//!
//! The walks share one loop while every state they step into is known and
//! ordinary; it stops at the first that is not. A walk that enters a match
//! then steps on alone until the match ends (leftmost-first looks for a longer
//! one), so that a match costs the shared loop one stop, not one per byte.
//!
//! The lazy DFA clears its cache when the cache is full, and every state but
//! the last one returned is then unknown; a scan during which that happens
//! gives up and walks the text in one walk. Clears are rare: the cache is
//! large and kept from scan to scan.

use regex_automata::{HalfMatch, Input, hybrid::LazyStateID, hybrid::dfa::Cache};

use super::{Detector, Finding, Step};

/// Texts at least this long are walked from several places. Below it the
/// walks' setup and merge cost about what the overlap saves: measured on the
/// bench's kinds of text, interleaving made 1 KiB texts 2-4 % faster (mixed)
/// or 5 % slower (varied), 2 KiB texts 10-12 % faster, 4 KiB texts 15-25 %.
pub(super) const MIN_LEN: usize = 2 << 10;

/// How many walks a long text is cut into. Four independent chains is what
/// the measurements favoured: two gave 1.4 times the DFA's speed, four 1.7.
const WALKS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Searching,
    /// At the next walk's start in the state the next walk started in: this
    /// search ends as the next walk's first one does, once that is known.
    Waiting,
    /// The walk's cursor has passed the next walk's start.
    Paused,
    /// No candidate after the walk's cursor.
    Finished,
}

struct Walk {
    /// Where the current search started: the walk's cursor.
    cursor: usize,
    /// Bytes this walk's searches have read, counted as the one walk counts.
    work: usize,
    /// The next walk's start; the last walk never pauses.
    stop: usize,
    /// The next byte the search reads, and the DFA's state before it.
    at: usize,
    sid: LazyStateID,
    /// The end of the longest leftmost-first match seen so far.
    found: Option<HalfMatch>,
    /// Each step taken, with the cursor it was taken from.
    steps: Vec<(usize, Step)>,
    phase: Phase,
    /// The start state of the walk's first search, and once that search is
    /// over, what it found.
    first_start: Option<LazyStateID>,
    first_found: Option<Option<HalfMatch>>,
}

/// How far past its share a walk's start may move to land after a space.
const SPACE_WITHIN: usize = 256;

/// The lazy DFA cleared its cache, or could not go on (it never stops with
/// these patterns: no quit bytes, no limit on cache clearing); the caller
/// walks the text in one walk.
struct GaveUp;

impl Detector {
    /// The findings of [`Detector::scan_walk`], from `WALKS` walks at once.
    pub(crate) fn scan_interleaved(&self, text: &str) -> Vec<Finding> {
        let mut cache = self.forward_caches.get();
        match self.walk_all(text, &mut cache) {
            Ok(walks) => self.merge(text, &walks),
            Err(GaveUp) => self.scan_walk(text),
        }
    }

    /// The interleaved scan's findings, how often the DFA's cache was cleared
    /// during it, and whether it gave up and walked the text in one walk.
    #[cfg(test)]
    pub(crate) fn scan_interleaved_counted(&self, text: &str) -> (Vec<Finding>, usize, bool) {
        let mut cache = self.forward.create_cache();
        match self.walk_all(text, &mut cache) {
            Ok(walks) => (self.merge(text, &walks), cache.clear_count(), false),
            Err(GaveUp) => (self.scan_walk(text), cache.clear_count(), true),
        }
    }

    fn walk_all(&self, text: &str, cache: &mut Cache) -> Result<[Walk; WALKS], GaveUp> {
        let len = text.len();
        // Each walk but the first starts after a space where there is one
        // near: there the walk before usually arrives in the very state the
        // walk starts in (nothing under way), and can take its result.
        let haystack = text.as_bytes();
        let mut starts = [0; WALKS];
        for k in 1..WALKS {
            let mut at = (len / WALKS * k).max(starts[k - 1]);
            if let Some(space) = haystack
                .get(at..len.min(at + SPACE_WITHIN))
                .and_then(|near| near.iter().position(|b| *b == b' '))
            {
                at += space + 1;
            }
            while !text.is_char_boundary(at) {
                at += 1;
            }
            starts[k] = at;
        }
        let mut walks: [Walk; WALKS] = std::array::from_fn(|k| Walk {
            cursor: starts[k],
            stop: starts.get(k + 1).copied().unwrap_or(usize::MAX),
            at: starts[k],
            sid: LazyStateID::default(),
            found: None,
            steps: Vec::new(),
            phase: Phase::Searching,
            first_start: None,
            first_found: None,
            work: 0,
        });
        for walk in &mut walks {
            if walk.cursor >= walk.stop {
                walk.phase = Phase::Paused;
            }
        }
        // The lazy DFA clears its cache when it is full, and then every state
        // but the one it just returned is unknown. Clears are rare (the cache
        // is large and kept from scan to scan), so rather than start the
        // walks' searches again, the scan then gives up and walks the text in
        // one walk.
        let clears = cache.clear_count();
        let unchanged = |cache: &Cache| {
            if cache.clear_count() == clears {
                Ok(())
            } else {
                Err(GaveUp)
            }
        };
        for walk in &mut walks {
            if walk.phase == Phase::Searching {
                self.restart(text, cache, walk)?;
                walk.first_start = Some(walk.sid);
            }
        }
        unchanged(cache)?;
        loop {
            // Most bytes: every searching walk steps through known, untagged
            // states, with no check but the tag.
            let (mut active, mut n) = ([0; WALKS], 0);
            for (k, walk) in walks.iter().enumerate() {
                if walk.phase == Phase::Searching && !walk.sid.is_tagged() && walk.at != walk.stop {
                    active[n] = k;
                    n += 1;
                }
            }
            match active[..n] {
                [a, b, c, d] => self.run_together(cache, haystack, &mut walks, [a, b, c, d]),
                [a, b, c] => self.run_together(cache, haystack, &mut walks, [a, b, c]),
                [a, b] => self.run_together(cache, haystack, &mut walks, [a, b]),
                [a] => self.run_together(cache, haystack, &mut walks, [a]),
                _ => {}
            }
            // Then one byte of each with every case handled: a transition not
            // computed yet, a match, the end of a search, the end of the text.
            let mut searching = false;
            for k in 0..WALKS {
                if walks[k].phase == Phase::Waiting || self.at_next_start(&walks, k) {
                    // The next walk's first search decides this one.
                    let Some(found) = walks.get(k + 1).and_then(|next| next.first_found) else {
                        walks[k].phase = Phase::Waiting;
                        searching = true;
                        continue;
                    };
                    let walk = &mut walks[k];
                    walk.phase = Phase::Searching;
                    walk.found = found;
                    self.take_step(text, cache, walk)?;
                    unchanged(cache)?;
                    searching = true;
                    continue;
                }
                let walk = &mut walks[k];
                if walk.phase != Phase::Searching {
                    continue;
                }
                searching = true;
                let Some(&byte) = haystack.get(walk.at) else {
                    // The end of the text: the end-of-input transition says
                    // whether a match ends there.
                    let sid = self
                        .forward
                        .next_eoi_state(cache, walk.sid)
                        .map_err(|_| GaveUp)?;
                    if sid.is_match() {
                        let pattern = self.forward.match_pattern(cache, sid, 0);
                        walk.found = Some(HalfMatch::new(pattern, len));
                    }
                    self.take_step(text, cache, walk)?;
                    unchanged(cache)?;
                    continue;
                };
                let mut byte = byte;
                loop {
                    walk.sid = self
                        .forward
                        .next_state(cache, walk.sid, byte)
                        .map_err(|_| GaveUp)?;
                    unchanged(cache)?;
                    let sid = walk.sid;
                    if sid.is_dead() {
                        self.take_step(text, cache, walk)?;
                        unchanged(cache)?;
                        break;
                    }
                    if sid.is_quit() {
                        return Err(GaveUp);
                    }
                    walk.at += 1;
                    if !sid.is_match() {
                        break;
                    }
                    // Matches are reported one byte late: this one ends
                    // before the byte just read. Leftmost-first goes on for
                    // a longer match; this walk alone steps through the
                    // match, which the others' shared loop would stop at
                    // every byte of.
                    let pattern = self.forward.match_pattern(cache, sid, 0);
                    walk.found = Some(HalfMatch::new(pattern, walk.at - 1));
                    match haystack.get(walk.at) {
                        Some(&next) if walk.at != walk.stop => byte = next,
                        _ => break,
                    }
                }
            }
            if !searching {
                return Ok(walks);
            }
        }
    }

    /// Steps the walks `which` together for as long as every transition is
    /// known and leads to an untagged state (not a match, not dead, not yet
    /// computed), and stops before the first step that does not, or before
    /// the end of the text. The `N` chains of loads are independent, so the
    /// core overlaps them.
    fn run_together<const N: usize>(
        &self,
        cache: &Cache,
        haystack: &[u8],
        walks: &mut [Walk; WALKS],
        which: [usize; N],
    ) {
        let mut sid = which.map(|k| walks[k].sid);
        let at = which.map(|k| walks[k].at);
        // Up to the end of the text, and a walk short of the next walk's
        // start halts there (see `at_next_start`).
        let room = which
            .iter()
            .map(|k| {
                let walk = &walks[*k];
                let end = if walk.at < walk.stop {
                    walk.stop
                } else {
                    haystack.len()
                };
                end.min(haystack.len()).saturating_sub(walk.at)
            })
            .min()
            .unwrap_or(0);
        // The next `room` bytes of each walk, so that one counter indexes all.
        let bytes = at.map(|at| haystack.get(at..at + room).unwrap_or_default());
        let mut i = 0;
        while i < room {
            let mut next = sid;
            let mut tagged = false;
            for k in 0..N {
                let Some(&byte) = bytes[k].get(i) else {
                    return;
                };
                next[k] = self.forward.next_state_untagged(cache, sid[k], byte);
                tagged |= next[k].is_tagged();
            }
            if tagged {
                break;
            }
            sid = next;
            i += 1;
        }
        for (n, k) in which.into_iter().enumerate() {
            walks[k].sid = sid[n];
            walks[k].at = at[n] + i;
        }
    }

    /// The search of `walk` is over: judge what it found, as
    /// [`Detector::step`] would, and start the next search or stop.
    fn take_step(&self, text: &str, cache: &mut Cache, walk: &mut Walk) -> Result<(), GaveUp> {
        let len = text.len();
        if walk.steps.is_empty() && walk.first_found.is_none() {
            walk.first_found = Some(walk.found);
        }
        let Some(found) = walk
            .found
            .take()
            .and_then(|half| self.match_ending(text, walk.cursor, len, half))
        else {
            walk.phase = Phase::Finished;
            return Ok(());
        };
        let step = self.judge(text, found);
        // A walk that searches too much (long rejected candidates, searched
        // again from one character on) hands the text to the one walk, which
        // stops at its budget.
        walk.work = walk
            .work
            .saturating_add(step.searched_to.saturating_sub(walk.cursor));
        if walk.work > super::work_budget(len) {
            return Err(GaveUp);
        }
        walk.steps.push((walk.cursor, step));
        walk.cursor = step.resume;
        if walk.cursor > len {
            walk.phase = Phase::Finished;
        } else if walk.cursor >= walk.stop {
            walk.phase = Phase::Paused;
        } else {
            self.restart(text, cache, walk)?;
        }
        Ok(())
    }

    /// Starts `walk`'s search again from its cursor.
    fn restart(&self, text: &str, cache: &mut Cache, walk: &mut Walk) -> Result<(), GaveUp> {
        let input = Input::new(text).span(walk.cursor..text.len());
        walk.sid = self
            .forward
            .start_state_forward(cache, &input)
            .map_err(|_| GaveUp)?;
        walk.at = walk.cursor;
        walk.found = None;
        Ok(())
    }

    /// Whether walk `k`'s search has reached the next walk's start with
    /// nothing found and nothing under way: in the state the next walk's
    /// first search started in, from the same place. The two searches then go
    /// the same way and find the same match end (though the match may start
    /// before the next walk's start, which the reverse search from this
    /// walk's cursor then finds).
    fn at_next_start(&self, walks: &[Walk; WALKS], k: usize) -> bool {
        let walk = &walks[k];
        walk.phase == Phase::Searching
            && walk.at == walk.stop
            && walk.cursor < walk.stop
            && walk.found.is_none()
            && walks
                .get(k + 1)
                .and_then(|next| next.first_start)
                .is_some_and(|start| start == walk.sid)
    }

    /// The findings of the walk from the start, from the walks' steps.
    fn merge(&self, text: &str, walks: &[Walk; WALKS]) -> Vec<Finding> {
        let mut findings = Vec::new();
        let mut cursor = 0;
        let mut k = 0;
        while let Some(walk) = walks.get(k) {
            // Steps are in order and their spans `[from, start]` do not
            // overlap: the one that can hold the cursor is the last that
            // begins at or before it (a binary search: a linear one, once
            // per single step below, made texts of many short rejected
            // candidates quadratic, 43 s for 8 MiB of `1 1 1 …`).
            let joined = walk
                .steps
                .partition_point(|(from, _)| *from <= cursor)
                .checked_sub(1)
                .filter(|&i| cursor <= walk.steps[i].1.start);
            if let Some(i) = joined {
                findings.extend(walk.steps[i..].iter().filter_map(|(_, step)| step.finding));
                cursor = walk.cursor;
            }
            if cursor >= walk.cursor {
                match walk.phase {
                    // Nothing after the walk's cursor, so nothing after ours.
                    Phase::Finished => break,
                    Phase::Paused => {
                        k += 1;
                        continue;
                    }
                    // Not after `walk_all`; single steps are right anyway.
                    Phase::Searching | Phase::Waiting => {}
                }
            }
            // The cursor is inside one of the walk's candidates: one step alone.
            let Some(step) = self.step(text, cursor, text.len()) else {
                break;
            };
            findings.extend(step.finding);
            cursor = step.resume;
        }
        findings
    }
}
