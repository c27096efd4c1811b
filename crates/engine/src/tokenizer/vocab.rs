//! The vocabulary as llama.cpp sees it: token texts, scores, attributes, special ids,
//! end-of-generation set and the special tokens matched in text (llama-vocab.cpp's `load`).

use super::markers::{EOG_TEXTS, EOT_TEXTS, FIM_OTHER, FIM_PAD, FIM_REP, FIM_SEP};
use super::meta::{self, Meta};
use crate::error::{EngineError, Result};
use std::collections::{BTreeSet, HashMap};

/// Token attributes (llama.cpp's `llama_token_attr` bits).
pub(super) mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

/// Defaults that depend on the tokenizer kind, before the GGUF's own keys.
pub(super) struct Defaults {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
}

/// Token table plus the special-token facts both tokenizer kinds share.
#[derive(Clone)]
pub(super) struct Vocab {
    pub texts: Vec<String>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u32>,
    pub ids: HashMap<String, u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
    /// End-of-generation ids, ascending.
    pub eog: Vec<u32>,
    /// Tokens split out of text before tokenizing, longest text first.
    pub specials: Vec<u32>,
}

impl Vocab {
    /// Reads tokens, scores, types and the special-token keys.
    pub fn load(meta: Meta, d: Defaults) -> Result<Vocab> {
        let mut texts = meta::strings(meta, "tokenizer.ggml.tokens")?;
        if texts.is_empty() {
            return Err(EngineError::Tokenizer("the vocabulary is empty".into()));
        }
        for (i, t) in texts.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
        }
        let n = texts.len();
        let scores = meta::floats(meta, "tokenizer.ggml.scores").unwrap_or_default();
        let scores = if scores.len() >= n {
            scores
        } else {
            vec![0.0; n]
        };
        let types = meta::ints(meta, "tokenizer.ggml.token_type");
        let attrs: Vec<u32> = (0..n)
            .map(
                |i| match types.as_ref().map(|t| t.get(i).copied().unwrap_or(1)) {
                    None | Some(1) => attr::NORMAL,
                    Some(2) => attr::UNKNOWN,
                    Some(3) => attr::CONTROL,
                    Some(4) => attr::USER_DEFINED,
                    Some(5) => attr::UNUSED,
                    Some(6) => attr::BYTE,
                    _ => 0,
                },
            )
            .collect();
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in texts.iter().enumerate() {
            ids.insert(t.clone(), i as u32);
        }
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let special =
            |key: &str, default: Option<u32>| in_range(meta::id(meta, key)).or(in_range(default));
        let flag = |key: &str, default: bool| meta::flag(meta, key).unwrap_or(default);
        let mut v = Vocab {
            bos: special("tokenizer.ggml.bos_token_id", d.bos),
            eos: special("tokenizer.ggml.eos_token_id", d.eos),
            unk: special("tokenizer.ggml.unknown_token_id", d.unk),
            add_bos: flag("tokenizer.ggml.add_bos_token", d.add_bos),
            add_eos: flag("tokenizer.ggml.add_eos_token", false),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", d.add_space_prefix),
            clean_spaces: d.clean_spaces,
            texts,
            scores,
            attrs,
            ids,
            eog: Vec::new(),
            specials: Vec::new(),
        };
        let eot = special("tokenizer.ggml.eot_token_id", None);
        let eom = special("tokenizer.ggml.eom_token_id", None);
        let fim_pad = special("tokenizer.ggml.fim_pad_token_id", None);
        let fim_rep = special("tokenizer.ggml.fim_rep_token_id", None);
        let fim_sep = special("tokenizer.ggml.fim_sep_token_id", None);
        v.mark_eog(eot, eom, [fim_pad, fim_rep, fim_sep]);
        v.specials = (0..n as u32)
            .filter(|&i| {
                v.attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        v.specials
            .sort_by_key(|&i| std::cmp::Reverse(v.texts[i as usize].len()));
        if let Some(name) = meta::string(meta, "general.name") {
            v.phi3_strip(&name.to_lowercase());
        }
        Ok(v)
    }

    /// llama.cpp's text-based detection of EOT/EOM/FIM tokens and the EOG set; tokens
    /// found by text become control tokens.
    fn mark_eog(&mut self, eot: Option<u32>, eom: Option<u32>, fims: [Option<u32>; 3]) {
        let [mut fim_pad, mut fim_rep, mut fim_sep] = fims;
        let (mut eot, mut eom) = (eot, eom);
        let mut other_fim = [false; 3];
        for i in 0..self.texts.len() {
            let text = self.texts[i].as_str();
            let id = Some(i as u32);
            let hit = |slot: &mut Option<u32>, list: &[&str]| {
                if slot.is_none() && list.contains(&text) {
                    *slot = id;
                    true
                } else {
                    false
                }
            };
            let mut control = hit(&mut eot, EOT_TEXTS);
            control |= hit(&mut eom, &["<|eom_id|>"]);
            control |= hit(&mut fim_pad, FIM_PAD);
            control |= hit(&mut fim_rep, FIM_REP);
            control |= hit(&mut fim_sep, FIM_SEP);
            // prefix/suffix/middle: first match of each group becomes control
            for (g, list) in FIM_OTHER.chunks(8).enumerate() {
                if !other_fim[g] && list.contains(&text) {
                    other_fim[g] = true;
                    control = true;
                }
            }
            if control {
                self.attrs[i] |= attr::CONTROL;
            }
        }
        let mut eog: BTreeSet<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for (i, t) in self.texts.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) {
                eog.insert(i as u32);
                self.attrs[i] |= attr::CONTROL;
            }
            if ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"].contains(&t.as_str()) {
                self.attrs[i] = attr::USER_DEFINED;
            }
        }
        eog.extend([self.eos, eot, eom].into_iter().flatten());
        let texts = &self.texts;
        let find =
            |eog: &BTreeSet<u32>, s: &str| eog.iter().copied().find(|&i| texts[i as usize] == s);
        let has = |eog: &BTreeSet<u32>, s: &str| find(eog, s).is_some();
        // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation
        if let Some(end) = find(&eog, "<|end|>") {
            let call = has(&eog, "<|call|>") || has(&eog, "<|calls|>");
            if call && (has(&eog, "<|return|>") || has(&eog, "<|flush|>")) {
                eog.remove(&end);
                self.attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        // gemma4 / plamo: "</s>" is a normal token there
        if let Some(s) = find(&eog, "</s>") {
            if has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>") {
                eog.remove(&s);
                self.attrs[s as usize] = attr::NORMAL;
            }
        }
        self.eog = eog.into_iter().collect();
    }

    /// Phi-3 models: whitespace after most special tokens is dropped when parsing text.
    fn phi3_strip(&mut self, name: &str) {
        if !(name.contains("phi-3") || name.contains("phi3")) {
            return;
        }
        for &i in &self.specials {
            self.attrs[i as usize] |= attr::RSTRIP;
        }
        for (t, on) in [
            ("</s>", true),
            ("<unk>", false),
            ("<s>", false),
            ("<|endoftext|>", false),
        ] {
            if let Some(&i) = self.ids.get(t) {
                if on {
                    self.attrs[i as usize] |= attr::RSTRIP;
                } else {
                    self.attrs[i as usize] &= !attr::RSTRIP;
                }
            }
        }
    }

    /// Id of a token text.
    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// Attribute bits of a token (0 when out of range).
    pub fn attr(&self, id: u32) -> u32 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }
}
