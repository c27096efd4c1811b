//! Byte-level BPE pre-tokenizers, by `tokenizer.ggml.pre` name: the regex lists and flags
//! of llama.cpp's `llm_tokenizer_bpe` (llama.cpp 0.3.36), applied in order, each one
//! splitting the pieces left by the previous one (matches and gaps both kept).

use crate::error::{EngineError, Result};

/// One pre-tokenizer: its split regexes and the vocabulary flags its name implies.
#[derive(Debug, Clone, Copy)]
pub(super) struct PreTokenizer {
    /// Canonical name (the llama.cpp pre-type).
    pub name: &'static str,
    pub regexes: &'static [&'static str],
    /// A word already in the vocabulary is one token, merges or not (Llama 3, Tekken).
    pub ignore_merges: bool,
    /// Decoding tidies " ," / " 's" and the like (llama.cpp's `clean_spaces`).
    pub clean_spaces: bool,
    /// BOS is added by default (before `tokenizer.ggml.add_bos_token` overrides it).
    pub add_bos: bool,
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const DEFAULT_RE: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"];
const STARCODER_RE: &[&str] = &[r"\p{N}", GPT2];
const DEEPSEEK_LLM_RE: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+",
    "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
    // std::regex `$` is the end of the piece; Oniguruma's is the end of a line
    "\\s+\\z",
    "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
    "\\p{N}+",
];
const DEEPSEEK_CODER_RE: &[&str] = &[
    "[\r\n]",
    "\\s?\\p{L}+",
    "\\s?\\p{P}+",
    "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
    "\\p{N}",
];
const FALCON_RE: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|`]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    "[0-9][0-9][0-9]",
];

const fn pre(
    name: &'static str,
    regexes: &'static [&'static str],
    ignore_merges: bool,
    clean_spaces: bool,
    add_bos: bool,
) -> PreTokenizer {
    PreTokenizer {
        name,
        regexes,
        ignore_merges,
        clean_spaces,
        add_bos,
    }
}

/// `tokenizer.ggml.pre` names and what they select (llama.cpp's table, same flags).
const TABLE: &[(&[&str], PreTokenizer)] = &[
    (&["default"], pre("default", DEFAULT_RE, false, true, false)),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        pre("llama-bpe", &[LLAMA3], true, true, true),
    ),
    (
        &["dbrx", "smaug-bpe"],
        pre("dbrx", &[LLAMA3], false, true, false),
    ),
    (
        &["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan"],
        pre("qwen2", &[QWEN2], false, false, false),
    ),
    (
        &["stablelm2", "megrez"],
        pre("stablelm2", &[QWEN2], false, true, false),
    ),
    (&["qwen35"], pre("qwen35", &[QWEN35], false, false, false)),
    (
        &["smollm", "command-r"],
        pre("smollm", STARCODER_RE, false, false, false),
    ),
    (
        &[
            "starcoder",
            "refact",
            "codeshell",
            "exaone",
            "minerva-7b",
            "mellum2",
        ],
        pre("starcoder", STARCODER_RE, false, true, false),
    ),
    (
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "mpt",
            "olmo",
            "jais",
            "exaone4",
        ],
        pre("gpt-2", &[GPT2], false, true, false),
    ),
    (
        &["trillion", "granite-docling"],
        pre("trillion", &[GPT2], false, false, false),
    ),
    (&["tekken"], pre("tekken", &[TEKKEN], true, false, true)),
    (
        &["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
        pre("gpt-4o", &[GPT4O], false, false, false),
    ),
    (
        &["deepseek-llm"],
        pre("deepseek-llm", DEEPSEEK_LLM_RE, false, false, false),
    ),
    (
        &["deepseek-coder"],
        pre("deepseek-coder", DEEPSEEK_CODER_RE, false, false, false),
    ),
    (&["falcon"], pre("falcon", FALCON_RE, false, true, false)),
];

/// Every supported `tokenizer.ggml.pre` name.
pub fn supported() -> Vec<&'static str> {
    TABLE
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect()
}

/// The pre-tokenizer a GGUF names; absent means llama.cpp's `default` (with its warning).
pub(super) fn lookup(name: Option<&str>) -> Result<PreTokenizer> {
    let name = name.filter(|n| !n.is_empty()).unwrap_or("default");
    TABLE
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, p)| *p)
        .ok_or_else(|| {
            EngineError::Tokenizer(format!(
                "unknown pre-tokenizer '{name}' (tokenizer.ggml.pre); supported: {}",
                supported().join(", ")
            ))
        })
}
