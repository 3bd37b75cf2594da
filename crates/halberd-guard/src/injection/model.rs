//! The statistical layer: two logistic-regression heads over hashed word
//! unigrams and bigrams of the normalised text.
//!
//! - The *prompt* head reads a whole message: is this text, as a prompt, an
//!   attack (jailbreak framing, override, adversarial suffix)?
//! - The *segment* head reads one sentence or line at a time: does this piece
//!   of a document address the model with an instruction or question? In a
//!   user prompt that is normal; inside a tool result or retrieved document it
//!   is an indirect injection (BIPIA's definition), so the segment head only
//!   runs on untrusted parts.
//!
//! Tokens: runs of letters and digits, each CJK character alone, and runs of
//! punctuation (which is how adversarial suffixes show). Features: token
//! unigrams and bigrams, character 4-grams inside words (robust to inflection
//! and misspelling), and buckets for length and mixed-punctuation density.
//! Hashing needs no vocabulary; the weights are one array per head, quantised
//! to i16 on disk. Scoring a 4 KiB prompt is one pass to tokenise and about
//! one lookup per byte.

use std::fmt;

/// Log2 of the number of weight buckets per head.
pub const BITS: u8 = 17;
const MAGIC: &[u8; 6] = b"HBINJ\x01";
/// A segment longer than this is scored in windows of this many tokens.
pub const WINDOW: usize = 48;

/// Tokens of a normalised text, with the token indices where sentences start.
#[derive(Debug, Default)]
pub struct Tokens {
    pub hashes: Vec<u64>,
    /// Per token: 0 word, 1 CJK character, 2 punctuation of one kind (`...`),
    /// 3 mixed punctuation (`]$.`, `<=`), which adversarial suffixes are full of.
    pub kinds: Vec<u8>,
    /// Weight buckets of the words' character 4-grams (with word-boundary
    /// marks), computed once here rather than once per head.
    pub grams: Vec<u32>,
    /// `grams_end[i]`: how many grams tokens `0..=i` have.
    pub grams_end: Vec<u32>,
    /// Start indices of segments (sentences or lines), ascending, first is 0.
    pub breaks: Vec<usize>,
}

/// The weight bucket of a feature hash.
#[inline(always)]
const fn bucket(h: u64) -> u32 {
    (h >> (64 - BITS as u32)) as u32
}

/// The weight bucket of a character 4-gram: its last four bytes, oldest in
/// the high byte.
#[inline(always)]
const fn gram_bucket(window: u32) -> u32 {
    bucket(fx(fx(5, window as u64), 17))
}

const fn fx(h: u64, x: u64) -> u64 {
    (h.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

/// `char::is_alphanumeric`, read from a bitset for the Basic Multilingual
/// Plane: outside ASCII the standard library searches its Unicode tables on
/// every call, and a non-Latin text asks once per character.
#[inline]
fn is_alnum(c: char) -> bool {
    if c.is_ascii() {
        return is_ascii_alnum(c as u8);
    }
    match ALNUM_BMP.get(c as usize >> 6) {
        Some(bits) => bits >> (c as u32 & 63) & 1 != 0,
        None => c.is_alphanumeric(),
    }
}

/// Bit `c % 64` of word `c / 64`: whether `c` is alphanumeric (8 KiB).
static ALNUM_BMP: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(|| {
    (0u32..1024)
        .map(|word| {
            (0u32..64)
                .filter(|bit| char::from_u32(word * 64 + bit).is_some_and(char::is_alphanumeric))
                .fold(0u64, |bits, bit| bits | 1 << bit)
        })
        .collect()
});

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

impl Tokens {
    fn push(&mut self, hash: u64, kind: u8) {
        self.hashes.push(hash);
        self.kinds.push(kind);
        self.grams_end.push(self.grams.len() as u32);
    }

    fn sentence_break(&mut self) {
        if self.breaks.last() != Some(&self.hashes.len()) {
            self.breaks.push(self.hashes.len());
        }
    }

    /// Character 4-grams of a word, `^` and `$` marking its ends.
    fn word_grams(&mut self, word: &[u8]) {
        if word.len() < 3 {
            return;
        }
        // The last four bytes, oldest in the high byte; `^` marks the start.
        let mut window = u32::from(b'^');
        let bytes = word.iter().copied().chain(std::iter::once(b'$'));
        for (k, b) in bytes.enumerate() {
            window = (window << 8) | u32::from(b);
            if k >= 2 {
                self.grams.push(gram_bucket(window));
            }
        }
    }
}

/// `u8::is_ascii_alphanumeric` as one load from a table instead of range tests.
#[inline(always)]
fn is_ascii_alnum(b: u8) -> bool {
    static TABLE: [bool; 256] = crate::ascii_alnum_and(b"");
    TABLE[usize::from(b)]
}

/// The common case, an ASCII word starting at `i`, in a loop of its own: per
/// byte one test, one step of the word's hash and one 4-gram. Pushes the
/// token and gives where it ends, where the general loop of [`tokenize`]
/// would end it; a word that continues in non-ASCII letters (`naïve`) is left
/// to that loop (`None`).
///
/// The word's 4-grams are hashed in the same loop as the word, so the two
/// hash chains overlap ([`Tokens::word_grams`] gives the same grams; a test
/// checks it).
#[inline(always)]
fn ascii_word(tokens: &mut Tokens, bytes: &[u8], i: usize) -> Option<usize> {
    let grams_before = tokens.grams.len();
    let b = bytes[i];
    let mut h = fx(1, u64::from(b));
    let mut window = u32::from(b'^') << 8 | u32::from(b);
    let mut j = i + 1;
    // The second byte completes no 4-gram; from the third on, each does.
    if let Some(&b) = bytes.get(j).filter(|&&b| is_ascii_alnum(b)) {
        h = fx(h, u64::from(b));
        window = (window << 8) | u32::from(b);
        j += 1;
        while let Some(&b) = bytes.get(j).filter(|&&b| is_ascii_alnum(b)) {
            h = fx(h, u64::from(b));
            window = (window << 8) | u32::from(b);
            tokens.grams.push(gram_bucket(window));
            j += 1;
        }
    }
    if j < bytes.len() && !bytes[j].is_ascii() {
        tokens.grams.truncate(grams_before);
        return None;
    }
    if j - i >= 3 {
        tokens
            .grams
            .push(gram_bucket((window << 8) | u32::from(b'$')));
    }
    tokens.push(h, 0);
    Some(j)
}

/// Tokenises normalised text. Hashes include the token class, so a word and a
/// punctuation run never collide by construction.
pub fn tokenize(text: &str) -> Tokens {
    tokenize_with::<true>(text)
}

/// [`tokenize`]; without `ASCII_WORDS` every token goes the general way, which
/// tests compare with.
#[inline(always)]
fn tokenize_with<const ASCII_WORDS: bool>(text: &str) -> Tokens {
    let mut tokens = Tokens {
        hashes: Vec::with_capacity(text.len() / 4),
        kinds: Vec::with_capacity(text.len() / 4),
        grams: Vec::with_capacity(text.len()),
        grams_end: Vec::with_capacity(text.len() / 4),
        breaks: vec![0],
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut sentence_end = false;
    while i < bytes.len() {
        let b = bytes[i];
        let c;
        if ASCII_WORDS && is_ascii_alnum(b) {
            // The common case first, with no other test in front of it.
            if let Some(end) = ascii_word(&mut tokens, bytes, i) {
                sentence_end = false;
                i = end;
                continue;
            }
            c = char::from(b);
        } else {
            if b == b'\n' || (b == b' ' && sentence_end) {
                sentence_end = false;
                tokens.sentence_break();
                i += 1;
                continue;
            }
            if b == b' ' || b == b'\t' || b == b'\r' {
                i += 1;
                continue;
            }
            // Classify the character at i.
            c = if b < 0x80 {
                char::from(b)
            } else {
                match text[i..].chars().next() {
                    Some(c) => c,
                    None => break,
                }
            };
            if is_cjk(c) {
                tokens.push(fx(3, c as u64), 1);
                sentence_end = false;
                i += c.len_utf8();
                continue;
            }
            if matches!(c, '。' | '！' | '？') {
                tokens.push(fx(4, c as u64), 2);
                tokens.sentence_break();
                i += c.len_utf8();
                continue;
            }
            if c.is_whitespace() {
                i += c.len_utf8();
                continue;
            }
        }
        let len = c.len_utf8();
        let alnum = is_alnum(c);
        let start = i;
        let mut h = fx(if alnum { 1 } else { 2 }, c as u64);
        let mut count = 1;
        let mut mixed = false;
        let mut last = c;
        i += len;
        while i < bytes.len() {
            let d = if bytes[i] < 0x80 {
                bytes[i] as char
            } else {
                match text[i..].chars().next() {
                    Some(d) => d,
                    None => break,
                }
            };
            if d.is_whitespace() || is_cjk(d) || is_alnum(d) != alnum {
                break;
            }
            if !alnum {
                mixed |= d != last;
            }
            // Long punctuation runs (`=====`) hash as their first four.
            if alnum || count < 4 {
                h = fx(h, d as u64);
            }
            last = d;
            count += 1;
            i += d.len_utf8();
        }
        if alnum {
            tokens.word_grams(&bytes[start..i]);
            tokens.push(h, 0);
            sentence_end = false;
        } else {
            tokens.push(h, if mixed { 3 } else { 2 });
            sentence_end = matches!(last, '.' | '!' | '?' | ':' | ';');
        }
    }
    tokens.breaks.retain(|&b| b < tokens.hashes.len().max(1));
    tokens
}

/// Bucket of a count as a share of a total: 0, <2%, <5%, <10%, <20%, more.
fn share_bucket(count: usize, total: usize) -> u64 {
    if count == 0 {
        return 0;
    }
    let per_mille = count * 1000 / total.max(1);
    match per_mille {
        0..20 => 1,
        20..50 => 2,
        50..100 => 3,
        100..200 => 4,
        _ => 5,
    }
}

/// Calls `each` with every feature bucket of the token range `start..end`:
/// unigrams, bigrams, the words' character 4-grams, and how much mixed
/// punctuation the range and its last 20 tokens hold. The range's length is
/// not a feature: length is not evidence (a length bucket was one until the
/// segment head scored `hello world` once 0.003 and twenty-four times 0.99
/// as a document; without it, 0.005 and 0.04). Returns the
/// number of features. The one definition of the features, for training
/// (`features`) and scoring (`Head::range_logit`) alike.
#[inline(always)]
fn for_each_feature(tokens: &Tokens, start: usize, end: usize, mut each: impl FnMut(u32)) -> usize {
    let mut prev = 0x9e37_79b9_7f4a_7c15_u64;
    for &h in &tokens.hashes[start..end] {
        each(bucket(fx(h, 11)));
        each(bucket(fx(fx(prev, h), 13)));
        prev = h;
    }
    let grams_before = |i: usize| {
        if i == 0 {
            0
        } else {
            tokens.grams_end[i - 1] as usize
        }
    };
    let (g0, g1) = (grams_before(start), grams_before(end));
    for &g in &tokens.grams[g0..g1] {
        each(g);
    }
    let n = end - start;
    let kinds = &tokens.kinds[start..end];
    let mixed = kinds.iter().filter(|&&k| k == 3).count();
    each(bucket(fx(0xbeef, share_bucket(mixed, n))));
    let tail = &kinds[n.saturating_sub(20)..];
    let tail_mixed = tail.iter().filter(|&&k| k == 3).count();
    each(bucket(fx(0xcafe, share_bucket(tail_mixed, tail.len()))));
    2 * n + (g1 - g0) + 2
}

/// Feature buckets of the token range `start..end`, as a list (training).
pub fn features(tokens: &Tokens, start: usize, end: usize, out: &mut Vec<u32>) {
    out.clear();
    for_each_feature(tokens, start, end, |b| out.push(b));
}

/// Per-thread counts of the buckets of the range being scored (all zero
/// between calls: the touched ones are reset after each range).
#[derive(Default)]
struct Scratch {
    /// Counts per bucket (the prompt head).
    counts: Vec<u16>,
    /// A bit per bucket (the segment head).
    seen: Vec<u64>,
    touched: Vec<u32>,
}

thread_local! {
    static COUNTS: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// The Euclidean length of a feature list's count vector, `sqrt(Σ count²)`
/// over its distinct buckets (at least 1); sorts `list`.
///
/// A head's logit is its weights summed over this length. Over the list's
/// own length (`sqrt(n)`, as before) a text repeated k times scored
/// `sqrt(k)` times further from the bias, so repetition alone was evidence:
/// `hello world` 24 times in a document scored 0.99, once 0.003. Over the
/// count vector's length the logit of a text repeated is the logit of the
/// text, and a text with no repeated feature scores as before (its length
/// is `sqrt(n)`).
pub fn count_norm(list: &mut [u32]) -> f32 {
    list.sort_unstable();
    let mut squares = 0u64;
    let mut run = 0u64;
    let mut last = None;
    for &b in list.iter() {
        if last == Some(b) {
            run += 1;
        } else {
            squares += run * run;
            run = 1;
            last = Some(b);
        }
    }
    squares += run * run;
    (squares.max(1) as f32).sqrt()
}

/// One head: a bias and a weight per bucket, quantised to i16 (`weight =
/// q × scale`), in memory as on disk: 256 KiB per head stays in cache better
/// than floats, and the sum of integers is exact.
#[derive(Clone)]
pub struct Head {
    pub bias: f32,
    pub scale: f32,
    pub weights: Vec<i16>,
    /// Whether a feature counts once per range however often it occurs (the
    /// segment head), rather than by its count over the count vector's
    /// length (the prompt head). Not stored: the heads' roles fix it.
    pub presence: bool,
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Head")
            .field("bias", &self.bias)
            .field("scale", &self.scale)
            .field("buckets", &self.weights.len())
            .field("presence", &self.presence)
            .finish()
    }
}

impl Head {
    /// Quantises float weights: the largest magnitude maps to 32767.
    pub fn quantize(bias: f32, weights: &[f32]) -> Head {
        let max = weights.iter().fold(0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / 32767.0 } else { 1.0 };
        Head {
            bias,
            scale,
            weights: weights
                .iter()
                .map(|w| (w / scale).round().clamp(-32767.0, 32767.0) as i16)
                .collect(),
            presence: false,
        }
    }

    /// Log-odds of the token range `start..end`: the same features as
    /// [`features`] gives, summed as they are hashed, with no list built.
    /// Integer sums are exact, so this equals `logit(features(..))` bit for bit
    /// (a test checks it).
    pub fn range_logit(&self, tokens: &Tokens, start: usize, end: usize) -> f32 {
        let Ok(weights) = <&[i16; 1 << BITS]>::try_from(self.weights.as_slice()) else {
            // Not a head of this format (a file's heads always are): the
            // feature list's way, which tolerates any length.
            let mut list = Vec::new();
            features(tokens, start, end, &mut list);
            return self.logit(&list);
        };
        const MASK: usize = (1 << BITS) - 1;
        let mut sum = 0i64;
        let norm = COUNTS.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch {
                counts,
                seen,
                touched,
            } = &mut *scratch;
            touched.clear();
            if self.presence {
                // Each bucket once: a bit per bucket (16 KiB, in L1).
                if seen.len() != 1 << (BITS - 6) {
                    *seen = vec![0; 1 << (BITS - 6)];
                }
                for_each_feature(tokens, start, end, |b| {
                    // A bucket has BITS bits, so the mask changes nothing;
                    // it lets the compiler drop the bounds checks.
                    let b = b as usize & MASK;
                    let (word, bit) = (b >> 6, 1u64 << (b & 63));
                    if seen[word] & bit == 0 {
                        seen[word] |= bit;
                        sum += i64::from(weights[b]);
                        touched.push(b as u32);
                    }
                });
                for &b in touched.iter() {
                    seen[(b as usize & MASK) >> 6] = 0;
                }
                return (touched.len().max(1) as f32).sqrt();
            }
            if counts.len() != 1 << BITS {
                *counts = vec![0; 1 << BITS];
            }
            let mut squares = 0u64;
            let mut saturated = false;
            for_each_feature(tokens, start, end, |b| {
                let b = b as usize & MASK;
                sum += i64::from(weights[b]);
                let c = counts[b];
                if c == 0 {
                    touched.push(b as u32);
                }
                squares += 2 * u64::from(c) + 1;
                counts[b] = c.saturating_add(1);
                saturated |= c == u16::MAX;
            });
            for &b in touched.iter() {
                counts[b as usize & MASK] = 0;
            }
            if saturated {
                // A bucket counted past u16 (a pathological range): count
                // again the slow, exact way.
                let mut list = Vec::new();
                features(tokens, start, end, &mut list);
                return count_norm(&mut list);
            }
            (squares.max(1) as f32).sqrt()
        });
        self.bias + sum as f32 * self.scale / norm
    }

    /// Log-odds for a feature list: the weights summed, over the length of
    /// the list's count vector, or over distinct buckets for a presence head.
    pub fn logit(&self, features: &[u32]) -> f32 {
        if features.is_empty() {
            return self.bias;
        }
        let mut list = features.to_vec();
        if self.presence {
            list.sort_unstable();
            list.dedup();
        }
        let sum: i64 = list
            .iter()
            .map(|&b| i64::from(self.weights.get(b as usize).copied().unwrap_or(0)))
            .sum();
        self.bias + sum as f32 * self.scale / count_norm(&mut list)
    }
}

/// Both heads.
#[derive(Debug, Clone)]
pub struct Model {
    pub prompt: Head,
    pub segment: Head,
}

#[derive(Debug, thiserror::Error)]
#[error("injection model file: {0}")]
pub struct ModelError(&'static str);

impl Model {
    /// The model trained by `halberd train-injection`, compiled in.
    pub fn builtin() -> Result<Model, ModelError> {
        Model::from_bytes(include_bytes!("../../models/injection.bin"))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 4 * (1 << BITS));
        out.extend_from_slice(MAGIC);
        out.push(BITS);
        for head in [&self.prompt, &self.segment] {
            out.extend_from_slice(&head.bias.to_le_bytes());
            out.extend_from_slice(&head.scale.to_le_bytes());
            for q in &head.weights {
                out.extend_from_slice(&q.to_le_bytes());
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(ModelError("bad magic"))?;
        let (&bits, mut rest) = rest.split_first().ok_or(ModelError("truncated"))?;
        if bits != BITS {
            return Err(ModelError("bucket count differs from this build"));
        }
        let mut heads = Vec::with_capacity(2);
        for _ in 0..2 {
            let n = 1usize << BITS;
            if rest.len() < 8 + 2 * n {
                return Err(ModelError("truncated"));
            }
            let f = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let bias = f(&rest[0..4]);
            let scale = f(&rest[4..8]);
            let weights = rest[8..8 + 2 * n]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            heads.push(Head {
                bias,
                scale,
                weights,
                presence: false,
            });
            rest = &rest[8 + 2 * n..];
        }
        if !rest.is_empty() {
            return Err(ModelError("trailing bytes"));
        }
        let mut segment = heads.pop().ok_or(ModelError("truncated"))?;
        segment.presence = true;
        let prompt = heads.pop().ok_or(ModelError("truncated"))?;
        Ok(Model { prompt, segment })
    }
}

/// One training example for a head: its feature buckets and label.
#[derive(Debug, Clone)]
pub struct Example {
    pub features: Vec<u32>,
    pub attack: bool,
}

/// Training settings; the defaults are what the shipped model was trained with.
#[derive(Debug, Clone, Copy)]
pub struct TrainConfig {
    pub epochs: usize,
    pub learning_rate: f32,
    pub l2: f32,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 20,
            learning_rate: 2.0,
            l2: 1e-6,
            seed: 0x4841_4c42_4552_4421,
        }
    }
}

/// Logistic regression by SGD with classes weighted to balance, a shuffled
/// order from a fixed seed, and a learning rate that decays per epoch: the same
/// inputs give the same weights, bit for bit.
pub fn train_head(examples: &[Example], config: TrainConfig) -> Head {
    let mut bias = 0f32;
    let mut weights = vec![0f32; 1 << BITS];
    // Each example's features are scaled by its count vector's length, as
    // the heads score (see [`count_norm`]).
    let scales: Vec<f32> = examples
        .iter()
        .map(|e| 1.0 / count_norm(&mut e.features.clone()))
        .collect();
    let logit = |bias: f32, weights: &[f32], features: &[u32], scale: f32| {
        if features.is_empty() {
            return bias;
        }
        let sum: f32 = features.iter().map(|&b| weights[b as usize]).sum();
        bias + sum * scale
    };
    let positives = examples.iter().filter(|e| e.attack).count().max(1) as f32;
    let negatives = examples.iter().filter(|e| !e.attack).count().max(1) as f32;
    let total = positives + negatives;
    let weight_pos = total / (2.0 * positives);
    let weight_neg = total / (2.0 * negatives);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = config.seed | 1;
    for epoch in 0..config.epochs {
        // Fisher-Yates with xorshift64.
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let lr = config.learning_rate / (1.0 + epoch as f32);
        for &i in &order {
            let e = &examples[i];
            let p = 1.0 / (1.0 + (-logit(bias, &weights, &e.features, scales[i])).exp());
            let y = if e.attack { 1.0 } else { 0.0 };
            let w = if e.attack { weight_pos } else { weight_neg };
            let g = (p - y) * w;
            let scale = scales[i];
            bias -= lr * g * 0.1;
            for &b in &e.features {
                let wb = &mut weights[b as usize];
                *wb -= lr * (g * scale + config.l2 * *wb);
            }
        }
    }
    Head::quantize(bias, &weights)
}

/// The prompt head scores at most this many tokens at once; a longer text is
/// scored in windows of this size (half overlapping) and its score is the
/// highest window's. The head sums its features over `sqrt(n)`, so on a whole
/// long text the score grew with length alone (`hello world` ten thousand
/// times scored 0.996): length is not evidence. Nine in ten training texts are
/// shorter than this, so they are scored exactly as they were trained.
///
/// Within a window, a phrase repeated no longer adds up either: the prompt
/// head sums over its count vector's length ([`count_norm`]), the segment
/// head counts each feature once per window ([`Head::presence`]; counting
/// once in the prompt head too was tried, and lost user-prompt recall at
/// 1 % false positives, 0.934 to 0.883).
pub const PROMPT_WINDOW: usize = 384;

/// Token ranges the prompt head scores: the whole text, or windows of
/// [`PROMPT_WINDOW`] tokens, half overlapping, the last one ending at the end.
pub fn prompt_windows(tokens: &Tokens) -> Vec<(usize, usize)> {
    let n = tokens.hashes.len();
    if n <= PROMPT_WINDOW {
        return vec![(0, n)];
    }
    let mut out = Vec::with_capacity(2 * n / PROMPT_WINDOW + 1);
    let mut s = 0;
    while s + PROMPT_WINDOW < n {
        out.push((s, s + PROMPT_WINDOW));
        s += PROMPT_WINDOW / 2;
    }
    out.push((n - PROMPT_WINDOW, n));
    out
}

/// Token ranges of the segments of a text, long ones cut into windows.
pub fn segments(tokens: &Tokens) -> Vec<(usize, usize)> {
    let n = tokens.hashes.len();
    let mut out = Vec::new();
    for (k, &start) in tokens.breaks.iter().enumerate() {
        let end = tokens.breaks.get(k + 1).copied().unwrap_or(n);
        if end <= start {
            continue;
        }
        let mut s = start;
        loop {
            let e = (s + WINDOW).min(end);
            out.push((s, e));
            if e == end {
                break;
            }
            s += WINDOW / 2;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphanumeric_bitset_agrees_with_the_standard_library() {
        for c in (0u32..0x3_0000).filter_map(char::from_u32) {
            assert_eq!(is_alnum(c), c.is_alphanumeric(), "{:?}", c);
        }
    }

    proptest::proptest! {
        /// The ASCII word loop hashes 4-grams as it goes; they must be the
        /// grams `word_grams` gives each word, also where a word turns out
        /// to continue in non-ASCII letters and goes the general way.
        #[test]
        fn words_have_the_grams_of_word_grams(
            words in proptest::collection::vec("[a-zA-Z0-9]{0,9}(ï[a-z]{0,3})?", 0..12),
            seps in proptest::collection::vec("( |\\. |, |\n|-)", 12),
        ) {
            let mut text = String::new();
            for (word, sep) in words.iter().zip(&seps) {
                text.push_str(word);
                text.push_str(sep);
            }
            let mut expected = Tokens::default();
            for word in text.split(|c: char| !c.is_alphanumeric()) {
                expected.word_grams(word.as_bytes());
            }
            proptest::prop_assert_eq!(tokenize(&text).grams, expected.grams);
        }

        /// The ASCII word loop gives the tokens, kinds, grams and sentence
        /// breaks the general loop gives, next to punctuation, non-ASCII
        /// letters, line breaks and the end of the text.
        #[test]
        fn the_ascii_word_loop_tokenizes_as_the_general_loop(
            pieces in proptest::collection::vec(
                "([a-zA-Z0-9]{1,10}|[ ,.;!?:]{1,3}|\n|\t|ï|é[a-z]{0,2}|数|-+|__)",
                0..40,
            ),
        ) {
            let text: String = pieces.concat();
            let (fast, general) = (tokenize_with::<true>(&text), tokenize_with::<false>(&text));
            proptest::prop_assert_eq!(&fast.hashes, &general.hashes);
            proptest::prop_assert_eq!(&fast.kinds, &general.kinds);
            proptest::prop_assert_eq!(&fast.grams, &general.grams);
            proptest::prop_assert_eq!(&fast.grams_end, &general.grams_end);
            proptest::prop_assert_eq!(&fast.breaks, &general.breaks);
        }
    }
}
