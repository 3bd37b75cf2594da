//! Per-policy rules on the tool calls in an answer (`[[policies.tools.rules]]`):
//! which calls a policy refuses or flags, beyond what the request declared.
//!
//! A rule names tools (names or `*` patterns) and, optionally, constraints on
//! the call's arguments:
//!
//! - `max_bytes`: the arguments' size as the model wrote them;
//! - per argument (a top-level key, or a JSON Pointer starting with `/`):
//!   `pattern` (a regular expression the whole string must match, linear
//!   time), `enum` (the allowed values), `hosts` (for tools that fetch or
//!   send: the value must be an absolute http(s) URL to one of these hosts,
//!   read as a browser would, `*.example.com` for subdomains).
//!
//! A rule without constraints matches every call to its tools; one with
//! constraints matches a call that breaks any of them. An argument the call
//! does not pass breaks nothing (the tool's schema says what is required);
//! an array is checked element by element. Actions: `block` (the default:
//! the answer is refused with `tool_call_blocked`, 403; streamed, the stream
//! ends with that error when the call is complete) or `flag` (logged, guard
//! `tool_policy`, action `flag`). Messages name the tool, the argument and
//! the kind of constraint, never the value.

use serde_json::Value;

use halberd_guard::links::HostList;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallAction {
    Block,
    Flag,
}

/// One constraint on one argument.
#[derive(Debug, Clone)]
pub enum Constraint {
    Pattern(regex::Regex),
    Enum(Vec<Value>),
    Hosts(HostList),
}

impl Constraint {
    fn name(&self) -> &'static str {
        match self {
            Constraint::Pattern(_) => "pattern",
            Constraint::Enum(_) => "enum",
            Constraint::Hosts(_) => "hosts",
        }
    }

    fn admits(&self, value: &Value) -> bool {
        if let Value::Array(items) = value
            && !matches!(self, Constraint::Enum(_))
        {
            return items.iter().all(|v| self.admits(v));
        }
        match self {
            Constraint::Enum(allowed) => match value {
                Value::Array(items) => items.iter().all(|v| allowed.contains(v)),
                v => allowed.contains(v),
            },
            Constraint::Pattern(re) => value.as_str().is_some_and(|s| re.is_match(s)),
            Constraint::Hosts(hosts) => value.as_str().is_some_and(|s| hosts.allows_url(s)),
        }
    }
}

/// One rule of `[[policies.tools.rules]]`, compiled.
#[derive(Debug, Clone)]
pub struct CallRule {
    pub tools: Vec<String>,
    pub action: CallAction,
    pub max_bytes: Option<usize>,
    /// (JSON Pointer, constraint).
    pub arguments: Vec<(String, Constraint)>,
}

/// A call a rule matched: which rule, and why (never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    pub tool: String,
    pub action: CallAction,
    /// `every call`, `max_bytes`, or `argument /url: hosts`.
    pub what: String,
}

impl CallRule {
    /// Compiles a rule from its file form; `at` names it in errors.
    pub fn build(file: &CallRuleFile) -> Result<CallRule, String> {
        if file.tools.is_empty() {
            return Err("tools: name at least one tool or pattern".into());
        }
        let action = match file.action.as_deref().unwrap_or("block") {
            "block" => CallAction::Block,
            "flag" => CallAction::Flag,
            other => return Err(format!("action: unknown action {other:?} (block or flag)")),
        };
        let mut arguments = Vec::new();
        for (name, c) in &file.arguments {
            let pointer = if name.starts_with('/') {
                name.clone()
            } else {
                format!("/{}", name.replace('~', "~0").replace('/', "~1"))
            };
            let mut any = false;
            if let Some(p) = &c.pattern {
                let re = regex::RegexBuilder::new(&format!("^(?:{p})$"))
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("arguments.{name}.pattern: {e}"))?;
                arguments.push((pointer.clone(), Constraint::Pattern(re)));
                any = true;
            }
            if let Some(values) = &c.r#enum {
                arguments.push((pointer.clone(), Constraint::Enum(values.clone())));
                any = true;
            }
            if let Some(hosts) = &c.hosts {
                let list =
                    HostList::parse(hosts).map_err(|e| format!("arguments.{name}.hosts: {e}"))?;
                arguments.push((pointer.clone(), Constraint::Hosts(list)));
                any = true;
            }
            if !any {
                return Err(format!("arguments.{name}: give pattern, enum or hosts"));
            }
        }
        Ok(CallRule {
            tools: file.tools.clone(),
            action,
            max_bytes: file.max_bytes,
            arguments,
        })
    }

    fn applies_to(&self, tool: &str) -> bool {
        self.tools
            .iter()
            .any(|p| super::tool_policy::wildcard(p, tool))
    }

    /// What this rule finds wrong with a call, if anything. `raw_len`: the
    /// size of the arguments as written; `parsed`: the same, parsed.
    fn breach(&self, raw_len: usize, parsed: &Value) -> Option<String> {
        if self.max_bytes.is_none() && self.arguments.is_empty() {
            return Some("every call".into());
        }
        if self.max_bytes.is_some_and(|max| raw_len > max) {
            return Some("max_bytes".into());
        }
        for (pointer, constraint) in &self.arguments {
            if let Some(value) = parsed.pointer(pointer)
                && !constraint.admits(value)
            {
                return Some(format!("argument {pointer}: {}", constraint.name()));
            }
        }
        None
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} {}",
            self.tools.join(","),
            match self.action {
                CallAction::Block => "block",
                CallAction::Flag => "flag",
            }
        );
        if let Some(max) = self.max_bytes {
            s.push_str(&format!(" max_bytes={max}"));
        }
        for (pointer, c) in &self.arguments {
            s.push_str(&format!(" {pointer}:{}", c.name()));
        }
        s
    }
}

/// Checks one complete call against every rule: the first blocking breach,
/// else every flagging one.
pub fn check(rules: &[CallRule], tool: &str, raw_len: usize, parsed: &Value) -> Vec<Breach> {
    let mut found = Vec::new();
    for rule in rules.iter().filter(|r| r.applies_to(tool)) {
        if let Some(what) = rule.breach(raw_len, parsed) {
            let breach = Breach {
                tool: tool.to_owned(),
                action: rule.action,
                what,
            };
            if rule.action == CallAction::Block {
                return vec![breach];
            }
            found.push(breach);
        }
    }
    found
}

/// Logs and counts the calls `flag` rules matched (guard `tool_policy`,
/// action `flag`): the tool's name, shown cut and printable, and what the
/// rule found, never a value.
pub fn report(request_id: &str, flagged: &[Breach]) {
    for breach in flagged {
        crate::events::GuardTriggered {
            request_id,
            guard: "tool_policy",
            kind: &format!(
                "'{}': {}",
                super::tool_policy::shown(&breach.tool),
                breach.what
            ),
            action: "flag",
        }
        .emit();
    }
}

/// `[[policies.tools.rules]]` as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRuleFile {
    pub tools: Vec<String>,
    pub action: Option<String>,
    pub max_bytes: Option<usize>,
    #[serde(default)]
    pub arguments: std::collections::BTreeMap<String, ConstraintFile>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintFile {
    pub pattern: Option<String>,
    pub r#enum: Option<Vec<Value>>,
    pub hosts: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(toml_text: &str) -> CallRule {
        CallRule::build(&toml::from_str::<CallRuleFile>(toml_text).unwrap()).unwrap()
    }

    #[test]
    fn constraints_on_arguments() {
        let r = rule(
            r#"
            tools = ["http_*"]
            max_bytes = 200
            [arguments.url]
            hosts = ["api.example.com", "*.example.org"]
            [arguments.method]
            enum = ["GET", "HEAD"]
            [arguments."/headers/to"]
            pattern = "[a-z.]+@example\\.com"
            "#,
        );
        let rules = [r];
        let run = |args: Value| check(&rules, "http_get", args.to_string().len(), &args);
        assert!(run(json!({"url": "https://api.example.com/v1/x", "method": "GET"})).is_empty());
        assert!(run(json!({"url": "https://a.b.example.org/"})).is_empty());
        // Missing arguments break nothing.
        assert!(run(json!({})).is_empty());
        for (args, what) in [
            (
                json!({"url": "https://collector.example/?d=1"}),
                "argument /url: hosts",
            ),
            (
                json!({"url": "https://api.example.com@collector.example/"}),
                "argument /url: hosts",
            ),
            (json!({"url": "/relative"}), "argument /url: hosts"),
            (
                json!({"url": ["https://api.example.com/", "https://evil.example/"]}),
                "argument /url: hosts",
            ),
            (json!({"method": "POST"}), "argument /method: enum"),
            (
                json!({"headers": {"to": "x@evil.example"}}),
                "argument /headers/to: pattern",
            ),
            (
                json!({"headers": {"to": "ann@example.com.evil.example"}}),
                "argument /headers/to: pattern",
            ),
            (
                json!({"method": "GET", "pad": "x".repeat(300)}),
                "max_bytes",
            ),
        ] {
            let found = run(args.clone());
            assert_eq!(found.len(), 1, "{args}");
            assert_eq!(found[0].what, what, "{args}");
            assert_eq!(found[0].action, CallAction::Block);
        }
        // Other tools are not this rule's concern.
        assert!(check(&rules, "lookup", 2, &json!({"method": "POST"})).is_empty());
    }

    #[test]
    fn a_rule_without_constraints_matches_every_call_and_flag_rules_accumulate() {
        let rules = [
            rule("tools = [\"send_email\"]\naction = \"flag\""),
            rule(
                "tools = [\"send_*\"]\naction = \"flag\"\n[arguments.to]\npattern = \".*@example\\\\.com\"",
            ),
        ];
        let args = json!({"to": "x@evil.example"});
        let found = check(&rules, "send_email", args.to_string().len(), &args);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|b| b.action == CallAction::Flag));
        assert_eq!(found[0].what, "every call");
    }

    #[test]
    fn bad_rules_are_refused_with_the_field() {
        for (text, expect) in [
            ("tools = []", "tools"),
            ("tools = [\"a\"]\naction = \"strip\"", "action"),
            (
                "tools = [\"a\"]\n[arguments.x]\npattern = \"(\"",
                "arguments.x.pattern",
            ),
            (
                "tools = [\"a\"]\n[arguments.x]\nhosts = [\"http://x/\"]",
                "arguments.x.hosts",
            ),
            ("tools = [\"a\"]\n[arguments.x]", "arguments.x"),
        ] {
            let e = CallRule::build(&toml::from_str::<CallRuleFile>(text).unwrap()).unwrap_err();
            assert!(e.starts_with(expect), "{text}: {e}");
        }
    }
}
