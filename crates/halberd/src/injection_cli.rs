//! `halberd eval --dataset FILE` and `halberd train-injection`.
//!
//! Dataset files are JSON Lines: `text`, `label` (`attack` or `benign`),
//! optional `source` (metrics are printed per source) and optional
//! `provenance` (`user`, the default; `document`, `tool` or `untrusted` for
//! text from outside; `system` or `operator` for the operator's prompt), which
//! picks the trust level and so the thresholds. For training, `"head":
//! "segment"` marks a benign document that trains the document head only.
//! `scripts/injection_dataset.py` builds the train and dev files from
//! `../shared/data`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use halberd_guard::injection::model::TrainConfig;
use halberd_guard::injection::train::{Labeled, train};
use halberd_guard::injection::{Detector, Trust, default_thresholds};
use serde_json::Value;

pub struct Item {
    pub text: String,
    /// Items of one group share a cross-validation fold.
    pub group: u64,
    pub attack: bool,
    pub source: String,
    pub trust: Trust,
    /// `"head": "segment"`: a document that trains the document head only
    /// (see `train::Labeled::segment_only`).
    pub segment_only: bool,
}

pub fn trust_of(provenance: Option<&str>) -> Result<Trust> {
    Ok(match provenance.unwrap_or("user") {
        "user" => Trust::User,
        "document" | "tool" | "untrusted" | "retrieved" => Trust::Untrusted,
        "system" | "operator" | "developer" => Trust::Operator,
        other => bail!("unknown provenance {other:?} (user, document, tool, system)"),
    })
}

pub fn read_dataset(path: &Path) -> Result<Vec<Item>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut items = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let v: Value = serde_json::from_str(&line).with_context(at)?;
        let text = v["text"]
            .as_str()
            .with_context(|| format!("{}: no string `text`", at()))?;
        let attack = match v["label"].as_str() {
            Some("attack") => true,
            Some("benign") => false,
            _ => bail!("{}: `label` must be \"attack\" or \"benign\"", at()),
        };
        let group = v["group"].as_str().unwrap_or(text);
        items.push(Item {
            group: group.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            }),
            text: text.to_string(),
            attack,
            source: v["source"].as_str().unwrap_or("all").to_string(),
            trust: trust_of(v["provenance"].as_str()).with_context(at)?,
            segment_only: match v["head"].as_str() {
                None => false,
                Some("segment") => true,
                Some(other) => bail!("{}: unknown `head` {other:?} (only \"segment\")", at()),
            },
        });
    }
    Ok(items)
}

#[derive(Default)]
struct Tally {
    attacks: usize,
    benign: usize,
    detected_attacks: usize,
    detected_benign: usize,
    blocked_attacks: usize,
    blocked_benign: usize,
}

impl Tally {
    fn add(&mut self, attack: bool, detected: bool, blocked: bool) {
        if attack {
            self.attacks += 1;
            self.detected_attacks += usize::from(detected);
            self.blocked_attacks += usize::from(blocked);
        } else {
            self.benign += 1;
            self.detected_benign += usize::from(detected);
            self.blocked_benign += usize::from(blocked);
        }
    }

    /// Precision, recall and F1 of "detected" against the labels.
    fn prf(&self) -> (f64, f64, f64) {
        let precision = ratio(
            self.detected_attacks,
            self.detected_attacks + self.detected_benign,
        );
        let recall = ratio(self.detected_attacks, self.attacks);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        (precision, recall, f1)
    }
}

/// `value` with three decimals, or `-` where it is not defined (a recall
/// without attacks, a false-positive rate without benign items).
fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// ROC-AUC by the rank statistic (ties count half).
fn roc_auc(scored: &[(f32, bool)]) -> Option<f64> {
    let mut sorted: Vec<(f32, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = sorted.iter().filter(|s| s.1).count();
    let negatives = sorted.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let average_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += average_rank * sorted[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Runs the evaluation and prints the report. Returns the overall figures.
pub fn eval(
    path: &Path,
    model: Option<&Path>,
    show_errors: usize,
    scores_to: Option<&Path>,
    fail_under: Option<f64>,
) -> Result<()> {
    let items = read_dataset(path)?;
    if items.is_empty() {
        bail!("{} holds no items", path.display());
    }
    // The compiled-in model, or a weights file (to score a model just trained
    // without rebuilding the binary).
    let loaded;
    let detector = match model {
        None => Detector::shared(),
        Some(file) => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let model = halberd_guard::injection::Model::from_bytes(&bytes)
                .with_context(|| format!("{} is not an injection model", file.display()))?;
            loaded = Detector::new(halberd_guard::injection::RuleSet::builtin()?, model);
            &loaded
        }
    };
    // One untimed pass first: the lazy DFAs build their states on first use,
    // and a cold pass over many different texts mostly times that. The timed
    // figure is the steady state of a gateway that has seen such traffic.
    for item in &items {
        detector.assess(&item.text, item.trust);
    }
    let mut overall = Tally::default();
    let mut by_source: BTreeMap<String, (Tally, Vec<(f32, bool)>)> = BTreeMap::new();
    let mut by_trust: BTreeMap<&str, Vec<(f32, bool)>> = BTreeMap::new();
    let mut scored = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut bytes = 0usize;
    let mut elapsed = std::time::Duration::ZERO;
    let mut score_lines = String::new();
    for item in &items {
        let started = Instant::now();
        let assessment = detector.assess(&item.text, item.trust);
        elapsed += started.elapsed();
        bytes += item.text.len();
        let thresholds = default_thresholds(item.trust);
        let detected = thresholds.flag.is_some_and(|t| assessment.score >= t);
        let blocked = thresholds.block.is_some_and(|t| assessment.score >= t);
        overall.add(item.attack, detected, blocked);
        let source = by_source.entry(item.source.clone()).or_default();
        source.0.add(item.attack, detected, blocked);
        source.1.push((assessment.score, item.attack));
        by_trust
            .entry(item.trust.as_str())
            .or_default()
            .push((assessment.score, item.attack));
        scored.push((assessment.score, item.attack));
        if scores_to.is_some() {
            score_lines.push_str(
                &serde_json::json!({
                    "source": item.source,
                    "label": if item.attack { "attack" } else { "benign" },
                    "trust": item.trust.as_str(),
                    "score": assessment.score,
                    "detected": detected,
                    "blocked": blocked,
                })
                .to_string(),
            );
            score_lines.push('\n');
        }
        if show_errors > 0 && detected != item.attack {
            errors.push((item, assessment));
        }
    }
    if let Some(file) = scores_to {
        std::fs::write(file, score_lines)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let (precision, recall, f1) = overall.prf();
    outln!(
        "prompt-injection evaluation: {} ({} items)",
        path.display(),
        items.len()
    );
    outln!(
        "detected = score at or above the trust level's flag threshold; blocked = at or above its block threshold"
    );
    outln!(
        "overall: precision {precision:.3} recall {recall:.3} F1 {f1:.3} false-positive rate {:.4} ROC-AUC {}",
        ratio(overall.detected_benign, overall.benign),
        roc_auc(&scored).map_or("n/a".into(), |a| format!("{a:.4}")),
    );
    outln!(
        "blocked: attacks {:.3} benign {:.4}",
        ratio(overall.blocked_attacks, overall.attacks),
        ratio(overall.blocked_benign, overall.benign)
    );
    for (trust, scores) in &by_trust {
        outln!(
            "ROC-AUC {trust}: {}",
            roc_auc(scores).map_or("n/a (one class)".into(), |a| format!("{a:.4}"))
        );
    }
    // Per source: `-` where a figure needs a label the source lacks (most
    // public sets are one label; a file of your own may mix them).
    outln!(
        "{:<28} {:>7} {:>6} {:>6} {:>6} {:>9} {:>6} {:>7} {:>8} {:>8}",
        "source",
        "attacks",
        "benign",
        "recall",
        "fpr",
        "precision",
        "F1",
        "ROC-AUC",
        "blocked+",
        "blocked-"
    );
    for (source, (t, scores)) in &by_source {
        let (precision, recall, f1) = t.prf();
        let has_attacks = t.attacks > 0;
        let any_detected = t.detected_attacks + t.detected_benign > 0;
        outln!(
            "{source:<28} {:>7} {:>6} {:>6} {:>6} {:>9} {:>6} {:>7} {:>8} {:>8}",
            t.attacks,
            t.benign,
            cell(has_attacks.then_some(recall)),
            cell((t.benign > 0).then(|| ratio(t.detected_benign, t.benign))),
            cell(any_detected.then_some(precision)),
            cell(has_attacks.then_some(f1)),
            roc_auc(scores).map_or_else(|| "-".into(), |a| format!("{a:.4}")),
            cell(has_attacks.then(|| ratio(t.blocked_attacks, t.attacks))),
            cell((t.benign > 0).then(|| ratio(t.blocked_benign, t.benign))),
        );
    }
    // The most confident mistakes first: benign with the highest scores,
    // attacks with the lowest.
    errors.sort_by(|a, b| {
        let key = |(item, a): &(&Item, halberd_guard::injection::Assessment)| {
            if item.attack { a.score } else { 1.0 - a.score }
        };
        key(a).total_cmp(&key(b))
    });
    for (item, assessment) in errors.iter().take(show_errors) {
        let mut text: String = item.text.chars().take(160).collect();
        text = text.replace('\n', " ");
        outln!(
            "{} {:<20} {:.3} {:?} {text}",
            if item.attack { "missed" } else { "false+" },
            item.source,
            assessment.score,
            assessment.signals
        );
    }
    let kib = bytes as f64 / 1024.0;
    outln!(
        "scan time: {:.2} µs per KiB ({:.1} KiB in {:.1} ms, warm, one thread, all layers)",
        elapsed.as_secs_f64() * 1e6 / kib.max(f64::MIN_POSITIVE),
        kib,
        elapsed.as_secs_f64() * 1e3
    );
    if let Some(min) = fail_under
        && f1 < min
    {
        bail!("overall F1 {f1:.3} is below {min}");
    }
    Ok(())
}

/// Out-of-fold scores on the training file: train on all folds but one, score
/// that one. Thresholds are chosen on these, never on the dev set.
fn cross_validate(items: &[Item], folds: usize, config: TrainConfig) -> Result<()> {
    use halberd_guard::injection::{Model, RuleSet};
    let mut scored: Vec<(f32, &Item)> = Vec::with_capacity(items.len());
    for fold in 0..folds {
        let train_part: Vec<Labeled> = items
            .iter()
            .filter(|i| i.group % folds as u64 != fold as u64)
            .map(labeled)
            .collect();
        let model: Model = train(&train_part, config);
        let detector = Detector::new(RuleSet::builtin()?, model);
        for item in items
            .iter()
            .filter(|i| i.group % folds as u64 == fold as u64)
        {
            scored.push((detector.assess(&item.text, item.trust).score, item));
        }
    }
    outln!(
        "{folds}-fold out-of-fold thresholds (training file only; the false-positive rate is \
         that of the worst benign source with at least 50 items):"
    );
    for trust in [Trust::User, Trust::Untrusted] {
        let benign: Vec<(f32, &str)> = scored
            .iter()
            .filter(|(_, i)| i.trust == trust && !i.attack)
            .map(|(s, i)| (*s, i.source.as_str()))
            .collect();
        let attacks: Vec<f32> = scored
            .iter()
            .filter(|(_, i)| i.trust == trust && i.attack)
            .map(|(s, _)| *s)
            .collect();
        let mut sources: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
        for (score, source) in &benign {
            sources.entry(source).or_default().push(*score);
        }
        sources.retain(|_, v| v.len() >= 50);
        let mut candidates: Vec<f32> = benign.iter().map(|(s, _)| s + 1e-4).collect();
        candidates.push(0.5);
        candidates.sort_by(f32::total_cmp);
        // The lowest threshold at which no source's false-positive rate
        // exceeds `fpr`.
        let worst = |t: f32| {
            sources
                .values()
                .map(|v| ratio(v.iter().filter(|&&s| s >= t).count(), v.len()))
                .fold(0.0, f64::max)
        };
        let threshold_at = |fpr: f64| {
            candidates
                .iter()
                .copied()
                .find(|&t| worst(t) <= fpr)
                .unwrap_or(1.0)
        };
        for fpr in [0.001, 0.005, 0.01, 0.02, 0.05] {
            let threshold = threshold_at(fpr);
            let recall = ratio(
                attacks.iter().filter(|&&s| s >= threshold).count(),
                attacks.len(),
            );
            outln!(
                "  {:<9} fpr<={fpr:<5} threshold {threshold:.4} recall {recall:.3} ({} benign, {} attacks)",
                trust.as_str(),
                benign.len(),
                attacks.len()
            );
        }
        // Which attacks the 1 % threshold misses, per source.
        let threshold = threshold_at(0.01);
        let mut per_source: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (score, item) in scored.iter().filter(|(_, i)| i.trust == trust && i.attack) {
            let entry = per_source.entry(item.source.as_str()).or_default();
            entry.0 += usize::from(*score >= threshold);
            entry.1 += 1;
        }
        let per: Vec<String> = per_source
            .iter()
            .map(|(name, (hit, all))| format!("{name} {:.3}", ratio(*hit, *all)))
            .collect();
        outln!(
            "  {:<9} recall per source at {threshold:.4}: {}",
            trust.as_str(),
            per.join(", ")
        );
        // What each benign source costs at a few thresholds: which source
        // decides the threshold, and by how much.
        for t in [0.6f32, 0.7, 0.73, 0.8, 0.9] {
            let per: Vec<String> = sources
                .iter()
                .map(|(name, v)| {
                    format!(
                        "{name} {:.3}",
                        ratio(v.iter().filter(|&&s| s >= t).count(), v.len())
                    )
                })
                .collect();
            let recall = ratio(attacks.iter().filter(|&&s| s >= t).count(), attacks.len());
            outln!(
                "  {:<9} at {t:.2}: recall {recall:.3}; false positives {}",
                trust.as_str(),
                per.join(", ")
            );
        }
    }
    Ok(())
}

fn labeled(i: &Item) -> Labeled {
    Labeled {
        text: i.text.clone(),
        attack: i.attack,
        document: i.trust == Trust::Untrusted,
        source: i.source.clone(),
        segment_only: i.segment_only,
    }
}

/// Trains the model from a training file and writes the weights.
pub fn train_command(
    train_file: &Path,
    out: &Path,
    folds: usize,
    config: TrainConfig,
) -> Result<()> {
    let items = read_dataset(train_file)?;
    if folds > 1 {
        cross_validate(&items, folds, config)?;
    }
    let labeled: Vec<Labeled> = items.iter().map(labeled).collect();
    let started = Instant::now();
    let model = train(&labeled, config);
    let bytes = model.to_bytes();
    std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    outln!(
        "trained on {} items in {:.1} s; wrote {} ({} bytes)",
        labeled.len(),
        started.elapsed().as_secs_f64(),
        out.display(),
        bytes.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_inverted_rankings() {
        assert_eq!(roc_auc(&[(0.1, false), (0.9, true)]), Some(1.0));
        assert_eq!(roc_auc(&[(0.9, false), (0.1, true)]), Some(0.0));
        assert_eq!(roc_auc(&[(0.5, false), (0.5, true)]), Some(0.5));
        assert_eq!(roc_auc(&[(0.5, true)]), None);
    }

    #[test]
    fn provenance_names_map_to_trust() {
        assert_eq!(trust_of(None).ok(), Some(Trust::User));
        assert_eq!(trust_of(Some("tool")).ok(), Some(Trust::Untrusted));
        assert_eq!(trust_of(Some("system")).ok(), Some(Trust::Operator));
        assert!(trust_of(Some("martian")).is_err());
    }

    #[test]
    fn a_segment_only_document_is_read_and_an_unknown_head_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        let line = |head: &str| {
            format!(r#"{{"text": "t", "label": "benign", "provenance": "document"{head}}}"#)
        };
        std::fs::write(&path, [line(""), line(r#", "head": "segment""#)].join("\n")).unwrap();
        let items = read_dataset(&path).unwrap();
        assert_eq!(
            items
                .iter()
                .map(|i| labeled(i).segment_only)
                .collect::<Vec<_>>(),
            [false, true]
        );
        std::fs::write(&path, line(r#", "head": "prompt""#)).unwrap();
        let Err(err) = read_dataset(&path) else {
            panic!("an unknown head was read");
        };
        let err = format!("{err:#}");
        assert!(err.contains("unknown `head`"), "{err}");
    }
}
