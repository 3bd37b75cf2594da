//! Every seed of the fuzz corpora (`fuzz/corpus/stream_redactor/`, `fuzz/corpus/injection/`)
//! runs through the same property function as the fuzz target.

#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn stream_redactor_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/stream_redactor");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            halberd_guard::fuzzing::stream_redactor(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n >= 5, "too few seeds in {}", dir.display());
}

#[test]
fn injection_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/injection");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            halberd_guard::fuzzing::injection(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n >= 10, "too few seeds in {}", dir.display());
}
