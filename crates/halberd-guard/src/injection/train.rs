//! Training both heads from labelled texts (`halberd train-injection`).
//!
//! Which text trains which head:
//! - prompt head: every user-provenance text as itself (attacks and benign),
//!   and benign documents as negatives, so whole documents score low;
//! - segment head: positives are bare instructions found in documents (the
//!   BIPIA instruction texts) and the first window of every user prompt, benign
//!   or not, because a prompt to the model inside a document is exactly what an
//!   indirect injection is; negatives are every window of benign documents.
//!   Documents with an inserted attack are left out: which of their windows is
//!   the attack is not labelled.

use super::model::{self, Example, Model, TrainConfig};
use super::normalize;

/// One labelled text, as in the dataset files.
#[derive(Debug, Clone)]
pub struct Labeled {
    pub text: String,
    pub attack: bool,
    /// `user` or `document`.
    pub document: bool,
    /// The source name; `*-instruction` marks bare instructions from documents.
    pub source: String,
    /// A benign document written to calibrate the segment head (our API
    /// results and reader-addressed text, `scripts/injection_training_docs.py`):
    /// it does not train the prompt head. That head's training set, and with
    /// it the user-turn thresholds chosen by cross-validation, stay as they
    /// were; the question these documents teach ("is this sentence addressed
    /// to the model?") is the segment head's.
    pub segment_only: bool,
}

/// Trains the model. Deterministic for a given input order and config.
pub fn train(items: &[Labeled], config: TrainConfig) -> Model {
    let mut prompt = Vec::new();
    let mut segment = Vec::new();
    let mut features = Vec::new();
    for item in items {
        let normalized = normalize(&item.text);
        let tokens = model::tokenize(&normalized.text);
        let instruction = item.source.ends_with("-instruction");
        if !item.document || (!item.attack && !instruction && !item.segment_only) {
            model::features(&tokens, 0, tokens.hashes.len(), &mut features);
            prompt.push(Example {
                features: features.clone(),
                attack: item.attack,
            });
        }
        let windows = model::segments(&tokens);
        if instruction || !item.document {
            let end = tokens.hashes.len().min(model::WINDOW);
            model::features(&tokens, 0, end, &mut features);
            segment.push(Example {
                features: features.clone(),
                attack: true,
            });
        } else if !item.attack {
            for (s, e) in windows {
                model::features(&tokens, s, e, &mut features);
                segment.push(Example {
                    features: features.clone(),
                    attack: false,
                });
            }
        }
    }
    // The segment head counts each feature once per window (see
    // `Head::presence`).
    for e in &mut segment {
        e.features.sort_unstable();
        e.features.dedup();
    }
    let mut segment = model::train_head(&segment, config);
    segment.presence = true;
    Model {
        prompt: model::train_head(&prompt, config),
        segment,
    }
}
