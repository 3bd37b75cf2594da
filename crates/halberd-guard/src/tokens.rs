//! Token counts for admission: how many tokens a prompt will cost before the
//! provider says so. OpenAI models are counted with their real tokenizer
//! (tiktoken's `o200k_base` for the GPT-4o, GPT-4.1, GPT-5 and o-series
//! families, `cl100k_base` for GPT-4, GPT-3.5 and the embedding models; other
//! OpenAI-compatible models use `o200k_base`). Anthropic does not publish its
//! tokenizer, so Claude prompts get a conservative estimate: one token per three
//! bytes of UTF-8, which overestimates English (about four characters a token)
//! and matches CJK text (three bytes a character, about a token each). Every
//! part also costs a fixed overhead for its role and framing.

use tiktoken_rs::{cl100k_base_singleton, o200k_base_singleton};

/// Framing tokens per part (role markers, separators): OpenAI documents 3–4.
pub const PER_PART: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200k,
    Cl100k,
    /// Bytes / 3, rounded up.
    Estimate,
}

impl Encoding {
    /// The encoding for a model at a provider of the given kind.
    pub fn for_model(anthropic: bool, model: &str) -> Encoding {
        if anthropic {
            return Encoding::Estimate;
        }
        let legacy = [
            "gpt-4-",
            "gpt-4",
            "gpt-3.5",
            "text-embedding-3",
            "text-embedding-ada",
        ];
        let modern = ["gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o"];
        if !modern.iter().any(|p| model.starts_with(p))
            && legacy.iter().any(|p| model == *p || model.starts_with(p))
        {
            Encoding::Cl100k
        } else {
            Encoding::O200k
        }
    }

    pub fn count(self, text: &str) -> u64 {
        match self {
            Encoding::O200k => o200k_base_singleton()
                .encode_with_special_tokens(text)
                .len() as u64,
            Encoding::Cl100k => cl100k_base_singleton()
                .encode_with_special_tokens(text)
                .len() as u64,
            Encoding::Estimate => (text.len() as u64).div_ceil(3),
        }
    }

    /// Tokens of a prompt made of these parts.
    pub fn count_parts<'a>(self, parts: impl IntoIterator<Item = &'a str>) -> u64 {
        parts.into_iter().map(|p| self.count(p) + PER_PART).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_get_their_encoding() {
        assert_eq!(Encoding::for_model(false, "gpt-4o-mini"), Encoding::O200k);
        assert_eq!(Encoding::for_model(false, "gpt-4.1"), Encoding::O200k);
        assert_eq!(Encoding::for_model(false, "o3-mini"), Encoding::O200k);
        assert_eq!(Encoding::for_model(false, "gpt-4-turbo"), Encoding::Cl100k);
        assert_eq!(
            Encoding::for_model(false, "gpt-3.5-turbo"),
            Encoding::Cl100k
        );
        assert_eq!(
            Encoding::for_model(false, "text-embedding-3-small"),
            Encoding::Cl100k
        );
        assert_eq!(
            Encoding::for_model(true, "claude-sonnet-4-5"),
            Encoding::Estimate
        );
    }

    #[test]
    fn counts_are_real_tokenizer_counts() {
        // "hello world" is two tokens in both OpenAI encodings.
        assert_eq!(Encoding::O200k.count("hello world"), 2);
        assert_eq!(Encoding::Cl100k.count("hello world"), 2);
        assert_eq!(Encoding::Estimate.count("hello world"), 4);
        // Three-byte characters: one estimated token each.
        assert_eq!(Encoding::Estimate.count("日本語"), 3);
        assert_eq!(
            Encoding::O200k.count_parts(["hello world", "hi"]),
            2 + 1 + 2 * PER_PART
        );
    }
}
