//! What happens to a finding: the actions of a policy and the text they produce.

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Finding, Kind};

/// The action a policy takes for one type of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replace with a typed placeholder: `[EMAIL]`, `[SECRET:aws_access_key_id]`.
    Redact,
    /// Keep the last four characters, star the rest.
    Mask,
    /// Replace with a keyed hash, stable for the key, so records can be joined.
    Hash,
    /// Send `<EMAIL_1>` upstream and restore the value in the response.
    Pseudonymize,
    /// Refuse the request (or end the response).
    Block,
    /// Let the text pass and record the finding.
    Flag,
    Off,
}

impl Action {
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "redact" => Action::Redact,
            "mask" => Action::Mask,
            "hash" => Action::Hash,
            "pseudonymize" => Action::Pseudonymize,
            "block" => Action::Block,
            "flag" => Action::Flag,
            "off" => Action::Off,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Redact => "redact",
            Action::Mask => "mask",
            Action::Hash => "hash",
            Action::Pseudonymize => "pseudonymize",
            Action::Block => "block",
            Action::Flag => "flag",
            Action::Off => "off",
        }
    }

    /// Whether the action changes the text.
    pub fn edits(self) -> bool {
        matches!(
            self,
            Action::Redact | Action::Mask | Action::Hash | Action::Pseudonymize
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("unknown finding type `{0}`; expected one of {types}", types = Kind::TYPE_NAMES.join(", "))]
    UnknownType(String),
    #[error("unknown action `{0}`; expected redact, mask, hash, pseudonymize, block, flag or off")]
    UnknownAction(String),
}

/// Which action applies to each finding type, plus per-family overrides for
/// secrets (`secret:aws_access_key_id`).
#[derive(Debug, Clone)]
pub struct Policy {
    by_type: HashMap<&'static str, Action>,
    by_secret: HashMap<String, Action>,
    hash_key: Vec<u8>,
}

impl Policy {
    /// The default of DESIGN.md: every secret and every structured PII type is
    /// redacted.
    pub fn redact_all() -> Policy {
        Policy::uniform(Action::Redact)
    }

    pub fn uniform(action: Action) -> Policy {
        Policy {
            by_type: Kind::TYPE_NAMES
                .iter()
                .map(|name| (*name, action))
                .collect(),
            by_secret: HashMap::new(),
            hash_key: Vec::new(),
        }
    }

    /// Set the action for `type_name` (`email`, `secret`, `secret:npm_token`, ...).
    pub fn set(&mut self, type_name: &str, action: &str) -> Result<(), PolicyError> {
        let action =
            Action::parse(action).ok_or_else(|| PolicyError::UnknownAction(action.to_owned()))?;
        if let Some(family) = type_name.strip_prefix("secret:") {
            if !super::RULES
                .iter()
                .any(|rule| rule.kind == Kind::Secret(rule.id) && rule.id == family)
            {
                return Err(PolicyError::UnknownType(type_name.to_owned()));
            }
            self.by_secret.insert(family.to_owned(), action);
            return Ok(());
        }
        let name = Kind::TYPE_NAMES
            .iter()
            .find(|name| **name == type_name)
            .ok_or_else(|| PolicyError::UnknownType(type_name.to_owned()))?;
        self.by_type.insert(name, action);
        Ok(())
    }

    /// The key of the `hash` action; without one, hashes are unkeyed SHA-256.
    pub fn with_hash_key(mut self, key: &[u8]) -> Policy {
        self.hash_key = key.to_vec();
        self
    }

    pub fn action(&self, kind: Kind) -> Action {
        if let Some(action) = kind
            .secret_kind()
            .and_then(|family| self.by_secret.get(family))
        {
            return *action;
        }
        self.by_type
            .get(kind.type_name())
            .copied()
            .unwrap_or(Action::Off)
    }

    /// Actions by type, for `halberd config check`.
    pub fn describe(&self) -> Vec<(String, &'static str)> {
        let mut rows: Vec<(String, &'static str)> = Kind::TYPE_NAMES
            .iter()
            .map(|name| {
                (
                    (*name).to_owned(),
                    self.by_type
                        .get(name)
                        .copied()
                        .unwrap_or(Action::Off)
                        .name(),
                )
            })
            .collect();
        let mut secrets: Vec<_> = self
            .by_secret
            .iter()
            .map(|(k, v)| (format!("secret:{k}"), v.name()))
            .collect();
        secrets.sort();
        rows.extend(secrets);
        rows
    }

    pub fn is_off(&self) -> bool {
        self.by_type.values().all(|a| *a == Action::Off)
            && self.by_secret.values().all(|a| *a == Action::Off)
    }

    /// Whether some finding would change or stop the text (an editing action or
    /// `block`). A streamed text under a policy that only flags or ignores
    /// findings is released as it arrives.
    pub fn changes_text(&self) -> bool {
        self.by_type
            .values()
            .chain(self.by_secret.values())
            .any(|a| a.edits() || *a == Action::Block)
    }

    fn hash(&self, value: &str) -> String {
        let digest: Vec<u8> = match Hmac::<Sha256>::new_from_slice(&self.hash_key) {
            Ok(mut mac) => {
                mac.update(value.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        };
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

/// The placeholders of one request: the same value always gets the same
/// placeholder, and the mapping never leaves memory.
#[derive(Debug, Default, Clone)]
pub struct Pseudonyms {
    by_value: HashMap<String, String>,
    by_placeholder: HashMap<String, String>,
    counters: HashMap<&'static str, usize>,
}

impl Pseudonyms {
    fn placeholder(&mut self, kind: Kind, value: &str) -> String {
        if let Some(existing) = self.by_value.get(value) {
            return existing.clone();
        }
        let label = label(kind);
        let counter = self
            .counters
            .entry(kind.secret_kind().unwrap_or(kind.type_name()))
            .or_insert(0);
        *counter += 1;
        let placeholder = match kind.secret_kind() {
            Some(family) => format!("<SECRET_{}_{counter}>", family.to_ascii_uppercase()),
            None => format!("<{label}_{counter}>"),
        };
        self.by_value.insert(value.to_owned(), placeholder.clone());
        self.by_placeholder
            .insert(placeholder.clone(), value.to_owned());
        placeholder
    }

    pub fn is_empty(&self) -> bool {
        self.by_placeholder.is_empty()
    }

    /// The original value of a placeholder.
    pub fn value(&self, placeholder: &str) -> Option<&str> {
        self.by_placeholder.get(placeholder).map(String::as_str)
    }
}

fn label(kind: Kind) -> String {
    kind.type_name().to_ascii_uppercase()
}

/// One finding with the action taken on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit {
    pub finding: Finding,
    pub action: Action,
}

/// The result of applying a policy to a text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redaction {
    pub text: String,
    /// Every finding whose action is not `off`, in order.
    pub edits: Vec<Edit>,
}

impl Redaction {
    pub fn blocked(&self) -> Option<Kind> {
        self.edits
            .iter()
            .find(|e| e.action == Action::Block)
            .map(|e| e.finding.kind)
    }

    pub fn changed(&self) -> bool {
        self.edits.iter().any(|e| e.action.edits())
    }
}

/// Apply `policy` to `findings` (sorted, not overlapping) of `text`.
pub fn redact(
    text: &str,
    findings: &[Finding],
    policy: &Policy,
    pseudonyms: &mut Pseudonyms,
) -> Redaction {
    let mut out = String::with_capacity(text.len());
    let mut edits = Vec::new();
    let mut copied = 0;
    for finding in findings {
        let action = policy.action(finding.kind);
        if action == Action::Off {
            continue;
        }
        edits.push(Edit {
            finding: *finding,
            action,
        });
        if !action.edits() {
            continue;
        }
        out.push_str(&text[copied..finding.start]);
        let value = &text[finding.start..finding.end];
        replace(&mut out, finding.kind, value, action, policy, pseudonyms);
        copied = finding.end;
    }
    out.push_str(&text[copied..]);
    Redaction { text: out, edits }
}

pub(crate) fn replace(
    out: &mut String,
    kind: Kind,
    value: &str,
    action: Action,
    policy: &Policy,
    pseudonyms: &mut Pseudonyms,
) {
    let tag = match kind.secret_kind() {
        Some(family) => format!("SECRET:{family}"),
        None => label(kind),
    };
    match action {
        Action::Redact => {
            out.push('[');
            out.push_str(&tag);
            out.push(']');
        }
        Action::Mask => {
            let chars = value.chars().count();
            let keep = if chars > 8 { 4 } else { 0 };
            out.extend(std::iter::repeat_n('*', chars - keep));
            out.extend(value.chars().skip(chars - keep));
        }
        Action::Hash => {
            out.push('[');
            out.push_str(&tag);
            out.push(':');
            out.push_str(&policy.hash(value));
            out.push(']');
        }
        Action::Pseudonymize => out.push_str(&pseudonyms.placeholder(kind, value)),
        Action::Block | Action::Flag | Action::Off => out.push_str(value),
    }
}

/// Restores pseudonym placeholders in a streamed response. A `<` that could
/// still begin a placeholder is held back until the placeholder completes or
/// cannot; everything else is released at once.
#[derive(Debug, Default)]
pub struct Restorer {
    pending: String,
}

/// The longest placeholder: `<SECRET_` + family + `_` + counter + `>`.
const MAX_PLACEHOLDER: usize = 64;

impl Restorer {
    pub fn push(&mut self, chunk: &str, pseudonyms: &Pseudonyms) -> String {
        self.pending.push_str(chunk);
        let mut out = String::with_capacity(self.pending.len());
        let mut rest = self.pending.as_str();
        loop {
            let Some(open) = rest.find('<') else {
                out.push_str(rest);
                rest = "";
                break;
            };
            out.push_str(&rest[..open]);
            let tail = &rest[open..];
            let body_len = tail[1..]
                .bytes()
                .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
                .count();
            if 1 + body_len == tail.len() && tail.len() < MAX_PLACEHOLDER {
                // Could still become a placeholder: hold it.
                rest = tail;
                break;
            }
            if tail.as_bytes().get(1 + body_len) == Some(&b'>') {
                let placeholder = &tail[..body_len + 2];
                match pseudonyms.value(placeholder) {
                    Some(value) => out.push_str(value),
                    None => out.push_str(placeholder),
                }
                rest = &tail[body_len + 2..];
            } else {
                out.push('<');
                rest = &tail[1..];
            }
        }
        self.pending = rest.to_owned();
        out
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Restore every placeholder in a complete text.
    pub fn restore_all(text: &str, pseudonyms: &Pseudonyms) -> String {
        let mut restorer = Restorer::default();
        let mut out = restorer.push(text, pseudonyms);
        out.push_str(&restorer.finish());
        out
    }
}
