//! Redaction of a text that arrives in pieces (a streamed response).
//!
//! The scanner releases every byte that can no longer be part of a finding and
//! holds back only the bytes from which a match could still start: for each
//! position after the last released byte it asks the anchored lazy DFA whether a
//! match starting there could still be alive at the end of what has arrived. Those
//! positions are dead for good once the DFA dies, so no position is asked twice
//! after it died. A finding is reported only once the DFA has died after it,
//! which makes the streamed result equal to the batch result for every way of
//! splitting the text (property-tested in `tests.rs`).
//!
//! The state is bounded: the held-back bytes (at most `MAX_HOLD`; beyond that the
//! held text is withheld from the client, never released unchecked) plus
//! `CONTEXT_BEFORE` bytes of released text for the validators' look-behind.
//!
//! Under a policy that only flags or ignores findings nothing needs holding
//! back: no finding would change the text. Every piece is then released as it
//! arrives, and the scanner keeps the unresolved text to itself, so the findings
//! (and their counts) are still exactly those of the whole text.

use std::sync::Arc;

use super::{
    CONTEXT_BEFORE, Detector, Edit, Finding, Kind, Policy, Pseudonyms,
    redact::{Action, replace},
};

/// The most text held back waiting for a candidate to complete. Only a PEM block
/// or a very long token gets near it.
pub const MAX_HOLD: usize = 64 * 1024;

/// What replaces held text that exceeded `MAX_HOLD` without resolving.
pub const WITHHELD: &str = "[WITHHELD]";

/// Where the anchored walk from `at` stood after `end` bytes of `buf`.
#[derive(Debug, Clone, Copy)]
struct Live {
    at: usize,
    end: usize,
    state: regex_automata::hybrid::LazyStateID,
    /// The cache's clear count when `state` was valid.
    clears: usize,
}

pub struct StreamRedactor<'d> {
    detector: &'d Detector,
    policy: Arc<Policy>,
    /// Whether the policy can change the text; if not, nothing is held back.
    holds: bool,
    /// Taken from the detector on creation, given back on drop.
    cache: Option<regex_automata::hybrid::dfa::Cache>,
    /// Released context followed by held text.
    buf: String,
    /// Absolute offset of `buf[0]` in the whole stream.
    base: usize,
    /// End of the released text, in `buf`.
    released: usize,
    /// Where the next search starts, in `buf`.
    cursor: usize,
    /// Positions before this one cannot start a match any more, in `buf`.
    dead_until: usize,
    /// Accepted findings not yet released, in `buf` offsets.
    queued: Vec<Finding>,
    /// The anchored DFA's walk from the first live position, as far as the
    /// buffer went last time, so that the next piece only steps the new
    /// bytes: asking again from the start on every piece made a long token
    /// in small deltas quadratic (60 KB in 4-byte deltas: 3 s).
    live: Option<Live>,
    /// Bytes pushed so far, and bytes the searches and walks read: the same
    /// work budget as a whole-text scan and a fixed allowance more
    /// (`stream_work_budget`), past which the held
    /// text is withheld rather than searched on.
    seen: usize,
    work: usize,
    /// Every finding acted on so far, in absolute offsets.
    edits: Vec<Edit>,
    pseudonyms: Pseudonyms,
}

impl<'d> StreamRedactor<'d> {
    pub fn new(detector: &'d Detector, policy: Arc<Policy>) -> Self {
        StreamRedactor {
            detector,
            holds: policy.changes_text(),
            policy,
            cache: Some(detector.dfa_cache()),
            buf: String::new(),
            base: 0,
            released: 0,
            cursor: 0,
            dead_until: 0,
            queued: Vec::new(),
            live: None,
            seen: 0,
            work: 0,
            edits: Vec::new(),
            pseudonyms: Pseudonyms::default(),
        }
    }

    /// Add a piece; returns the text that can be released now, redacted. Fails
    /// with the kind of the first finding whose action is `block`.
    pub fn push(&mut self, chunk: &str) -> Result<String, Kind> {
        self.buf.push_str(chunk);
        self.seen += chunk.len();
        self.advance(false)
    }

    /// The end of the text: releases everything still held.
    pub fn finish(&mut self) -> Result<String, Kind> {
        self.advance(true)
    }

    /// Bytes the scanner has read so far (searches and DFA walks): for tests
    /// that the work stays linear in what was pushed.
    pub fn work(&self) -> usize {
        self.work
    }

    /// Bytes held back right now.
    pub fn held(&self) -> usize {
        self.buf.len() - self.released
    }

    /// Every finding acted on so far, with offsets into the whole stream.
    pub fn edits(&self) -> &[Edit] {
        &self.edits
    }

    fn advance(&mut self, last: bool) -> Result<String, Kind> {
        let len = self.buf.len();
        let mut hold;
        let mut overworked = false;
        loop {
            hold = if last { len } else { self.first_live() };
            if self.work > super::stream_work_budget(self.seen) {
                overworked = true;
                hold = self.cursor.min(hold);
                break;
            }
            // Every position before `hold` is settled; with the cursor at
            // `hold` there is nothing to search before it (a search from
            // there would only find the live candidate again, reading the
            // whole held text to do so).
            if !last && self.cursor >= hold {
                break;
            }
            let Some(step) = self.detector.step(&self.buf, self.cursor, len) else {
                break;
            };
            if step.start >= hold {
                break;
            }
            self.work = self
                .work
                .saturating_add(step.searched_to.saturating_sub(self.cursor));
            if self.work > super::stream_work_budget(self.seen) {
                // Text of long overlapping candidates, all rejected: what is
                // not settled yet is withheld (below), never searched on.
                overworked = true;
                hold = self.cursor;
                break;
            }
            if let Some(finding) = step.finding {
                self.queued.push(finding);
            }
            self.cursor = step.resume;
        }
        let mut out = String::new();
        // A candidate that has not resolved within MAX_HOLD bytes, or a text
        // past the work budget.
        let stuck = overworked || (!last && hold < len && len - hold > MAX_HOLD);
        if !self.holds {
            // Nothing to change: release everything, keep scanning from the
            // cursor. A stuck candidate is given up, which bounds the state as
            // in the other case.
            self.release(len, &mut out)?;
            if stuck {
                self.cursor = len;
                self.dead_until = len;
            } else {
                self.cursor = self.cursor.max(hold);
            }
        } else if stuck {
            // A candidate that never resolves: fail closed on the held text.
            self.release(hold, &mut out)?;
            out.push_str(WITHHELD);
            let finding = Finding {
                kind: Kind::Secret("withheld"),
                start: self.base + hold,
                end: self.base + len,
            };
            self.edits.push(Edit {
                finding,
                action: Action::Redact,
            });
            self.released = len;
            self.cursor = len;
            self.dead_until = len;
        } else {
            self.release(hold, &mut out)?;
            self.cursor = self.cursor.max(hold);
        }
        self.trim();
        Ok(out)
    }

    /// The first position at or after the cursor from which a match could still
    /// need more text, or the end of the buffer.
    fn first_live(&mut self) -> usize {
        let mut at = self.cursor.max(self.dead_until);
        while at < self.buf.len() {
            if self.alive_from(at) {
                return at;
            }
            // Overlapping candidates that each live long (`key=key=…`) make
            // this walk from every boundary quadratic: past the budget the
            // caller withholds what is not settled.
            if self.work > super::stream_work_budget(self.seen) {
                return at;
            }
            at = super::next_boundary(&self.buf, at);
            self.dead_until = at;
        }
        self.buf.len()
    }

    /// Whether a match starting at `at` is still alive at the end of the
    /// buffer: the anchored DFA from `at`, resumed where it stood last time
    /// when that was the same start (and the cache was not cleared since).
    fn alive_from(&mut self, at: usize) -> bool {
        let len = self.buf.len();
        let cache = self.cache.get_or_insert_with(|| self.detector.dfa_cache());
        let dfa = &self.detector.dfa;
        let resumed = self
            .live
            .filter(|l| l.at == at && l.end <= len && l.clears == cache.clear_count());
        let (mut state, from) = match resumed {
            Some(l) => (l.state, l.end),
            None => {
                let input = regex_automata::Input::new(&self.buf)
                    .span(at..len)
                    .anchored(regex_automata::Anchored::Yes);
                match dfa.start_state_forward(cache, &input) {
                    Ok(state) => (state, at),
                    // Look-behind on a quit byte: holding back is the safe side.
                    Err(_) => {
                        self.live = None;
                        return true;
                    }
                }
            }
        };
        for (i, &byte) in self.buf.as_bytes()[from..].iter().enumerate() {
            match dfa.next_state(cache, state, byte) {
                Ok(next) => state = next,
                Err(_) => {
                    self.live = None;
                    return true;
                }
            }
            if state.is_dead() {
                self.work = self.work.saturating_add(i + 1);
                self.live = None;
                return false;
            }
            if state.is_quit() {
                self.live = None;
                return true;
            }
        }
        self.work = self.work.saturating_add(len - from);
        self.live = Some(Live {
            at,
            end: len,
            state,
            clears: cache.clear_count(),
        });
        !state.is_dead()
    }

    /// Copy `buf[released..to]` to `out`, applying the queued findings in it.
    fn release(&mut self, to: usize, out: &mut String) -> Result<(), Kind> {
        let mut copied = self.released;
        let mut remaining = Vec::new();
        for finding in std::mem::take(&mut self.queued) {
            if finding.start >= to {
                remaining.push(finding);
                continue;
            }
            let action = self.policy.action(finding.kind);
            if action == Action::Off {
                continue;
            }
            let absolute = Finding {
                kind: finding.kind,
                start: self.base + finding.start,
                end: self.base + finding.end,
            };
            self.edits.push(Edit {
                finding: absolute,
                action,
            });
            if action == Action::Block {
                return Err(finding.kind);
            }
            if action.edits() {
                out.push_str(&self.buf[copied..finding.start]);
                // A pseudonym in a response would mean nothing to the client: it
                // is redacted instead.
                let action = if action == Action::Pseudonymize {
                    Action::Redact
                } else {
                    action
                };
                let value = &self.buf[finding.start..finding.end];
                replace(
                    out,
                    finding.kind,
                    value,
                    action,
                    &self.policy,
                    &mut self.pseudonyms,
                );
                copied = finding.end;
            }
        }
        if copied < to {
            out.push_str(&self.buf[copied..to]);
            copied = to;
        }
        self.queued = remaining;
        self.released = self.released.max(copied);
        Ok(())
    }

    /// Drop released and scanned text beyond the look-behind context.
    fn trim(&mut self) {
        let Some(mut cut) = self
            .released
            .min(self.cursor)
            .checked_sub(CONTEXT_BEFORE + 4)
        else {
            return;
        };
        while cut > 0 && !self.buf.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut < 4096 && cut * 2 < self.buf.len() {
            // Amortise: move bytes only when a good share can be dropped.
            return;
        }
        self.buf.drain(..cut);
        self.base += cut;
        self.released -= cut;
        self.cursor -= cut;
        self.dead_until = self.dead_until.saturating_sub(cut);
        // The walk's start is never before the cursor, which is past `cut`.
        self.live = self.live.and_then(|l| {
            Some(Live {
                at: l.at.checked_sub(cut)?,
                end: l.end.checked_sub(cut)?,
                ..l
            })
        });
        for finding in &mut self.queued {
            finding.start -= cut;
            finding.end -= cut;
        }
    }
}

impl Drop for StreamRedactor<'_> {
    fn drop(&mut self) {
        if let Some(cache) = self.cache.take() {
            self.detector.give_back(cache);
        }
    }
}
