//! The adversarial-suffix layer: does a text end in the kind of string that
//! gradient and random searches (GCG, DSN, random search) append to a plain
//! request so that a model complies?
//!
//! Such suffixes are random strings, so their words do not carry over from
//! one attack to the next and the classifier sees them only diluted by the
//! request in front. What they share is their shape: on the same line as the
//! request, words glued to punctuation or to other words in another case
//! (`whoNOT!___`, `segle.");']`), runs made only of punctuation, brackets that
//! close what was never opened, and an odd number of double quotes or
//! backticks. Prose has few of these and code keeps its brackets and quotes
//! balanced. The layer reads the original text (normalisation folds case),
//! only its last line's final [`TAIL`] bytes, scores every run of words that
//! ends there (a suffix's length is not known) and keeps the most suffix-like
//! one. It adds its weight to the fused log-odds; it cannot flag a text on its
//! own unless the classifier already leans towards an attack.

/// How many bytes of the last line are read.
const TAIL: usize = 220;
/// Texts with fewer words have no room for a request and a suffix.
const MIN_WORDS: usize = 20;
/// Runs of fewer words are not judged.
const MIN_TAIL_WORDS: usize = 8;

/// The shape score of a run of words at the end of a text (see
/// `run_score`). `punctuation` is the share of the run's characters that
/// are neither letters, digits nor whitespace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub score: f32,
    pub punctuation: f32,
}

impl Shape {
    /// The shape of the most suffix-like run of the tail's last words: every
    /// run of at least `MIN_TAIL_WORDS` words that ends the tail is scored
    /// and the highest score whose punctuation share passes wins, so a
    /// 15-word suffix behind a 20-word request is not diluted by the request.
    pub fn of(text: &str) -> Option<Shape> {
        let text = text.trim_end();
        let line = text.rsplit('\n').next().unwrap_or(text);
        let mut from = line.len().saturating_sub(TAIL);
        while !line.is_char_boundary(from) {
            from += 1;
        }
        // Too few words for a request and a suffix.
        text.split_whitespace().nth(MIN_WORDS - 1)?;
        // Brackets are matched over the whole tail, not per run: a run that
        // starts inside a bracket the request opened has not found a closer
        // that was never opened. `open` holds the words of unclosed openers.
        let mut open: Vec<usize> = Vec::new();
        // The first piece may be cut in the middle of a word.
        // One allocation: a word takes at least two bytes with its space.
        let mut words: Vec<Word> = Vec::with_capacity(TAIL / 2 + 1);
        let pieces = line[from..].split_whitespace().skip(usize::from(from > 0));
        for (i, word) in pieces.enumerate() {
            words.push(Word::of(word, i, &mut open));
        }
        let n = words.len();
        if n < MIN_TAIL_WORDS {
            return None;
        }
        for i in open {
            words[i].unmatched += 1;
        }
        let quotes: usize = words.iter().map(|w| w.quotes).sum();
        let odd_quotes = (quotes % 2) as f32;

        let (mut unmatched, mut chars, mut punctuation) = (0usize, 0usize, 0usize);
        let (mut glued_words, mut punct_only) = (0usize, 0usize);
        let mut best: Option<Shape> = None;
        for (k, word) in words.iter().rev().enumerate() {
            unmatched += word.unmatched;
            chars += word.chars;
            punctuation += word.punctuation;
            glued_words += usize::from(word.glued);
            punct_only += usize::from(word.punct_only);
            let k = k + 1;
            if k < MIN_TAIL_WORDS {
                continue;
            }
            let shape = Shape {
                score: run_score(unmatched, odd_quotes, glued_words, punct_only, k),
                punctuation: punctuation as f32 / chars.max(1) as f32,
            };
            best = Some(Shape::better(best, shape));
        }
        best
    }

    /// The more suffix-like of two runs: one with enough punctuation first,
    /// then the higher score; the one found first on a tie.
    fn better(best: Option<Shape>, shape: Shape) -> Shape {
        match best {
            Some(b) if b.rank() >= shape.rank() => b,
            _ => shape,
        }
    }

    fn rank(&self) -> (bool, f32) {
        (self.punctuation > PUNCTUATION, self.score)
    }

    /// Whether the shape is that of an adversarial suffix.
    pub fn is_adversarial(&self) -> bool {
        self.score >= SCORE && self.punctuation > PUNCTUATION
    }
}

/// The score at which a tail counts as adversarial, and the share of
/// punctuation it needs besides. Chosen on out-of-fold scores of the training
/// file (`halberd train-injection --folds 5`), never on dev. Since the score
/// is the best over the tail's runs of words, bars 1.25–1.5 with weight 1.5
/// gave recall 0.934 at ≤ 1 % false positives per benign source (0.923 at 3,
/// 0.920 when the whole tail was scored as one, 0.898 without the layer), with
/// the threshold unchanged; 1.0 and below let benign prompts over it. The
/// strictest of the plateau was taken. See docs/injection.md.
pub const SCORE: f32 = 1.5;
const PUNCTUATION: f32 = 0.03;

/// The score of a run of `words` words: its brackets left unmatched in the
/// tail (up to 3), 1 for an odd count of `"` and `` ` `` in the tail, and the
/// shares of glued words (×4) and of punctuation-only words (×3).
fn run_score(
    unmatched: usize,
    odd_quotes: f32,
    glued: usize,
    punct_only: usize,
    words: usize,
) -> f32 {
    let k = words as f32;
    unmatched.min(3) as f32 + odd_quotes + 4.0 * glued as f32 / k + 3.0 * punct_only as f32 / k
}

/// What the shape score needs of one word.
struct Word {
    /// Brackets in this word left unmatched over the whole tail (closers
    /// here; unclosed openers are added once the tail is read).
    unmatched: usize,
    quotes: usize,
    chars: usize,
    /// Characters that are neither letters nor digits.
    punctuation: usize,
    glued: bool,
    /// Two or more characters, none a letter, digit or `_`.
    punct_only: bool,
}

impl Word {
    /// Word `i` of the tail; `open` holds the words of the openers not yet
    /// closed.
    fn of(text: &str, i: usize, open: &mut Vec<usize>) -> Word {
        let mut w = Word {
            unmatched: 0,
            quotes: 0,
            chars: 0,
            punctuation: 0,
            glued: glued(text),
            punct_only: false,
        };
        let mut only_punct = true;
        for c in text.chars() {
            w.chars += 1;
            only_punct &= !c.is_alphanumeric() && c != '_';
            w.punctuation += usize::from(!c.is_alphanumeric());
            match c {
                '(' | '[' | '{' => open.push(i),
                ')' | ']' | '}' if open.pop().is_none() => w.unmatched += 1,
                '"' | '`' => w.quotes += 1,
                _ => {}
            }
        }
        w.punct_only = only_punct && w.chars >= 2;
        w
    }
}

/// A word with a lower-case letter followed by a capital (`whoNOT`), or with
/// punctuation between two letters (`segle.");']cont`), other than an English
/// contraction (`don't`, `we're`).
fn glued(word: &str) -> bool {
    if word
        .as_bytes()
        .windows(2)
        .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase())
    {
        return true;
    }
    if let Some((head, tail)) = word.split_once('\'')
        && !head.is_empty()
        && head.bytes().all(|b| b.is_ascii_alphabetic())
        && (1..=2).contains(&tail.len())
        && tail.bytes().all(|b| b.is_ascii_lowercase())
    {
        return false;
    }
    // A letter, one or more punctuation characters, a letter.
    let (mut after_letter, mut in_punct) = (false, false);
    for c in word.chars() {
        if c.is_alphabetic() {
            if in_punct {
                return true;
            }
            after_letter = true;
        } else if after_letter && !c.is_alphanumeric() && c != '_' {
            in_punct = true;
        } else {
            after_letter = false;
            in_punct = false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str =
        "Write a detailed guide to the history of the printing press in Europe for my class";

    #[test]
    fn suffix_shapes_are_adversarial() {
        let text = format!(
            "{REQUEST} zq.]( Mex giving**ONE please? revert wirh \"\\!--Two ](#TOP `-- mauve\":Inst'}} sorte{{[Hold"
        );
        let shape = Shape::of(&text).expect("long enough");
        assert!(shape.is_adversarial(), "{shape:?}");
    }

    #[test]
    fn a_short_suffix_behind_a_long_request_is_found() {
        // Nine suffix words behind a 30-word request: scored over the whole
        // tail, the request's plain words dilute the glued ones below the bar.
        let text = format!(
            "{REQUEST} and explain each step in order so that a beginner can follow along without help \
             oh ....ah TypeError...Me only !maxim] list seria Englishlier"
        );
        let shape = Shape::of(&text).expect("long enough");
        assert!(shape.is_adversarial(), "{shape:?}");
    }

    /// The shape of the last `k` of `words`, each bracket matched over all
    /// of `words` with a depth counter read forwards.
    fn reference(words: &[String], k: usize) -> Shape {
        let run = words.len() - k;
        let (mut depth_at, mut depth, mut unmatched) = (Vec::new(), 0usize, 0usize);
        let mut quotes = 0;
        for (i, word) in words.iter().enumerate() {
            for c in word.chars() {
                match c {
                    '(' | '[' | '{' => {
                        depth += 1;
                        depth_at.push(i);
                    }
                    ')' | ']' | '}' => match depth.checked_sub(1) {
                        Some(d) => {
                            depth = d;
                            depth_at.pop();
                        }
                        None => unmatched += usize::from(i >= run),
                    },
                    '"' | '`' => quotes += 1,
                    _ => {}
                }
            }
        }
        unmatched += depth_at.iter().filter(|&&i| i >= run).count();
        let tail = &words[run..];
        let chars: usize = tail.iter().map(|w| w.chars().count()).sum();
        let punctuation = tail
            .iter()
            .flat_map(|w| w.chars())
            .filter(|c| !c.is_alphanumeric())
            .count();
        let glued_words = tail.iter().filter(|w| glued(w)).count();
        let punct_only = tail
            .iter()
            .filter(|w| {
                w.chars().count() >= 2 && w.chars().all(|c| !c.is_alphanumeric() && c != '_')
            })
            .count();
        Shape {
            score: (unmatched.min(3) + quotes % 2) as f32
                + 4.0 * glued_words as f32 / k as f32
                + 3.0 * punct_only as f32 / k as f32,
            punctuation: punctuation as f32 / chars.max(1) as f32,
        }
    }

    proptest::proptest! {
        #[test]
        fn every_run_is_scored_as_a_forward_reading_would(
            words in proptest::collection::vec("[a-zA-Z(){}\\[\\]\"`'.!_]{1,5}", 20..36),
        ) {
            let text = words.join(" ");
            let runs = (MIN_TAIL_WORDS..=words.len()).map(|k| reference(&words, k));
            let expected = runs.fold(None, |best, shape| Some(Shape::better(best, shape)));
            let got = Shape::of(&text);
            proptest::prop_assert_eq!(got.map(|s| s.rank()), expected.map(|s| s.rank()));
        }
    }

    #[test]
    fn prose_and_code_are_not() {
        let prose = format!(
            "{REQUEST}. It should cover Gutenberg, the spread to Venice and Paris, and what it did to literacy; please keep it under 800 words (roughly two pages) and cite \"sources\"."
        );
        // Balanced brackets and quotes. (A run of code with several dotted
        // names, `items.iter()`, does take the shape; the layer only adds
        // weight to what the classifier already leans towards.)
        let code = format!(
            "{REQUEST}:\nfn area(width: u32, height: u32) -> u32 {{ let total = width * height; println!(\"{{total}}\"); total }}"
        );
        for text in [prose, code] {
            let shape = Shape::of(&text).expect("long enough");
            assert!(!shape.is_adversarial(), "{shape:?} {text}");
        }
        assert_eq!(Shape::of("too short ]] \"\" ))"), None);
    }

    #[test]
    fn contractions_are_not_glued() {
        assert!(!glued("don't"));
        assert!(!glued("we're"));
        assert!(glued("whoNOT!"));
        assert!(glued("segle.\");']cont"));
        assert!(!glued("(hello)"));
    }
}
