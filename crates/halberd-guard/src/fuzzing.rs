//! Properties checked by the cargo-fuzz targets in `fuzz/` and, on every seed of
//! their corpora, by `cargo test` (`tests/fuzz_corpus.rs`). Each function panics
//! when a property fails.

use std::sync::Arc;

use crate::sensitive::stream::WITHHELD;
use crate::sensitive::{Action, Detector, Kind, Policy, Pseudonyms, StreamRedactor, redact};

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

    let mut redactor = StreamRedactor::new(detector, policy.clone());
    let streamed = stream(&mut redactor, &text, seed);
    let inspected_whole = findings.iter().all(|f| f.kind != Kind::Uninspected);
    if !streamed.contains(WITHHELD) {
        // Everything let out was inspected: exactly the batch result, or,
        // where the whole-text scan stopped at its budget and the stream
        // (with its larger allowance) did not, the unbounded scan's.
        if inspected_whole {
            assert_eq!(streamed, batch);
        } else {
            let full = detector.scan_walk_within(&text, usize::MAX);
            let expected = redact(&text, &full, &policy, &mut Pseudonyms::default()).text;
            assert_eq!(streamed, expected);
        }
    }
    // (Withheld: a candidate held past the stream's bound, or its budget
    // spent; stricter than the batch, never looser.)
    if !inspected_whole {
        return;
    }
    // Linear whatever the text: the streamed scan reads each byte a bounded
    // number of times (the same bound as the whole-text budget).
    assert!(
        redactor.work() <= 20 * text.len() + (512 << 10),
        "read {} bytes for {} streamed",
        redactor.work(),
        text.len()
    );

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

/// Texts built to wear the sensitive-data scan down: every pattern's prefix or
/// separator repeated to `size` bytes, so that a candidate could start at every
/// repetition and run to the end (the shape that made the scan quadratic).
/// Named for the benchmark table; the fuzz corpus holds each at 1 KiB.
pub fn adversarial(size: usize) -> Vec<(&'static str, String)> {
    const UNITS: &[(&str, &str)] = &[
        ("key-eq", "key="),
        ("password-eq", "password="),
        ("token-colon", "token: "),
        ("secret-quote", "secret=\""),
        ("glpat", "glpat-"),
        ("xoxb", "xoxb-"),
        ("sk-ant", "sk-ant-api01-"),
        ("sk-proj", "sk-proj-"),
        ("dckr", "dckr_pat_"),
        ("github", "ghp_"),
        ("jwt", "eyJa.eyJb."),
        ("pem", "-----BEGIN "),
        ("url-creds", "https://a:"),
        ("bearer", "authorization: bearer "),
        ("xml-secret", "<password>"),
        ("define", "define('password', '"),
        ("email-at", "a@"),
        ("email-dots", "a.b@c."),
        ("digits-space", "1 "),
        ("digits-dash", "1-"),
        ("phone-plus", "+1 ("),
        ("ipv4", "1.1."),
        ("ipv6", "::"),
        ("iban", "GB82 "),
        ("aws", "AKIA"),
        ("separators", "=-._@:/"),
    ];
    UNITS
        .iter()
        .map(|(name, unit)| {
            let mut text = unit.repeat(size / unit.len() + 1);
            text.truncate(size);
            (*name, text)
        })
        .collect()
}

/// Ordinary prose with a value in it now and then, `size` bytes: the baseline
/// the adversarial texts are compared with.
pub fn prose(size: usize) -> String {
    const LINE: &str = "The team met on Monday to review the plan; Ann (ann.lee@example.org) will send the \
        figures, and the invoice for 4111 1111 1111 1111 is due. Nothing else changed this week. ";
    let mut text = LINE.repeat(size / LINE.len() + 1);
    text.truncate(size);
    text
}
