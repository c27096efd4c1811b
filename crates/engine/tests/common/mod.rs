#![allow(dead_code)]
//! Shared helpers: the default model and llama.cpp's reference output for it.

use engine::ChatMessage;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The default model, fetched into the cache on first use.
pub fn model() -> PathBuf {
    engine::init_threads(0);
    engine::fetch::ensure_default_model().expect("default model (run `make model`)")
}

/// A prompt of the reference: chat messages (rendered with the model's template) or raw
/// text (tokenized with BOS, special tokens not parsed).
pub enum Prompt {
    Chat(Vec<ChatMessage>),
    Raw(String),
}

pub struct Case {
    pub name: String,
    pub prompt: Prompt,
    pub prompt_tokens: Vec<u32>,
    pub greedy_tokens: Vec<u32>,
    /// llama.cpp's top-5 `(token, logit)` at each greedy step.
    pub top: Vec<Vec<(u32, f32)>>,
}

/// The cases of llama.cpp's reference for the default model: 64 greedy tokens for 2 chat
/// and 2 raw prompts, made by `scripts/fixtures.sh` (llama.cpp built from source, cached;
/// this runs the script, so a fresh clone makes it). Panics when it cannot be made: the
/// tests that use it fail, they never pass without it.
pub fn reference() -> Vec<Case> {
    let dir = testkit::llama_fixtures();
    let manifest = read_json(&dir.join("manifest.json"));
    let file = manifest["default_model"]["reference"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no default_model reference", dir.display()));
    let v = read_json(&dir.join(file));
    assert_eq!(
        v["model_sha256"].as_str(),
        Some(engine::fetch::DEFAULT_MODEL_SHA256),
        "{file} was made from another model file"
    );
    let ids = |x: &Value| -> Vec<u32> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect()
    };
    let cases: Vec<Case> = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            prompt: match c.get("messages") {
                Some(m) => Prompt::Chat(
                    m.as_array()
                        .unwrap()
                        .iter()
                        .map(|m| {
                            ChatMessage::new(
                                m["role"].as_str().unwrap(),
                                m["content"].as_str().unwrap(),
                            )
                        })
                        .collect(),
                ),
                None => Prompt::Raw(c["text"].as_str().unwrap().to_string()),
            },
            prompt_tokens: ids(&c["prompt_tokens"]),
            greedy_tokens: ids(&c["greedy_tokens"]),
            top: c["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|step| {
                    step.as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
                        .collect()
                })
                .collect(),
        })
        .collect();
    assert!(!cases.is_empty(), "{file} has no cases");
    cases
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
