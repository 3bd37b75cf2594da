//! Detectors: pure functions from text to findings.
//!
//! This crate does no I/O, reads no clock and starts no task; every function in it
//! runs in time linear in its input. The gateway, the `halberd scan` CLI and the
//! benchmarks use it alike.

#[doc(hidden)]
pub mod fuzzing;
pub mod halberd_key;
pub mod injection;
pub mod leak;
pub mod links;
pub mod sanitize;
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

/// A byte-class table: ASCII letters and digits, and the bytes in `extra`.
/// One load per byte where a chain of range tests would branch per byte.
pub(crate) const fn ascii_alnum_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_tables_hold_letters_digits_and_the_extra_bytes_only() {
        let table = super::ascii_alnum_and(b"_%");
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b == b'_' || b == b'%';
            assert_eq!(table[usize::from(b)], expected, "byte {b}");
        }
    }
}
