//! Parsing of request bodies with the limits a gateway needs before anything else
//! looks at them: a nesting limit checked in one linear pass over the bytes, and
//! syntax errors that say where they are.

use serde_json::Value;

use crate::DecodeError;

/// The deepest nesting the parser accepts at all: serde_json's recursion guard,
/// which keeps parsing off the end of the stack.
pub const MAX_DEPTH: usize = 128;

/// Parses `body` as one JSON value, refusing nesting deeper than `max_depth`.
/// Limits above [`MAX_DEPTH`] (serde_json's own recursion guard) have no effect.
///
/// The depth check runs first, over the raw bytes, so a deeply nested body costs
/// one linear scan and no allocation before it is refused.
pub fn parse_body(body: &[u8], max_depth: usize) -> Result<Value, DecodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::body(
            "request body is empty; expected a JSON object",
        ));
    }
    let depth = nesting_depth(body);
    if depth > max_depth {
        return Err(DecodeError::body(format!(
            "JSON nesting depth {depth} exceeds the limit of {max_depth}"
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: Value = serde::Deserialize::deserialize(&mut de).map_err(syntax_error)?;
    de.end().map_err(syntax_error)?;
    if !value.is_object() {
        return Err(DecodeError::body("request body must be a JSON object"));
    }
    Ok(value)
}

fn syntax_error(e: serde_json::Error) -> DecodeError {
    DecodeError::body(format!(
        "invalid JSON at line {} column {}: {}",
        e.line(),
        e.column(),
        strip_position(&e.to_string())
    ))
}

/// serde_json appends " at line L column C" to its messages; we say the position
/// first, once.
fn strip_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

/// The deepest nesting of arrays and objects in `body`, ignoring brackets inside
/// strings. Linear in the input; never fails (malformed JSON is the parser's to
/// report).
pub fn nesting_depth(body: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a": "[[[{{{"}"#), 1);
        assert_eq!(nesting_depth(br#"{"a": [[{"b": "\"["}]]}"#), 4);
    }

    #[test]
    fn too_deep_is_refused_before_parsing() {
        let body = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = parse_body(body.as_bytes(), 64).unwrap_err();
        assert!(err.message.contains("nesting depth 200"), "{err}");
    }

    #[test]
    fn deep_but_allowed_parses() {
        let body = format!(r#"{{"a":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(parse_body(body.as_bytes(), MAX_DEPTH).is_ok());
        assert!(parse_body(body.as_bytes(), 100).is_err());
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_body(b"{\n  \"model\": \"x\",\n  oops\n}", 64).unwrap_err();
        assert!(
            err.message.starts_with("invalid JSON at line 3 column 3"),
            "{err}"
        );
    }

    #[test]
    fn non_object_and_empty_are_refused() {
        assert!(
            parse_body(b"[1]", 64)
                .unwrap_err()
                .message
                .contains("object")
        );
        assert!(parse_body(b"  ", 64).unwrap_err().message.contains("empty"));
        assert!(
            parse_body(b"{} {}", 64)
                .unwrap_err()
                .message
                .contains("trailing")
        );
    }
}
