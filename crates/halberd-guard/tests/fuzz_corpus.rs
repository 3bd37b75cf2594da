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

/// The adversarial texts of the sensitive-data scan are in the stream
/// redactor's corpus (at 1 KiB, so the fuzzer starts from them), each as the
/// generator makes it.
#[test]
fn adversarial_texts_are_seeds_of_the_stream_redactor_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/stream_redactor");
    for (name, text) in halberd_guard::fuzzing::adversarial(1024) {
        let path = dir.join(format!("adv-{name}"));
        let seed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (write it: one byte 0x07, then the text)",
                path.display()
            )
        });
        assert_eq!(seed[0], 7, "{name}");
        assert_eq!(&seed[1..], text.as_bytes(), "{name}");
    }
}

/// At sizes well past a seed's, every adversarial text is scanned in linear
/// work, whole and streamed; what is found is sorted and disjoint, and
/// streaming gives the batch result (or withholds, past the budget).
#[test]
fn adversarial_texts_are_scanned_in_linear_work() {
    use halberd_guard::sensitive::{Detector, Kind, Policy, Pseudonyms, StreamRedactor, redact};
    let detector = Detector::shared();
    let policy = std::sync::Arc::new(Policy::redact_all());
    for (name, text) in halberd_guard::fuzzing::adversarial(200 * 1024) {
        let findings = detector.scan(&text);
        for pair in findings.windows(2) {
            assert!(pair[0].end <= pair[1].start, "{name}: {findings:?}");
        }
        let mut redactor = StreamRedactor::new(detector, policy.clone());
        let mut out = String::new();
        for piece in text.as_bytes().chunks(7) {
            out.push_str(&redactor.push(std::str::from_utf8(piece).unwrap()).unwrap());
        }
        out.push_str(&redactor.finish().unwrap());
        assert!(
            redactor.work() <= 20 * text.len() + (512 << 10),
            "{name}: read {} bytes for {}",
            redactor.work(),
            text.len()
        );
        // A candidate held past the stream's bound is withheld (never let
        // out unscanned), where the batch scan could still reject it.
        if findings.iter().all(|f| f.kind != Kind::Uninspected) && !out.contains("[WITHHELD]") {
            let batch = redact(&text, &findings, &policy, &mut Pseudonyms::default());
            assert_eq!(out, batch.text, "{name}");
        }
    }
}
