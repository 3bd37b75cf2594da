//! The rule table: one pattern per rule, in priority order (when two patterns
//! match at the same position the earlier one wins), each with the check that
//! validates its candidates and its own examples. In the examples, `«` and `»`
//! mark the exact span that must be found; every example runs as a test
//! (`rules_match_their_examples`). The example values are random strings made for
//! these tests, not real credentials.
//!
//! Patterns use ASCII classes only (the detector compiles them with Unicode off)
//! and start at a word boundary or a literal so that a rejected candidate never
//! makes the walk re-enter the same token. Long tails are unbounded in the regex
//! and capped by the check, which keeps the lazy DFA small.

use super::Kind;

pub struct Rule {
    /// Stable id: the secret family for secrets, the type name otherwise.
    pub id: &'static str,
    pub kind: Kind,
    pub pattern: &'static str,
    pub check: Check,
    /// For `Value` and `Assignment` checks: a regex applied to the candidate
    /// only, whose capture group 1 is the value.
    pub value: Option<&'static str>,
    pub positives: &'static [&'static str],
    pub negatives: &'static [&'static str],
}

#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// The whole match is the value.
    Whole,
    /// The whole match, at most this many bytes.
    Capped(usize),
    /// A PEM or PGP block of at most `max` bytes whose body holds a base64 run
    /// of at least 16 characters (not `header="-----BEGIN …"` followed by
    /// `footer=`).
    PrivateKey {
        max: usize,
    },
    /// A run of digits and separators: a payment card, a US SSN or a phone number.
    Numeric,
    /// An IPv4 address that can point at someone: not loopback, unspecified
    /// or broadcast.
    Ipv4,
    Ipv6,
    Iban,
    /// The match holds the value in capture group 1 of `RULE_VALUES[index]`; the
    /// value must have at least `min_entropy` bits per character.
    Value {
        min_entropy: f32,
    },
    /// `keyword = value`: the value is named by a specific rule when one matches it
    /// exactly, otherwise it must pass the entropy and shape gate.
    Assignment,
    HalberdKey,
}

macro_rules! secret {
    ($id:literal, $pattern:expr, $check:expr, value: $value:literal, [$($pos:literal),* $(,)?], [$($neg:literal),* $(,)?]) => {
        Rule {
            id: $id,
            kind: Kind::Secret($id),
            pattern: $pattern,
            check: $check,
            value: Some($value),
            positives: &[$($pos),*],
            negatives: &[$($neg),*],
        }
    };
    ($id:literal, $pattern:expr, $check:expr, [$($pos:literal),* $(,)?], [$($neg:literal),* $(,)?]) => {
        Rule {
            id: $id,
            kind: Kind::Secret($id),
            pattern: $pattern,
            check: $check,
            value: None,
            positives: &[$($pos),*],
            negatives: &[$($neg),*],
        }
    };
}

/// The way from one line of a PEM block to the next: optional trailing code
/// or comment characters (`" +`, `*/`, `\`), a line break (real, or escaped as
/// `\n` / `\\n`), more of either, and the next line's prefix (`  *  `,
/// `// # /*`, `#6 0.245 `, `+ "`).
macro_rules! pem_gap {
    () => {
        r#"[ \t"'+,;*/\\]{0,16}(?:\r?\n|\r|\\{1,4}[rn])(?:[ \t"'+,;*/\\]|\r?\n|\r|\\{1,4}[rn]){0,32}[ \t"'+#0-9.:\-\[\]|,;*/]{0,40}"#
    };
}

pub static RULES: &[Rule] = &[
    Rule {
        id: "private_key",
        kind: Kind::PrivateKey,
        // The header, then lines that each hold a base64 run or an armor header
        // (`Proc-Type: 4,ENCRYPTED`, `Version: GnuPG v1.4.12 (GNU/Linux)`), then
        // the footer, with an optional short last line before it. Every line is
        // reached through a `pem_gap!`, which belongs to the line after it, so a
        // greedy trailing part can never end the block early.
        pattern: concat!(
            r"-----BEGIN[ A-Z0-9_]{0,40}PRIVATE KEY(?: BLOCK)?-----",
            "(?:",
            pem_gap!(),
            r"(?:[A-Za-z\-]{1,40}: [ -\[\]-~]{1,100}|[A-Za-z0-9+/=]{16,}|=[A-Za-z0-9+/]{4}))+",
            "(?:(?:",
            pem_gap!(),
            "[A-Za-z0-9+/]{1,15}={0,2})?",
            pem_gap!(),
            "-----END[ A-Z0-9_]{0,40}PRIVATE KEY(?: BLOCK)?-----)?",
        ),
        check: Check::PrivateKey { max: 64 * 1024 },
        value: None,
        positives: &[
            "key:\n«-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END RSA PRIVATE KEY-----»\nthanks",
            "{\"private_key\": \"«-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----»\\n\"}",
            "«-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----»",
            // A PGP block in a comment: per-line prefixes, an armor header with
            // free text, a blank line, a trailing `*/`, the checksum line.
            "/*\n *  «-----BEGIN PGP PRIVATE KEY BLOCK-----\n *  Version: Halberd 1.0 (test/none)\n\n *  PtYgjmUhBel31iEl2hpChYgCfrL1spNxnyVmihA/2O76UMFxFkM/R5Kjp1vRt+1f\n // # /*jORS/6ilI8ihN5KXSc7Tvo/hBKqFYY/kv5ZJr3J1TWDtkwtDDb+xHKas1VOqg6YY*/\n *  ZYn9ZhyiA4uoRgnatmUdjAWtGSU8po+799NksnRH\n *  =9ucA\n *  -----END PGP PRIVATE KEY BLOCK-----»\n */",
            // Code concatenation with escaped line breaks inside a line.
            "k = \"«-----BEGIN RSA PRIVATE KEY-----\\n\" +\n\"PtYgjmUhBel31iEl2hpChYgCfrL1spNxnyVmihA\\\\\\\\njORS/6ilI8ihN5KXSc7Tvo/hBKqFYY\\\\\n\tZYn9ZhyiA4uoRgnatmUdjAWtGSU8po\\r+799NksnRH\\n-----END RSA PRIVATE KEY-----»\";",
        ],
        negatives: &[
            "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34Gkx\n-----END PUBLIC KEY-----",
            "the words BEGIN PRIVATE KEY in prose",
            "header=\"-----BEGIN OPENSSH PRIVATE KEY-----\"\nfooter=\"-----END OPENSSH PRIVATE KEY-----\"",
        ],
    },
    Rule {
        id: "jwt",
        kind: Kind::Jwt,
        pattern: r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
        check: Check::Capped(16 * 1024),
        value: None,
        positives: &[
            "Authorization: Bearer «eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJoYWxiZXJkLXRlc3QiLCJpYXQiOjE3MDAwMDAwMDB9.q0m3xW1yT8pL4c2nVb7RkS9dF6gH5jA0zE3uY2iO1wQ»",
            "unsigned «eyJhbGciOiJub25lIn0.eyJzdWIiOiJhYmMxMjMifQ.» token",
        ],
        negatives: &["eyJ alone", "eyJhbGciOiJIUzI1NiJ9 without a payload"],
    },
    secret!(
        "anthropic_api_key",
        r"\bsk-ant-(?:api|admin|oat|ort)[0-9]{2}-[A-Za-z0-9_\-]{20,}",
        Check::Capped(256),
        [
            "ANTHROPIC_API_KEY=«sk-ant-api03-UnW5gcF_Ha6ili8GjHEAD6-Wj9KfzjsQGMrb9h_ImB_LK777pzNk8cL6j5IXAAjlsHUqJoUD-_Ydua_5ZMs1SWOpQaPRYAA»"
        ],
        ["sk-ant-api03- is the prefix"]
    ),
    secret!(
        "openai_api_key",
        r"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{48}\b)",
        Check::Capped(256),
        [
            "use «sk-proj-xIq2HZt-PlJhx2jIclHkCiHp6bR1IqfEouHgxzNNAL5wIScGebcy8F5n3-YNT3BlbkFJBDRzrZSgqbjG3uhkWKFLf6xuI5aHUQPFeNBTxaQWk8JzFalHlsZfYcMMDktX»",
            "«sk-WuUFjsUNPjc01T5GOBUSZGi6HWGK10Zb0RLZ5TR9SPofbciO»"
        ],
        ["sk-short", "task-proj-manager"]
    ),
    secret!(
        "aws_access_key_id",
        r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
        Check::Whole,
        [
            "aws_access_key_id = «AKIAUJZDEGXDNCF32EPF»",
            "«ASIAUJZDEGXDNCF32EPF»,",
            "AWS's documentation key «AKIAIOSFODNN7EXAMPLE»"
        ],
        ["AKIAUJZDEGXDNCF32EPFX", "AKIA1234"]
    ),
    secret!(
        "gcp_api_key",
        r"\bAIza[0-9A-Za-z_\-]{35}",
        Check::Whole,
        ["key=«AIza2hpChYgCfrL1spNxnyVmihA-2O76UMFxFkM»&q=1"],
        ["AIza short"]
    ),
    secret!(
        "gcp_oauth_client_secret",
        r"\bGOCSPX-[A-Za-z0-9_\-]{28}",
        Check::Whole,
        ["\"client_secret\": \"«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»\""],
        ["GOCSPX-"]
    ),
    secret!(
        "azure_storage_account_key",
        r"(?i)\bAccountKey=[A-Za-z0-9+/]{86}==",
        Check::Value { min_entropy: 3.5 },
        value: r"(?i)AccountKey=([A-Za-z0-9+/]{86}==)",
        [
            "DefaultEndpointsProtocol=https;AccountName=halberd;AccountKey=«3J1TWDtkwtDDb+xHKas1VOqg6YYZYn9ZhyiA4uoRgnatmUdjAWtGSU8po+799NksnRH9ucAUsdMlHUvTCQCyEZ==»;EndpointSuffix=core.windows.net"
        ],
        ["AccountKey=<your key>"]
    ),
    secret!(
        "azure_ad_client_secret",
        r"\b[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.\-]{31,34}",
        Check::Whole,
        ["AZURE_CLIENT_SECRET=«0uv8Q~S~6ilI8ihN5KXSc7Tvo~hBKqFYY~kv5ZJr»"],
        ["abc8Q~short"]
    ),
    secret!(
        "github_token",
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[0-9A-Za-z]{36,40}\b",
        Check::Whole,
        [
            "GITHUB_TOKEN=«ghp_VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEmvnEN»",
            // The format alone makes it a finding, however unrandom it looks.
            "«ghp_1010110010001010101001010101010101011001»"
        ],
        ["ghp_short", "aghp_VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEmvnEN"]
    ),
    secret!(
        "github_fine_grained_pat",
        r"\bgithub_pat_[0-9A-Za-z_]{82}\b",
        Check::Whole,
        [
            "«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»"
        ],
        ["github_pat_"]
    ),
    secret!(
        "gitlab_token",
        r"\b(?:(?:glpat|gldt|glft|glrt|glrtr|glwt|glsoat|glcbt|glptt|gloas|glimt|glagent|glffct)-[0-9A-Za-z_\-.]{20,}|GR1348941[0-9A-Za-z_\-]{20,}|_gitlab_session=[0-9a-z]{32})",
        Check::Capped(320),
        ["token: «glpat-sGpWLuqIA1id6Vw5DQL0»"],
        ["glpat-short"]
    ),
    secret!(
        "slack_webhook_url",
        r"\b(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{20,}",
        Check::Capped(256),
        [
            "post to «https://hooks.slack.com/services/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» now"
        ],
        ["see https://hooks.slack.com/ for docs"]
    ),
    secret!(
        "slack_token",
        r"\bxox[abposer]-[0-9A-Za-z\-]{10,}",
        Check::Capped(256),
        ["SLACK_BOT_TOKEN=«xoxb-868282880729-022279180588-JEYXg4JdpmrcXgGCJbW56eCu»"],
        ["xoxb-123"]
    ),
    secret!(
        "slack_app_token",
        r"\bxapp-[0-9]-[A-Z0-9]{1,20}-[0-9]{1,20}-[a-z0-9]{20,}",
        Check::Capped(256),
        ["«xapp-1-A0123456789-1234567890123-0a1b2c3d4e5f60718293a4b5c6d7e8f9»"],
        ["xapp-1"]
    ),
    secret!(
        "stripe_secret_key",
        r"\b(?:sk|rk)_(?:test|live|prod)_[0-9A-Za-z]{10,}",
        Check::Capped(128),
        ["Stripe.api_key = '«sk_live_q4i9DoV8gz4FkQ1okTBGzvAm»'"],
        ["pk_live_q4i9DoV8gz4FkQ1okTBGzvAm", "sk_live_"]
    ),
    secret!(
        "stripe_webhook_secret",
        r"\bwhsec_[0-9A-Za-z]{32,}",
        Check::Capped(128),
        ["«whsec_wufUxbvJDCTbyvHNsG9eh6Yo4gfqrc5X»"],
        ["whsec_abc"]
    ),
    secret!(
        "huggingface_token",
        r"\b(?:hf|api_org)_[A-Za-z]{34}\b",
        Check::Whole,
        ["HF_TOKEN=«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»"],
        [
            "hf_short",
            "hf_hmTaVsqxezyLexBWrdrgdQsOjprBGumXxYZZ",
            "hf_3478658437658347638475687346587374"
        ]
    ),
    secret!(
        "grafana_token",
        // Provisioned API keys (base64 of `{"k":"…`), service account tokens
        // and Grafana Cloud access policy tokens.
        r"\b(?:eyJrIjoi[A-Za-z0-9+/]{40,}={0,2}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}\b|glc_eyJ[A-Za-z0-9+/]{32,}={0,2})",
        Check::Capped(1024),
        [
            "token in text: «eyJrIjoiQzNKMjdYRENHMkxtbFpHRU9OWWxnQ3RqZklaNFNPY00iLCJuIjoiaGFsYmVyZC10ZXN0IiwiaWQiOjd9»",
            "GRAFANA_TOKEN=«glsa_z9CPVNPkNa1Hedcm4pMbXDuCL1mHoOsF_02e8d28a»",
            "policy = '«glc_eyJvIjoiMTIzNCIsIm4iOiJoYWxiZXJkLXRlc3QiLCJrIjoiejlDUFZOUGtOYTFIZWRjbTRwTWJYRHVDIn0=»'"
        ],
        ["eyJrIjoi alone", "glsa_short_0a2a3df7"]
    ),
    secret!(
        "twilio_api_key",
        r"\bSK[0-9a-fA-F]{32}\b",
        Check::Value { min_entropy: 3.0 },
        value: r"(SK[0-9a-fA-F]{32})",
        ["TWILIO_API_KEY=«SKd0c621de49f145fda9988c79fc35526f»"],
        ["SK00000000000000000000000000000000"]
    ),
    secret!(
        "sendgrid_api_key",
        r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}",
        Check::Whole,
        ["«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»"],
        ["SG.short.thing"]
    ),
    secret!(
        "npm_token",
        r"\bnpm_[A-Za-z0-9]{36}\b",
        Check::Whole,
        ["//registry.npmjs.org/:_authToken=«npm_OqHOBSWhgetH8LmyqoYMaaItDr9uP14pEHpJ»"],
        ["npm_install"]
    ),
    secret!(
        "pypi_token",
        r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}",
        Check::Capped(1200),
        [
            "password = «pypi-AgEIcHlwaS5vcmcFd0Nhcy-1kGD2VD-eR1UYzaLiA-zNyD7CHLn-xC_1hsYgBds1ghxY5OokvQy»"
        ],
        ["pypi-AgEIcHlwaS5vcmc"]
    ),
    secret!(
        "docker_token",
        r"\bdckr_(?:pat|oat)_[A-Za-z0-9_\-]{20,}",
        Check::Capped(128),
        ["docker login -p «dckr_pat_x7eNWVQ4vnakJkS1pAWTN3lg8zV»"],
        ["dckr_pat_"]
    ),
    secret!(
        "halberd_key",
        r"\bhbd_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}\b",
        Check::HalberdKey,
        [],
        ["hbd_abcdefghijkl_0000000000000000000000000000000000000a"]
    ),
    // The per-request canary Halberd puts in system prompts (injection policy
    // `canary = true`): seen in a response, the system prompt leaked.
    secret!(
        "halberd_canary",
        r"\bhbc_[a-z2-7]{24}\b",
        Check::Whole,
        ["the marker is «hbc_abcdefghijklmnopqrstuvwx», as told"],
        [
            "hbc_short",
            "hbc_ABCDEFGHIJKLMNOPQRSTUVWX",
            "hbc_abcdefghijklmnopqrstuvwx9"
        ]
    ),
    secret!(
        "url_password",
        r"(?i)\b[a-z][a-z0-9+.\-]{1,20}://[A-Za-z0-9._~%!$&'()*+,;=\-@]{1,128}:[!-.0-?A-~]{1,256}@",
        Check::Value { min_entropy: 0.0 },
        value: r"://[^:/]*:([^@]*)@$",
        [
            "DATABASE_URL=postgres://app:«s3cr3t-Pa55»@db.internal:5432/app",
            "https://user:«hunter2»@example.com/"
        ],
        [
            "https://example.com/a:b",
            "https://example.com:8443/path?q=a:b"
        ]
    ),
    Rule {
        id: "email",
        kind: Kind::Email,
        pattern: r"(?i)\b[A-Z0-9][A-Z0-9._%+\-]{0,63}@[A-Z0-9](?:[A-Z0-9\-]{0,62}\.){1,8}[A-Z]{2,24}\b",
        check: Check::Whole,
        value: None,
        positives: &[
            "mail «jane.doe+test@example.co.uk» today",
            "«UtaK@jourrapide.com»",
        ],
        negatives: &["user@localhost", "@handle", "a@b"],
    },
    Rule {
        id: "iban",
        kind: Kind::Iban,
        pattern: r"(?i)\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        check: Check::Iban,
        value: None,
        positives: &[
            "IBAN «DE89 3704 0044 0532 0130 00»",
            "«GB82WEST12345698765432»",
            "«fr1420041010050500013m02606»",
        ],
        negatives: &["DE89 3704 0044 0532 0130 01", "GB82WEST12345698765433"],
    },
    Rule {
        id: "ip_address",
        kind: Kind::IpAddress,
        pattern: r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b",
        check: Check::Ipv4,
        value: None,
        positives: &["from «192.168.10.7» to «8.8.8.8»"],
        negatives: &[
            "256.1.1.1",
            "1.2.3",
            "bind 0.0.0.0:80",
            "127.0.0.1",
            "255.255.255.255",
        ],
    },
    Rule {
        id: "ipv6_address",
        kind: Kind::IpAddress,
        pattern: r"(?i)(?:\b[0-9A-F]{1,4}|::)(?::{1,2}[0-9A-F]{0,4}){2,7}\b",
        check: Check::Ipv6,
        value: None,
        positives: &[
            "host «2001:db8:85a3::8a2e:370:7334» up",
            "«2a02:c7f:8e41:9b00:41:7a2e:3c19:e0d4»",
        ],
        negatives: &["std::fmt::Display", "12:30:45", "aa:bb:cc:dd:ee:ff"],
    },
    Rule {
        id: "numeric",
        kind: Kind::Phone,
        // An optional leading `+` or `(`, digits with separators, an optional
        // extension, and an optional label after it ("office", "fax") that counts
        // as context. The check decides what the run is.
        pattern: r"(?i)(?:\+|\(|\b)[0-9][0-9 ().\-/]{5,24}[0-9](?: ?(?:x|ext\.? ?)[0-9]{1,5})?\b(?:[ \-]?(?:office|fax|mobile|cell|home|work)\b)?",
        check: Check::Numeric,
        value: None,
        positives: &[
            "call me at «+44 20 7946 0958»",
            "Phone: «(555) 010-4477»",
            "«212-555-0199»",
            "Tel. «030 1234567»",
        ],
        negatives: &[
            "order 1234567 shipped",
            "in 2019-2024",
            "2019-03-14 08:12:45",
            "3.14159265",
        ],
    },
    Rule {
        id: "password_phrase",
        kind: Kind::Secret("generic_credential"),
        // A password given after a word rather than an assignment: SQL
        // `IDENTIFIED BY` / `PASSWORD '...'`, command-line `--password x`,
        // `#define password "..."`, and "my password is ...".
        pattern: r#"(?i)(?:\bidentified(?: with [a-z_']{1,30})? (?:by|as)|\b(?:login )?password|\b(?:define|set|global) (?:password|passwd|pwd|token|secret|api_?key)|(?:\B-|\b)-?(?:password|passwd|pass|pwd|pw)|\bpassword is|\bpasswd is)[ \t]{1,3}["'`]?[A-Za-z0-9_\-+/=.~!@#$%^&*?]{6,}"#,
        check: Check::Assignment,
        value: Some(r#"[ \t]["'`]?([A-Za-z0-9_\-+/=.~!@#$%^&*?]+)$"#),
        positives: &[
            "CREATE USER app IDENTIFIED BY '«Vq7#zL2pWx»';",
            "ALTER USER 'app'@'%' IDENTIFIED WITH 'mysql_native_password' AS '«*3D5A0C6E2B9F41D87A6C0E5B2F9D1A4C7E8B6F30»';",
            "ALTER ROLE app WITH LOGIN PASSWORD '«Vq7#zL2pWx»';",
            "mysql --password «Vq7#zL2pWx» -u root",
            "my password is «Vq7#zL2pWx» ok",
        ],
        negatives: &[
            "reset your password in settings",
            "the password field",
            "--password $DB_PASSWORD",
        ],
    },
    Rule {
        id: "authorization_header",
        kind: Kind::Secret("generic_credential"),
        // `Authorization: Basic|Bearer|NTLM|Token <credentials>` in a header,
        // a curl command or a config file.
        pattern: r#"(?i)\b(?:proxy-)?authorization["']?[ \t]*[:=][ \t]*["']?(?:basic|bearer|token|ntlm|negotiate|digest|apikey)[ \t]+[A-Za-z0-9_\-+/=.~]{8,}"#,
        check: Check::Assignment,
        value: Some(r#"[ \t]([A-Za-z0-9_\-+/=.~]+)$"#),
        positives: &[
            "curl -H \"Authorization: Basic «R2hyZG5oYzpycWVpIGVuZ2xiZg==»\" https://x",
            "Authorization: Bearer «I6CmuxV5EbOApZOXzcycDeZ6»",
        ],
        negatives: &["Authorization: Bearer <token>", "the Authorization header"],
    },
    Rule {
        id: "define_credential",
        kind: Kind::Secret("generic_credential"),
        // PHP `define('DB_PASSWORD', '...')`, as in WordPress's wp-config.php.
        pattern: r#"(?i)\bdefine\([ \t]*['"][a-z0-9_]{0,30}(?:password|passwd|pwd|secret|token|api_?key|auth_?key)['"][ \t]*,[ \t]*['"][!#-&(-~]{6,}"#,
        check: Check::Assignment,
        value: Some(r#"['"]([!#-&(-~]+)$"#),
        positives: &[
            "define( 'DB_PASSWORD', '«Vq7#zL2pWx»' );",
            "define(\"API_KEY\",\"«dEyTzAeKOmXRrvftva9AW7hipTga»\");",
        ],
        negatives: &[
            "define('AUTH_KEY', 'put your unique phrase here');",
            "define('DB_PASSWORD', getenv('DB_PASSWORD'));",
        ],
    },
    Rule {
        id: "xml_credential",
        kind: Kind::Secret("generic_credential"),
        // `<password>...</password>` and `<password name="x">...</password>`
        // in XML configuration (Maven settings.xml, Ant, application servers).
        pattern: r#"(?i)<[a-z_\-]{0,20}(?:password|passwd|pwd|secret|token|api_?key)(?:[ \t][ -;=?-~]{0,80})?>[!-;=?-~]{6,}</"#,
        check: Check::Assignment,
        value: Some(r#">([!-;=?-~]+)</$"#),
        positives: &[
            "<server><id>repo</id><password>«Vq7#zL2pWx»</password></server>",
            "<password name=\"password\">«cackle!»</password>",
        ],
        negatives: &[
            "<password>${env.REPO_PASSWORD}</password>",
            "<token>placeholder</token>",
        ],
    },
    Rule {
        id: "generic_credential",
        kind: Kind::Secret("generic_credential"),
        // A credential-like name, an assignment, an optional quote, the value.
        pattern: r#"(?i)\b[a-z0-9_.\-]{0,30}(?:api[_.\-]?key|apikey|secret|token|pass(?:wd|word|wort|phrase)?|p(?:a?s?s?w(?:o?r)?d|w|swd)|access[_.\- ]?key|auth(?:entication)?[_.\- ]?key|authentication|authori[sz]ation|credentials?|client[_.\-]?secret|private[_.\-]?key|keys?)[a-z0-9_.\-]{0,32}(?:[ ][a-z]{1,12})?["')]?(?:[ \t]*:[ \t]*[A-Za-z]{1,12}[ \t]*)?[ \t]{0,3}(?:::=|:=|=>|===?|!==?|=|:)[ \t]{0,3}(?:"[!#-~]{6,}"|'[!-&(-~]{6,}'|(?:["'`]{1,3}|&quot;|&#34;)?[A-Za-z0-9_\-+/=.~!@#$%^*?]{6,})"#,
        check: Check::Assignment,
        value: Some(
            r#"(?:=|:|\s)[ \t]*(?:"([!#-~]+)"|'([!-&(-~]+)'|(?:["'`(]{0,3}|&quot;|&#34;)([A-Za-z0-9_\-+/=.~!@#$%^*?]+))$"#,
        ),
        positives: &[
            "api_key = \"«I6CmuxV5EbOApZOXzcycDeZ6»\"",
            "DB_PASSWORD=«Xk9#mP2$vL7qR4w»",
            "aws_secret_access_key = «hGyiRUIQfHOJMaidDn87XG3+q+xbMtEPO6UkzYuF»",
            "token: «AKIAUJZDEGXDNCF32EPF»",
            "<a href=\"/login?token=&quot;«dEyTzAeKOmXRrvftva9AW7hipTga»&quot;\">",
            "key_multi = '''«dDZFlRJmCGmUXiAPyhzAnar3ZLt4bn»",
            "var secret_that_looks_like_a_path=\"«/dDZFlRJmCGmUXiAPyhzAnar3ZLt4bn»\"",
            "\"authorization\": \"«dEyTzAeKOmXRrvftva9AW7hipTga»\"",
        ],
        negatives: &[
            "password = \"password\"",
            "api_key = ${API_KEY}",
            "token: <your-token-here>",
            "secret: xxxxxxxxxxxx",
            "password_reset_link = https",
            "password = ENC(2dfRFqV/cS6TzRd+JyO=)",
            "the token: is missing",
            "authorization: required",
            "authentication = oauth2_client_credentials",
        ],
    },
];
