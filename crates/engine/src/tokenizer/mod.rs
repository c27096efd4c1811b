//! The model's own tokenizer, built from GGUF metadata the way llama.cpp builds it:
//! byte-level BPE (`gpt2`, with the pre-tokenizer `tokenizer.ggml.pre` names) or
//! SentencePiece-style (`llama`: scores, byte fallback, leading space). Special tokens
//! written in the text are split out first; decoding follows llama.cpp's pieces.

mod bpe;
mod decode;
mod markers;
mod meta;
mod pre;
mod special;
mod spm;
mod stream;
mod vocab;

pub use pre::supported as supported_pre_tokenizers;
pub use stream::TextStream;

use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;
use candle_core::quantized::gguf_file::Value;
use special::Fragment;
use std::collections::HashMap;
use std::path::Path;
use vocab::{attr, Defaults, Vocab};

/// `tokenizer.ggml.model` values this engine reads.
pub const SUPPORTED_MODELS: &[&str] = &["gpt2 (byte-level BPE)", "llama (SentencePiece)"];

/// Which algorithm turns text into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Byte-level BPE (`gpt2`).
    Bpe,
    /// SentencePiece-style (`llama`).
    Spm,
}

#[derive(Clone)]
enum Model {
    Bpe(Box<bpe::Bpe>),
    Spm,
}

/// The tokenizer stored in a GGUF file.
#[derive(Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    kind: Kind,
    pre: Option<&'static str>,
    pieces: Vec<Vec<u8>>,
}

impl Tokenizer {
    /// Builds the tokenizer stored in a GGUF file.
    pub fn from_gguf(path: &Path) -> Result<Tokenizer> {
        Self::from_file(&GgufFile::open(path)?)
    }

    /// Builds the tokenizer from an open GGUF file.
    pub fn from_file(f: &GgufFile) -> Result<Tokenizer> {
        Self::build(&|k| f.meta(k))
    }

    /// Builds the tokenizer from GGUF metadata alone (e.g. a vocabulary-only file).
    pub fn from_metadata(meta: &HashMap<String, Value>) -> Result<Tokenizer> {
        Self::build(&|k| meta.get(k))
    }

    fn build<'a>(meta: meta::Meta<'a>) -> Result<Tokenizer> {
        let name = meta::string(meta, "tokenizer.ggml.model")
            .ok_or_else(|| EngineError::MissingMetadata("tokenizer.ggml.model".into()))?;
        let (tok, pre) = match name.as_str() {
            "gpt2" => {
                let name = meta::string(meta, "tokenizer.ggml.pre").filter(|n| !n.is_empty());
                if name.is_none() {
                    tracing::warn!(
                        "the GGUF names no pre-tokenizer (tokenizer.ggml.pre): using llama.cpp's \
                         'default'; output quality may suffer (re-convert the model)"
                    );
                }
                let p = pre::lookup(name.as_deref())?;
                let d = Defaults {
                    bos: Some(11),
                    eos: Some(11),
                    unk: None,
                    add_bos: p.add_bos,
                    add_space_prefix: false,
                    clean_spaces: p.clean_spaces,
                };
                let vocab = Vocab::load(meta, d)?;
                let model = Model::Bpe(Box::new(bpe::Bpe::new(meta, &vocab, &p)?));
                ((vocab, model, Kind::Bpe), Some(p.name))
            }
            "llama" => {
                let d = Defaults {
                    bos: Some(1),
                    eos: Some(2),
                    unk: Some(0),
                    add_bos: true,
                    add_space_prefix: true,
                    clean_spaces: false,
                };
                ((Vocab::load(meta, d)?, Model::Spm, Kind::Spm), None)
            }
            other => {
                return Err(EngineError::Tokenizer(format!(
                "tokenizer model '{other}' (tokenizer.ggml.model) is not supported; supported: {}",
                SUPPORTED_MODELS.join(", ")
            )))
            }
        };
        let (vocab, model, kind) = tok;
        let pieces = decode::pieces(&vocab, kind);
        Ok(Tokenizer {
            vocab,
            model,
            kind,
            pre,
            pieces,
        })
    }

    /// Token ids of a prompt, as llama.cpp tokenizes a rendered chat: special tokens in
    /// the text are parsed, BOS is added when the model asks for it (`add_bos_token`)
    /// and not doubled when the text already starts with it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let bos_text = self
            .vocab
            .bos
            .map(|b| self.vocab.texts[b as usize].as_str());
        let body = match bos_text {
            Some(b) if self.vocab.add_bos && !b.is_empty() => text.strip_prefix(b).unwrap_or(text),
            _ => text,
        };
        self.tokenize(body, true, true)
    }

    /// llama.cpp's `llama_tokenize`: `add_special` adds BOS/EOS as the model asks,
    /// `parse_special` turns control tokens written in the text into single tokens.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let v = &self.vocab;
        let mut out = Vec::new();
        if add_special && v.add_bos {
            out.push(v.bos.ok_or_else(|| {
                EngineError::Tokenizer("the model asks for BOS but has no BOS token".into())
            })?);
        }
        let mut prev_special = true;
        for frag in special::partition(v, text, parse_special) {
            match (frag, &self.model) {
                (Fragment::Token(id), _) => {
                    out.push(id);
                    prev_special = true;
                }
                (Fragment::Text(t), Model::Bpe(bpe)) => bpe.tokenize(t, &mut out)?,
                (Fragment::Text(t), Model::Spm) => {
                    let lead = if v.add_space_prefix && prev_special {
                        " "
                    } else {
                        ""
                    };
                    spm::tokenize(v, &spm::escape(&format!("{lead}{t}")), &mut out);
                    prev_special = false;
                }
            }
        }
        if add_special && v.add_eos {
            out.push(v.eos.ok_or_else(|| {
                EngineError::Tokenizer("the model asks for EOS but has no EOS token".into())
            })?);
        }
        Ok(out)
    }

    /// Text of `ids`, special tokens included (llama.cpp's `detokenize` with
    /// `remove_special = false`, `unparse_special = true`); invalid UTF-8 is replaced.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.detokenize(ids, false, true)).into_owned())
    }

    /// llama.cpp's `llama_detokenize` as raw bytes: `remove_special` drops the BOS/EOS
    /// the model adds, `unparse_special` renders control tokens' text.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        decode::detokenize(
            &self.vocab,
            &self.pieces,
            ids,
            remove_special,
            unparse_special,
        )
    }

    /// The bytes one token stands for (special tokens rendered); empty for unknown ids.
    pub fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], |p| p.as_slice())
    }

    /// The end-of-sequence token id (`u32::MAX` if the vocabulary has none).
    pub fn eos(&self) -> u32 {
        self.vocab.eos.unwrap_or(u32::MAX)
    }

    /// The beginning-of-sequence token id, if any.
    pub fn bos(&self) -> Option<u32> {
        self.vocab.bos
    }

    /// Whether [`encode`](Self::encode) starts prompts with BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether generating `id` ends the turn (EOS, EOT, EOM and the end markers
    /// llama.cpp recognises by text, such as `<|im_end|>` or `<end_of_turn>`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation token ids, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    /// Whether `id` is a control token such as `<|im_end|>`.
    pub fn is_special(&self, id: u32) -> bool {
        self.vocab.attr(id) & attr::CONTROL != 0
    }

    /// Whether `id` is rendered only when special tokens are (control and unknown
    /// tokens): the text a model writes never contains it.
    pub fn is_hidden(&self, id: u32) -> bool {
        decode::is_hidden(&self.vocab, id)
    }

    /// The token's text as stored in the vocabulary, if the id exists.
    pub fn token(&self, id: u32) -> Option<String> {
        self.vocab.texts.get(id as usize).cloned()
    }

    /// The id of a token text, if the vocabulary has it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.vocab.texts.len()
    }

    /// Byte-level BPE or SentencePiece-style.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The BPE pre-tokenizer in use (canonical llama.cpp name), if BPE.
    pub fn pre_tokenizer(&self) -> Option<&'static str> {
        self.pre
    }

    /// A streaming decoder that yields text once it forms whole UTF-8 characters.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream::new(self)
    }
}
