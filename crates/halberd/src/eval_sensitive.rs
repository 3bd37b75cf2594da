//! `halberd eval --sensitive`: scores the sensitive-data detectors against the
//! labelled public data sets in the data directory (default `../shared/data`).
//!
//! - PII: `presidio-synth-pii/synth_dataset_v2.json`, labelled character spans.
//!   A finding is a true positive when it overlaps a labelled span of its type.
//! - Secrets: `credsweeper-samples/samples.jsonl`, expected findings by line and
//!   column. Recall counts expected findings of the families Halberd claims (see
//!   `in_scope`) that one of our findings overlaps; precision counts our findings
//!   that overlap any expected finding. Both are also printed over all families.
//! - False positives: ordinary prompts (self-instruct, XSTest, Arena-Hard,
//!   NotInject) should produce no finding other than real PII; every finding is
//!   listed with its context so a reader can judge it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use halberd_guard::sensitive::{Detector, Finding, Kind};
use serde_json::Value;

/// True positives, false positives and misses of one type (also used by
/// `eval --generated`).
#[derive(Default, Clone, Copy)]
pub(crate) struct Score {
    pub(crate) tp: usize,
    pub(crate) fp: usize,
    pub(crate) fn_: usize,
}

impl Score {
    /// F1, or `None` when the set labels no value of the type: a type that
    /// was never tested has no score, and must not pass a gate as a perfect one.
    fn f1(&self) -> Option<f64> {
        if self.tp + self.fn_ == 0 {
            return None;
        }
        let precision = ratio(self.tp, self.tp + self.fp);
        let recall = ratio(self.tp, self.tp + self.fn_);
        Some(if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        })
    }

    fn line(&self, name: &str) -> String {
        let precision = ratio(self.tp, self.tp + self.fp);
        let recall = ratio(self.tp, self.tp + self.fn_);
        match self.f1() {
            Some(f1) => format!(
                "{name:<28} tp {:>4}  fp {:>4}  fn {:>4}  precision {precision:.3}  recall {recall:.3}  f1 {f1:.3}",
                self.tp, self.fp, self.fn_
            ),
            None => format!(
                "{name:<28} tp {:>4}  fp {:>4}  fn {:>4}  no data: no labelled value of this type",
                self.tp, self.fp, self.fn_
            ),
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Character offsets (Presidio) to byte offsets.
fn byte_offset(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}

pub fn run(data: &Path, fail_under: Option<f64>) -> Result<()> {
    let detector = Detector::new();
    let scores = pii(&detector, data)?;
    // The other sections are reported when their sets are present; the gate
    // is on the PII set, which must be.
    for (file, section) in [
        (
            "credsweeper-samples/samples.jsonl",
            secrets as fn(&Detector, &Path) -> Result<()>,
        ),
        ("self-instruct/seed_tasks.jsonl", ordinary),
    ] {
        if data.join(file).exists() {
            section(&detector, data)?;
        } else {
            outln!(
                "\n## {file}: not present in {}, section skipped",
                data.display()
            );
        }
    }
    throughput(&detector, data)?;
    if let Some(min) = fail_under {
        gate(&scores, min)?;
    }
    Ok(())
}

/// Fails when a type scores under `min`, or was not measured at all.
fn gate(scores: &[(&'static str, Option<f64>)], min: f64) -> Result<()> {
    let mut failures = Vec::new();
    for (name, f1) in scores {
        match f1 {
            Some(f1) if *f1 < min => {
                failures.push(format!("{name} scores F1 {f1:.3}, below {min}"))
            }
            Some(_) => {}
            None => failures.push(format!(
                "{name} has no labelled value in the set, so no score"
            )),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", failures.join("; "))
    }
}

/// Scan throughput over every text of the data sets (the string fields of
/// JSON Lines records, other files in 4,000-character pieces): prose, code,
/// configuration, credentials and several scripts, each text different, as in
/// real traffic. Timed after one untimed pass.
fn throughput(detector: &Detector, data: &Path) -> Result<()> {
    let mut texts: Vec<String> = Vec::new();
    let mut sets: Vec<_> = std::fs::read_dir(data)
        .with_context(|| format!("cannot read {}", data.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    for set in sets {
        let mut files: Vec<_> = std::fs::read_dir(&set)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let Ok(content) = std::fs::read_to_string(&file) else {
                continue;
            };
            if file.extension().is_some_and(|e| e == "jsonl") {
                for line in content.lines() {
                    if let Ok(Value::Object(row)) = serde_json::from_str::<Value>(line) {
                        texts.extend(
                            row.values()
                                .filter_map(Value::as_str)
                                .filter(|s| s.len() > 20)
                                .map(str::to_owned),
                        );
                    }
                }
            } else {
                let chars: Vec<char> = content.chars().collect();
                texts.extend(chars.chunks(4000).map(|c| c.iter().collect::<String>()));
            }
        }
    }
    for text in &texts {
        detector.scan(text);
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    let started = Instant::now();
    let findings: usize = texts.iter().map(|t| detector.scan(t).len()).sum();
    let seconds = started.elapsed().as_secs_f64();
    outln!(
        "## Throughput: {} texts, {:.1} MiB from every data set: {:.0} MiB/s ({} findings; warm, one thread)",
        texts.len(),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9),
        findings
    );
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Scores the PII types; returns the type with the lowest F1.
fn pii(detector: &Detector, data: &Path) -> Result<Vec<(&'static str, Option<f64>)>> {
    let path = data.join("presidio-synth-pii/synth_dataset_v2.json");
    let rows: Vec<Value> = serde_json::from_str(&read(&path)?)?;
    let labels = [
        ("EMAIL_ADDRESS", "email"),
        ("PHONE_NUMBER", "phone"),
        ("CREDIT_CARD", "credit_card"),
        ("US_SSN", "us_ssn"),
        ("IBAN_CODE", "iban"),
        ("IP_ADDRESS", "ip_address"),
    ];
    let mut scores: BTreeMap<&str, Score> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    let mut false_alarms: Vec<String> = Vec::new();
    let mut bytes = 0;
    // The timing covers the scans alone, after one untimed pass: the lazy DFA
    // builds its states on first use, and a cold first pass over short
    // sentences would mostly time that (and the scoring around it).
    for (index, row) in rows.iter().enumerate() {
        detector.scan(field_str(row, "full_text", index)?);
    }
    let mut elapsed = std::time::Duration::ZERO;
    for (index, row) in rows.iter().enumerate() {
        let text = field_str(row, "full_text", index)?;
        bytes += text.len();
        let started = Instant::now();
        let findings = detector.scan(text);
        elapsed += started.elapsed();
        let mut expected: Vec<(&str, (usize, usize), bool)> = Vec::new();
        let spans = row["spans"]
            .as_array()
            .with_context(|| format!("{}: row {index} has no `spans` list", path.display()))?;
        for span in spans {
            let label = field_str(span, "entity_type", index)?;
            if let Some((_, name)) = labels.iter().find(|(l, _)| *l == label) {
                let position = |key: &str| {
                    span[key].as_u64().map(|v| v as usize).with_context(|| {
                        format!("{}: row {index}: a span has no `{key}`", path.display())
                    })
                };
                let start = byte_offset(text, position("start_position")?);
                let end = byte_offset(text, position("end_position")?);
                expected.push((name, (start, end), false));
            }
        }
        for finding in &findings {
            let name = finding.kind.type_name();
            let hit = expected
                .iter_mut()
                .find(|(n, span, _)| *n == name && overlaps(*span, (finding.start, finding.end)));
            match hit {
                Some(entry) => {
                    if !entry.2 {
                        scores.entry(name).or_default().tp += 1;
                    }
                    entry.2 = true;
                }
                None => {
                    scores.entry(name).or_default().fp += 1;
                    false_alarms.push(format!("{name}: {:?}", &text[finding.start..finding.end]));
                }
            }
        }
        for (name, span, found) in expected {
            if !found {
                scores.entry(name).or_default().fn_ += 1;
                misses.push(format!("{name}: {:?}", &text[span.0..span.1]));
            }
        }
    }
    outln!("## PII: {} ({} sentences)", path.display(), rows.len());
    for (_, name) in labels {
        outln!(
            "{}",
            scores.get(name).copied().unwrap_or_default().line(name)
        );
    }
    let other: Vec<_> = scores
        .iter()
        .filter(|(n, _)| !labels.iter().any(|(_, l)| l == *n))
        .collect();
    for (name, score) in other {
        outln!("{} (not labelled in this set)", score.line(name));
    }
    let seconds = elapsed.as_secs_f64();
    outln!(
        "scan time {:.1} µs per KiB ({:.0} MiB/s; {} KiB, {} sentences, warm, one thread)",
        seconds * 1e6 / (bytes as f64 / 1024.0),
        bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9),
        bytes / 1024,
        rows.len()
    );
    print_list("missed", &misses);
    print_list("false alarms", &false_alarms);
    Ok(labels
        .iter()
        .map(|(_, name)| (*name, scores.get(name).copied().unwrap_or_default().f1()))
        .collect())
}

/// A string field every row of a set must have.
fn field_str<'a>(row: &'a Value, key: &str, index: usize) -> Result<&'a str> {
    row[key]
        .as_str()
        .with_context(|| format!("row {index} has no string field `{key}`"))
}

/// CredSweeper rule names of the families Halberd claims to detect.
fn in_scope(rule: &str) -> bool {
    const FAMILIES: &[&str] = &[
        "AWS Client ID",
        "AWS Multi",
        "Google API Key",
        "Google OAuth Secret",
        "Azure Access Token",
        "Azure Storage Account Key",
        "Azure Secret Value",
        "Github Classic Token",
        "Github Fine-granted Token",
        "Github App Installation Token",
        "Gitlab Prefix Token",
        "Slack Token",
        "Slack Webhook",
        "Stripe Credentials",
        "OpenAI Token",
        "Anthropic API Key",
        "Hugging Face User Access Token",
        "Grafana Provisioned API Key",
        "Grafana Service Account Token",
        "Grafana Access Policy Token",
        "Twilio Credentials",
        "SendGrid API Key",
        "NPM Token",
        "PyPi API Token",
        "Docker Access Token",
        "PEM Private Key",
        "JSON Web Token",
        "URL Credentials",
        "Password",
        "Secret",
        "Key",
        "Token",
        "Auth",
        "Credential",
        "API",
        "SQL Password",
    ];
    FAMILIES.contains(&rule)
}

/// The group of a CredSweeper rule, for the grouped summary.
fn group_of_rule(rule: &str) -> &'static str {
    match rule {
        "PEM Private Key" => "private keys",
        "Password" | "Secret" | "Key" | "Token" | "Auth" | "Credential" | "API"
        | "SQL Password" | "URL Credentials" => "passwords and generic",
        _ => "provider tokens and JWTs",
    }
}

/// The group of one of our findings.
fn group_of_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::PrivateKey => "private keys",
        Kind::Secret("generic_credential" | "url_password") => "passwords and generic",
        _ => "provider tokens and JWTs",
    }
}

fn secrets(detector: &Detector, data: &Path) -> Result<()> {
    let mut groups: BTreeMap<&'static str, Score> = BTreeMap::new();
    let path = data.join("credsweeper-samples/samples.jsonl");
    let mut scoped = Score::default();
    let mut all = Score::default();
    let mut by_rule: BTreeMap<String, Score> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut false_alarms = Vec::new();
    for (index, line) in read(&path)?.lines().enumerate() {
        let row: Value = serde_json::from_str(line)
            .with_context(|| format!("{}: line {} is not JSON", path.display(), index + 1))?;
        let content = field_str(&row, "content", index)?;
        let file = field_str(&row, "path", index)?;
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(content.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let findings: Vec<Finding> = detector
            .scan(content)
            .into_iter()
            .filter(|f| !f.kind.is_pii())
            .collect();
        let mut expected = Vec::new();
        for item in row["expected_findings"].as_array().into_iter().flatten() {
            let rule = item["rule"].as_str().unwrap_or_default().to_owned();
            let line_no = item["line_num"].as_u64().unwrap_or(1).max(1) as usize;
            let Some(line_start) = line_starts.get(line_no - 1).copied() else {
                continue;
            };
            let line_text = content[line_start..].split('\n').next().unwrap_or_default();
            let value = item["value"].as_str().unwrap_or_default();
            // Expected columns count characters of the line. Use them when the
            // value is there (a line may hold the same value twice), else the
            // value's first position in the line, else the columns as given.
            let s = item["value_start"].as_i64().unwrap_or(-1);
            let at_columns = (s >= 0)
                .then(|| byte_offset(line_text, s as usize))
                .filter(|b| !value.is_empty() && line_text[*b..].starts_with(value));
            let (start, end) =
                match at_columns.or_else(|| line_text.find(value).filter(|_| !value.is_empty())) {
                    Some(at) => (line_start + at, line_start + at + value.len()),
                    None => {
                        let s = s.max(0) as usize;
                        let e = item["value_end"].as_i64().unwrap_or(0).max(0) as usize;
                        (
                            line_start + byte_offset(line_text, s),
                            line_start + byte_offset(line_text, e.max(s + 1)),
                        )
                    }
                };
            expected.push((rule, (start, end)));
        }
        for (rule, span) in &expected {
            let found = findings.iter().any(|f| overlaps(*span, (f.start, f.end)));
            let score = by_rule.entry(rule.clone()).or_default();
            let bump = |s: &mut Score| if found { s.tp += 1 } else { s.fn_ += 1 };
            bump(score);
            bump(&mut all);
            if in_scope(rule) {
                bump(&mut scoped);
                bump(groups.entry(group_of_rule(rule)).or_default());
                if !found {
                    misses.push(format!(
                        "{file} {rule}: {:?}",
                        clip(&content[span.0..span.1.min(content.len())])
                    ));
                }
            }
        }
        for finding in &findings {
            if !expected
                .iter()
                .any(|(_, span)| overlaps(*span, (finding.start, finding.end)))
            {
                all.fp += 1;
                scoped.fp += 1;
                groups.entry(group_of_kind(finding.kind)).or_default().fp += 1;
                false_alarms.push(format!(
                    "{file} {}: {:?}",
                    name(finding.kind),
                    clip(&content[finding.start..finding.end])
                ));
            }
        }
    }
    outln!("\n## Secrets: {}", path.display());
    outln!("{}", scoped.line("families Halberd claims"));
    outln!("{}", all.line("every CredSweeper rule"));
    for (group, score) in &groups {
        outln!("{}", score.line(&format!("group: {group}")));
    }
    for (rule, score) in &by_rule {
        if in_scope(rule) {
            outln!("  {}", score.line(rule));
        }
    }
    print_list("missed (claimed families)", &misses);
    print_list("findings CredSweeper does not expect", &false_alarms);

    let path = data.join("detect-secrets-testdata/test_data.jsonl");
    outln!(
        "\n## Secrets: {} (no labels; findings listed for review)",
        path.display()
    );
    let mut listed = Vec::new();
    for line in read(&path)?.lines() {
        let row: Value = serde_json::from_str(line)?;
        let content = row["content"].as_str().unwrap_or_default();
        for finding in detector.scan(content) {
            listed.push(format!(
                "{} {}: {:?}",
                row["path"].as_str().unwrap_or_default(),
                name(finding.kind),
                clip(&content[finding.start..finding.end])
            ));
        }
    }
    print_list("findings", &listed);
    Ok(())
}

fn ordinary(detector: &Detector, data: &Path) -> Result<()> {
    outln!("\n## Ordinary prompts (every finding is listed)");
    let mut sets: Vec<(String, Vec<String>)> = Vec::new();
    for file in [
        "self-instruct/user_oriented_instructions.jsonl",
        "self-instruct/seed_tasks.jsonl",
    ] {
        let mut texts = Vec::new();
        for line in read(&data.join(file))?.lines() {
            let row: Value = serde_json::from_str(line)?;
            texts.push(row["instruction"].as_str().unwrap_or_default().to_owned());
            for instance in row["instances"].as_array().into_iter().flatten() {
                texts.push(instance["input"].as_str().unwrap_or_default().to_owned());
            }
        }
        sets.push((file.to_owned(), texts));
    }
    for file in [
        "arena-hard/arena-hard-v0.1.jsonl",
        "arena-hard/arena-hard-v2.0.jsonl",
    ] {
        let texts = read(&data.join(file))?
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|row| row["prompt"].as_str().unwrap_or_default().to_owned())
            .collect();
        sets.push((file.to_owned(), texts));
    }
    for file in [
        "notinject/NotInject_one.json",
        "notinject/NotInject_two.json",
        "notinject/NotInject_three.json",
    ] {
        let rows: Vec<Value> = serde_json::from_str(&read(&data.join(file))?)?;
        sets.push((
            file.to_owned(),
            rows.iter()
                .map(|r| r["prompt"].as_str().unwrap_or_default().to_owned())
                .collect(),
        ));
    }
    // XSTest is a CSV whose prompts may hold commas inside quotes.
    let csv = read(&data.join("xstest/xstest_prompts.csv"))?;
    sets.push((
        "xstest/xstest_prompts.csv".to_owned(),
        csv.lines().skip(1).map(str::to_owned).collect(),
    ));

    for (file, texts) in sets {
        let bytes: usize = texts.iter().map(String::len).sum();
        let mut listed = Vec::new();
        for text in &texts {
            for finding in detector.scan(text) {
                let from = floor(text, finding.start.saturating_sub(30));
                let to = ceil(text, (finding.end + 10).min(text.len()));
                listed.push(format!(
                    "{}: {:?} in {:?}",
                    name(finding.kind),
                    &text[finding.start..finding.end],
                    &text[from..to]
                ));
            }
        }
        outln!(
            "{file}: {} texts, {} KiB, {} findings",
            texts.len(),
            bytes / 1024,
            listed.len()
        );
        for item in &listed {
            outln!("  {item}");
        }
    }
    Ok(())
}

fn name(kind: Kind) -> String {
    match kind.secret_kind() {
        Some(family) => format!("secret:{family}"),
        None => kind.type_name().to_owned(),
    }
}

fn clip(value: &str) -> String {
    if value.len() <= 60 {
        value.to_owned()
    } else {
        format!("{}…", &value[..floor(value, 60)])
    }
}

fn floor(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// How many misses and false alarms each list shows.
const LIST_LIMIT: usize = 200;

fn print_list(title: &str, items: &[String]) {
    outln!("{title}: {}", items.len());
    for item in items.iter().take(LIST_LIMIT) {
        outln!("  {item}");
    }
    if items.len() > LIST_LIMIT {
        outln!("  … and {} more", items.len() - LIST_LIMIT);
    }
}
