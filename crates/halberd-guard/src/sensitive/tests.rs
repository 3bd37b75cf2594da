use proptest::prelude::*;

use super::*;
use crate::halberd_key;

fn detector() -> &'static Detector {
    static DETECTOR: std::sync::LazyLock<Detector> = std::sync::LazyLock::new(Detector::new);
    &DETECTOR
}

/// Strip `«»` markers; returns the text and the marked spans.
fn unmark(marked: &str) -> (String, Vec<(usize, usize)>) {
    let mut text = String::new();
    let mut spans = Vec::new();
    let mut open = 0;
    for c in marked.chars() {
        match c {
            '«' => open = text.len(),
            '»' => spans.push((open, text.len())),
            _ => text.push(c),
        }
    }
    (text, spans)
}

fn spans(text: &str) -> Vec<(usize, usize)> {
    detector()
        .scan(text)
        .iter()
        .map(|f| (f.start, f.end))
        .collect()
}

#[test]
fn rules_match_their_examples() {
    for rule in RULES {
        for example in rule.positives {
            let (text, expected) = unmark(example);
            let findings = detector().scan(&text);
            let found: Vec<_> = findings.iter().map(|f| (f.start, f.end)).collect();
            assert_eq!(found, expected, "rule {} positive {example:?}", rule.id);
            if !matches!(rule.check, rules::Check::Assignment | rules::Check::Numeric) {
                assert!(
                    findings.iter().all(|f| f.kind == rule.kind),
                    "rule {} kind in {example:?}: {findings:?}",
                    rule.id
                );
            }
        }
        for example in rule.negatives {
            assert_eq!(
                detector().scan(example),
                vec![],
                "rule {} negative {example:?}",
                rule.id
            );
        }
    }
}

fn check(marked: &str, kind: &str) {
    let (text, expected) = unmark(marked);
    let findings = detector().scan(&text);
    let found: Vec<_> = findings.iter().map(|f| (f.start, f.end)).collect();
    assert_eq!(found, expected, "{marked:?}");
    for finding in findings {
        let name = finding
            .kind
            .secret_kind()
            .unwrap_or(finding.kind.type_name());
        assert_eq!(name, kind, "{marked:?}");
    }
}

#[test]
fn payment_cards_need_a_network_prefix_and_luhn() {
    check("card «4111 1111 1111 1111» exp", "credit_card");
    check("«4111-1111-1111-1111»", "credit_card");
    check("«378282246310005»", "credit_card");
    check("«5555555555554444»", "credit_card");
    check("«6011111111111117»", "credit_card");
    check("4111 1111 1111 1112", "credit_card"); // Luhn fails
    check("1111 1111 1111 1117", "credit_card"); // no network
}

#[test]
fn us_ssn_excludes_invalid_ranges() {
    check("SSN «123-45-6789»", "us_ssn");
    check("«078-05-1121»", "us_ssn");
    for invalid in [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "123-00-4567",
        "123-45-0000",
    ] {
        assert!(
            detector()
                .scan(invalid)
                .iter()
                .all(|f| f.kind != Kind::UsSsn),
            "{invalid}"
        );
    }
}

#[test]
fn phone_numbers_national_and_international() {
    for marked in [
        "«+1-202-555-0143»",
        "«+44 20 7946 0958»",
        "«+49 30 901820»",
        "«+33 1 42 68 53 00»",
        "«+34 912 345 678»",
        "«+39 06 6982 1234»",
        "«+31 20 123 4567»",
        "«+91 98765 43210»",
        "«+55 11 98765-4321»",
        "«(202) 555-0143»",
        "«202-555-0143»",
        "«020 7946 0958»",
        "«030 901820»",
        "«01 42 68 53 00»",
        "«06 6982 1234»",
        "«020-123 4567»",
        "«098765 43210»",
        "«(11) 98765-4321»",
        "phone: «912 345 678»",
        "call me on «8316 2045»?",
        "«642 8850» office",
        "«415-736-2209x312»",
        // The `00` access code, Brazil's area-and-dash shape, national
        // numbers written without separators, a dashed area code.
        "«001-733-434-7729x840»",
        "«0044 20 7946 0958»",
        "«43 4985-4287»",
        "«11 91234-5678»",
        "«0237253447»",
        "«02434585801»",
        "«0126-695778»",
        // Context words in other languages.
        "Merci de joindre Ann au «4052959394» avant lundi.",
        "Favor ligar para Ana no «3312357654» até sexta.",
        "Bitte anrufen: «37602747877».",
    ] {
        check(marked, "phone");
    }
    for text in [
        "version 2.4.1",
        "order 1234567 shipped",
        "between 1990-2024",
        "pi is 3.14159265",
        "12 345 678 apples",
        // Zero-padded identifiers, a document number, a postcode.
        "id 0000123456",
        "ref 0401000-02",
        "CEP 65889-714",
    ] {
        assert_eq!(spans(text), vec![], "{text}");
    }
}

#[test]
fn halberd_keys_with_a_valid_checksum() {
    let key = halberd_key::format_key("abcdefghijkl", "0123456789abcdefghijABCDEFGHIJ01");
    check(&format!("my key is «{key}»."), "halberd_key");
    let broken = format!("{}x", &key[..key.len() - 1]);
    assert_eq!(spans(&broken), vec![]);
}

#[test]
fn generic_assignments_take_the_family_of_a_known_value() {
    check("token: «AKIAUJZDEGXDNCF32EPF»", "aws_access_key_id");
    check(
        "client_secret = «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»",
        "gcp_oauth_client_secret",
    );
    check("password: «Xk9#mP2$vL7qR4w»", "generic_credential");
}

#[test]
fn findings_never_split_a_character() {
    let text = "é+44 20 7946 0958é jane@example.comé";
    for finding in detector().scan(text) {
        assert!(text.is_char_boundary(finding.start) && text.is_char_boundary(finding.end));
    }
}

fn check_redact(policy: &Policy, marked_input: &str, expected: &str) {
    let findings = detector().scan(marked_input);
    let redaction = redact(marked_input, &findings, policy, &mut Pseudonyms::default());
    assert_eq!(redaction.text, expected);
}

#[test]
fn actions() {
    let policy = Policy::redact_all();
    check_redact(
        &policy,
        "mail jane@example.com key AKIAUJZDEGXDNCF32EPF",
        "mail [EMAIL] key [SECRET:aws_access_key_id]",
    );
    let mut mask = Policy::redact_all();
    mask.set("credit_card", "mask").unwrap();
    check_redact(
        &mask,
        "card 4111 1111 1111 1111",
        "card ***************1111",
    );
    let mut off = Policy::redact_all();
    off.set("email", "off").unwrap();
    check_redact(&off, "jane@example.com", "jane@example.com");
    let mut hashed = Policy::redact_all().with_hash_key(b"k");
    hashed.set("email", "hash").unwrap();
    let a = redact(
        "jane@example.com",
        &detector().scan("jane@example.com"),
        &hashed,
        &mut Pseudonyms::default(),
    );
    let b = redact(
        "jane@example.com",
        &detector().scan("jane@example.com"),
        &hashed,
        &mut Pseudonyms::default(),
    );
    assert_eq!(a.text, b.text);
    assert!(
        a.text.starts_with("[EMAIL:") && a.text.len() == "[EMAIL:]".len() + 12,
        "{}",
        a.text
    );
    let mut block = Policy::redact_all();
    block.set("secret:aws_access_key_id", "block").unwrap();
    let text = "AKIAUJZDEGXDNCF32EPF";
    assert_eq!(
        redact(
            text,
            &detector().scan(text),
            &block,
            &mut Pseudonyms::default()
        )
        .blocked(),
        Some(Kind::Secret("aws_access_key_id"))
    );
    assert!(Policy::redact_all().set("emails", "redact").is_err());
    assert!(Policy::redact_all().set("email", "erase").is_err());
}

#[test]
fn pseudonyms_are_stable_and_restored() {
    let mut policy = Policy::redact_all();
    policy.set("email", "pseudonymize").unwrap();
    let text = "a@example.com, b@example.com, a@example.com";
    let mut pseudonyms = Pseudonyms::default();
    let redaction = redact(text, &detector().scan(text), &policy, &mut pseudonyms);
    assert_eq!(redaction.text, "<EMAIL_1>, <EMAIL_2>, <EMAIL_1>");
    let answer = "Wrote to <EMAIL_2> and <EMAIL_1>; <EMAIL_9> and <b>bold</b> stay.";
    let restored = Restorer::restore_all(answer, &pseudonyms);
    assert_eq!(
        restored,
        "Wrote to b@example.com and a@example.com; <EMAIL_9> and <b>bold</b> stay."
    );
    // Split anywhere, the restorer gives the same text.
    for split in 0..=answer.len() {
        let mut restorer = Restorer::default();
        let mut out = restorer.push(&answer[..split], &pseudonyms);
        out.push_str(&restorer.push(&answer[split..], &pseudonyms));
        out.push_str(&restorer.finish());
        assert_eq!(out, restored, "split at {split}");
    }
}

/// A text full of values of every kind, with ordinary words between them.
const MIXED: &str = "Hi, I'm Jane (jane.doe@example.com, +44 20 7946 0958). Card 4111 1111 1111 1111, \
SSN 123-45-6789, IBAN DE89 3704 0044 0532 0130 00, host 192.168.1.20 / 2001:db8::8a2e:370:7334. \
AWS AKIAUJZDEGXDNCF32EPF and ghp_VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEmvnEN, \
jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJoYWxiZXJkIn0.c2lnbmF0dXJlLXZhbHVl end. \
DB postgres://app:s3cr3t-Pa55@db:5432/x and api_key = \"I6CmuxV5EbOApZOXzcycDeZ6\"\n\
-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\nbye";

fn stream(text: &str, cuts: &[usize], policy: &Policy) -> (String, Vec<String>) {
    let mut redactor = StreamRedactor::new(detector(), std::sync::Arc::new(policy.clone()));
    let mut pieces = Vec::new();
    let mut last = 0;
    for &cut in cuts {
        pieces.push(redactor.push(&text[last..cut]).unwrap());
        last = cut;
    }
    pieces.push(redactor.push(&text[last..]).unwrap());
    pieces.push(redactor.finish().unwrap());
    (pieces.concat(), pieces)
}

#[test]
fn streaming_in_fixed_chunks_equals_batch() {
    let policy = Policy::redact_all();
    let findings = detector().scan(MIXED);
    assert_eq!(findings.len(), 13, "{findings:?}");
    let batch = redact(MIXED, &findings, &policy, &mut Pseudonyms::default()).text;
    for size in [1, 2, 3, 5, 7, 16, 64] {
        let cuts: Vec<usize> = (1..MIXED.len())
            .filter(|i| i % size == 0 && MIXED.is_char_boundary(*i))
            .collect();
        let (streamed, pieces) = stream(MIXED, &cuts, &policy);
        assert_eq!(streamed, batch, "chunk size {size}");
        for finding in &findings {
            let value = &MIXED[finding.start..finding.end];
            assert!(pieces.iter().all(|p| !p.contains(value)), "{value} leaked");
        }
    }
}

#[test]
fn streaming_releases_ordinary_text_at_once() {
    let policy = std::sync::Arc::new(Policy::redact_all());
    let mut redactor = StreamRedactor::new(detector(), policy);
    assert_eq!(redactor.push("Hello there. ").unwrap(), "Hello there. ");
    // A word could still become a credential name, a digit a phone number.
    let out = redactor.push("Call 020 79").unwrap();
    assert_eq!(out, "Call ");
    // The last word is held until it ends: it could still be `now_api_key = ...`.
    assert_eq!(redactor.push("46 0958 now").unwrap(), "[PHONE] ");
    assert_eq!(redactor.push(" and").unwrap(), "now ");
    assert_eq!(redactor.finish().unwrap(), "and");
}

/// The textbook definition, for comparison with the table-driven one.
fn naive_entropy(value: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for b in value.bytes() {
        *counts.entry(b).or_insert(0usize) += 1;
    }
    let n = value.len() as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[test]
fn entropy_of_known_distributions() {
    use super::validate::entropy;
    assert_eq!(entropy(""), 0.0);
    assert_eq!(entropy("aaaaaaaa"), 0.0);
    assert_eq!(entropy("abcd"), 2.0);
    assert_eq!(entropy("aabb"), 1.0);
    assert_eq!(entropy("abcdefgh"), 3.0);
    assert_eq!(entropy(&"abcdefgh".repeat(2)), 3.0);
    // Past 255 bytes the counts no longer fit the one-pass table.
    assert_eq!(entropy(&"abcd".repeat(100)), 2.0);
    assert_eq!(entropy(&"a".repeat(300)), 0.0);
}

/// Streams `text` under a policy that only flags: every piece must come out
/// as it went in, at once, and the findings must be those of the whole text.
fn stream_flagged(text: &str, cuts: &[usize]) -> Result<(), TestCaseError> {
    let policy = std::sync::Arc::new(Policy::uniform(Action::Flag));
    let mut redactor = StreamRedactor::new(detector(), policy);
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
        let piece = &text[last..cut];
        prop_assert_eq!(redactor.push(piece).unwrap(), piece);
        prop_assert_eq!(redactor.held(), 0);
        last = cut;
    }
    prop_assert_eq!(redactor.finish().unwrap(), "");
    let streamed: Vec<Finding> = redactor.edits().iter().map(|e| e.finding).collect();
    prop_assert_eq!(streamed, detector().scan(text));
    prop_assert!(redactor.edits().iter().all(|e| e.action == Action::Flag));
    Ok(())
}

#[test]
fn flagging_releases_every_piece_at_once() {
    let cuts: Vec<usize> = (1..MIXED.len())
        .filter(|i| i % 3 == 0 && MIXED.is_char_boundary(*i))
        .collect();
    stream_flagged(MIXED, &cuts).unwrap();
    // Long enough for the scanner to drop text it has released and resolved.
    let long = MIXED.repeat(24);
    let cuts: Vec<usize> = (1..long.len())
        .filter(|i| i % 37 == 0 && long.is_char_boundary(*i))
        .collect();
    stream_flagged(&long, &cuts).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn flagging_streams_equal_batch_findings(cuts in proptest::collection::btree_set(1usize..MIXED.len(), 0..40)) {
        let cuts: Vec<usize> = cuts.into_iter().filter(|c| MIXED.is_char_boundary(*c)).collect();
        stream_flagged(MIXED, &cuts)?;
    }

    /// The generic rule's value, read from the shape of its value regex, is the
    /// group the regex's own captures give (or none where it has none), on
    /// candidates the rule produces and on odd ones around them.
    #[test]
    fn generic_value_equals_the_regex_captures(
        name in "[a-z_]{0,8}(api_key|token|password|secret)[A-Z_]{0,3}",
        separator in prop_oneof![Just("="), Just(":"), Just(" = "), Just(": "), Just("\t=\t"), Just("=>"), Just(" \u{a0}:"), Just("=="), Just("\t"), Just(" "), Just("\n")],
        open in prop_oneof![Just(""), Just("\""), Just("'"), Just("`"), Just("(("), Just("\"'`"), Just("\"'`("), Just("&quot;"), Just("&#34;"), Just(" ")],
        value in "[A-Za-z0-9_+/=.~!@#$%^*?&;'\"( \t:-]{1,24}",
        close in prop_oneof![Just(""), Just("\""), Just("'"), Just("&quot;")],
    ) {
        let candidate = format!("{name}{separator}{open}{value}{close}");
        let index = RULES.iter().position(|r| r.id == "generic_credential").unwrap();
        let regex = regex::Regex::new(RULES[index].value.unwrap()).unwrap();
        let expected = super::validate::captured_value_span(&regex, &candidate);
        // The validator reads ASCII candidates (all the generic rule's
        // matches) itself and asks the regex about any other.
        if candidate.is_ascii() {
            prop_assert_eq!(super::validate::generic_value(&candidate), expected, "{:?}", candidate);
        }
    }

    /// One pass over a digit run learns what the definitions over `str` say:
    /// digits, separator counts, the phone test's groups and the date test's.
    #[test]
    fn digit_run_shape_equals_its_definitions(run in "[0-9+()]{0,5}([ ./()x-]{1,2}[0-9+()]{0,5}){0,6}") {
        // The numeric rule's pattern bounds a run to 27 bytes; the validator
        // rejects longer ones before reading their shape.
        prop_assume!(run.len() <= super::validate::Shape::MAX);
        let shape = super::validate::Shape::of(run.as_bytes());
        let digits: Vec<u8> = run.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
        prop_assert_eq!(shape.digits(), &digits[..]);
        let count = |c: u8| run.bytes().filter(|b| *b == c).count();
        prop_assert_eq!(shape.separators, run.len() - digits.len());
        prop_assert_eq!((shape.slashes, shape.spaces, shape.dashes, shape.dots), (count(b'/'), count(b' '), count(b'-'), count(b'.')));
        prop_assert_eq!(shape.double_space, run.contains("  "));
        prop_assert_eq!(shape.close_bracket, run.contains(')'));
        let groups: Vec<usize> = run
            .split([' ', '-', '.', '/', '(', ')'])
            .filter(|g| !g.is_empty())
            .map(str::len)
            .collect();
        prop_assert_eq!(shape.groups, groups.len());
        prop_assert_eq!(shape.first_group, groups.first().copied().unwrap_or(0));
        prop_assert_eq!(shape.shortest_group, groups.iter().copied().min().unwrap_or(usize::MAX));
        let date_groups: Vec<&[u8]> = run
            .split([' ', '-', '/', '.'])
            .filter(|g| !g.is_empty())
            .take(8)
            .map(str::as_bytes)
            .collect();
        prop_assert_eq!(shape.date_groups(), &date_groups[..]);
        prop_assert_eq!(is_date_or_time(&run), str_is_date_or_time(&run), "{:?}", run);
    }

    /// Luhn over a table, from the left, is the check digit rule as written:
    /// from the right, every second digit doubled, less 9 when over 9.
    #[test]
    fn luhn_equals_the_definition(digits in proptest::collection::vec(0u8..10, 0..24)) {
        let mut sum = 0;
        for (i, digit) in digits.iter().rev().enumerate() {
            let d = u32::from(*digit) * if i % 2 == 1 { 2 } else { 1 };
            sum += if d > 9 { d - 9 } else { d };
        }
        prop_assert_eq!(super::validate::luhn(&digits), sum % 10 == 0, "{:?}", digits);
    }

    #[test]
    fn entropy_matches_the_definition(value in "[a-f0-9A-Z]{0,40}|[ -~]{200,300}|(ab){100,150}") {
        let fast = f64::from(super::validate::entropy(&value));
        prop_assert!((fast - naive_entropy(&value)).abs() < 1e-5, "{} vs {}", fast, naive_entropy(&value));
    }

    #[test]
    fn streaming_equals_batch_for_every_split(cuts in proptest::collection::btree_set(1usize..MIXED.len(), 0..40)) {
        let policy = Policy::redact_all();
        let cuts: Vec<usize> = cuts.into_iter().filter(|c| MIXED.is_char_boundary(*c)).collect();
        let batch = redact(MIXED, &detector().scan(MIXED), &policy, &mut Pseudonyms::default()).text;
        let (streamed, _) = stream(MIXED, &cuts, &policy);
        prop_assert_eq!(streamed, batch);
    }

    #[test]
    fn streaming_equals_batch_on_generated_text(
        parts in proptest::collection::vec(prop_oneof![
            Just("jane@example.com".to_owned()), Just("+44 20 7946 0958".to_owned()), Just("4111111111111111".to_owned()),
            Just("AKIAUJZDEGXDNCF32EPF".to_owned()), Just(" ".to_owned()), Just("\n".to_owned()), Just("token: ".to_owned()),
            Just("é".to_owned()), "[a-z0-9 .:@+-]{0,12}",
        ], 0..24),
        cuts in proptest::collection::btree_set(1usize..400, 0..20),
    ) {
        let text = parts.concat();
        let policy = Policy::redact_all();
        let cuts: Vec<usize> = cuts.into_iter().filter(|c| *c < text.len() && text.is_char_boundary(*c)).collect();
        let batch = redact(&text, &detector().scan(&text), &policy, &mut Pseudonyms::default()).text;
        let (streamed, _) = stream(&text, &cuts, &policy);
        prop_assert_eq!(streamed, batch);
    }
    /// The scan's own two-half search (forward, then one pattern's reverse)
    /// finds exactly the match the meta regex finds, from any starting point,
    /// on text glued together from every rule's examples.
    #[test]
    fn pattern_reverse_search_equals_the_meta_search(
        parts in proptest::collection::vec(
            (0..RULES.len(), any::<bool>(), 0usize..4),
            1..12,
        ),
        glue in proptest::collection::vec(r#"[a-zA-Z0-9 .:=@_+\n"'-]{0,6}"#, 12),
        cursor in 0usize..600,
    ) {
        let mut text = String::new();
        for (i, (rule, positive, which)) in parts.iter().enumerate() {
            let examples = if *positive { RULES[*rule].positives } else { RULES[*rule].negatives };
            if !examples.is_empty() {
                text.push_str(&unmark(examples[which % examples.len()]).0);
            }
            text.push_str(&glue[i]);
        }
        let mut cursor = cursor.min(text.len());
        while !text.is_char_boundary(cursor) {
            cursor -= 1;
        }
        let d = detector();
        prop_assert_eq!(d.find(&text, cursor, text.len()), d.meta_search(&text, cursor, text.len()));
    }
}

/// The date test as the validator runs it: groups from one pass over the run.
fn is_date_or_time(run: &str) -> bool {
    let shape = super::validate::Shape::of(run.as_bytes());
    super::validate::is_date(shape.date_groups())
}

/// The date test as first written, over `str::split` and `u32::from_str`: the
/// reference for the byte-level one.
fn str_is_date_or_time(run: &str) -> bool {
    let groups: Vec<&str> = run
        .split([' ', '-', '/', '.'])
        .filter(|g| !g.is_empty())
        .collect();
    let year = |g: &str| g.len() == 4 && (g.starts_with("19") || g.starts_with("20"));
    let small =
        |g: &str, max: u32| g.len() <= 2 && g.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n));
    match groups[..] {
        [y, m, d, ref rest @ ..] if year(y) && small(m, 12) && small(d, 31) => rest.len() <= 1,
        [d, m, y, ref rest @ ..] if year(y) && small(m, 12) && small(d, 31) => rest.len() <= 1,
        [m, d, y, ref rest @ ..] if year(y) && small(m, 12) && small(d, 31) => rest.len() <= 1,
        [a, b] => year(a) && year(b),
        _ => false,
    }
}

/// The byte-level date test answers as the `str` definition on every run of
/// one to three groups (and a fourth, an hour) built from years, small numbers,
/// signed and bracketed numbers and every separator.
#[test]
fn date_test_equals_the_str_definition_on_every_short_run() {
    const GROUPS: &[&str] = &[
        "2024", "1999", "1899", "20", "1", "01", "12", "13", "31", "32", "0", "00", "+1", "+9",
        "+", "(1", "9)", "123", "",
    ];
    const SEPARATORS: &[&str] = &[" ", "-", ".", "/", "(", "  "];
    let mut runs = 0;
    let mut dates = 0;
    let mut check = |run: &str| {
        let expected = str_is_date_or_time(run);
        assert_eq!(is_date_or_time(run), expected, "{run:?}");
        runs += 1;
        dates += usize::from(expected);
    };
    for a in GROUPS {
        check(a);
        for s1 in SEPARATORS {
            for b in GROUPS {
                check(&format!("{a}{s1}{b}"));
                for s2 in SEPARATORS {
                    for c in GROUPS {
                        check(&format!("{a}{s1}{b}{s2}{c}"));
                        check(&format!("{a}{s1}{b}{s2}{c} 14"));
                        check(&format!("{a}{s1}{b}{s2}{c} 14:30 5"));
                    }
                }
            }
        }
    }
    // The runs include dates in all three orders and many that are not.
    assert!(dates > 1000 && runs - dates > 100_000, "{dates} of {runs}");
}
/// The edges of the generic value's shape, every time (the property test
/// meets them only now and then): three and four opening quotes, escaped
/// quotes, quoted values, separators that are white space, and none.
#[test]
fn generic_value_edges_equal_the_regex_captures() {
    let regex = regex::Regex::new(RULES[super::validate::generic_rule()].value.unwrap()).unwrap();
    let candidates = [
        "api_key=\"'`abc",
        "api_key=\"'`(abc",
        "api_key=((abc",
        "api_key=&quot;abc",
        "api_key=&#34;abc&quot;",
        "api_key=\"abc def\"",
        "api_key='abc'",
        "api_key=''",
        "api_key\tabc",
        "api_key\nabc",
        "api_key = \t abc?",
        "api_key: x: abc",
        "api_key=abc def",
        "api_key",
    ];
    let mut found = 0;
    for candidate in candidates {
        let expected = super::validate::captured_value_span(&regex, candidate);
        assert_eq!(
            super::validate::generic_value(candidate),
            expected,
            "{candidate:?}"
        );
        found += usize::from(expected.is_some());
    }
    assert_eq!(found, 9, "candidates with a value");
}

/// Pieces of text the interleaved-scan tests build long texts from: values
/// of every kind, near misses, long candidates, other scripts, and stretches
/// without spaces, so that walk starts land everywhere.
const PIECES: &[&str] = &[
    "Please summarise the attached notes and list the action items. ",
    "Contact jane.doe@example.com or +44 20 7946 0958 about invoice 88213. ",
    "card 4111 1111 1111 1111 from 192.168.1.20, SSN 123-45-6789. ",
    "api_key = \"I6CmuxV5EbOApZOXzcycDeZ6\" and password: hunter2hunter2 ",
    "export AWS_ACCESS_KEY_ID=AKIAUJZDEGXDNCF32EPF\n",
    "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJoYWxiZXJkIn0.c2lnbmF0dXJlLXZhbHVl end. ",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n-----END RSA PRIVATE KEY-----\n",
    "IBAN DE89 3704 0044 0532 0130 00 or 2001:db8::8a2e:370:7334 ",
    "2024-01-31 14:30, version 1.2.3.4, order 5551234, (555 1234 ",
    "Der Kunde möchte die Lieferung am Montag; la réunion est prévue à 14 h. ",
    "東京都の顧客からのお問い合わせ、電話 03-1234-5678。",
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODk",
    "                ",
    "\n\n",
];

fn pieced(choices: &[usize]) -> String {
    choices.iter().map(|i| PIECES[i % PIECES.len()]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Walking a long text from several places at once finds exactly what
    /// the one walk from the start finds.
    #[test]
    fn interleaved_scan_equals_the_walk(choices in proptest::collection::vec(0usize..100, 10..160)) {
        let text = pieced(&choices);
        let d = detector();
        prop_assert_eq!(d.scan_interleaved(&text), d.scan_walk(&text));
    }

    /// And on any text at all: every character, no spaces where walks like
    /// to start, values only by chance.
    #[test]
    fn interleaved_scan_equals_the_walk_on_any_text(text in "(?s).{0,3000}", digits in "[0-9 @.:=-]{0,2000}") {
        let d = detector();
        let text = format!("{text}{digits}");
        prop_assert_eq!(d.scan_interleaved(&text), d.scan_walk(&text));
    }
}

/// Texts whose walk starts fall inside a long candidate, inside a stretch
/// without spaces, between the bytes of a character, or where nothing is
/// found at all; and texts too short for every walk to have a share.
#[test]
fn interleaved_scan_equals_the_walk_at_the_edges() {
    let d = detector();
    let key = PIECES[6].repeat(40);
    let base64 = PIECES[11].repeat(60);
    let kanji = PIECES[10].repeat(200);
    let plain = PIECES[0].repeat(100);
    let tail = format!("{}{}", PIECES[0].repeat(80), PIECES[1]);
    let texts = [
        key,
        base64,
        kanji,
        plain,
        tail,
        String::new(),
        "a b".into(),
        MIXED.into(),
    ];
    let mut found = 0;
    for text in &texts {
        let walk = d.scan_walk(text);
        assert_eq!(
            d.scan_interleaved(text),
            walk,
            "{:?}",
            &text[..text.len().min(80)]
        );
        found += walk.len();
    }
    assert!(found > 40, "{found}");
}

/// A lazy DFA whose cache is cleared during the scan (it is small here)
/// forgets the states the walks were in: the scan gives up and walks the text
/// in one walk, with the walk's result. With the usual cache it does not.
#[test]
fn interleaved_scan_survives_cache_clears() {
    let text = pieced(&(0..400).map(|i| i * 7 + i / 3).collect::<Vec<_>>());
    let expected = detector().scan_walk(&text);
    assert!(expected.len() > 100, "{}", expected.len());
    let small = Detector::with_forward_cache(1 << 16);
    let (found, clears, gave_up) = small.scan_interleaved_counted(&text);
    assert!(clears > 0 && gave_up, "the cache was never cleared");
    assert_eq!(found, expected);
    let (found, clears, gave_up) = detector().scan_interleaved_counted(&text);
    assert!(clears == 0 && !gave_up, "{clears} clears");
    assert_eq!(found, expected);
}

/// Text made of long candidates that are all rejected, each running to the
/// end, would be searched again from every boundary (quadratic: 31 s for
/// 200 KB of `key=`). The scan stops at its work budget and reports the rest
/// as uninspected, with what came before found exactly.
#[test]
fn overlapping_rejected_candidates_stop_at_the_budget_and_the_rest_is_uninspected() {
    for prefix in ["key=", "glpat-", "xoxb-", "sk-proj-"] {
        for len in [10_000, 100_000, 400_000] {
            let lead = "mail me at ann.lee@example.org then ";
            let text = format!("{lead}{}", prefix.repeat(len / prefix.len()));
            // The one walk and the interleaved walks agree.
            for findings in [detector().scan(&text), detector().scan_walk(&text)] {
                let last = findings.last().copied().expect("findings");
                assert_eq!(findings[0].kind, Kind::Email, "{prefix} {len}");
                if last.kind == Kind::Uninspected {
                    assert_eq!(last.end, text.len());
                    assert!(last.start >= lead.len() - 5, "{prefix} {len}: {last:?}");
                    assert!(text.is_char_boundary(last.start));
                } else {
                    // Short enough to be inspected in full within the budget.
                    assert!(len <= 10_000, "{prefix} {len}: {findings:?}");
                }
            }
        }
    }
}

#[test]
fn ordinary_text_of_any_length_stays_within_the_budget() {
    let prose = "Ann (ann.lee@example.org, +1 415 555 0100) paid with 4111 1111 1111 1111; the key is AKIAIOSFODNN7EXAMPLE. Notes follow, with numbers 12, 345 and 2024-01-05. ";
    for n in [1, 10, 1_000] {
        let text = prose.repeat(n);
        let findings = detector().scan(&text);
        assert!(findings.iter().all(|f| f.kind != Kind::Uninspected));
        assert_eq!(findings.len(), detector().scan(prose).len() * n);
    }
}

/// A long token or a run of overlapping candidates arriving in small pieces
/// is read a bounded number of times, not again on every piece (60 KB in
/// 4-byte pieces cost 3 s when every piece re-walked the held text).
#[test]
fn streamed_pieces_are_scanned_incrementally() {
    let token = format!(
        "the key glpat-{} and then prose follows here.",
        "a1B2c3D4e5".repeat(6_000)
    );
    let overlapping = format!("conf {} end of it.", "key=".repeat(15_000));
    for text in [token, overlapping] {
        let mut redactor =
            StreamRedactor::new(detector(), std::sync::Arc::new(Policy::redact_all()));
        let mut out = String::new();
        for piece in text.as_bytes().chunks(4) {
            out.push_str(&redactor.push(std::str::from_utf8(piece).unwrap()).unwrap());
        }
        out.push_str(&redactor.finish().unwrap());
        assert!(
            redactor.work() <= 20 * text.len() + (512 << 10),
            "read {} bytes for {} pushed",
            redactor.work(),
            text.len()
        );
        let findings = detector().scan(&text);
        if findings.iter().any(|f| f.kind == Kind::Uninspected) {
            // Past the budget: what was not settled is withheld, never
            // released unscanned.
            assert!(
                out.ends_with(super::stream::WITHHELD),
                "{}",
                &out[out.len() - 80..]
            );
            assert!(out.len() < text.len());
        } else {
            // Within it: exactly the batch result.
            let batch = redact(
                &text,
                &findings,
                &Policy::redact_all(),
                &mut Pseudonyms::default(),
            );
            assert_eq!(out, batch.text);
        }
    }
}

/// One value of each kind, written here.
const BOUNDARY_VALUES: [(&str, &str); 8] = [
    ("email", "jane.doe@example.com"),
    ("phone", "+44 20 7946 0958"),
    ("credit_card", "4111 1111 1111 1111"),
    ("us_ssn", "078-05-1120"),
    ("iban", "DE89370400440532013000"),
    ("ip_address", "192.0.2.44"),
    ("ip_address", "2001:db8::8a2e:370:7334"),
    (
        "github_token",
        "ghp_R4nd0mT0k3nV4lu3Xq9Zp2Lm8Kw5Ys7Tb1Hc3Jd",
    ),
];

/// What can stand on either side of a value in prose, markdown, code and
/// data: brackets, quotes of every kind, emphasis, separators, non-ASCII
/// punctuation, and nothing at all (the start and end of the text).
const BOUNDARIES: [(&str, &str); 27] = [
    ("", ""),
    ("(", ")"),
    ("(", ")."),
    ("[", "]"),
    ("{", "}"),
    ("<", ">"),
    ("\"", "\""),
    ("'", "'"),
    ("\u{201c}", "\u{201d}"),
    ("\u{2018}", "\u{2019}"),
    ("\u{ab}", "\u{bb}"),
    ("\u{300c}", "\u{300d}"),
    ("\u{ff08}", "\u{ff09}"),
    ("`", "`"),
    ("**", "**"),
    ("*", "*"),
    ("value:", ""),
    ("\u{ff1a}", "\u{3002}"),
    ("=", ";"),
    ("/", "/"),
    ("|", "|"),
    ("- ", ","),
    ("\u{a0}", "\u{a0}"),
    ("\t", "\n"),
    ("\u{3001}", "\u{3002}"),
    ("#", "!"),
    ("~", "?"),
];

#[test]
fn values_are_found_at_every_boundary_whole_and_streamed() {
    let policy = Policy::redact_all();
    for (kind, value) in BOUNDARY_VALUES {
        for (open, close) in BOUNDARIES {
            for (before, after) in [
                ("", ""),
                ("see ", " now"),
                ("Denise Gutierrez ", " wants a callback"),
            ] {
                let marked = format!("{before}{open}\u{ab}{value}\u{bb}{close}{after}");
                // `«` and `»` are boundaries too; mark with them only where
                // they are not part of the case.
                let text = format!("{before}{open}{value}{close}{after}");
                let start = before.len() + open.len();
                let found: Vec<_> = detector()
                    .scan(&text)
                    .iter()
                    .map(|f| {
                        (
                            f.kind.secret_kind().unwrap_or(f.kind.type_name()),
                            f.start,
                            f.end,
                        )
                    })
                    .collect();
                assert_eq!(
                    found,
                    vec![(kind, start, start + value.len())],
                    "{marked:?}"
                );
                let redacted = redact(
                    &text,
                    &detector().scan(&text),
                    &policy,
                    &mut Pseudonyms::default(),
                )
                .text;
                assert!(!redacted.contains(value), "{value} left in {redacted:?}");
                let cuts: Vec<usize> = (1..text.len())
                    .filter(|i| i % 3 == 0 && text.is_char_boundary(*i))
                    .collect();
                let (streamed, _) = stream(&text, &cuts, &policy);
                assert_eq!(streamed, redacted, "streamed {text:?}");
            }
        }
    }
}

#[test]
fn ibans_are_found_before_the_words_that_follow() {
    check("pay «ES7957118326559647146416» now", "iban");
    check(
        "Merci de joindre Vinicio au «ES3205469831319666251188» avant le 15.",
        "iban",
    );
    check("IBAN «GB82 WEST 1234 5698 7654 32» ok", "iban");
}

#[test]
fn values_after_an_unclosed_bracket_are_still_found() {
    check("Denise Gutierrez («078-05-1120», ext 4) called", "us_ssn");
    check("card («4111111111111111» on file", "credit_card");
    check("from («192.0.2.44» and others", "ip_address");
    // Text in parentheses with digits is still not a number.
    check("(555 1234 is the room", "phone");
}

#[test]
fn placeholders_are_whole_value_shapes_not_substrings() {
    // Values known only by their name that stand in for a secret.
    for placeholder in [
        "password = changeme",
        "api_key = your_api_key_here",
        "token = <your-token>",
        "secret = ${DB_SECRET}",
        "password = {{ vault_password }}",
        "password = %DB_PASSWORD%",
        "api_key = YourApiKey",
        "password = xxxxxxxxxx",
        "password = ********",
        "api_key = ZAQWS-XCDER-*****-VBGTR",
        "token = REPLACE_ME",
    ] {
        assert_eq!(detector().scan(placeholder), vec![], "{placeholder:?}");
    }
    // An address as the value names a user: an email, not a secret.
    let kinds: Vec<_> = detector()
        .scan("login_password = ann.lee@example.com")
        .iter()
        .map(|f| f.kind)
        .collect();
    assert_eq!(kinds, vec![Kind::Email]);
    // Values that merely contain a placeholder word are secrets.
    for marked in [
        "db_password = \u{ab}supersecret123\u{bb}",
        "password = \u{ab}yourmomma99\u{bb}",
        "api_key = \u{ab}nullX9v7Qw2Lk5Zr8Tb3\u{bb}",
        "password = \u{ab}password123!\u{bb}",
    ] {
        let (text, expected) = unmark(marked);
        let found: Vec<_> = detector()
            .scan(&text)
            .iter()
            .map(|f| (f.start, f.end))
            .collect();
        assert_eq!(found, expected, "{marked:?}");
    }
}
