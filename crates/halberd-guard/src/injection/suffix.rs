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
//! only its last line's final [`TAIL`] bytes, and adds its weight to the fused
//! log-odds; it cannot flag a text on its own unless the classifier already
//! leans towards an attack.

/// How many bytes of the last line are read.
const TAIL: usize = 220;
/// Texts with fewer words have no room for a request and a suffix.
const MIN_WORDS: usize = 20;
/// Tails with fewer words are not judged.
const MIN_TAIL_WORDS: usize = 8;

/// The shape score of a text's tail, or `None` when the text is too short to
/// be judged. Unclosed or unopened brackets count up to 3, an odd count of
/// `"` and `` ` `` counts 1, and the shares of glued words and of
/// punctuation-only words count 4× and 3×. `punctuation` is the share of the
/// tail's characters that are neither letters, digits nor whitespace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub score: f32,
    pub punctuation: f32,
}

impl Shape {
    pub fn of(text: &str) -> Option<Shape> {
        let text = text.trim_end();
        let line = text.rsplit('\n').next().unwrap_or(text);
        let mut from = line.len().saturating_sub(TAIL);
        while !line.is_char_boundary(from) {
            from += 1;
        }
        // The first piece may be cut in the middle of a word.
        let words = || line[from..].split_whitespace().skip(usize::from(from > 0));
        let n = words().count();
        if n < MIN_TAIL_WORDS || text.split_whitespace().nth(MIN_WORDS - 1).is_none() {
            return None;
        }

        let (mut depth, mut unmatched, mut quotes) = (0usize, 0usize, 0usize);
        let (mut chars, mut punctuation) = (0usize, 0usize);
        let (mut glued_words, mut punct_only) = (0usize, 0usize);
        for word in words() {
            glued_words += usize::from(glued(word));
            let (mut len, mut only_punct) = (0usize, true);
            for c in word.chars() {
                chars += 1;
                len += 1;
                only_punct &= !c.is_alphanumeric() && c != '_';
                match c {
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' => match depth.checked_sub(1) {
                        Some(d) => depth = d,
                        None => unmatched += 1,
                    },
                    '"' | '`' => quotes += 1,
                    _ => {}
                }
                if !c.is_alphanumeric() {
                    punctuation += 1;
                }
            }
            punct_only += usize::from(only_punct && len >= 2);
        }
        unmatched += depth;
        let n = n as f32;
        Some(Shape {
            score: unmatched.min(3) as f32
                + (quotes % 2) as f32
                + 4.0 * glued_words as f32 / n
                + 3.0 * punct_only as f32 / n,
            punctuation: punctuation as f32 / chars.max(1) as f32,
        })
    }

    /// Whether the shape is that of an adversarial suffix.
    pub fn is_adversarial(&self) -> bool {
        self.score >= SCORE && self.punctuation > PUNCTUATION
    }
}

/// The score at which a tail counts as adversarial, and the share of
/// punctuation it needs besides. Chosen on out-of-fold scores of the training
/// file (`halberd train-injection --folds 5`), never on dev: scores 2, 2.5 and
/// 3 with weights from 1.5 up gave recall 0.920–0.922 at ≤ 1 % false
/// positives per benign source (0.898 without the layer), and the strictest of
/// them was taken. See docs/injection.md.
pub const SCORE: f32 = 3.0;
const PUNCTUATION: f32 = 0.06;

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
    fn prose_and_code_are_not() {
        let prose = format!(
            "{REQUEST}. It should cover Gutenberg, the spread to Venice and Paris, and what it did to literacy; please keep it under 800 words (roughly two pages) and cite \"sources\"."
        );
        let code = format!(
            "{REQUEST}:\nfor (i, item) in items.iter().enumerate() {{ if item.price > limit {{ println!(\"{{i}}: {{}}\", item.name); }} }}"
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
