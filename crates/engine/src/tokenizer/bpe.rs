//! Byte-level BPE (GGUF `tokenizer.ggml.model = "gpt2"`), built with the `tokenizers`
//! crate: the pre-tokenizer's regexes as `Split` steps, GPT-2's byte-to-character map,
//! then BPE merges by rank (llama.cpp's `llm_tokenizer_bpe`).

use super::meta::Meta;
use super::pre::PreTokenizer;
use super::vocab::Vocab;
use crate::error::{EngineError, Result};
use candle_core::quantized::gguf_file::Value;
use std::collections::HashSet;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Tokenizer(e.to_string())
}

/// The byte-level BPE model of one vocabulary.
#[derive(Clone)]
pub(super) struct Bpe {
    inner: tokenizers::Tokenizer,
}

impl Bpe {
    /// Builds the model from the vocabulary, `tokenizer.ggml.merges` and a pre-tokenizer.
    pub fn new(meta: Meta, vocab: &Vocab, pre: &PreTokenizer) -> Result<Bpe> {
        let merges = merges(meta, vocab)?;
        let table: tokenizers::models::bpe::Vocab = vocab.ids.clone().into_iter().collect();
        let model = BPE::builder()
            .vocab_and_merges(table, merges)
            .ignore_merges(pre.ignore_merges)
            .build()
            .map_err(err)?;
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for re in pre.regexes {
            let split = Split::new(
                SplitPattern::Regex((*re).to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| err(format!("pre-tokenizer {}: regex {re:?}: {e}", pre.name)))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(Sequence::new(steps)));
        Ok(Bpe { inner })
    }

    /// Token ids of plain text (no special tokens in it).
    pub fn tokenize(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let enc = self.inner.encode(text, false).map_err(err)?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }
}

/// Merges in rank order, as llama.cpp reads them: split at the first space after the
/// first byte; a repeated pair keeps its first rank; pairs that cannot form a vocabulary
/// token are dropped (they could never yield one).
fn merges(meta: Meta, vocab: &Vocab) -> Result<Vec<(String, String)>> {
    let key = "tokenizer.ggml.merges";
    let raw = match meta(key) {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err(format!("{key} is not an array"))),
        None => return Err(EngineError::MissingMetadata(key.into())),
    };
    let mut seen = HashSet::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    let mut joined = String::new();
    for m in raw {
        let Value::String(m) = m else {
            return Err(err(format!("{key} holds a non-string")));
        };
        let bytes = m.as_bytes();
        let Some(pos) = bytes.iter().skip(1).position(|&c| c == b' ').map(|p| p + 1) else {
            continue;
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        let formed = vocab.id(&joined).is_some() && vocab.id(a).is_some() && vocab.id(b).is_some();
        if formed && seen.insert((a, b)) {
            out.push((a.to_string(), b.to_string()));
        }
    }
    Ok(out)
}
