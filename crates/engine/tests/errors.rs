//! Bad input gives clear errors, never a panic.

mod common;

use engine::{EngineError, Generator, ModelInfo, SamplingParams, Stage, StageInput};
use std::io::Write;

fn write_gguf(path: &std::path::Path, arch: &str, tensor_type: u32) {
    // A minimal GGUF v3 file: one string key and one 32x1 tensor of the given type.
    let mut b: Vec<u8> = Vec::new();
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend_from_slice(&(x.len() as u64).to_le_bytes());
        b.extend_from_slice(x.as_bytes());
    };
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // kv pairs
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes()); // string
    s(&mut b, arch);
    s(&mut b, "t");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&32u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&tensor_type.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend_from_slice(&[0u8; 128]);
    std::fs::File::create(path).unwrap().write_all(&b).unwrap();
}

#[test]
fn missing_file_says_how_to_get_a_model() {
    let err = ModelInfo::read(std::path::Path::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(matches!(err, EngineError::NotFound(_)));
    assert!(err.to_string().contains("make model"), "{err}");
}

#[test]
fn non_gguf_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gguf");
    std::fs::write(&p, b"this is not a model").unwrap();
    let err = Stage::load(&p, 0, 1).err().unwrap();
    assert!(err.to_string().contains("not a GGUF model file"), "{err}");
}

#[test]
fn unsupported_architecture_and_quantization_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.gguf");
    write_gguf(&p, "mamba", 0);
    let err = ModelInfo::read(&p).unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported model architecture 'mamba'"),
        "{err}"
    );
    write_gguf(&p, "llama", 77);
    let err = ModelInfo::read(&p).unwrap_err();
    assert!(err.to_string().contains("unsupported tensor type"), "{err}");
}

#[test]
fn invalid_ranges_inputs_and_overlong_prompts() {
    let model = common::model();
    assert!(matches!(
        Stage::load(&model, 5, 5),
        Err(EngineError::InvalidRange { .. })
    ));
    assert!(matches!(
        Stage::load(&model, 0, 31),
        Err(EngineError::InvalidRange { .. })
    ));
    let middle = Stage::load(&model, 10, 20).unwrap();
    let mut cache = middle.new_cache();
    let err = middle
        .forward(StageInput::Tokens(vec![1]), &mut cache)
        .unwrap_err();
    assert!(err.to_string().contains("takes hidden states"), "{err}");
    let first = Stage::load(&model, 0, 1).unwrap();
    let err = first
        .forward(StageInput::Tokens(vec![999_999]), &mut first.new_cache())
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");

    let g = Generator::load(&model, 1).unwrap();
    let long = vec![1u32; 9000];
    let err = g
        .generate(&long, &SamplingParams::greedy(4), |_| true)
        .unwrap_err();
    assert!(matches!(err, EngineError::ContextOverflow { .. }), "{err}");
    assert!(err.to_string().contains("shorten the prompt"), "{err}");
    let err = g
        .generate(&[1, 2], &SamplingParams::greedy(0), |_| true)
        .unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");
}

/// A stage holding a third of the layers holds well under the full model's weights.
#[test]
fn a_stage_loads_only_its_layers() {
    let model = common::model();
    let info = ModelInfo::read(&model).unwrap();
    let full = Stage::load(&model, 0, info.n_layers)
        .unwrap()
        .weight_bytes();
    let middle = Stage::load(&model, 10, 20).unwrap().weight_bytes();
    let layer_sum: u64 = info.layer_bytes[10..20].iter().sum();
    assert!(
        middle as f64 <= layer_sum as f64 * 1.01,
        "{middle} vs {layer_sum}"
    );
    assert!(
        (middle as f64) < full as f64 * 0.4,
        "middle third {middle} bytes vs full {full}"
    );
}
