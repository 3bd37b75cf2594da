//! Sensitive data: PII and secret detection with byte-exact spans.
//!
//! One multi-pattern regex (compiled once, leftmost-first, lazy DFA) walks the
//! text a single time. Each candidate is then validated by the rule that matched
//! it (Luhn, mod-97, SSN ranges, IPv6 parsing, entropy, phone shape and context),
//! which looks only at the candidate and a few bytes of context before it, never at
//! the rest of the text. A rejected candidate resumes the walk one character after
//! its start, so a shorter or different match there is still found; every pattern
//! starts at a word boundary or a literal, so the resumed walk does not re-enter
//! the same token, and the walk stays linear in the text.
//!
//! This module must never log, store or format a detected value; callers get
//! spans and kinds, and the redaction module decides what replaces them.

mod interleave;
mod redact;
mod rules;
pub(crate) mod stream;
mod validate;

#[cfg(test)]
mod tests;

use regex_automata::{
    Anchored, HalfMatch, Input, Match, MatchKind,
    hybrid::dfa::{Cache as DfaCache, DFA},
    meta,
    nfa::thompson::{self, WhichCaptures},
    util::syntax,
};

pub use redact::{Action, Edit, Policy, PolicyError, Pseudonyms, Redaction, Restorer, redact};
pub use rules::RULES;
pub use stream::StreamRedactor;

/// What a finding is. `type_name` is the stable name in the `halberd scan` output
/// and in policy configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Phone,
    CreditCard,
    UsSsn,
    Iban,
    IpAddress,
    /// A credential; the string names its family, e.g. `aws_access_key_id`.
    Secret(&'static str),
    PrivateKey,
    Jwt,
    /// The rest of a text the scan gave up on: text shaped so that finding
    /// its values exactly would take time quadratic in its length (see
    /// [`work_budget`]). It is not known to be clean, so the policy decides
    /// (redacted by default).
    Uninspected,
}

impl Kind {
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::CreditCard => "credit_card",
            Kind::UsSsn => "us_ssn",
            Kind::Iban => "iban",
            Kind::IpAddress => "ip_address",
            Kind::Secret(_) => "secret",
            Kind::PrivateKey => "private_key",
            Kind::Jwt => "jwt",
            Kind::Uninspected => "uninspected",
        }
    }

    /// The family of a secret, `None` for every other kind.
    pub fn secret_kind(self) -> Option<&'static str> {
        match self {
            Kind::Secret(kind) => Some(kind),
            _ => None,
        }
    }

    /// The structured PII types (as opposed to secrets).
    pub fn is_pii(self) -> bool {
        matches!(
            self,
            Kind::Email
                | Kind::Phone
                | Kind::CreditCard
                | Kind::UsSsn
                | Kind::Iban
                | Kind::IpAddress
        )
    }

    /// Every type name a policy may configure.
    pub const TYPE_NAMES: [&'static str; 10] = [
        "email",
        "phone",
        "credit_card",
        "us_ssn",
        "iban",
        "ip_address",
        "secret",
        "private_key",
        "jwt",
        "uninspected",
    ];
}

/// One detected value: `text[start..end]`, always on character boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// How far before a candidate the validators may look (phone context words).
/// The streaming scanner keeps this much already-released text.
pub const CONTEXT_BEFORE: usize = 48;

/// The most memory each lazy DFA's cache of states may take before it is
/// cleared and rebuilt. The states a scan needs depend on the text: a 6.5 MB
/// corpus of every data set (prose, code, configuration, five scripts) needed
/// 18 MB for the forward DFA, and with the regex crate's usual 2-8 MB the
/// cache was cleared over and over, which made real text ten times slower
/// than repeated text (37 MiB/s against 300). With 32 MB it ran at 350 MiB/s.
/// The cache grows only as far as the traffic needs; there is one per thread
/// that scans (the meta regex and the reverse DFA keep a pool).
const DFA_CACHE: usize = 32 << 20;

/// The compiled detector set. Build it once and share it; scanning takes `&self`.
pub struct Detector {
    regex: meta::Regex,
    /// The patterns reversed, with a start state per pattern: finds where the
    /// match the forward search ended lies begins (see [`Detector::find`]).
    reverse: DFA,
    reverse_caches: crate::DfaCaches,
    /// The same patterns as a lazy DFA, anchored, used by the streaming scanner to
    /// ask whether a match could still start at a position given more text.
    dfa: DFA,
    /// The same patterns as an unanchored lazy DFA with the meta regex's
    /// forward settings, which the interleaved scan of long texts steps
    /// itself (see `interleave.rs`), and its caches.
    forward: DFA,
    forward_caches: crate::DfaCaches,
    /// Caches of `dfa` that finished streams gave back, so that a new stream
    /// starts with the states earlier ones built (at most `STREAM_CACHES`).
    stream_caches: std::sync::Mutex<Vec<DfaCache>>,
}

/// How many streaming caches are kept for reuse.
const STREAM_CACHES: usize = 16;

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("patterns", &RULES.len())
            .finish()
    }
}

/// The outcome of validating one candidate.
pub(crate) enum Verdict {
    Accept(Finding),
    /// Not a finding; the walk resumes one character after the candidate's start.
    Reject,
    /// Not a finding, and no part of it is either: the walk resumes after it.
    /// Used for digit runs, so that a long number is not read as a phone number
    /// from its middle.
    RejectWhole,
}

impl Detector {
    pub fn new() -> Self {
        // The patterns are ours and fixed; a failure here is a bug caught by every
        // test, so the fallback is unreachable in a released binary.
        match Self::build(DFA_CACHE) {
            Ok(detector) => detector,
            Err(error) => panic!("sensitive-data patterns do not compile: {error}"),
        }
    }

    /// The process-wide detector, compiled on first use.
    pub fn shared() -> &'static Detector {
        static SHARED: std::sync::LazyLock<Detector> = std::sync::LazyLock::new(Detector::new);
        &SHARED
    }

    /// A detector whose interleaved scan's DFA cache holds at most
    /// `forward_cache` bytes: small ones make tests clear it often.
    #[cfg(test)]
    fn with_forward_cache(forward_cache: usize) -> Self {
        match Self::build(forward_cache) {
            Ok(detector) => detector,
            Err(error) => panic!("sensitive-data patterns do not compile: {error}"),
        }
    }

    fn build(forward_cache: usize) -> Result<Self, String> {
        let patterns: Vec<&str> = RULES.iter().map(|rule| rule.pattern).collect();
        // ASCII classes and ASCII word boundaries keep the lazy DFA on every input;
        // a Unicode `\b` would make it give up on the first non-ASCII byte.
        let syntax = syntax::Config::new().unicode(false).utf8(true);
        let regex = meta::Regex::builder()
            .syntax(syntax)
            .configure(
                meta::Config::new()
                    .match_kind(MatchKind::LeftmostFirst)
                    .hybrid_cache_capacity(DFA_CACHE)
                    .nfa_size_limit(Some(64 << 20)),
            )
            .build_many(&patterns)
            .map_err(|e| e.to_string())?;
        // The same forward lazy DFA twice, with caches of their own sizes:
        // streams stash up to `STREAM_CACHES` of theirs, so those stay small.
        let forward_dfa = |cache_capacity: usize| {
            DFA::builder()
                .syntax(syntax)
                .thompson(thompson::Config::new().nfa_size_limit(Some(64 << 20)))
                .configure(
                    DFA::config()
                        .match_kind(MatchKind::LeftmostFirst)
                        .cache_capacity(cache_capacity)
                        .skip_cache_capacity_check(true),
                )
                .build_many(&patterns)
                .map_err(|e| e.to_string())
        };
        let dfa = forward_dfa(8 << 20)?;
        let forward = forward_dfa(forward_cache)?;
        // Built as the meta regex builds its own reverse DFA (all matches, no
        // captures), plus a start state per pattern.
        let reverse = DFA::builder()
            .syntax(syntax)
            .thompson(
                thompson::Config::new()
                    .reverse(true)
                    .which_captures(WhichCaptures::None)
                    .nfa_size_limit(Some(64 << 20)),
            )
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .starts_for_each_pattern(true)
                    .cache_capacity(DFA_CACHE)
                    .skip_cache_capacity_check(true),
            )
            .build_many(&patterns)
            .map_err(|e| e.to_string())?;
        let reverse_caches = crate::dfa_caches(&reverse);
        let forward_caches = crate::dfa_caches(&forward);
        Ok(Detector {
            regex,
            reverse,
            reverse_caches,
            dfa,
            forward,
            forward_caches,
            stream_caches: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The leftmost-first match in `text[cursor..end]`.
    ///
    /// The same match as `regex.search`, found in two halves: the forward lazy
    /// DFA finds where it ends and which pattern it is, then the reverse DFA
    /// runs back from there anchored on that one pattern. The meta regex would
    /// run the reverse of all patterns together, which keeps going while any
    /// pattern could still match backwards (an e-mail's local part, a
    /// credential name's prefix); one pattern's reverse dies at its own start.
    /// On dense text this makes the whole scan about 12 % faster. The start is
    /// the same: a match of the pattern starting further left would also have
    /// been the forward search's leftmost match, and one starting further right
    /// is passed over because the reverse search keeps the leftmost start.
    fn find(&self, text: &str, cursor: usize, end: usize) -> Option<Match> {
        let input = Input::new(text).span(cursor..end);
        let half = self.regex.search_half(&input)?;
        self.match_ending(text, cursor, end, half)
    }

    /// The match of `text[cursor..end]` whose leftmost-first forward search
    /// ended at `half`: the reverse DFA, anchored on that pattern, finds where
    /// it starts.
    pub(crate) fn match_ending(
        &self,
        text: &str,
        cursor: usize,
        end: usize,
        half: HalfMatch,
    ) -> Option<Match> {
        let reverse = Input::new(text)
            .span(cursor..half.offset())
            .anchored(Anchored::Pattern(half.pattern()));
        let mut cache = self.reverse_caches.get();
        match self.reverse.try_search_rev(&mut cache, &reverse) {
            Ok(Some(start)) => Some(Match::new(half.pattern(), start.offset()..half.offset())),
            // Unreachable with these patterns (no quit bytes, no cache limit);
            // the meta regex, which can fall back to the PikeVM, decides then.
            Ok(None) | Err(_) => self.regex.search(&Input::new(text).span(cursor..end)),
        }
    }

    /// All findings in `text`, in order, not overlapping.
    ///
    /// The result is that of a walk from the start: find the next candidate,
    /// judge it, resume where the verdict says. Long texts are walked from
    /// several places at once (see `interleave.rs`), with the same result.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        if text.len() >= interleave::MIN_LEN {
            return self.scan_interleaved(text);
        }
        self.scan_walk(text)
    }

    /// The walk from the start, one step after the other.
    ///
    /// Each step searches from the cursor to its candidate's end; a rejected
    /// candidate resumes one character after its start, so a text made of
    /// long candidates that are all rejected (`key=key=key=…`, each running
    /// to the end of the text) is searched again and again. The bytes searched
    /// are counted, and past [`work_budget`] the walk stops: the rest of the
    /// text is one [`Kind::Uninspected`] finding, so the scan stays linear
    /// and what was not inspected is never passed as clean.
    pub(crate) fn scan_walk(&self, text: &str) -> Vec<Finding> {
        self.scan_walk_within(text, work_budget(text.len()))
    }

    /// The walk from the start with the budget given (`usize::MAX`: none;
    /// for the fuzz properties, which compare with the unbounded result).
    #[doc(hidden)]
    pub fn scan_walk_within(&self, text: &str, budget: usize) -> Vec<Finding> {
        let mut findings = Vec::new();
        let mut cursor = 0;
        let mut work = 0usize;
        while let Some(step) = self.step(text, cursor, text.len()) {
            work = work.saturating_add(step.searched_to.saturating_sub(cursor));
            if work > budget {
                findings.push(Finding {
                    kind: Kind::Uninspected,
                    start: cursor,
                    end: text.len(),
                });
                return findings;
            }
            if let Some(finding) = step.finding {
                findings.push(finding);
            }
            cursor = step.resume;
        }
        findings
    }

    #[cfg(test)]
    fn meta_search(&self, text: &str, cursor: usize, end: usize) -> Option<Match> {
        self.regex.search(&Input::new(text).span(cursor..end))
    }

    /// The next candidate in `text[cursor..end]` and what to do with it.
    pub(crate) fn step(&self, text: &str, cursor: usize, end: usize) -> Option<Step> {
        if cursor > end {
            return None;
        }
        let found = self.find(text, cursor, end)?;
        Some(self.judge(text, found))
    }

    /// What to do with the candidate `found`.
    pub(crate) fn judge(&self, text: &str, found: Match) -> Step {
        let index = found.pattern().as_usize();
        let verdict = RULES[index]
            .check
            .validate(self, text, found.start(), found.end(), index);
        match verdict {
            Verdict::Accept(finding) => Step {
                start: found.start(),
                searched_to: found.end(),
                finding: Some(finding),
                resume: found.end().max(next_boundary(text, found.start())),
            },
            Verdict::Reject => Step {
                start: found.start(),
                searched_to: found.end(),
                finding: None,
                resume: next_boundary(text, found.start()),
            },
            Verdict::RejectWhole => Step {
                start: found.start(),
                searched_to: found.end(),
                finding: None,
                resume: found.end().max(next_boundary(text, found.start())),
            },
        }
    }

    /// The rule whose pattern matches at `start` (anchored, within `end`), and
    /// where its match ends: used to name the family of a value found by a
    /// generic rule.
    pub(crate) fn classify_at(
        &self,
        text: &str,
        start: usize,
        end: usize,
    ) -> Option<(usize, usize)> {
        let input = Input::new(&text[..end])
            .span(start..end)
            .anchored(Anchored::Yes);
        let found = self.regex.search(&input)?;
        Some((found.pattern().as_usize(), found.end()))
    }

    /// A cache for the streaming DFA: one a finished stream gave back, or a
    /// new one.
    pub(crate) fn dfa_cache(&self) -> DfaCache {
        self.stream_caches
            .lock()
            .ok()
            .and_then(|mut caches| caches.pop())
            .unwrap_or_else(|| self.dfa.create_cache())
    }

    /// Gives a streaming cache back for the next stream.
    pub(crate) fn give_back(&self, cache: DfaCache) {
        if let Ok(mut caches) = self.stream_caches.lock()
            && caches.len() < STREAM_CACHES
        {
            caches.push(cache);
        }
    }
}

impl Default for Detector {
    fn default() -> Self {
        Detector::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Where the candidate started.
    pub start: usize,
    /// Where it ended: the search read at least this far.
    pub searched_to: usize,
    pub finding: Option<Finding>,
    /// Where the walk continues.
    pub resume: usize,
}

/// How many bytes a scan of a text of `len` bytes may search in all before
/// it gives up on the rest. Ordinary text is searched about once (prose,
/// code, logs and every data set stay far below: the sensitive-data eval's
/// findings are unchanged); only texts of long, rejected, overlapping
/// candidates come near it, and those would otherwise cost time quadratic
/// in their length (31 s for 200 KB of `key=`).
///
/// The fixed part is small (16 KiB) because a request may hold many texts,
/// each scanned with its own budget: with 256 KiB, an 8 MiB body of 1 KiB
/// texts of `key=` could cost 7 s of CPU; with 16 KiB it costs a quarter of
/// that, and the data sets' findings are the same.
pub fn work_budget(len: usize) -> usize {
    len.saturating_mul(16).saturating_add(16 << 10)
}

/// The budget of a streamed scan once `seen` bytes have come: a stream reads
/// its held-back text again as pieces arrive, so it gets a larger fixed part
/// (one per stream, not per text of a request).
pub fn stream_work_budget(seen: usize) -> usize {
    work_budget(seen).saturating_add(256 << 10)
}

/// The first character boundary after `at`, or `at + 1` past the end.
pub(crate) fn next_boundary(text: &str, at: usize) -> usize {
    let mut next = at + 1;
    while next < text.len() && !text.is_char_boundary(next) {
        next += 1;
    }
    next
}
