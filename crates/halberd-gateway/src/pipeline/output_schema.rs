//! Structured output, validated (issue 21): when a request asks for
//! schema-bound output (chat `response_format` of type `json_schema`,
//! Responses `text.format` of type `json_schema`, Anthropic
//! `output_config.format` or the beta `output_format` of type
//! `json_schema`), the answer's text must be JSON that the schema accepts.
//! Anthropic's structured output has no `strict` flag: the provider
//! guarantees it, so a violation is refused as under `strict: true`.
//!
//! - Whole answers are checked before they are returned; streamed ones at
//!   the end of the text (it is already out; the stream then ends with an
//!   error event instead of its normal end).
//! - `strict: true` blocks a violation: 502 `output_schema_violation`,
//!   naming the JSON Pointer of the first violation, never the content.
//!   Without `strict` a violation is flagged (guard log, metrics) and passes.
//! - Schemas come from the client, so: remote `$ref`s are never fetched
//!   (`offline`), `pattern`s run on the linear-time `regex` engine with a
//!   size limit, schemas over [`MAX_SCHEMA_BYTES`] are not compiled (the
//!   answer passes, flagged), and compiled validators are cached per
//!   distinct schema text, at most [`CACHE_ENTRIES`] of them.
//! - A refusal (chat `refusal`, Responses `refusal` content) is not an
//!   answer to validate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use halberd_protocol::Api;

/// Schemas larger than this are not compiled.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// Compiled validators kept; the cache is emptied when full.
pub const CACHE_ENTRIES: usize = 256;

static CACHE: Mutex<Option<HashMap<String, Arc<jsonschema::Validator>>>> = Mutex::new(None);

/// What a request asked for.
#[derive(Clone)]
pub struct SchemaCheck {
    validator: Option<Arc<jsonschema::Validator>>,
    pub strict: bool,
}

/// Why an answer failed its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer of the first violation in the answer (`""`: the whole
    /// answer, e.g. when it is not JSON).
    pub at: String,
}

impl Violation {
    pub fn message(&self) -> String {
        let at = if self.at.is_empty() { "/" } else { &self.at };
        format!(
            "the model's answer does not match the requested JSON schema (first violation at {at}); the answer was withheld"
        )
    }
}

pub(crate) fn compile(schema: &Value) -> Option<Arc<jsonschema::Validator>> {
    let text = schema.to_string();
    if text.len() > MAX_SCHEMA_BYTES {
        return None;
    }
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(v) = cache.get(&text) {
        return Some(v.clone());
    }
    let validator = jsonschema::options()
        .offline()
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(1 << 20))
        .build(schema)
        .ok()?;
    let validator = Arc::new(validator);
    if cache.len() >= CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(text, validator.clone());
    Some(validator)
}

impl SchemaCheck {
    /// The schema a request asks its answer to follow, if any. A schema that
    /// does not compile (or is too large) leaves the check without a
    /// validator: the answer is then only required to be JSON.
    pub fn of(api: Api, body: &Value) -> Option<SchemaCheck> {
        let format = match api {
            Api::ChatCompletions => body.get("response_format")?,
            Api::Responses => body.pointer("/text/format")?,
            Api::Messages => body
                .pointer("/output_config/format")
                .or_else(|| body.get("output_format"))?,
            Api::Embeddings => return None,
        };
        if format.get("type").and_then(Value::as_str) != Some("json_schema") {
            return None;
        }
        // Chat nests it under `json_schema`; Responses has it flat.
        let spec = format.get("json_schema").unwrap_or(format);
        let schema = spec.get("schema")?;
        Some(SchemaCheck {
            validator: compile(schema),
            strict: api == Api::Messages
                || spec.get("strict").and_then(Value::as_bool) == Some(true),
        })
    }

    /// Checks one answer text.
    pub fn check(&self, text: &str) -> Result<(), Violation> {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Err(Violation { at: String::new() });
        };
        match &self.validator {
            Some(v) => match v.iter_errors(&value).next() {
                Some(e) => Err(Violation {
                    at: e.instance_path().to_string(),
                }),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Checks every answer text of a whole response.
    pub fn check_whole(&self, api: Api, body: &Value) -> Result<(), Violation> {
        match api {
            Api::ChatCompletions => {
                for choice in super::tool_policy::list(body.get("choices")) {
                    if let Some(text) = choice.pointer("/message/content").and_then(Value::as_str) {
                        self.check(text)?;
                    }
                }
                Ok(())
            }
            Api::Responses => {
                for item in super::tool_policy::list(body.get("output")) {
                    if item.get("type").and_then(Value::as_str) != Some("message") {
                        continue;
                    }
                    let text: String = super::tool_policy::list(item.get("content"))
                        .iter()
                        .filter(|c| c.get("type").and_then(Value::as_str) == Some("output_text"))
                        .filter_map(|c| c.get("text").and_then(Value::as_str))
                        .collect();
                    if !text.is_empty() {
                        self.check(&text)?;
                    }
                }
                Ok(())
            }
            Api::Messages => {
                // A refusal (`stop_reason: refusal`) is not an answer.
                if body.get("stop_reason").and_then(Value::as_str) == Some("refusal") {
                    return Ok(());
                }
                let text: String = super::tool_policy::list(body.get("content"))
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect();
                if text.is_empty() {
                    return Ok(());
                }
                self.check(&text)
            }
            Api::Embeddings => Ok(()),
        }
    }
}

/// The same check over a stream: text gathered per choice (chat) or per
/// output item (Responses), checked when it ends.
pub struct StreamSchema {
    check: SchemaCheck,
    texts: HashMap<String, String>,
}

impl StreamSchema {
    pub fn new(check: SchemaCheck) -> StreamSchema {
        StreamSchema {
            check,
            texts: HashMap::new(),
        }
    }

    pub fn strict(&self) -> bool {
        self.check.strict
    }

    /// One parsed event; a violation when a text ends that fails.
    pub fn event(&mut self, api: Api, v: &Value) -> Result<(), Violation> {
        match api {
            Api::ChatCompletions => {
                for choice in super::tool_policy::list(v.get("choices")) {
                    let key = choice
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                        .to_string();
                    if let Some(piece) = choice.pointer("/delta/content").and_then(Value::as_str) {
                        self.texts.entry(key.clone()).or_default().push_str(piece);
                    }
                    // A refusal is not an answer to validate.
                    if choice
                        .pointer("/delta/refusal")
                        .is_some_and(|r| !r.is_null())
                    {
                        self.texts.remove(&key);
                        self.texts.insert(format!("refused:{key}"), String::new());
                    }
                    if choice.get("finish_reason").is_some_and(|r| !r.is_null())
                        && !self.texts.contains_key(&format!("refused:{key}"))
                        && let Some(text) = self.texts.remove(&key)
                    {
                        self.check.check(&text)?;
                    }
                }
                Ok(())
            }
            Api::Responses => match v.get("type").and_then(Value::as_str) {
                // The whole text of one output part, at its end.
                Some("response.output_text.done") => match v.get("text").and_then(Value::as_str) {
                    Some(text) => self.check.check(text),
                    None => Ok(()),
                },
                _ => Ok(()),
            },
            // Anthropic: the text blocks' deltas, checked when the message
            // ends (`message_delta` carries the stop reason).
            Api::Messages => match v.get("type").and_then(Value::as_str) {
                Some("content_block_delta") => {
                    if let Some(piece) = v.pointer("/delta/text").and_then(Value::as_str) {
                        self.texts.entry(String::new()).or_default().push_str(piece);
                    }
                    Ok(())
                }
                Some("message_delta") => {
                    let refused =
                        v.pointer("/delta/stop_reason").and_then(Value::as_str) == Some("refusal");
                    match self.texts.remove("") {
                        Some(text) if !refused && !text.is_empty() => self.check.check(&text),
                        _ => Ok(()),
                    }
                }
                _ => Ok(()),
            },
            Api::Embeddings => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(schema: Value, strict: bool) -> SchemaCheck {
        SchemaCheck::of(
            Api::ChatCompletions,
            &json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": strict, "schema": schema}}}),
        )
        .unwrap()
    }

    #[test]
    fn anthropic_structured_output_is_checked_whole_and_streamed() {
        let schema =
            json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
        for body in [
            json!({"output_config": {"format": {"type": "json_schema", "schema": schema}}}),
            json!({"output_format": {"type": "json_schema", "schema": schema}}),
        ] {
            let c = SchemaCheck::of(Api::Messages, &body).unwrap();
            // No strict flag: the provider guarantees it, so it is strict.
            assert!(c.strict);
            let whole = |text: &str, stop: &str| json!({"content": [{"type": "text", "text": text}], "stop_reason": stop});
            assert!(
                c.check_whole(Api::Messages, &whole("{\"n\": 1}", "end_turn"))
                    .is_ok()
            );
            assert_eq!(
                c.check_whole(Api::Messages, &whole("{\"n\": \"one\"}", "end_turn"))
                    .unwrap_err()
                    .at,
                "/n"
            );
            assert!(
                c.check_whole(Api::Messages, &whole("I can't help with that.", "refusal"))
                    .is_ok()
            );

            let mut s = StreamSchema::new(c);
            let delta = |t: &str| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}});
            assert!(s.event(Api::Messages, &delta("{\"n\": ")).is_ok());
            assert!(s.event(Api::Messages, &delta("\"one\"}")).is_ok());
            let end = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}});
            assert_eq!(s.event(Api::Messages, &end).unwrap_err().at, "/n");
        }
        assert!(SchemaCheck::of(Api::Messages, &json!({"max_tokens": 5})).is_none());
    }

    #[test]
    fn answers_are_checked_against_the_requested_schema() {
        let c = chat(
            json!({"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}}, "required": ["city"], "additionalProperties": false}),
            true,
        );
        assert!(c.strict);
        assert!(c.check(r#"{"city": "Lyon", "n": 3}"#).is_ok());
        assert_eq!(
            c.check(r#"{"city": "Lyon", "n": "three"}"#).unwrap_err().at,
            "/n"
        );
        assert_eq!(c.check(r#"{"n": 3}"#).unwrap_err().at, "");
        assert_eq!(c.check("Sure! Here is the JSON: {").unwrap_err().at, "");
        // Not asked for: no check.
        assert!(
            SchemaCheck::of(
                Api::ChatCompletions,
                &json!({"response_format": {"type": "json_object"}})
            )
            .is_none()
        );
        let r = SchemaCheck::of(
            Api::Responses,
            &json!({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "array"}}}}),
        )
        .unwrap();
        assert!(!r.strict);
        let whole = json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "{}"}]}]});
        assert!(r.check_whole(Api::Responses, &whole).is_err());
    }

    #[test]
    fn hostile_schemas_are_contained() {
        // A remote reference is never fetched: the schema does not compile,
        // and the answer is only required to be JSON.
        let c = chat(
            json!({"$ref": "https://attacker.example/schema.json"}),
            true,
        );
        assert!(c.validator.is_none());
        assert!(c.check("{}").is_ok());
        assert!(c.check("nope").is_err());
        // A catastrophic-backtracking pattern runs in linear time.
        let c = chat(json!({"type": "string", "pattern": "^(a+)+$"}), true);
        let evil = format!("\"{}b\"", "a".repeat(50_000));
        let started = std::time::Instant::now();
        assert!(c.check(&evil).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Too large to compile.
        let props: serde_json::Map<String, Value> = (0..20_000)
            .map(|i| {
                (
                    format!("property_{i}"),
                    json!({"type": "string", "description": "x".repeat(10)}),
                )
            })
            .collect();
        let c = chat(json!({"type": "object", "properties": props}), true);
        assert!(c.validator.is_none());
    }

    #[test]
    fn streamed_text_is_checked_at_its_end() {
        let c = chat(json!({"type": "object", "required": ["a"]}), true);
        let mut s = StreamSchema::new(c);
        let chunk = |content: &str, finish: Value| json!({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]});
        assert!(
            s.event(Api::ChatCompletions, &chunk("{\"b\"", Value::Null))
                .is_ok()
        );
        assert!(
            s.event(Api::ChatCompletions, &chunk(": 1}", Value::Null))
                .is_ok()
        );
        assert_eq!(
            s.event(Api::ChatCompletions, &chunk("", json!("stop"))),
            Err(Violation { at: String::new() })
        );
    }
}
