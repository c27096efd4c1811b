#![allow(dead_code)]
//! Shared helpers: the default model and the llama.cpp reference fixture.

use std::path::PathBuf;

/// The default model, fetched into the cache on first use.
pub fn model() -> PathBuf {
    engine::init_threads(0);
    engine::fetch::ensure_default_model().expect("default model (run `make model`)")
}

pub struct Case {
    pub user_message: String,
    pub prompt_tokens: Vec<u32>,
    pub greedy_tokens: Vec<u32>,
}

/// Cases of `../shared/fixtures/smollm2-reference.json` (llama.cpp's greedy output).
pub fn reference() -> Vec<Case> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/smollm2-reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |x: &serde_json::Value| {
        x.as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect()
    };
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            user_message: c["user_message"].as_str().unwrap().to_string(),
            prompt_tokens: ids(&c["prompt_tokens"]),
            greedy_tokens: ids(&c["greedy_tokens"]),
        })
        .collect()
}
