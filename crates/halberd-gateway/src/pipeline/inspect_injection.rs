//! Stage 4a, prompt injection: every text part of the [`Exchange`] scored by
//! the layered detector, with the threshold of the part's trust level.
//!
//! Trust follows provenance: the operator's system and developer prompts are
//! `operator`; tool results and documents are `untrusted` (indirect injection
//! arrives there); user turns, replayed model turns and tool definitions are
//! `user`. Tool-call arguments the model wrote, its reasoning and embedding
//! input are not instructions to anyone and are not scored.
//!
//! A part at or above its block threshold refuses the request
//! (`prompt_injection_detected`, naming the part, never quoting it); parts at
//! or above a flag threshold pass and are reported in the response header
//! [`INJECTION_HEADER`] and the guard log.

use halberd_guard::injection::{Detector, Trust, Verdict};
use halberd_protocol::{Exchange, PartKind, Provenance};

use crate::config::InjectionPolicy;
use crate::error::GatewayError;

/// `flag score=0.713 at=/messages/2/content signals=rule:…,classifier`
pub const INJECTION_HEADER: &str = "x-halberd-injection";

/// One part that reached a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Flagged {
    pub pointer: String,
    pub provenance: &'static str,
    pub score: f32,
    pub signals: Vec<String>,
}

/// Parts that were flagged, highest score first.
#[derive(Debug, Default)]
pub struct InjectionReport {
    pub flagged: Vec<Flagged>,
}

impl InjectionReport {
    /// The header value: the highest-scoring part, and how many were flagged.
    pub fn header(&self) -> Option<String> {
        let top = self.flagged.first()?;
        let mut value = format!(
            "flag score={:.3} at={} provenance={} signals={}",
            top.score,
            top.pointer,
            top.provenance,
            top.signals.join(",")
        );
        if self.flagged.len() > 1 {
            value.push_str(&format!(" parts={}", self.flagged.len()));
        }
        Some(value)
    }
}

/// The trust level a part is scored at, or `None` when it is not scored.
pub fn trust(provenance: Provenance, kind: PartKind) -> Option<Trust> {
    match kind {
        PartKind::ToolArguments | PartKind::Reasoning | PartKind::EmbeddingInput => None,
        PartKind::ToolResult => Some(Trust::Untrusted),
        PartKind::Text | PartKind::ToolDefinition => Some(match provenance {
            Provenance::Operator => Trust::Operator,
            Provenance::Tool | Provenance::Document => Trust::Untrusted,
            Provenance::User | Provenance::Model => Trust::User,
        }),
    }
}

pub fn inspect_injection(
    policy: &InjectionPolicy,
    exchange: &Exchange,
) -> Result<InjectionReport, GatewayError> {
    let mut report = InjectionReport::default();
    if !policy.enabled {
        return Ok(report);
    }
    let detector = Detector::shared();
    for part in &exchange.parts {
        let Some(trust) = trust(part.provenance, part.kind) else {
            continue;
        };
        if part.text.trim().is_empty() {
            continue;
        }
        let assessment = detector.assess(&part.text, trust);
        match policy.thresholds(trust).verdict(assessment.score) {
            Verdict::Allow => {}
            Verdict::Block => {
                return Err(GatewayError::PromptInjection {
                    at: part.pointer.clone(),
                    provenance: part.provenance.as_str(),
                    score_milli: (assessment.score * 1000.0).round().clamp(0.0, 1000.0) as u16,
                });
            }
            Verdict::Flag => report.flagged.push(Flagged {
                pointer: part.pointer.clone(),
                provenance: part.provenance.as_str(),
                score: assessment.score,
                signals: assessment.signals,
            }),
        }
    }
    report.flagged.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_follows_provenance_and_kind() {
        assert_eq!(
            trust(Provenance::Operator, PartKind::Text),
            Some(Trust::Operator)
        );
        assert_eq!(trust(Provenance::User, PartKind::Text), Some(Trust::User));
        assert_eq!(trust(Provenance::Model, PartKind::Text), Some(Trust::User));
        assert_eq!(
            trust(Provenance::Tool, PartKind::Text),
            Some(Trust::Untrusted)
        );
        assert_eq!(
            trust(Provenance::User, PartKind::ToolResult),
            Some(Trust::Untrusted)
        );
        assert_eq!(trust(Provenance::Model, PartKind::ToolArguments), None);
        assert_eq!(trust(Provenance::User, PartKind::EmbeddingInput), None);
    }

    #[test]
    fn header_names_the_top_part_and_the_count() {
        let report = InjectionReport {
            flagged: vec![
                Flagged {
                    pointer: "/messages/2/content".into(),
                    provenance: "tool",
                    score: 0.8,
                    signals: vec!["classifier:segment".into()],
                },
                Flagged {
                    pointer: "/messages/0/content".into(),
                    provenance: "user",
                    score: 0.7,
                    signals: vec![],
                },
            ],
        };
        assert_eq!(
            report.header().as_deref(),
            Some(
                "flag score=0.800 at=/messages/2/content provenance=tool signals=classifier:segment parts=2"
            )
        );
        assert_eq!(InjectionReport::default().header(), None);
    }
}
