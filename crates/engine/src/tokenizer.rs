//! The model's own tokenizer, built from GGUF metadata (byte-level BPE).

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use candle_core::quantized::gguf_file::Value;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::AddedToken;

/// Byte-level BPE tokenizer with the model's special tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos: u32,
    specials: Vec<String>,
}

fn strings(v: Option<&Value>, key: &str) -> Result<Vec<String>> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                _ => Err(EngineError::Tokenizer(format!("{key} holds a non-string"))),
            })
            .collect(),
        _ => Err(EngineError::MissingMetadata(key.into())),
    }
}

impl Tokenizer {
    /// Builds the tokenizer stored in a GGUF file.
    pub fn from_gguf(path: &Path) -> Result<Tokenizer> {
        Self::from_file(&GgufFile::open(path)?)
    }

    /// Builds the tokenizer from an open GGUF file.
    pub fn from_file(f: &GgufFile) -> Result<Tokenizer> {
        let model = match f.meta("tokenizer.ggml.model") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(EngineError::MissingMetadata("tokenizer.ggml.model".into())),
        };
        if model != "gpt2" {
            return Err(EngineError::Tokenizer(format!(
                "tokenizer model '{model}' is not supported (byte-level BPE 'gpt2' is)"
            )));
        }
        let tokens = strings(f.meta("tokenizer.ggml.tokens"), "tokenizer.ggml.tokens")?;
        let merges = strings(f.meta("tokenizer.ggml.merges"), "tokenizer.ggml.merges")?;
        let types: Vec<i64> = match f.meta("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.to_i32().map(i64::from).unwrap_or(1))
                .collect(),
            _ => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        // The "smollm"/starcoder pre-tokenizer: single digits, then GPT-2's byte-level split.
        let pre = Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ]);
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<String> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == 3 || **t == 4)
            .map(|(s, _)| s.clone())
            .collect();
        let added: Vec<AddedToken> = specials
            .iter()
            .map(|s| AddedToken::from(s.clone(), true))
            .collect();
        let _added_count = inner.add_special_tokens(added);
        let eos = f.info.eos_token_id;
        Ok(Tokenizer {
            inner,
            eos,
            specials,
        })
    }

    /// Token ids of `text`; special tokens written in the text become single tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    /// The end-of-sequence token id.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Whether `id` is a special (control) token such as `<|im_end|>`.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .id_to_token(id)
            .is_some_and(|t| self.specials.contains(&t))
    }

    /// The token's string form, if it exists.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A streaming decoder that yields text once it forms whole UTF-8 characters.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream {
            tok: self,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }
}

/// Incremental detokenizer (tokens in, new text out).
pub struct TextStream<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl TextStream<'_> {
    /// Adds one token; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let now = self.tok.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let piece = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }
}
