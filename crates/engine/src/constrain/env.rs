//! The vocabulary as llguidance sees it: a trie of every token's bytes (as the model
//! emits them), control tokens behind llguidance's marker byte, the end-of-generation
//! tokens, and our tokenizer for the text a grammar forces.

use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;
use llguidance::toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::ParserFactory;
use std::sync::Arc;

/// llguidance's tokenizer interface over ours.
struct Vocabulary {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Text the grammar forces, tokenized as the model would see it written: no BOS,
    /// control tokens not parsed (they are written `\xff<|name|>` in the trie, so text
    /// never turns into one). Invalid UTF-8 runs, which our tokenizer cannot take, are
    /// split greedily by the trie.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer
                .tokenize(text, false, false)
                .unwrap_or_else(|_| self.trie.greedy_tokenize(text.as_bytes()))
        })
    }
}

struct Inner {
    factory: ParserFactory,
    vocab_size: usize,
    eog: Vec<u32>,
    /// The bitset allowing only the end-of-generation tokens.
    eog_mask: Vec<u32>,
}

/// A model's vocabulary prepared for constrained decoding; build it once per model
/// (about 0.1-0.3 s for 50k tokens) and clone it freely (shared).
#[derive(Clone)]
pub struct TokenEnv {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEnv")
            .field("vocab_size", &self.inner.vocab_size)
            .field("eog", &self.inner.eog)
            .finish()
    }
}

impl TokenEnv {
    /// Builds the token trie of `tokenizer`'s vocabulary: each token's bytes as
    /// [`Tokenizer::piece`] gives them, control and unknown tokens as the marker byte
    /// 0xFF followed by their text (llguidance's convention, as llama.cpp builds it:
    /// grammars name them `<|name|>`, text never produces them), and every
    /// end-of-generation token as a stop token.
    pub fn new(tokenizer: &Tokenizer) -> Result<TokenEnv> {
        let n = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let piece = tokenizer.piece(id);
                if tokenizer.is_hidden(id) && !piece.is_empty() {
                    let mut w = Vec::with_capacity(piece.len() + 1);
                    w.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    w.extend_from_slice(piece);
                    w
                } else {
                    piece.to_vec()
                }
            })
            .collect();
        let mut eog: Vec<u32> = tokenizer
            .eog_ids()
            .iter()
            .copied()
            .filter(|&t| (t as usize) < n)
            .collect();
        let eos = tokenizer.eos();
        if (eos as usize) < n {
            // the model's own EOS first: llguidance reports it as "the" EOS token
            eog.retain(|&t| t != eos);
            eog.insert(0, eos);
        }
        if eog.is_empty() {
            return Err(EngineError::Tokenizer(
                "constrained decoding needs an end-of-generation token; the vocabulary has none"
                    .into(),
            ));
        }
        let mut info = TokRxInfo::new(n as u32, eog[0]);
        info.tok_bos = tokenizer.bos();
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&eog);
        let env: llguidance::toktrie::TokEnv = Arc::new(Vocabulary {
            trie,
            tokenizer: tokenizer.clone(),
        });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| EngineError::Tokenizer(format!("llguidance: {e}")))?;
        factory.quiet();
        let mut eog_mask = vec![0u32; n.div_ceil(32)];
        for &t in &eog {
            eog_mask[t as usize / 32] |= 1 << (t % 32);
        }
        Ok(TokenEnv {
            inner: Arc::new(Inner {
                factory,
                vocab_size: n,
                eog,
                eog_mask,
            }),
        })
    }

    /// Tokens in the vocabulary (the bitsets have `vocab_size().div_ceil(32)` words).
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab_size
    }

    /// The end-of-generation tokens, the model's EOS first.
    pub fn eog(&self) -> &[u32] {
        &self.inner.eog
    }

    pub(super) fn factory(&self) -> &ParserFactory {
        &self.inner.factory
    }

    pub(super) fn eog_mask(&self) -> &[u32] {
        &self.inner.eog_mask
    }

    pub(super) fn is_eog(&self, token: u32) -> bool {
        self.inner.eog.contains(&token)
    }
}
