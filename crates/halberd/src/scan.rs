//! `halberd scan`: offline inspection of JSON Lines, one result per input line,
//! in order (contract in DESIGN.md). Input objects need a `text` string; their
//! other fields are copied through. An optional `provenance` (`user`, the
//! default; `document` or `tool`; `system`) picks the injection thresholds. A line that cannot be read gets an `error`
//! field instead of results, and the command exits non-zero at the end.

use std::io::{BufRead, Write};

use halberd_gateway::config::GuardPolicy;
use halberd_guard::injection::{self, Trust, Verdict};
use halberd_guard::sensitive::{self, Action, Detector, Pseudonyms};
use serde_json::{Map, Value, json};

/// Scans `input` into `output`; returns how many lines failed.
pub fn run(
    policy: &GuardPolicy,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<usize> {
    let detector = Detector::shared();
    let mut failed = 0;
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(object)) => match (
                object.get("text"),
                crate::injection_cli::trust_of(object.get("provenance").and_then(Value::as_str)),
            ) {
                (Some(Value::String(text)), Ok(trust)) => {
                    let text = text.clone();
                    scan_one(detector, policy, object, &text, trust)
                }
                (Some(Value::String(_)), Err(e)) => {
                    failed += 1;
                    json!({"line": number + 1, "error": e.to_string()})
                }
                _ => {
                    failed += 1;
                    json!({"line": number + 1, "error": "the object has no string field `text`"})
                }
            },
            Ok(_) => {
                failed += 1;
                json!({"line": number + 1, "error": "each line must be a JSON object"})
            }
            Err(e) => {
                failed += 1;
                json!({"line": number + 1, "error": format!("invalid JSON: {e}")})
            }
        };
        serde_json::to_writer(&mut output, &result)?;
        output.write_all(b"\n")?;
    }
    output.flush()?;
    Ok(failed)
}

fn scan_one(
    detector: &Detector,
    policy: &GuardPolicy,
    mut object: Map<String, Value>,
    text: &str,
    trust: Trust,
) -> Value {
    let findings = detector.scan(text);
    let redaction = sensitive::redact(
        text,
        &findings,
        &policy.sensitive_input,
        &mut Pseudonyms::default(),
    );
    let listed: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut item = json!({"type": f.kind.type_name(), "start": f.start, "end": f.end});
            if let Some(kind) = f.kind.secret_kind() {
                item["kind"] = json!(kind);
            }
            let action = policy.sensitive_input.action(f.kind);
            item["action"] = json!(action.name());
            item
        })
        .collect();
    let injection = if policy.injection.enabled {
        let assessment = injection::Detector::shared().assess(text, trust);
        let verdict = policy.injection.thresholds(trust).verdict(assessment.score);
        Some((assessment, verdict))
    } else {
        None
    };
    let injection_verdict = injection.as_ref().map_or(Verdict::Allow, |(_, v)| *v);
    let verdict = if redaction.blocked().is_some() || injection_verdict == Verdict::Block {
        "block"
    } else if redaction.changed() {
        "redact"
    } else if redaction.edits.iter().any(|e| e.action == Action::Flag)
        || injection_verdict == Verdict::Flag
    {
        "flag"
    } else {
        "allow"
    };
    // With injection detection off in the policy, `null` says "not evaluated",
    // which no consumer can mistake for "evaluated and clean".
    let injection = match injection {
        Some((a, v)) => json!({
            "detected": v != Verdict::Allow,
            "score": (f64::from(a.score) * 10_000.0).round() / 10_000.0,
            "signals": a.signals,
            "verdict": v.as_str(),
            "trust": trust.as_str(),
            "spans": a.evidence.iter().map(|e| json!({"start": e.start, "end": e.end, "signal": e.signal})).collect::<Vec<_>>(),
        }),
        None => Value::Null,
    };
    object.insert("injection".into(), injection);
    object.insert("findings".into(), Value::Array(listed));
    object.insert("redacted".into(), Value::String(redaction.text));
    object.insert("verdict".into(), json!(verdict));
    Value::Object(object)
}
