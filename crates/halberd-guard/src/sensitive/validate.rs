//! Validators: each looks at one candidate (and, for phone numbers, a few bytes of
//! context before it) and accepts it with an exact span or rejects it.

use std::{net::Ipv6Addr, sync::LazyLock};

use super::{
    CONTEXT_BEFORE, Detector, Finding, Kind, Verdict,
    rules::{Check, RULES},
};

/// The compiled value extractors, by rule index.
static VALUES: LazyLock<Vec<Option<regex::Regex>>> = LazyLock::new(|| {
    RULES
        .iter()
        .map(|rule| rule.value.and_then(|p| regex::Regex::new(p).ok()))
        .collect()
});

impl Check {
    pub(crate) fn validate(
        self,
        detector: &Detector,
        text: &str,
        start: usize,
        end: usize,
        rule: usize,
    ) -> Verdict {
        let kind = RULES[rule].kind;
        let whole = Verdict::Accept(Finding { kind, start, end });
        let candidate = &text[start..end];
        // A value in a provider's own format is a finding on its format
        // alone, documentation values included: AWS's `AKIAIOSFODNN7EXAMPLE`
        // is the first thing an evaluator pastes, and real keys are leaked
        // from the same files. Placeholder heuristics apply only to values
        // known by their name (`password = changeme`, [`looks_generated`]).
        match self {
            Check::Whole => whole,
            Check::Capped(max) if end - start <= max => whole,
            Check::Capped(_) => Verdict::Reject,
            Check::PrivateKey { max } if end - start <= max && has_key_body(candidate) => whole,
            Check::PrivateKey { .. } => Verdict::Reject,
            Check::Ipv4 => match candidate.parse::<std::net::Ipv4Addr>() {
                Ok(ip) if !(ip.is_loopback() || ip.is_unspecified() || ip.is_broadcast()) => whole,
                _ => Verdict::Reject,
            },
            Check::Ipv6 => ipv6(candidate, kind, start),
            Check::Iban => iban(candidate, kind, start),
            Check::Numeric => numeric(text, start, end),
            Check::HalberdKey => match crate::halberd_key::parse_key(candidate) {
                Some(_) => whole,
                None => Verdict::Reject,
            },
            Check::Value { min_entropy } => {
                let Some((value_start, value_end)) = value_span(rule, candidate) else {
                    return Verdict::Reject;
                };
                let value = &candidate[value_start..value_end];
                if value.is_empty() || entropy(value) < min_entropy {
                    return Verdict::Reject;
                }
                Verdict::Accept(Finding {
                    kind,
                    start: start + value_start,
                    end: start + value_end,
                })
            }
            Check::Assignment => assignment(detector, text, start, end, rule),
        }
    }
}

fn value_span(rule: usize, candidate: &str) -> Option<(usize, usize)> {
    // The generic rule matches most often (every `key = value` in code and
    // configuration), and its value regex has a fixed shape: read it directly.
    if rule == generic_rule() && candidate.is_ascii() {
        return generic_value(candidate);
    }
    captured_value_span(VALUES.get(rule)?.as_ref()?, candidate)
}

/// The first participating group of the leftmost-first match.
pub(crate) fn captured_value_span(regex: &regex::Regex, candidate: &str) -> Option<(usize, usize)> {
    let captures = regex.captures(candidate)?;
    let group = captures.iter().skip(1).flatten().next()?;
    Some((group.start(), group.end()))
}

/// The index of the generic rule.
pub(crate) fn generic_rule() -> usize {
    static INDEX: LazyLock<usize> = LazyLock::new(|| {
        RULES
            .iter()
            .position(|rule| rule.id == "generic_credential")
            .unwrap_or(usize::MAX)
    });
    *INDEX
}

/// The group the generic rule's value regex captures in an ASCII `candidate`,
/// read without running the regex:
/// `(?:=|:|\s)[ \t]*(?:"([!#-~]+)"|'([!-&(-~]+)'|(?:["'`(]{0,3}|&quot;|&#34;)([A-Za-z0-9_\-+/=.~!@#$%^*?]+))$`.
///
/// The match is the leftmost separator (`=`, `:` or white space) after which
/// the rest of the candidate has the shape (see [`generic_tail`]). The generic
/// rule's matches are ASCII, and the caller asks the regex for anything else.
/// A property test checks this against the regex's own captures.
pub(crate) fn generic_value(candidate: &str) -> Option<(usize, usize)> {
    let bytes = candidate.as_bytes();
    (0..bytes.len()).find_map(|at| {
        if !matches!(
            bytes[at],
            b'=' | b':' | b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r'
        ) {
            return None;
        }
        let (start, end) = generic_tail(&bytes[at + 1..])?;
        Some((at + 1 + start, at + 1 + end))
    })
}

/// The captured group if `tail` matches
/// `[ \t]*(?:"([!#-~]+)"|'([!-&(-~]+)'|(?:["'`(]{0,3}|&quot;|&#34;)([…]+))$` as a
/// whole. No alternative starts with a space or a tab, so the spaces all
/// belong to `[ \t]*`. The alternatives are tried in the regex's order; the
/// bare value's class has none of the opening characters, so its opening run
/// is all of them there are (at most three), or an HTML-escaped quote.
fn generic_tail(tail: &[u8]) -> Option<(usize, usize)> {
    let spaces = tail
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    let body = &tail[spaces..];
    let quoted = |quote: u8, allowed: fn(u8) -> bool| {
        body.len() >= 3
            && body[0] == quote
            && body[body.len() - 1] == quote
            && body[1..body.len() - 1].iter().all(|b| allowed(*b))
    };
    if quoted(b'"', |b| b == b'!' || (b'#'..=b'~').contains(&b))
        || quoted(b'\'', |b| {
            (b'!'..=b'&').contains(&b) || (b'('..=b'~').contains(&b)
        })
    {
        return Some((spaces + 1, tail.len() - 1));
    }
    let opening = body
        .iter()
        .take_while(|b| matches!(b, b'"' | b'\'' | b'`' | b'('))
        .count();
    let prefix = match opening {
        0 if body.starts_with(b"&quot;") => 6,
        0 if body.starts_with(b"&#34;") => 5,
        0..=3 => opening,
        _ => return None,
    };
    let value = &body[prefix..];
    (!value.is_empty() && value.iter().all(|b| BARE_VALUE[usize::from(*b)]))
        .then_some((spaces + prefix, tail.len()))
}

/// The generic rule's bare value class, `[A-Za-z0-9_\-+/=.~!@#$%^*?]`, as a
/// table: one load per byte.
static BARE_VALUE: [bool; 256] = crate::ascii_alnum_and(b"_-+/=.~!@#$%^*?");

/// `name = value`: a value that a specific rule matches exactly takes that
/// rule's kind (and its check); any other value must look generated: long
/// enough, not a placeholder, and with enough entropy for its length.
fn assignment(detector: &Detector, text: &str, start: usize, end: usize, rule: usize) -> Verdict {
    let kind = RULES[rule].kind;
    let Some((value_start, mut value_end)) = value_span(rule, &text[start..end]) else {
        return Verdict::Reject;
    };
    let (value_start, value_end_abs) = (start + value_start, {
        // A value quoted on the left ends before a closing punctuation run.
        let value = &text[start + value_start..start + value_end];
        let trimmed = value.trim_end_matches(['.', ',']);
        value_end -= value.len() - trimmed.len();
        start + value_end
    });
    if let Some((index, end)) = detector.classify_at(text, value_start, value_end_abs) {
        let rule = &RULES[index];
        if !matches!(rule.check, Check::Assignment | Check::Numeric)
            && rule.kind != Kind::Email
            && let Verdict::Accept(finding) =
                rule.check.validate(detector, text, value_start, end, index)
        {
            return Verdict::Accept(finding);
        }
    }
    let value = &text[value_start..value_end_abs];
    let name = text[start..value_start].to_ascii_lowercase();
    let password_name = ["pass", "pw", "pwd", "identified", "pswd"]
        .iter()
        .any(|k| name.contains(k));
    if looks_generated(value) || (password_name && looks_like_password(value)) {
        Verdict::Accept(Finding {
            kind,
            start: value_start,
            end: value_end_abs,
        })
    } else {
        Verdict::Reject
    }
}

/// The gate for values found only by their name. Passwords chosen by people
/// ("Xk9#mP2$vL7qR4w") pass through the character-class test, tokens through
/// the entropy test; words, placeholders and repeated characters do not.
pub(crate) fn looks_generated(value: &str) -> bool {
    // Longer values found only by their name are mostly encrypted blobs
    // (SealedSecrets, Jasypt), which are meant to be shared.
    if value.len() < 8 || value.len() > 200 {
        return false;
    }
    if is_placeholder(value) {
        return false;
    }
    if is_code(value) {
        return false;
    }
    let classes = [
        value.bytes().any(|b| b.is_ascii_lowercase()),
        value.bytes().any(|b| b.is_ascii_uppercase()),
        value.bytes().any(|b| b.is_ascii_digit()),
        value
            .bytes()
            .any(|b| !b.is_ascii_alphanumeric() && !matches!(b, b'_' | b'.' | b'-')),
    ]
    .iter()
    .filter(|present| **present)
    .count();
    let bits = entropy(value);
    // Identifiers such as `snake_case_name` have two classes, and so do
    // CamelCase names (`AutoModelForCausalLM`); a value needs three classes, or
    // two with a digit or symbol and the entropy of a random token.
    let letters_only = value
        .bytes()
        .all(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b'.' | b'-'));
    // Sixteen random characters almost never lack both capitals and digits
    // (base64: p < 1e-5), while `/oauth_signature=` does.
    let upper_or_digit = value
        .bytes()
        .any(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    (classes >= 3 && bits >= 2.5)
        || (classes >= 2 && !letters_only && upper_or_digit && bits >= 3.5 && value.len() >= 16)
}

/// The gate for values named as passwords: people choose short ones
/// ("cackle!", "dkajco1"), so six characters with two classes are enough, where
/// `_`, `.` and `-` do not count as a class (`user_password` is a name, not a
/// password), and a value made of letters only (`getPassword`) is an identifier.
pub(crate) fn looks_like_password(value: &str) -> bool {
    if value.len() < 6 || value.len() > 128 || is_placeholder(value) || is_code(value) {
        return false;
    }
    let special = value
        .bytes()
        .any(|b| !b.is_ascii_alphanumeric() && !matches!(b, b'_' | b'.' | b'-'));
    let digit = value.bytes().any(|b| b.is_ascii_digit());
    let letter = value.bytes().any(|b| b.is_ascii_alphabetic());
    let classes = [special, digit, letter].iter().filter(|c| **c).count();
    classes >= 2
        && !value
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// Values that are code, not credentials: a dotted path such as
/// `Base64.getMimeDecoder` or `os.environ`, a hex literal such as `0x31c45018`,
/// or a snake-case name.
fn is_code(value: &str) -> bool {
    let identifier = |part: &str| {
        part.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    // `os.environ`, `Base64.getMimeDecoder`: identifiers whose last part is a
    // word (letters and underscores only), unlike `n83.bat47Fy4`.
    let dotted = value.contains('.')
        && value.split('.').all(identifier)
        && value.rsplit('.').next().is_some_and(|last| {
            last.len() >= 3 && last.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
        });
    let hex = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    // `oauth2_client_credentials`, `read-only`: lower-case words joined by `_`
    // or `-`, with at most two digits, name a thing rather than hide one.
    let words = value.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && value.contains(['_', '-'])
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && value.bytes().filter(u8::is_ascii_digit).count() <= 2;
    dotted || hex || words
}

/// Words that, alone or joined, make a value a stand-in for a secret
/// rather than a secret: `changeme`, `your_api_key_here`, `<token>`.
const PLACEHOLDER_WORDS: [&str; 41] = [
    "a",
    "an",
    "api",
    "apikey",
    "access",
    "auth",
    "change",
    "changeme",
    "changeit",
    "default",
    "dummy",
    "enter",
    "example",
    "fake",
    "fixme",
    "here",
    "insert",
    "key",
    "me",
    "my",
    "none",
    "null",
    "pass",
    "passwd",
    "password",
    "placeholder",
    "put",
    "redacted",
    "replace",
    "sample",
    "secret",
    "test",
    "the",
    "this",
    "todo",
    "token",
    "undefined",
    "value",
    "with",
    "xxx",
    "your",
];

/// A value that stands in for a secret, judged by its whole shape, never by a
/// word it merely contains (`supersecret123` is a password, `your_api_key`
/// is not): a template or variable reference (`<token>`, `${DB_PASS}`,
/// `{{ secret }}`, `%PASSWORD%`, `$TOKEN`), a mask (`xxxxxxxx`, `****1234`),
/// an address (`ann@example.com`, a user name), an encrypted value (`ENC(…)`), a URL, or placeholder words only, split at
/// `_`, `-`, `.`, spaces and case changes.
fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let wrapped = |open: &str, close: &str| lower.starts_with(open) && lower.ends_with(close);
    if wrapped("<", ">")
        || wrapped("${", "}")
        || wrapped("{{", "}}")
        || wrapped("%", "%")
        || wrapped("[", "]")
        || lower.starts_with('$')
        || lower.starts_with("enc(")
        || lower.starts_with("http")
    {
        return true;
    }
    // Masked (`ZAQWS-*****-VBGTR`, `****1234`) or an address, which names a
    // user rather than hiding a secret.
    if lower.contains("***") || lower.contains("•••") || is_email_shaped(&lower) {
        return true;
    }
    // A mask: one character repeated (`xxxxxxxx`, `********`, `--------`).
    let mut bytes = lower.bytes();
    if let Some(first) = bytes.next()
        && matches!(first, b'x' | b'*' | b'#' | b'.' | b'-' | b'_' | b'0')
        && bytes.all(|b| b == first)
    {
        return true;
    }
    // Placeholder words only: `your_api_key_here`, `CHANGE-ME`, `YourToken`.
    let mut words = 0;
    let mut word = String::new();
    let mut all_placeholder = true;
    let mut finish = |word: &mut String, words: &mut usize| {
        if !word.is_empty() {
            *words += 1;
            let w = word.as_str();
            let mask = w.len() >= 3 && w.bytes().all(|b| b == b'x');
            all_placeholder &= PLACEHOLDER_WORDS.contains(&w) || mask;
            word.clear();
        }
    };
    let mut prev_lower = false;
    for c in value.chars() {
        if !c.is_ascii_alphanumeric() {
            if !matches!(c, '_' | '-' | '.' | ' ') {
                return false;
            }
            finish(&mut word, &mut words);
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower {
            finish(&mut word, &mut words);
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        word.push(c.to_ascii_lowercase());
    }
    finish(&mut word, &mut words);
    words > 0 && all_placeholder
}

/// `name@host.tld`: one `@`, a dot in the host, no spaces.
fn is_email_shaped(value: &str) -> bool {
    match value.split_once('@') {
        Some((local, host)) => {
            !local.is_empty()
                && !host.contains('@')
                && host.contains('.')
                && !host.starts_with('.')
                && !host.ends_with('.')
                && !value.contains(' ')
        }
        None => false,
    }
}

/// Shannon entropy in bits per byte: `log2(n) - sum(c * log2(c)) / n` over the
/// count `c` of each distinct byte. For values shorter than 256 bytes (all but a
/// few) the sum is built in one pass: a byte seen `k` times before adds
/// `(k+1)·log2(k+1) − k·log2(k)`, read from a table, so there is no logarithm per
/// byte and no second pass over the counts.
pub(crate) fn entropy(value: &str) -> f32 {
    let bytes = value.as_bytes();
    let n = bytes.len();
    if n == 0 {
        return 0.0;
    }
    let sum = if n < 256 {
        let delta = &*ENTROPY_DELTA;
        let mut counts = [0u8; 256];
        let mut sum = 0f64;
        for &byte in bytes {
            let count = &mut counts[usize::from(byte)];
            sum += delta[usize::from(*count)];
            *count += 1;
        }
        sum
    } else {
        let mut counts = [0u32; 256];
        for &byte in bytes {
            counts[usize::from(byte)] += 1;
        }
        counts
            .iter()
            .filter(|c| **c > 1)
            .map(|&c| f64::from(c) * f64::from(c).log2())
            .sum()
    };
    let n = n as f64;
    (n.log2() - sum / n) as f32
}

/// `(k+1)·log2(k+1) − k·log2(k)` for `k` in `0..256`.
static ENTROPY_DELTA: LazyLock<[f64; 256]> = LazyLock::new(|| {
    let term = |k: f64| if k > 0.0 { k * k.log2() } else { 0.0 };
    std::array::from_fn(|k| term(k as f64 + 1.0) - term(k as f64))
});

fn ipv6(candidate: &str, kind: Kind, start: usize) -> Verdict {
    let groups = candidate.split(':').filter(|g| !g.is_empty()).count();
    let has_digit = candidate.bytes().any(|b| b.is_ascii_digit());
    if groups >= 3 && has_digit && candidate.parse::<Ipv6Addr>().is_ok() {
        Verdict::Accept(Finding {
            kind,
            start,
            end: start + candidate.len(),
        })
    } else {
        Verdict::Reject
    }
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// An IBAN, compact or in groups. The pattern's groups may have taken the
/// next words ("ES79… now", "ES32… avant le"): if the whole candidate fails,
/// it is tried again without its last one and two space-separated pieces.
fn iban(candidate: &str, kind: Kind, start: usize) -> Verdict {
    let accept = |len: usize| {
        Verdict::Accept(Finding {
            kind,
            start,
            end: start + len,
        })
    };
    let mut head = candidate;
    for _ in 0..3 {
        if is_iban(head) {
            return accept(head.len());
        }
        match head.rsplit_once(' ') {
            Some((rest, _)) => head = rest,
            None => break,
        }
    }
    Verdict::Reject
}

fn is_iban(candidate: &str) -> bool {
    let compact: Vec<u8> = candidate
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    let Some(country) = compact.get(..2).and_then(|c| std::str::from_utf8(c).ok()) else {
        return false;
    };
    let Some((_, length)) = IBAN_LENGTHS.iter().find(|(code, _)| *code == country) else {
        return false;
    };
    if compact.len() != *length {
        return false;
    }
    // Move the first four characters to the end, read letters as 10..35 and
    // check that the number is 1 modulo 97, a digit at a time.
    let mut remainder: u32 = 0;
    for &byte in compact[4..].iter().chain(&compact[..4]) {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            b'A'..=b'Z' => u32::from(byte - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, digit) in digits.iter().rev().enumerate() {
        let mut d = u32::from(*digit);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Issuer prefixes and lengths of the payment card networks.
fn card_network(digits: &[u8]) -> bool {
    let prefix = |n: usize| {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    let len = digits.len();
    match digits.first() {
        Some(4) => matches!(len, 13 | 16 | 19), // Visa
        Some(5) => {
            (51..=55).contains(&prefix(2)) && len == 16
                || (50..=59).contains(&prefix(2)) && (12..=19).contains(&len)
        } // Mastercard, Maestro
        Some(2) => {
            (2221..=2720).contains(&prefix(4)) && len == 16 || prefix(4) == 2131 && len == 15
        } // Mastercard, JCB
        Some(3) => {
            matches!(prefix(2), 34 | 37) && len == 15                                   // Amex
                || ((300..=305).contains(&prefix(3)) || matches!(prefix(2), 36 | 38 | 39)) && (14..=19).contains(&len) // Diners
                // JCB issues 3528-3589; the rest of 35 is unassigned, but
                // generators and test data use it, and a Luhn-valid 16-digit
                // number starting 35 is a card to treat as one.
                || prefix(2) == 35 && (16..=19).contains(&len) // JCB
        }
        Some(6) => (12..=19).contains(&len), // Discover, UnionPay, Maestro
        Some(1) => prefix(4) == 1800 && len == 15, // JCB
        _ => false,
    }
}

/// Words that make a bare digit run a phone number when they come shortly
/// before it, in the languages the gateway's users write in most: verbs of
/// calling and reaching, and the words for a phone. Tuned on our seeded
/// generator (`scripts/pii_generate.py`), never on a public set's phrasing.
const PHONE_CONTEXT: &[&str] = &[
    "phone",
    "tel",
    "call",
    "mobile",
    "cell",
    "fax",
    "contact",
    "number",
    "whatsapp",
    "sms",
    "text me",
    "reach",
    "dial",
    "ring",
    "telefon",
    "téléphone",
    "tél",
    "portable",
    "joindre",
    "appeler",
    "teléfono",
    "móvil",
    "llamar",
    "telefone",
    "celular",
    "ligar",
    "cellulare",
    "chiamare",
    "contatt",
    "numero",
    "nummer",
    "bellen",
    "bereikbaar",
    "erreichen",
    "anrufen",
    "handy",
];
const PHONE_LABELS: &[&str] = &["office", "fax", "mobile", "cell", "home", "work"];

/// A run of digits and separators: a US SSN, a payment card or a phone number,
/// or nothing.
fn numeric(text: &str, start: usize, end: usize) -> Verdict {
    let run = &text[start..end];
    // Split off a trailing label ("office"), which is context, not value.
    let ends_with_label = |label: &str| {
        run.len() >= label.len()
            && run.as_bytes()[run.len() - label.len()..].eq_ignore_ascii_case(label.as_bytes())
    };
    // Most runs end in a digit, and then no label needs comparing.
    let label = match run.as_bytes().last() {
        Some(last) if last.is_ascii_alphabetic() => {
            PHONE_LABELS.iter().find(|label| ends_with_label(label))
        }
        _ => None,
    };
    let (number, labelled) = match label {
        Some(label) => (
            run[..run.len() - label.len()].trim_end_matches([' ', '-']),
            true,
        ),
        None => (run, false),
    };
    // And an extension ("x459", "ext. 12").
    let main = match number
        .as_bytes()
        .iter()
        .position(|&b| matches!(b | 0x20, b'x' | b'e'))
    {
        Some(at) => number[..at].trim_end(),
        None => number,
    };
    if main.len() > Shape::MAX {
        return Verdict::RejectWhole;
    }
    let shape = Shape::of(main.as_bytes());
    let digits = shape.digits();
    let accept = |kind, len: usize| {
        Verdict::Accept(Finding {
            kind,
            start,
            end: start + len,
        })
    };
    if main.starts_with('(') && !shape.close_bracket {
        // "(555 1234" is text in parentheses, not a bracketed area code: look
        // again one character on, after the bracket, where the same digits
        // may be an SSN, a card or an address ("Denise (078-05-1120)").
        return Verdict::Reject;
    }
    if is_date(shape.date_groups()) {
        return Verdict::RejectWhole;
    }
    // US SSN: exactly ddd-dd-dddd (or with spaces), valid area, group and serial.
    if main.len() == 11 && digits.len() == 9 {
        let b = main.as_bytes();
        if (b[3] == b'-' && b[6] == b'-') || (b[3] == b' ' && b[6] == b' ') {
            let area =
                u32::from(digits[0]) * 100 + u32::from(digits[1]) * 10 + u32::from(digits[2]);
            let group = u32::from(digits[3]) * 10 + u32::from(digits[4]);
            let serial = digits[5..]
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(*d));
            if area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 {
                return accept(Kind::UsSsn, main.len());
            }
        }
    }
    // Payment card: 12 to 19 digits, separated uniformly or not at all, a known
    // network prefix and a valid Luhn check digit.
    if (12..=19).contains(&digits.len()) && !main.starts_with(['+', '(']) {
        let uniform = shape.separators == shape.spaces || shape.separators == shape.dashes;
        if uniform && card_network(digits) && luhn(digits) {
            return accept(Kind::CreditCard, main.len());
        }
    }
    let phone = || accept(Kind::Phone, number.len());
    if !(7..=15).contains(&digits.len()) || shape.slashes > 1 {
        return Verdict::RejectWhole;
    }
    // A single dot between digits is a decimal number; dotted numbers need
    // groups of two or more digits (`04.72.18.33.90`, not `9.9.392.1.3`); a
    // double space is a table, not a number.
    if (shape.separators == 1 && shape.dots == 1)
        || (shape.dots > 0 && shape.shortest_group < 2)
        || shape.double_space
    {
        return Verdict::RejectWhole;
    }
    // Strong shapes stand alone: international with `+` or `00`, a bracketed
    // area code, or US ddd-ddd-dddd.
    // `+`, or the `00` international access code and a country code
    // (`001-733-434-7729`, `0044 20 7946 0958`).
    let international = (main.starts_with('+') && digits.len() >= 8)
        || (main.starts_with("00")
            && digits.get(2).is_some_and(|d| *d != 0)
            && shape.separators > 0
            && digits.len() >= 11);
    let bracketed = main.starts_with('(') && digits.len() >= 9;
    let us = {
        let b = main.as_bytes();
        b.len() == 12 && (b[3] == b'-' || b[3] == b'.') && b[7] == b[3] && digits.len() == 10
    };
    // Brazil: a two-digit area code, then four or five digits, a dash and
    // four (`11 91234-5678`, `43 4985-4287`).
    let brazil = {
        let b = main.as_bytes();
        let n = b.len();
        (n == 12 || n == 13)
            && b[2] == b' '
            && b[n - 5] == b'-'
            && shape.separators == 2
            && digits.len() == n - 2
    };
    if international || bracketed || us || brazil {
        return phone();
    }
    // A national number with a trunk prefix and grouping ("0493 18 27 65",
    // "04.72.18.33.90", "07700 900 123").
    // Two groups only when the first is an area code: `030 901820`, not a
    // document number such as `0401000-02`.
    // The area code may be set off by a dash (`0126-695778`) when the rest is
    // a whole subscriber number.
    let area_code = shape.groups == 2
        && (3..=6).contains(&shape.first_group)
        && shape.separators == 1
        && (shape.spaces == 1 || (shape.dashes == 1 && digits.len() - shape.first_group >= 6));
    if digits[0] == 0 && (shape.groups >= 3 || area_code) && (9..=12).contains(&digits.len()) {
        return phone();
    }
    // A national number written without separators: the trunk prefix 0, an
    // area or mobile code that does not start with 0, ten or eleven digits
    // in all (`0237253447`, `02434585801`). Zero-padded identifiers start
    // `00`.
    if digits[0] == 0
        && digits[1] != 0
        && shape.separators == 0
        && (10..=11).contains(&digits.len())
    {
        return phone();
    }
    // An Indian mobile number written without separators: ten digits, the
    // first 6 to 9 (`9876543210`). Ten-digit identifiers starting so are
    // rarer than the numbers; a `+91` or a word makes the rest sure.
    if shape.separators == 0 && digits.len() == 10 && (6..=9).contains(&digits[0]) {
        return phone();
    }
    // Anything else needs context: a label after it or a phone word before it;
    // an unseparated run also needs the length of a full number.
    if (labelled || has_phone_context(text, start)) && (shape.separators > 0 || digits.len() >= 9) {
        return phone();
    }
    Verdict::RejectWhole
}

/// What one pass over a digit run (a number before its extension) learns:
/// its digits, how many of each separator it has, and its groups as the phone
/// test splits them (at spaces, `-`, `.`, `/` and brackets) and as the date
/// test splits them (at spaces, `-`, `/` and `.`).
pub(crate) struct Shape<'a> {
    digits: [u8; Shape::MAX],
    n_digits: usize,
    /// Bytes that are not digits, and how many of them are `/`, spaces, `-`, `.`.
    pub separators: usize,
    pub slashes: usize,
    pub spaces: usize,
    pub dashes: usize,
    pub dots: usize,
    /// Two spaces in a row somewhere.
    pub double_space: bool,
    pub close_bracket: bool,
    /// The phone test's groups: how many, the first one's length, the shortest.
    pub groups: usize,
    pub first_group: usize,
    pub shortest_group: usize,
    /// The date test's first eight groups; `is_date` needs no more.
    date_groups: [&'a [u8]; 8],
    n_date_groups: usize,
}

impl<'a> Shape<'a> {
    /// The pattern bounds the number before its extension to 27 bytes; a
    /// fixed buffer of this size (no allocation per candidate) always suffices.
    pub(crate) const MAX: usize = 32;

    /// The shape of `run`, whose digits past the first `MAX` are not kept (the
    /// caller rejects longer runs). Inlined, so that the shape is built where
    /// the caller keeps it rather than copied out.
    #[inline(always)]
    pub(crate) fn of(run: &'a [u8]) -> Shape<'a> {
        let mut shape = Shape {
            digits: [0; Self::MAX],
            n_digits: 0,
            separators: 0,
            slashes: 0,
            spaces: 0,
            dashes: 0,
            dots: 0,
            double_space: false,
            close_bracket: false,
            groups: 0,
            first_group: 0,
            shortest_group: usize::MAX,
            date_groups: [&[]; 8],
            n_date_groups: 0,
        };
        // Counters live in locals inside the loop (registers, not the struct).
        let mut n_digits = 0;
        let (mut phone_start, mut date_start) = (0, 0);
        let mut at = 0;
        while at < run.len() {
            // A stretch of digits, in a tight loop.
            while let Some(&b) = run.get(at)
                && b.is_ascii_digit()
            {
                if let Some(slot) = shape.digits.get_mut(n_digits) {
                    *slot = b - b'0';
                    n_digits += 1;
                }
                at += 1;
            }
            let Some(&b) = run.get(at) else { break };
            shape.separators += 1;
            match b {
                b'/' => shape.slashes += 1,
                b' ' => {
                    shape.spaces += 1;
                    shape.double_space |= at > 0 && run[at - 1] == b' ';
                }
                b'-' => shape.dashes += 1,
                b'.' => shape.dots += 1,
                b')' => shape.close_bracket = true,
                _ => {}
            }
            if matches!(b, b' ' | b'-' | b'.' | b'/' | b'(' | b')') {
                shape.end_group(at - phone_start);
                phone_start = at + 1;
            }
            if matches!(b, b' ' | b'-' | b'/' | b'.') {
                shape.push_date_group(&run[date_start..at]);
                date_start = at + 1;
            }
            at += 1;
        }
        shape.n_digits = n_digits;
        shape.end_group(run.len() - phone_start);
        shape.push_date_group(&run[date_start..]);
        shape
    }

    fn end_group(&mut self, len: usize) {
        if len == 0 {
            return;
        }
        if self.groups == 0 {
            self.first_group = len;
        }
        self.shortest_group = self.shortest_group.min(len);
        self.groups += 1;
    }

    fn push_date_group(&mut self, group: &'a [u8]) {
        if group.is_empty() {
            return;
        }
        if let Some(slot) = self.date_groups.get_mut(self.n_date_groups) {
            *slot = group;
        }
        self.n_date_groups += 1;
    }

    pub(crate) fn digits(&self) -> &[u8] {
        &self.digits[..self.n_digits]
    }

    /// The date test's groups, at most the first eight.
    pub(crate) fn date_groups(&self) -> &[&'a [u8]] {
        &self.date_groups[..self.n_date_groups.min(self.date_groups.len())]
    }
}

fn has_phone_context(text: &str, start: usize) -> bool {
    let mut from = start.saturating_sub(CONTEXT_BEFORE);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let before = text[from..start].to_lowercase();
    PHONE_CONTEXT.iter().any(|word| before.contains(word))
}

/// 2024-01-31, 31/01/2024, 31.01.2024 (optionally followed by an hour) and
/// year ranges such as 1990-2024, given a run's groups (split at spaces, `-`,
/// `/` and `.`), of which only the first eight are given: every shape has at
/// most four and an hour, so a longer list fails them all whether or not it
/// is cut.
pub(crate) fn is_date(groups: &[&[u8]]) -> bool {
    let year = |g: &[u8]| g.len() == 4 && (g.starts_with(b"19") || g.starts_with(b"20"));
    // A number of one or two digits from 1 to `max`, read as `u32::from_str`
    // reads it (which also takes a leading `+`).
    let small = |g: &[u8], max: u32| {
        let value = match *g {
            [d] | [b'+', d] if d.is_ascii_digit() => u32::from(d - b'0'),
            [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
                u32::from(a - b'0') * 10 + u32::from(b - b'0')
            }
            _ => return false,
        };
        (1..=max).contains(&value)
    };
    match groups {
        [y, m, d, rest @ ..] if year(y) && small(m, 12) && small(d, 31) => rest.len() <= 1,
        [d, m, y, rest @ ..] if year(y) && small(m, 12) && small(d, 31) => rest.len() <= 1,
        [m, d, y, rest @ ..] if year(y) && small(m, 12) && small(d, 31) => rest.len() <= 1,
        [a, b] => year(a) && year(b),
        _ => false,
    }
}

/// Whether a PEM candidate holds key material after its header: a run of at
/// least 16 base64 characters. The header itself (`-----BEGIN … KEY-----`) has
/// none, so a header next to a footer or a placeholder is not a key.
fn has_key_body(candidate: &str) -> bool {
    let body = candidate
        .get(5..)
        .and_then(|rest| rest.find("-----").map(|at| &rest[at + 5..]))
        .unwrap_or_default();
    let mut run = 0;
    for byte in body.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/' {
            run += 1;
            if run >= 16 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}
