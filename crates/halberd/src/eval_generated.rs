//! `halberd eval --generated FILE`: the sensitive-data detectors on a
//! generated set (`scripts/pii_generate.py`: our own sentence shapes filled
//! by Faker in nine locales, a fresh seed each CI run).
//!
//! Per type: precision and recall (a finding is a true positive when it
//! overlaps a labelled span of its type; any other finding is a false
//! positive). Then redaction under a redact-everything policy, whole and
//! streamed in uneven pieces: the streamed text must equal the whole one,
//! and no value that was found may be left in either. The gate fails on a
//! leak, or on a type under its minimum recall or precision.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use halberd_guard::sensitive::{Detector, Policy, Pseudonyms, StreamRedactor, redact};
use serde_json::Value;

use crate::eval_sensitive::Score;

pub const TYPES: [&str; 6] = [
    "email",
    "phone",
    "credit_card",
    "us_ssn",
    "iban",
    "ip_address",
];

/// The gate: every type at least `recall` and `precision`, except the
/// per-type minimum recalls in `recall_for`.
pub struct Gate {
    pub recall: Option<f64>,
    pub precision: Option<f64>,
    pub recall_for: BTreeMap<String, f64>,
}

struct Labelled {
    kind: String,
    start: usize,
    end: usize,
}

fn read(path: &Path) -> Result<Vec<(String, String, Vec<Labelled>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}:{}", path.display(), i + 1);
        let row: Value = serde_json::from_str(line).with_context(at)?;
        let text = row["text"]
            .as_str()
            .with_context(|| format!("{}: no `text`", at()))?
            .to_owned();
        let locale = row["locale"].as_str().unwrap_or("-").to_owned();
        let mut spans = Vec::new();
        for span in row["spans"]
            .as_array()
            .with_context(|| format!("{}: no `spans` list", at()))?
        {
            let kind = span["type"]
                .as_str()
                .with_context(|| format!("{}: a span has no `type`", at()))?;
            let offset = |key: &str| {
                span[key]
                    .as_u64()
                    .map(|v| v as usize)
                    .with_context(|| format!("{}: a span has no `{key}`", at()))
            };
            let (start, end) = (offset("start")?, offset("end")?);
            if start > end || end > text.len() || !TYPES.contains(&kind) {
                bail!(
                    "{}: span {kind} {start}..{end} is not a span of the text",
                    at()
                );
            }
            spans.push(Labelled {
                kind: kind.to_owned(),
                start,
                end,
            });
        }
        rows.push((text, locale, spans));
    }
    Ok(rows)
}

/// Uneven pieces of `text` (1 to 17 bytes, at character boundaries), the
/// same for the same line.
fn pieces(text: &str, line: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut step = line % 17 + 1;
    while at < text.len() {
        let mut end = (at + step).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[at..end]);
        at = end;
        step = step * 7 % 17 + 1;
    }
    out
}

pub fn run(path: &Path, gate: &Gate) -> Result<()> {
    let rows = read(path)?;
    if rows.is_empty() {
        bail!("{} holds no texts", path.display());
    }
    let detector = Detector::shared();
    let policy = Arc::new(Policy::redact_all());
    let mut scores: BTreeMap<&str, Score> = BTreeMap::new();
    let mut by_locale: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    let mut false_alarms: Vec<String> = Vec::new();
    let mut leaks: Vec<String> = Vec::new();
    for (line, (text, locale, spans)) in rows.iter().enumerate() {
        let findings = detector.scan(text);
        let mut found = vec![false; spans.len()];
        for f in &findings {
            let name = f.kind.type_name();
            let hit = spans
                .iter()
                .position(|s| s.kind == name && f.start < s.end && s.start < f.end);
            match hit {
                Some(i) => found[i] = true,
                None => {
                    scores.entry(name).or_default().fp += 1;
                    false_alarms.push(format!("{name}: {:?}", &text[f.start..f.end]));
                }
            }
        }
        for (span, found) in spans.iter().zip(&found) {
            let kind = TYPES
                .iter()
                .find(|t| **t == span.kind)
                .copied()
                .unwrap_or("?");
            let score = scores.entry(kind).or_default();
            let locale_count = by_locale
                .entry((kind.to_owned(), locale.clone()))
                .or_default();
            locale_count.0 += 1;
            if *found {
                score.tp += 1;
                locale_count.1 += 1;
            } else {
                score.fn_ += 1;
                misses.push(format!("{kind} ({locale}): {text:?}"));
            }
        }
        // Redaction, whole and streamed: the same text, and nothing found
        // left in it.
        let whole = redact(text, &findings, &policy, &mut Pseudonyms::default()).text;
        let mut redactor = StreamRedactor::new(detector, policy.clone());
        let mut streamed = String::new();
        for piece in pieces(text, line) {
            streamed.push_str(
                &redactor
                    .push(piece)
                    .unwrap_or_else(|k| format!("[BLOCKED {k:?}]")),
            );
        }
        streamed.push_str(&redactor.finish().unwrap_or_default());
        if streamed != whole {
            leaks.push(format!(
                "line {}: streamed redaction differs from whole",
                line + 1
            ));
        }
        for (span, found) in spans.iter().zip(&found) {
            let value = &text[span.start..span.end];
            if *found && (whole.contains(value) || streamed.contains(value)) {
                leaks.push(format!(
                    "line {}: a {} left in the redacted text",
                    line + 1,
                    span.kind
                ));
            }
        }
    }
    outln!(
        "## Generated PII: {} ({} texts)",
        path.display(),
        rows.len()
    );
    let mut failures = Vec::new();
    for kind in TYPES {
        let s = scores.get(kind).copied().unwrap_or_default();
        let labelled = s.tp + s.fn_;
        if labelled == 0 {
            outln!("{kind:<12} no data: no labelled value of this type");
            failures.push(format!("{kind} has no labelled value, so no score"));
            continue;
        }
        let recall = s.tp as f64 / labelled as f64;
        let precision = if s.tp + s.fp == 0 {
            1.0
        } else {
            s.tp as f64 / (s.tp + s.fp) as f64
        };
        outln!(
            "{kind:<12} tp {:>5}  fp {:>4}  fn {:>4}  precision {precision:.3}  recall {recall:.3}",
            s.tp,
            s.fp,
            s.fn_
        );
        let min_recall = gate.recall_for.get(kind).copied().or(gate.recall);
        if let Some(min) = min_recall
            && recall < min
        {
            failures.push(format!("{kind} recall {recall:.3} below {min}"));
        }
        if let Some(min) = gate.precision
            && precision < min
        {
            failures.push(format!("{kind} precision {precision:.3} below {min}"));
        }
    }
    outln!("recall by locale:");
    for ((kind, locale), (n, found)) in &by_locale {
        if found < n {
            outln!(
                "  {kind:<12} {locale:<6} {:.3} ({found} of {n})",
                *found as f64 / *n as f64
            );
        }
    }
    outln!(
        "redaction, whole and streamed in uneven pieces: {} leaks",
        leaks.len()
    );
    for (title, items) in [
        ("missed", &misses),
        ("false alarms", &false_alarms),
        ("leaks", &leaks),
    ] {
        if !items.is_empty() {
            outln!("{title}: {}", items.len());
            for item in items.iter().take(25) {
                outln!("  {item}");
            }
        }
    }
    if !leaks.is_empty() {
        failures.push(format!("{} values left after redaction", leaks.len()));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pieces_cover_the_text_at_character_boundaries() {
        let text = "Zoë called +44 20 7946 0958 — «twice» 東京";
        for line in 0..40 {
            let pieces = super::pieces(text, line);
            assert_eq!(pieces.concat(), text);
            assert!(pieces.iter().all(|p| !p.is_empty()));
            assert!(pieces.len() > 2);
        }
    }
}
