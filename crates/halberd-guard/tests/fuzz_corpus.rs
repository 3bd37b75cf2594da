//! Every seed of the fuzz corpora (`fuzz/corpus/stream_redactor/`,
//! `fuzz/corpus/injection/`) runs through the same property function as the
//! fuzz target.

#![allow(clippy::unwrap_used)]

use std::path::Path;

/// Runs `property` on every file of `fuzz/corpus/<name>`; there must be at
/// least `min` of them.
fn run_corpus(name: &str, min: usize, property: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            property(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n >= min, "too few seeds in {}", dir.display());
}

#[test]
fn stream_redactor_corpus() {
    run_corpus(
        "stream_redactor",
        5,
        halberd_guard::fuzzing::stream_redactor,
    );
}

#[test]
fn injection_corpus() {
    run_corpus("injection", 10, halberd_guard::fuzzing::injection);
}
