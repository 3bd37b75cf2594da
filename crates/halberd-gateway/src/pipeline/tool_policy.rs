//! Tool calls in the model's answer, checked against the request: the first
//! part of the tool-call policy (issue 21), on by default with no
//! configuration.
//!
//! - A call to a tool the request did not declare is refused
//!   (`tool_call_not_allowed`): a model calling a tool it was not offered is
//!   a fault or an attack (an injection naming a tool of its own).
//! - A call whose arguments are not valid JSON is refused
//!   (`tool_arguments_invalid`): whatever runs the tool would act on a guess.
//!   So is a call to a tool declared with `strict: true` whose arguments the
//!   tool's declared schema rejects (chat `function.parameters`, Responses
//!   `parameters`, Anthropic `input_schema`), naming the JSON Pointer of the
//!   first violation; schemas are compiled and cached as for structured
//!   output ([`super::output_schema`]), and a schema that does not compile
//!   leaves only the JSON check.
//!
//! Covered: chat `tool_calls` (and the legacy `function_call`), Responses
//! `function_call` and `custom_tool_call` items, Anthropic `tool_use` blocks;
//! whole and streamed. Streamed, a call's name comes in its first event, so an
//! undeclared call is refused at once; its arguments are complete only at its
//! end, and the relay holds the call's events back until then
//! ([`StreamCheck::holding`]), so a refused call never reaches the client. Built-in tools of the
//! providers (web search, code interpreter, MCP) produce other item and block
//! types and are not checked here. A Responses request that runs a stored
//! prompt (`prompt`) may have tools declared on the provider's side, which the
//! gateway cannot see: its calls are not checked for declaration.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use halberd_protocol::Api;

/// Why a tool call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolFault {
    NotDeclared {
        tool: String,
    },
    InvalidArguments {
        tool: String,
    },
    /// Arguments the strict tool's declared schema rejects.
    ArgumentsViolateSchema {
        tool: String,
        /// JSON Pointer of the first violation.
        at: String,
    },
    /// More calls in one answer than the policy's `max_calls`.
    TooMany {
        max: u32,
    },
    /// A streamed call whose events grew past what the relay holds back.
    TooLarge {
        tool: String,
        max: usize,
    },
    /// A call a `block` rule of the policy matches
    /// ([`super::tool_rules`]).
    Blocked {
        tool: String,
        /// `every call`, `max_bytes`, `argument /url: hosts`.
        what: String,
    },
}

impl ToolFault {
    pub fn code(&self) -> &'static str {
        match self {
            ToolFault::NotDeclared { .. } => "tool_call_not_allowed",
            ToolFault::InvalidArguments { .. }
            | ToolFault::ArgumentsViolateSchema { .. }
            | ToolFault::TooLarge { .. } => "tool_arguments_invalid",
            ToolFault::TooMany { .. } => "too_many_tool_calls",
            ToolFault::Blocked { .. } => "tool_call_blocked",
        }
    }

    /// The tool's name is the model's output: shown cut and printable only.
    pub fn message(&self) -> String {
        match self {
            ToolFault::NotDeclared { tool } => format!(
                "the model called a tool the request did not declare ('{}'); the answer was withheld",
                shown(tool)
            ),
            ToolFault::InvalidArguments { tool } => format!(
                "the model called '{}' with arguments that are not valid JSON; the answer was withheld",
                shown(tool)
            ),
            ToolFault::ArgumentsViolateSchema { tool, at } => format!(
                "the model called '{}' with arguments its declared schema rejects (first violation at {}); the answer was withheld",
                shown(tool),
                if at.is_empty() { "/" } else { at }
            ),
            ToolFault::TooLarge { tool, max } => format!(
                "the model's call to '{}' grew past {max} bytes, more than the gateway holds to check it; the answer was withheld",
                shown(tool)
            ),
            ToolFault::Blocked { tool, what } => format!(
                "this key's policy does not allow the model's call to '{}' ({what}); the answer was withheld",
                shown(tool)
            ),
            ToolFault::TooMany { max } => format!(
                "the model made more than {max} tool calls in one answer, this key's policy's limit; the answer was withheld"
            ),
        }
    }
}

/// A tool name in a message: printable and cut.
pub(crate) fn shown(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// A policy's tool rules (`[policies.tools]`): which tools a request may
/// declare, how many calls one answer may make, and rules on the calls
/// themselves.
#[derive(Debug, Clone, Default)]
pub struct ToolRules {
    /// Names or patterns (`*` matches any run of characters) a declared
    /// tool must match one of; `None`: any tool.
    pub allow: Option<Vec<String>>,
    /// Names or patterns no declared tool may match (checked first).
    pub deny: Vec<String>,
    /// The most tool calls one answer may make.
    pub max_calls: Option<u32>,
    /// `[[policies.tools.rules]]`, in order.
    pub calls: std::sync::Arc<[super::tool_rules::CallRule]>,
}

impl ToolRules {
    pub fn permits(&self, name: &str) -> bool {
        !self.deny.iter().any(|p| wildcard(p, name))
            && self
                .allow
                .as_ref()
                .is_none_or(|allow| allow.iter().any(|p| wildcard(p, name)))
    }

    /// Whether the rules restrict which tools may be declared.
    pub fn limits_declarations(&self) -> bool {
        self.allow.is_some() || !self.deny.is_empty()
    }

    /// The first tool a request declares that the rules refuse.
    pub fn refused<'a>(&self, declared: &'a Declared) -> Option<&'a str> {
        declared
            .names
            .iter()
            .map(String::as_str)
            .find(|name| !self.permits(name))
    }

    /// `allow=a,b* deny=c max_calls=3`, or `any declared tool`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(allow) = &self.allow {
            parts.push(format!("allow={}", allow.join(",")));
        }
        if !self.deny.is_empty() {
            parts.push(format!("deny={}", self.deny.join(",")));
        }
        if let Some(max) = self.max_calls {
            parts.push(format!("max_calls={max}"));
        }
        for rule in self.calls.iter() {
            parts.push(format!("rule({})", rule.describe()));
        }
        if parts.is_empty() {
            "any declared tool".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters: the two-pointer match with one backtrack point.
pub fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|b| *b == b'*')
}

/// Compiled schemas of the tools declared `strict: true`, by name.
#[derive(Clone, Default)]
struct StrictSchemas(BTreeMap<String, std::sync::Arc<jsonschema::Validator>>);

impl std::fmt::Debug for StrictSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// The tools a request declared.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    names: BTreeSet<String>,
    strict: StrictSchemas,
    /// The provider may know tools the request does not show (a stored
    /// prompt): declaration is not checked.
    opaque: bool,
    /// The policy's limit on calls per answer.
    max_calls: Option<u32>,
    /// The policy's rules on calls.
    calls: std::sync::Arc<[super::tool_rules::CallRule]>,
}

impl Declared {
    pub fn of(api: Api, body: &Value) -> Declared {
        let mut names = BTreeSet::new();
        let mut strict = StrictSchemas::default();
        let tools = body.get("tools").and_then(Value::as_array);
        for tool in tools.into_iter().flatten() {
            // Where a tool says it is strict, and its schema.
            let (flag, schema) = match api {
                Api::ChatCompletions => (
                    tool.pointer("/function/strict"),
                    tool.pointer("/function/parameters"),
                ),
                Api::Responses => (tool.get("strict"), tool.get("parameters")),
                Api::Messages => (tool.get("strict"), tool.get("input_schema")),
                Api::Embeddings => (None, None),
            };
            let name = match api {
                // `{"type": "function", "function": {"name": …}}`, and the
                // flat custom-tool shape.
                Api::ChatCompletions => tool
                    .pointer("/function/name")
                    .or_else(|| tool.pointer("/custom/name"))
                    .or_else(|| tool.get("name")),
                // `{"type": "function" | "custom", "name": …}`.
                Api::Responses | Api::Messages => tool.get("name"),
                Api::Embeddings => None,
            };
            if let Some(name) = name.and_then(Value::as_str) {
                names.insert(name.to_owned());
                if flag.and_then(Value::as_bool) == Some(true)
                    && let Some(validator) = schema.and_then(super::output_schema::compile)
                {
                    strict.0.insert(name.to_owned(), validator);
                }
            }
        }
        // The legacy chat `functions` list.
        for f in list(body.get("functions")) {
            if let Some(name) = f.get("name").and_then(Value::as_str) {
                names.insert(name.to_owned());
            }
        }
        Declared {
            names,
            strict,
            opaque: api == Api::Responses && body.get("prompt").is_some_and(|p| !p.is_null()),
            max_calls: None,
            calls: std::sync::Arc::new([]),
        }
    }

    /// With the policy's limit on calls per answer and its rules on calls.
    pub fn limited(mut self, rules: &ToolRules) -> Declared {
        self.max_calls = rules.max_calls;
        self.calls = rules.calls.clone();
        self
    }

    fn check_count(&self, calls: usize) -> Result<(), ToolFault> {
        match self.max_calls {
            Some(max) if calls > max as usize => Err(ToolFault::TooMany { max }),
            _ => Ok(()),
        }
    }

    fn check_name(&self, name: &str) -> Result<(), ToolFault> {
        if self.opaque || self.names.contains(name) {
            Ok(())
        } else {
            Err(ToolFault::NotDeclared { tool: name.into() })
        }
    }
}

impl Declared {
    /// Arguments as the model wrote them: JSON, what the tool's schema
    /// accepts when the tool is strict, and what the policy's call rules
    /// allow (flags go to `flagged`).
    fn check_arguments(
        &self,
        name: &str,
        arguments: &str,
        flagged: &mut Vec<super::tool_rules::Breach>,
    ) -> Result<(), ToolFault> {
        let invalid = || ToolFault::InvalidArguments { tool: name.into() };
        let strict = self.strict.0.get(name);
        if strict.is_none() && self.calls.is_empty() {
            // Anthropic sends no input deltas for a call without input.
            if arguments.trim().is_empty() {
                return Ok(());
            }
            if nesting_exceeds(arguments, MAX_ARGUMENT_DEPTH) {
                return Err(invalid());
            }
            return serde_json::from_str::<serde::de::IgnoredAny>(arguments)
                .map(|_| ())
                .map_err(|_| invalid());
        }
        let input = if arguments.trim().is_empty() {
            Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_str(arguments).map_err(|_| invalid())?
        };
        if let Some(validator) = strict {
            self.check_input(name, validator, &input)?;
        }
        self.check_rules(name, arguments.len(), &input, flagged)
    }

    /// A parsed input (Anthropic's `tool_use.input`): the strict tool's
    /// schema and the call rules.
    fn check_value(
        &self,
        name: &str,
        input: &Value,
        flagged: &mut Vec<super::tool_rules::Breach>,
    ) -> Result<(), ToolFault> {
        if let Some(validator) = self.strict.0.get(name) {
            self.check_input(name, validator, input)?;
        }
        if self.calls.is_empty() {
            return Ok(());
        }
        self.check_rules(name, input.to_string().len(), input, flagged)
    }

    fn check_rules(
        &self,
        name: &str,
        raw_len: usize,
        input: &Value,
        flagged: &mut Vec<super::tool_rules::Breach>,
    ) -> Result<(), ToolFault> {
        for breach in super::tool_rules::check(&self.calls, name, raw_len, input) {
            if breach.action == super::tool_rules::CallAction::Block {
                return Err(ToolFault::Blocked {
                    tool: breach.tool,
                    what: breach.what,
                });
            }
            flagged.push(breach);
        }
        Ok(())
    }

    fn check_input(
        &self,
        name: &str,
        validator: &jsonschema::Validator,
        input: &Value,
    ) -> Result<(), ToolFault> {
        match validator.iter_errors(input).next() {
            Some(e) => Err(ToolFault::ArgumentsViolateSchema {
                tool: name.into(),
                at: e.instance_path().to_string(),
            }),
            None => Ok(()),
        }
    }
}

/// The deepest nesting accepted in a call's arguments, as `serde_json`
/// reads them into values: deeper arguments are refused whether or not the
/// tool is strict (whatever runs the tool may not read them either; Python's
/// `json` stops near 1,000).
const MAX_ARGUMENT_DEPTH: usize = 127;

/// Whether JSON text nests arrays and objects deeper than `max` (strings
/// skipped); one pass, no allocation.
fn nesting_exceeds(text: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Checks every tool call of a whole (not streamed) answer; returns the
/// calls that `flag` rules matched.
pub fn check_whole(
    api: Api,
    declared: &Declared,
    body: &Value,
) -> Result<Vec<super::tool_rules::Breach>, ToolFault> {
    let mut flagged = Vec::new();
    declared.check_count(count_calls(api, body))?;
    match api {
        Api::ChatCompletions => {
            for choice in list(body.get("choices")) {
                let message = choice.get("message");
                let calls = message
                    .and_then(|m| m.get("tool_calls"))
                    .and_then(Value::as_array);
                for call in calls.into_iter().flatten() {
                    let (name, arguments) = match call.get("function") {
                        Some(f) => (f.get("name"), f.get("arguments")),
                        None => (call.pointer("/custom/name"), None),
                    };
                    let name = name.and_then(Value::as_str).unwrap_or_default();
                    declared.check_name(name)?;
                    if let Some(arguments) = arguments.and_then(Value::as_str) {
                        declared.check_arguments(name, arguments, &mut flagged)?;
                    }
                }
                if let Some(f) = message.and_then(|m| m.get("function_call")) {
                    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                    declared.check_name(name)?;
                    if let Some(arguments) = f.get("arguments").and_then(Value::as_str) {
                        declared.check_arguments(name, arguments, &mut flagged)?;
                    }
                }
            }
        }
        Api::Responses => {
            for item in list(body.get("output")) {
                check_responses_item(declared, item, &mut flagged)?;
            }
        }
        Api::Messages => {
            for block in list(body.get("content")) {
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let name = block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    declared.check_name(name)?;
                    if let Some(input) = block.get("input") {
                        declared.check_value(name, input, &mut flagged)?;
                    }
                }
            }
        }
        Api::Embeddings => {}
    }
    Ok(flagged)
}

/// The array at `v`, or none.
pub(crate) fn list(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[][..], Vec::as_slice)
}

/// Tool calls in a whole answer (per choice, the largest).
fn count_calls(api: Api, body: &Value) -> usize {
    match api {
        Api::ChatCompletions => list(body.get("choices"))
            .iter()
            .map(|c| {
                list(c.pointer("/message/tool_calls")).len()
                    + usize::from(
                        c.pointer("/message/function_call")
                            .is_some_and(|f| !f.is_null()),
                    )
            })
            .max()
            .unwrap_or(0),
        Api::Responses => list(body.get("output"))
            .iter()
            .filter(|i| {
                matches!(
                    i.get("type").and_then(Value::as_str),
                    Some("function_call" | "custom_tool_call")
                )
            })
            .count(),
        Api::Messages => list(body.get("content"))
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
            .count(),
        Api::Embeddings => 0,
    }
}

fn check_responses_item(
    declared: &Declared,
    item: &Value,
    flagged: &mut Vec<super::tool_rules::Breach>,
) -> Result<(), ToolFault> {
    match item.get("type").and_then(Value::as_str) {
        Some("function_call") => {
            let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
            declared.check_name(name)?;
            if let Some(arguments) = item.get("arguments").and_then(Value::as_str) {
                declared.check_arguments(name, arguments, flagged)?;
            }
            Ok(())
        }
        Some("custom_tool_call") => {
            declared.check_name(item.get("name").and_then(Value::as_str).unwrap_or_default())
        }
        _ => Ok(()),
    }
}

/// The same checks over a stream, event by event: names as calls open,
/// arguments as they close.
#[derive(Debug)]
pub struct StreamCheck {
    declared: Declared,
    /// Open calls: (choice or block index, call index) → name and the
    /// arguments so far.
    open: BTreeMap<(u64, u64), (String, String)>,
    /// Calls opened so far, per choice (one choice but for chat `n`).
    opened: BTreeMap<u64, usize>,
    /// Calls that `flag` rules matched.
    pub flagged: Vec<super::tool_rules::Breach>,
    /// Responses function-call items opened and not yet done, by item id,
    /// with their tool's name.
    items: BTreeMap<String, String>,
}

impl StreamCheck {
    pub fn new(declared: Declared) -> StreamCheck {
        StreamCheck {
            declared,
            open: BTreeMap::new(),
            opened: BTreeMap::new(),
            flagged: Vec::new(),
            items: BTreeMap::new(),
        }
    }

    /// Whether an event's data may matter: it names a tool call, or a call
    /// is open (its arguments and its end). Other events are not parsed.
    pub fn wants(&self, data: &str) -> bool {
        self.holding()
            || data.contains("tool_calls")
            || data.contains("function_call")
            || data.contains("tool_use")
            || data.contains("custom_tool_call")
    }

    /// Whether a tool call is open: begun and not yet complete (so not yet
    /// checked whole).
    pub fn holding(&self) -> bool {
        !self.open.is_empty() || !self.items.is_empty()
    }

    /// The name of a call that is open, for messages.
    pub fn open_tool(&self) -> Option<String> {
        self.open
            .values()
            .map(|(name, _)| name)
            .chain(self.items.values())
            .next()
            .cloned()
    }

    /// Checks one parsed event; an error refuses the rest of the stream.
    pub fn event(&mut self, api: Api, v: &Value) -> Result<(), ToolFault> {
        match api {
            Api::ChatCompletions => self.chat_chunk(v),
            Api::Responses => self.responses_event(v),
            Api::Messages => self.anthropic_event(v),
            Api::Embeddings => Ok(()),
        }
    }

    /// One more call opened in `choice`, within the policy's limit.
    fn opened(&mut self, choice: u64) -> Result<(), ToolFault> {
        let n = self.opened.entry(choice).or_insert(0);
        *n += 1;
        let n = *n;
        self.declared.check_count(n)
    }

    /// Closes every open call whose key starts with `choice` (all when None).
    fn close(&mut self, choice: Option<u64>) -> Result<(), ToolFault> {
        let keys: Vec<(u64, u64)> = self
            .open
            .keys()
            .filter(|(c, _)| choice.is_none_or(|x| x == *c))
            .copied()
            .collect();
        for key in keys {
            if let Some((name, arguments)) = self.open.remove(&key) {
                self.declared
                    .check_arguments(&name, &arguments, &mut self.flagged)?;
            }
        }
        Ok(())
    }

    fn chat_chunk(&mut self, v: &Value) -> Result<(), ToolFault> {
        for choice in list(v.get("choices")) {
            let c = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let delta = choice.get("delta");
            let calls = delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                let i = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let f = call.get("function");
                if let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) {
                    self.declared.check_name(name)?;
                    if !self.open.contains_key(&(c, i)) {
                        self.opened(c)?;
                    }
                    self.open
                        .entry((c, i))
                        .or_insert((name.to_owned(), String::new()));
                }
                if let Some(piece) = f.and_then(|f| f.get("arguments")).and_then(Value::as_str)
                    && let Some((_, arguments)) = self.open.get_mut(&(c, i))
                {
                    arguments.push_str(piece);
                }
            }
            if let Some(f) = delta.and_then(|d| d.get("function_call")) {
                if let Some(name) = f.get("name").and_then(Value::as_str) {
                    self.declared.check_name(name)?;
                    self.open
                        .entry((c, u64::MAX))
                        .or_insert((name.to_owned(), String::new()));
                }
                if let Some(piece) = f.get("arguments").and_then(Value::as_str)
                    && let Some((_, arguments)) = self.open.get_mut(&(c, u64::MAX))
                {
                    arguments.push_str(piece);
                }
            }
            if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
                self.close(Some(c))?;
            }
        }
        Ok(())
    }

    fn responses_event(&mut self, v: &Value) -> Result<(), ToolFault> {
        match v.get("type").and_then(Value::as_str) {
            Some("response.output_item.added") => {
                if let Some(item) = v.get("item") {
                    let ty = item.get("type").and_then(Value::as_str);
                    if matches!(ty, Some("function_call" | "custom_tool_call")) {
                        let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
                        self.declared.check_name(name)?;
                        self.opened(0)?;
                        let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
                        self.items.insert(id.to_owned(), name.to_owned());
                    }
                }
                Ok(())
            }
            // The whole item, arguments complete, at its end.
            Some("response.output_item.done") => match v.get("item") {
                Some(item) => {
                    let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
                    self.items.remove(id);
                    check_responses_item(&self.declared, item, &mut self.flagged)
                }
                None => Ok(()),
            },
            // The response ended: nothing is open any more.
            Some("response.completed" | "response.incomplete" | "response.failed") => {
                self.items.clear();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn anthropic_event(&mut self, v: &Value) -> Result<(), ToolFault> {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match v.get("type").and_then(Value::as_str) {
            Some("content_block_start") => {
                let block = v.get("content_block");
                if block.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use") {
                    let name = block
                        .and_then(|b| b.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    self.declared.check_name(name)?;
                    self.opened(0)?;
                    self.open
                        .insert((index, 0), (name.to_owned(), String::new()));
                }
                Ok(())
            }
            Some("content_block_delta") => {
                if let Some(piece) = v.pointer("/delta/partial_json").and_then(Value::as_str)
                    && let Some((_, arguments)) = self.open.get_mut(&(index, 0))
                {
                    arguments.push_str(piece);
                }
                Ok(())
            }
            Some("content_block_stop") => self.close(Some(index)),
            Some("message_stop") => self.close(None),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn declared_tools_of_each_api() {
        let chat = json!({"tools": [{"type": "function", "function": {"name": "lookup"}}], "functions": [{"name": "legacy"}]});
        let d = Declared::of(Api::ChatCompletions, &chat);
        assert!(d.check_name("lookup").is_ok() && d.check_name("legacy").is_ok());
        assert_eq!(
            d.check_name("send_email"),
            Err(ToolFault::NotDeclared {
                tool: "send_email".into()
            })
        );
        let responses =
            json!({"tools": [{"type": "function", "name": "lookup"}, {"type": "web_search"}]});
        assert!(
            Declared::of(Api::Responses, &responses)
                .check_name("lookup")
                .is_ok()
        );
        // A stored prompt may declare tools the gateway cannot see.
        let stored = json!({"prompt": {"id": "pmpt_1"}});
        assert!(
            Declared::of(Api::Responses, &stored)
                .check_name("anything")
                .is_ok()
        );
        let messages = json!({"tools": [{"name": "lookup", "input_schema": {}}]});
        assert!(
            Declared::of(Api::Messages, &messages)
                .check_name("lookup")
                .is_ok()
        );
        assert!(
            Declared::of(Api::Messages, &json!({}))
                .check_name("lookup")
                .is_err()
        );
    }

    #[test]
    fn whole_answers_are_checked_for_names_and_arguments() {
        let d = Declared::of(
            Api::ChatCompletions,
            &json!({"tools": [{"type": "function", "function": {"name": "lookup"}}]}),
        );
        let call = |name: &str, args: &str| {
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": name, "arguments": args}}]}}]})
        };
        assert!(check_whole(Api::ChatCompletions, &d, &call("lookup", "{\"q\": 1}")).is_ok());
        assert_eq!(
            check_whole(Api::ChatCompletions, &d, &call("wire_money", "{}"))
                .unwrap_err()
                .code(),
            "tool_call_not_allowed"
        );
        assert_eq!(
            check_whole(Api::ChatCompletions, &d, &call("lookup", "{\"q\": "))
                .unwrap_err()
                .code(),
            "tool_arguments_invalid"
        );
        let r = Declared::of(
            Api::Responses,
            &json!({"tools": [{"type": "function", "name": "lookup"}]}),
        );
        let out = json!({"output": [{"type": "function_call", "name": "lookup", "arguments": "not json"}]});
        assert_eq!(
            check_whole(Api::Responses, &r, &out).unwrap_err().code(),
            "tool_arguments_invalid"
        );
        let m = Declared::of(Api::Messages, &json!({"tools": [{"name": "lookup"}]}));
        let out = json!({"content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "name": "rm_rf", "input": {}}]});
        assert_eq!(
            check_whole(Api::Messages, &m, &out).unwrap_err().code(),
            "tool_call_not_allowed"
        );
    }

    #[test]
    fn streamed_names_are_refused_at_once_and_arguments_at_the_end() {
        let d = Declared::of(Api::Messages, &json!({"tools": [{"name": "lookup"}]}));
        let mut s = StreamCheck::new(d.clone());
        let start = |name: &str| json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "name": name, "input": {}}});
        let delta = |p: &str| json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": p}});
        let stop = json!({"type": "content_block_stop", "index": 1});
        assert!(s.event(Api::Messages, &start("lookup")).is_ok());
        assert!(s.event(Api::Messages, &delta("{\"q\":")).is_ok());
        assert!(s.event(Api::Messages, &delta(" 1}")).is_ok());
        assert!(s.event(Api::Messages, &stop).is_ok());
        let mut s = StreamCheck::new(d.clone());
        assert_eq!(
            s.event(Api::Messages, &start("exfiltrate"))
                .unwrap_err()
                .code(),
            "tool_call_not_allowed"
        );
        let mut s = StreamCheck::new(d);
        assert!(s.event(Api::Messages, &start("lookup")).is_ok());
        assert!(s.event(Api::Messages, &delta("{\"q\": tr")).is_ok());
        assert_eq!(
            s.event(Api::Messages, &stop).unwrap_err().code(),
            "tool_arguments_invalid"
        );

        let d = Declared::of(
            Api::ChatCompletions,
            &json!({"tools": [{"type": "function", "function": {"name": "lookup"}}]}),
        );
        let mut s = StreamCheck::new(d);
        let chunk = |calls: Value, finish: Value| json!({"choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": finish}]});
        assert!(
            s.event(
                Api::ChatCompletions,
                &chunk(
                    json!([{"index": 0, "function": {"name": "lookup", "arguments": ""}}]),
                    Value::Null
                )
            )
            .is_ok()
        );
        assert!(
            s.event(
                Api::ChatCompletions,
                &chunk(
                    json!([{"index": 0, "function": {"arguments": "{\"q\""}}]),
                    Value::Null
                )
            )
            .is_ok()
        );
        assert_eq!(
            s.event(Api::ChatCompletions, &chunk(json!([]), json!("tool_calls")))
                .unwrap_err()
                .code(),
            "tool_arguments_invalid"
        );
    }

    #[test]
    fn a_strict_tool_s_arguments_are_checked_against_its_schema() {
        let schema = json!({"type": "object", "required": ["order"], "additionalProperties": false,
            "properties": {"order": {"type": "integer"}}});
        let chat = |strict: bool| {
            Declared::of(
                Api::ChatCompletions,
                &json!({"tools": [{"type": "function", "function": {"name": "lookup", "strict": strict, "parameters": schema}}]}),
            )
        };
        let answer = |args: &str| {
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "lookup", "arguments": args}}]}}]})
        };
        let strict = chat(true);
        assert!(check_whole(Api::ChatCompletions, &strict, &answer("{\"order\": 7}")).is_ok());
        let fault = check_whole(
            Api::ChatCompletions,
            &strict,
            &answer("{\"order\": \"seven\"}"),
        )
        .unwrap_err();
        assert_eq!(fault.code(), "tool_arguments_invalid");
        assert_eq!(
            fault,
            ToolFault::ArgumentsViolateSchema {
                tool: "lookup".into(),
                at: "/order".into()
            }
        );
        assert!(fault.message().contains("/order") && !fault.message().contains("seven"));
        // Not strict: only JSON is required.
        assert!(
            check_whole(
                Api::ChatCompletions,
                &chat(false),
                &answer("{\"order\": \"seven\"}")
            )
            .is_ok()
        );

        // Anthropic, whole (a parsed input) and streamed (assembled deltas).
        let d = Declared::of(
            Api::Messages,
            &json!({"tools": [{"name": "lookup", "strict": true, "input_schema": schema}]}),
        );
        let whole = |input: Value| json!({"content": [{"type": "tool_use", "id": "t", "name": "lookup", "input": input}]});
        assert!(check_whole(Api::Messages, &d, &whole(json!({"order": 1}))).is_ok());
        assert!(check_whole(Api::Messages, &d, &whole(json!({"order": 1, "to": "x"}))).is_err());
        let mut s = StreamCheck::new(d);
        let start = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "name": "lookup", "input": {}}});
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{}"}});
        assert!(s.event(Api::Messages, &start).is_ok());
        assert!(s.event(Api::Messages, &delta).is_ok());
        let fault = s
            .event(
                Api::Messages,
                &json!({"type": "content_block_stop", "index": 0}),
            )
            .unwrap_err();
        assert_eq!(
            fault,
            ToolFault::ArgumentsViolateSchema {
                tool: "lookup".into(),
                at: String::new()
            }
        );

        // Responses: the item's arguments at its end.
        let d = Declared::of(
            Api::Responses,
            &json!({"tools": [{"type": "function", "name": "lookup", "strict": true, "parameters": schema}]}),
        );
        let mut s = StreamCheck::new(d);
        let done = json!({"type": "response.output_item.done", "item": {"type": "function_call", "name": "lookup", "arguments": "{\"order\": []}"}});
        assert_eq!(
            s.event(Api::Responses, &done).unwrap_err().code(),
            "tool_arguments_invalid"
        );
    }

    #[test]
    fn hostile_arguments_and_schemas_are_refused_or_skipped_never_a_crash() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let huge = format!("{{\"q\": \"{}\"}}", "x".repeat(10 << 20));
        let recursive = json!({"$ref": "#", "type": "object"});
        let invalid = json!({"type": "no-such-type"});
        let large = json!({"type": "object", "description": "d".repeat(super::super::output_schema::MAX_SCHEMA_BYTES)});
        for schema in [recursive, invalid, large] {
            let d = Declared::of(
                Api::ChatCompletions,
                &json!({"tools": [{"type": "function", "function": {"name": "t", "strict": true, "parameters": schema}}]}),
            );
            let answer = |args: &str| {
                json!({"choices": [{"index": 0, "message": {"tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "t", "arguments": args}}]}}]})
            };
            // Nested past serde_json's depth limit: not JSON it will read.
            assert_eq!(
                check_whole(Api::ChatCompletions, &d, &answer(&deep))
                    .unwrap_err()
                    .code(),
                "tool_arguments_invalid"
            );
            // Large but valid: read once, checked (or only parsed when the
            // schema could not be compiled).
            let _ = check_whole(Api::ChatCompletions, &d, &answer(&huge));
            assert!(check_whole(Api::ChatCompletions, &d, &answer("{}")).is_ok());
        }
        // Brackets inside strings are text, not nesting.
        let in_string = format!("{{\"q\": \"{}\\\"\"}}", "[".repeat(500));
        assert!(!nesting_exceeds(&in_string, MAX_ARGUMENT_DEPTH));
        assert!(serde_json::from_str::<Value>(&in_string).is_ok());
        assert!(nesting_exceeds(&deep, MAX_ARGUMENT_DEPTH));
        let at_limit = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(!nesting_exceeds(&at_limit, MAX_ARGUMENT_DEPTH));
        assert!(serde_json::from_str::<Value>(&at_limit).is_ok());
        let past = format!("[{at_limit}]");
        assert!(nesting_exceeds(&past, MAX_ARGUMENT_DEPTH));
        assert!(serde_json::from_str::<Value>(&past).is_err());
    }

    #[test]
    fn wildcards_and_rules() {
        for (p, n, m) in [
            ("lookup", "lookup", true),
            ("lookup", "lookups", false),
            ("search_*", "search_web", true),
            ("search_*", "search_", true),
            ("*_admin", "db_admin", true),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("", "x", false),
        ] {
            assert_eq!(wildcard(p, n), m, "{p} {n}");
        }
        let rules = ToolRules {
            allow: Some(vec!["lookup".into(), "search_*".into()]),
            deny: vec!["search_private*".into()],
            max_calls: Some(2),
            calls: std::sync::Arc::new([]),
        };
        assert!(rules.permits("lookup") && rules.permits("search_web"));
        assert!(!rules.permits("search_private_docs") && !rules.permits("send_email"));
        let d = Declared::of(
            Api::Messages,
            &json!({"tools": [{"name": "lookup"}, {"name": "send_email"}]}),
        );
        assert_eq!(rules.refused(&d), Some("send_email"));
        assert_eq!(ToolRules::default().refused(&d), None);
        assert_eq!(
            rules.describe(),
            "allow=lookup,search_* deny=search_private* max_calls=2"
        );
    }

    #[test]
    fn calls_beyond_the_limit_are_refused_whole_and_streamed() {
        let d = Declared::of(Api::Messages, &json!({"tools": [{"name": "lookup"}]})).limited(
            &ToolRules {
                max_calls: Some(2),
                ..ToolRules::default()
            },
        );
        let use_ = json!({"type": "tool_use", "name": "lookup", "input": {}});
        let two = json!({"content": [use_, use_]});
        let three = json!({"content": [use_, use_, use_]});
        assert!(check_whole(Api::Messages, &d, &two).is_ok());
        assert_eq!(
            check_whole(Api::Messages, &d, &three).unwrap_err(),
            ToolFault::TooMany { max: 2 }
        );
        let mut s = StreamCheck::new(d);
        for (i, ok) in [(0, true), (1, true), (2, false)] {
            let start = json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "name": "lookup", "input": {}}});
            assert_eq!(s.event(Api::Messages, &start).is_ok(), ok, "call {i}");
            let stop = json!({"type": "content_block_stop", "index": i});
            let _ = s.event(Api::Messages, &stop);
        }
    }

    #[test]
    fn names_in_messages_are_cut_and_printable() {
        let fault = ToolFault::NotDeclared {
            tool: format!("a\nb{}", "x".repeat(100)),
        };
        let message = fault.message();
        assert!(!message.contains('\n'));
        assert!(message.len() < 200);
    }
}
