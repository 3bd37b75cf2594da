//! The rule pack: TOML files under `rules/injection/`, compiled into one regex.
//!
//! Each rule has an id, a category, a weight (log-odds added to the score when
//! it fires) and one pattern, which runs on the normalised text. Each also
//! carries positive and negative examples; `cargo test` checks every one.

use std::collections::BTreeMap;

use regex_automata::{
    hybrid::dfa::DFA,
    meta,
    nfa::thompson::{self, WhichCaptures},
    util::syntax,
};
use serde::Deserialize;
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

use super::walks::Walks;

/// The rule files, compiled in. Order matters only for the leftmost-first
/// tie-break between rules that match at the same position.
pub const PACK: &[(&str, &str)] = &[
    (
        "override.toml",
        include_str!("../../rules/injection/override.toml"),
    ),
    (
        "persona.toml",
        include_str!("../../rules/injection/persona.toml"),
    ),
    (
        "extraction.toml",
        include_str!("../../rules/injection/extraction.toml"),
    ),
    (
        "template.toml",
        include_str!("../../rules/injection/template.toml"),
    ),
    (
        "exfiltration.toml",
        include_str!("../../rules/injection/exfiltration.toml"),
    ),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defs: BTreeMap<String, String>,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    category: String,
    weight: f32,
    pattern: String,
    #[serde(default)]
    positive: Vec<String>,
    #[serde(default)]
    negative: Vec<String>,
}

/// One rule, with its pattern expanded and folded.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub category: String,
    pub weight: f32,
    pub pattern: String,
    pub positive: Vec<String>,
    pub negative: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("rule {id}: {message}")]
    Pattern { id: String, message: String },
}

/// A match of one rule in the normalised text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleHit {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
}

/// The compiled rule pack.
#[derive(Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    regex: meta::Regex,
    /// The same patterns as a lazy DFA, walked four ways to tell quickly
    /// whether anything matches at all.
    pub(crate) walks: Walks,
}

/// The most memory each lazy DFA cache of the rules may take. The states grow
/// with the variety of the text: 6 MB on the dev set, 9 MB on a 6.5 MB corpus
/// of every data set. Below that the cache is cleared and rebuilt over and
/// over (the sensitive-data detector's `DFA_CACHE` explains the cost); the
/// cache only grows as far as the traffic needs.
const RULES_CACHE: usize = 32 << 20;

fn syntax() -> syntax::Config {
    // Byte-oriented and ASCII-only classes: the text is already folded, and a
    // lazy DFA without Unicode word boundaries never gives up.
    syntax::Config::new().unicode(false).utf8(false)
}

/// Compiles one pattern on its own (tests, and error messages that name the rule).
pub fn compile(pattern: &str) -> Result<meta::Regex, String> {
    meta::Regex::builder()
        .syntax(syntax())
        .build(pattern)
        .map_err(|e| e.to_string())
}

/// Folds the non-ASCII letters of a pattern the way the normaliser folds
/// text (compatibility decomposition, marks dropped, lower case), so rules are
/// written with their natural spelling.
fn fold_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            decompose_compatible(c, |d| {
                if !is_combining_mark(d) {
                    out.extend(d.to_lowercase());
                }
            });
        }
    }
    out
}

fn expand(pattern: &str, defs: &BTreeMap<String, String>) -> String {
    let mut out = pattern.to_string();
    // Definitions may use earlier ones; two rounds cover the pack's nesting.
    for _ in 0..2 {
        for (name, value) in defs {
            out = out.replace(&format!("{{{{{name}}}}}"), value);
        }
    }
    out
}

impl RuleSet {
    /// Parses and compiles the given rule files.
    pub fn from_files(files: &[(&str, &str)]) -> Result<RuleSet, RuleError> {
        let mut rules = Vec::new();
        for (name, text) in files {
            let file: File = toml::from_str(text).map_err(|e| RuleError::Parse {
                file: (*name).to_string(),
                message: e.to_string(),
            })?;
            for spec in file.rule {
                let pattern = fold_pattern(&expand(&spec.pattern, &file.defs));
                if pattern.contains("{{") {
                    return Err(RuleError::Pattern {
                        id: spec.id,
                        message: "uses an undefined {{name}}".into(),
                    });
                }
                compile(&pattern).map_err(|message| RuleError::Pattern {
                    id: spec.id.clone(),
                    message,
                })?;
                rules.push(Rule {
                    id: spec.id,
                    category: spec.category,
                    weight: spec.weight,
                    pattern,
                    positive: spec.positive,
                    negative: spec.negative,
                });
            }
        }
        let patterns: Vec<&str> = rules.iter().map(|r| r.pattern.as_str()).collect();
        let regex = meta::Regex::builder()
            .syntax(syntax())
            .configure(meta::Config::new().hybrid_cache_capacity(RULES_CACHE))
            .build_many(&patterns)
            .map_err(|e| RuleError::Pattern {
                id: "(pack)".into(),
                message: e.to_string(),
            })?;
        let dfa = DFA::builder()
            .syntax(syntax())
            .thompson(thompson::Config::new().which_captures(WhichCaptures::None))
            .configure(DFA::config().cache_capacity(RULES_CACHE))
            .build_many(&patterns)
            .map_err(|e| RuleError::Pattern {
                id: "(pack)".into(),
                message: e.to_string(),
            })?;
        Ok(RuleSet {
            rules,
            regex,
            walks: Walks::new(dfa),
        })
    }

    /// The compiled-in pack.
    pub fn builtin() -> Result<RuleSet, RuleError> {
        RuleSet::from_files(PACK)
    }

    /// Every non-overlapping match, leftmost first. A text in which nothing
    /// matches (almost every text) takes one pass of four interleaved walks
    /// ([`walks`](super::walks)); one in which something does takes a second,
    /// exact pass.
    pub fn scan(&self, normalized: &str) -> Vec<RuleHit> {
        if !self.walks.may_match(normalized.as_bytes()) {
            return Vec::new();
        }
        self.exact(normalized)
    }

    /// [`RuleSet::scan`] without the walks.
    pub(crate) fn exact(&self, normalized: &str) -> Vec<RuleHit> {
        self.regex
            .find_iter(normalized.as_bytes())
            .map(|m| RuleHit {
                rule: m.pattern().as_usize(),
                start: m.start(),
                end: m.end(),
            })
            .collect()
    }
}
