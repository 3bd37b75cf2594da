//! Detectors: pure functions from text to findings.
//!
//! This crate does no I/O, reads no clock and starts no task; every function in it
//! runs in time linear in its input. The gateway, the `halberd scan` CLI and the
//! benchmarks use it alike.

#[doc(hidden)]
pub mod fuzzing;
pub mod halberd_key;
pub mod injection;
pub mod sensitive;
pub mod tokens;

/// Lazy-DFA caches for a DFA, one per thread that searches, as the regex
/// crate keeps its own (the sensitive-data reverse search, the injection
/// rules' walks).
pub(crate) type DfaCaches = regex_automata::util::pool::Pool<
    regex_automata::hybrid::dfa::Cache,
    Box<
        dyn Fn() -> regex_automata::hybrid::dfa::Cache
            + Send
            + Sync
            + std::panic::UnwindSafe
            + std::panic::RefUnwindSafe,
    >,
>;

/// An empty pool of caches for `dfa`.
pub(crate) fn dfa_caches(dfa: &regex_automata::hybrid::dfa::DFA) -> DfaCaches {
    let dfa = dfa.clone();
    DfaCaches::new(Box::new(move || dfa.create_cache()))
}
