//! `halberd scan`: offline inspection of JSON Lines, one result per input line,
//! in order (contract in DESIGN.md). Input objects need a `text` string; their
//! other fields are copied through. A line that cannot be read gets an `error`
//! field instead of results, and the command exits non-zero at the end.

use std::io::{BufRead, Write};

use halberd_gateway::config::GuardPolicy;
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
            Ok(Value::Object(object)) => match object.get("text") {
                Some(Value::String(text)) => {
                    let text = text.clone();
                    scan_one(detector, policy, object, &text)
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
    let verdict = if redaction.blocked().is_some() {
        "block"
    } else if redaction.changed() {
        "redact"
    } else if redaction.edits.iter().any(|e| e.action == Action::Flag) {
        "flag"
    } else {
        "allow"
    };
    // Prompt-injection detection is not built yet: `null` says "not
    // evaluated", which no consumer can mistake for "evaluated and clean".
    object.insert("injection".into(), Value::Null);
    object.insert("findings".into(), Value::Array(listed));
    object.insert("redacted".into(), Value::String(redaction.text));
    object.insert("verdict".into(), json!(verdict));
    Value::Object(object)
}
