//! Properties checked by the cargo-fuzz targets in `fuzz/` and, on every seed of
//! their corpora, by `cargo test` (`tests/fuzz_corpus.rs`). Each function panics
//! when a property fails.

use std::sync::Arc;

use crate::sensitive::{Action, Detector, Policy, Pseudonyms, StreamRedactor, redact};

/// The input's first byte picks chunk sizes; the rest is the text (invalid
/// UTF-8 replaced). Findings must be sorted, disjoint and on character
/// boundaries, and streaming the text in those chunks must give exactly the
/// batch redaction. Under a policy that only flags, the stream must come out
/// unchanged and its findings must be the batch findings.
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
    assert_eq!(stream(&mut redactor, &text, seed), batch);

    let mut flagging = StreamRedactor::new(detector, Arc::new(Policy::uniform(Action::Flag)));
    assert_eq!(stream(&mut flagging, &text, seed), text);
    let flagged: Vec<_> = flagging.edits().iter().map(|e| e.finding).collect();
    assert_eq!(flagged, findings);
}

/// Streams `text` in chunk sizes 1..=16 cycling through a pattern picked by
/// the seed.
fn stream(redactor: &mut StreamRedactor<'_>, text: &str, seed: u8) -> String {
    let mut streamed = String::new();
    let mut at = 0;
    let mut step = 0usize;
    while at < text.len() {
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
    streamed
}

/// The prompt-injection layers on arbitrary text (invalid UTF-8 replaced): the
/// normalised copy maps every byte to an earlier-or-equal original offset in
/// order; decoded payloads are bounded in number and size and sit on character
/// boundaries; the score is a number in [0, 1]; every evidence span is a valid
/// span of the input, at every trust level.
pub fn injection(data: &[u8]) {
    use crate::injection::{Detector, Trust, decode, normalize};
    let text = String::from_utf8_lossy(data);
    let normalized = normalize(&text);
    let mut last = 0;
    for end in 0..=normalized.text.len() {
        let (s, e) = normalized.original_span(0, end);
        assert!(s <= e && e <= text.len(), "span {s}..{e} of {}", text.len());
        assert!(e >= last, "spans shrink");
        last = e;
    }
    let payloads = decode::payloads(&text);
    assert!(payloads.len() <= decode::MAX_PAYLOADS);
    let decoded: usize = payloads.iter().map(|p| p.text.len()).sum();
    assert!(
        decoded <= 2 * text.len() + 64,
        "decoded {decoded} of {}",
        text.len()
    );
    for p in &payloads {
        assert!(p.start <= p.end && p.end <= text.len());
        assert!(text.is_char_boundary(p.start) && text.is_char_boundary(p.end));
    }
    let detector = Detector::shared();
    for trust in [Trust::Operator, Trust::User, Trust::Untrusted] {
        let a = detector.assess(&text, trust);
        assert!((0.0..=1.0).contains(&a.score), "score {}", a.score);
        for e in &a.evidence {
            assert!(e.start <= e.end && e.end <= text.len(), "{e:?}");
            assert!(
                text.is_char_boundary(e.start) && text.is_char_boundary(e.end),
                "{e:?}"
            );
        }
    }
}
