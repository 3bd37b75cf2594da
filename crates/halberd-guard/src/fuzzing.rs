//! Properties checked by the cargo-fuzz targets in `fuzz/` and, on every seed of
//! their corpora, by `cargo test` (`tests/fuzz_corpus.rs`). Each function panics
//! when a property fails.

use std::sync::Arc;

use crate::sensitive::{Detector, Policy, Pseudonyms, StreamRedactor, redact};

/// The input's first byte picks chunk sizes; the rest is the text (invalid
/// UTF-8 replaced). Findings must be sorted, disjoint and on character
/// boundaries, and streaming the text in those chunks must give exactly the
/// batch redaction.
pub fn stream_redactor(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let detector = Detector::shared();
    let findings = detector.scan(&text);
    let mut last_end = 0;
    for finding in &findings {
        assert!(
            finding.start >= last_end && finding.start < finding.end,
            "{findings:?}"
        );
        assert!(text.is_char_boundary(finding.start) && text.is_char_boundary(finding.end));
        last_end = finding.end;
    }
    let policy = Arc::new(Policy::redact_all());
    let batch = redact(&text, &findings, &policy, &mut Pseudonyms::default()).text;

    let mut redactor = StreamRedactor::new(detector, policy);
    let mut streamed = String::new();
    let mut at = 0;
    let mut step = 0usize;
    while at < text.len() {
        // Chunk sizes 1..=16 cycling through a pattern picked by the seed.
        let size = 1 + ((usize::from(seed) >> (step % 4)) + step * 7) % 16;
        step += 1;
        let mut end = (at + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        streamed.push_str(&redactor.push(&text[at..end]).unwrap_or_default());
        at = end;
    }
    streamed.push_str(&redactor.finish().unwrap_or_default());
    assert_eq!(streamed, batch);
}
