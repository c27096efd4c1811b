//! Every model family against llama.cpp, on the tiny random-weight fixtures of
//! `scripts/fixtures.sh` (made and referenced with llama.cpp 0.3.36; cached, so a warm
//! run costs nothing). The tests run the script themselves and fail when it fails.
//!
//! Per family and weight type, for every prompt: teacher-forced top-1 agreement with
//! llama.cpp's greedy tokens over 64 steps, and the largest difference between our logits
//! and llama.cpp's top-5 logits, printed (`cargo test --test families -- --nocapture`);
//! a 3-stage split computes bit-identical logits and the same greedy tokens.
//!
//! The bars. F16 files of dense families: >= 60/64 strictly. Random-weight models are
//! chaotic under 8-bit activations: a rounding that falls the other way (ggml sums the
//! attention in another order and uses a SIMD `exp`; this engine rounds the residual to
//! f16 after every layer, for exact splits) moves logits by up to ~1 (llama.cpp's own
//! logits move by up to 2 between the F16 and Q8_0 files of one model). So quantized files
//! count a step whose llama.cpp top-1 beats our pick by less than [`NEAR_TIE`] in
//! llama.cpp's own logits as agreeing (>= 60/64 so). MoE routing turns such noise into a
//! different expert now and then (a large jump at that step): MoE F16 files are held to
//! 60/64 up to near-ties, quantized MoE files to 40/64 strictly (a real routing bug,
//! e.g. not renormalising the top-k weights, scores 11 to 27).

use engine::{argmax, EngineError, Generator, ModelInfo, SamplingParams};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The fixture directory (scripts/fixtures.sh runs once per test binary).
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        engine::init_threads(0);
        testkit::llama_fixtures()
    })
}

/// The fixture `{label}-tiny-*.{kind}.gguf` (e.g. `qwen3`, `Q8_0`); panics if missing.
fn fixture(label: &str, kind: &str) -> PathBuf {
    let dir = fixtures();
    let prefix = format!("{label}-tiny-");
    let suffix = format!(".{kind}.gguf");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(&suffix)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {prefix}*{suffix} in {}: {found:?}",
        dir.display()
    );
    found.remove(0)
}

/// See the module docs.
const NEAR_TIE: f32 = 1.0;

struct Case {
    name: String,
    prompt: Vec<u32>,
    greedy: Vec<u32>,
    /// llama.cpp's top-5 `(token, logit)` per step.
    top: Vec<Vec<(u32, f32)>>,
}

fn reference(model: &Path) -> Vec<Case> {
    let path = PathBuf::from(format!("{}.reference.json", model.display()));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ids = |x: &Value| {
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
        .filter(|c| c.get("skipped").is_none()) // e.g. Gemma's template refuses a system turn
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            prompt: ids(&c["prompt_tokens"]),
            greedy: ids(&c["greedy_tokens"]),
            top: c["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    s.as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
                        .collect()
                })
                .collect(),
        })
        .collect()
}

/// Agreement of one model file with llama.cpp: the lowest of its prompts.
struct Agreement {
    strict: usize,
    near_tie: usize,
    max_diff: f32,
}

/// Teacher-forced agreement of every prompt of one model file.
fn agreement(model: &Path) -> Agreement {
    let g = Generator::load(model, 1).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let cases = reference(model);
    assert!(
        cases.len() >= 3,
        "{}: too few reference cases",
        model.display()
    );
    let name = model.file_name().unwrap().to_string_lossy();
    let mut all = Agreement {
        strict: usize::MAX,
        near_tie: usize::MAX,
        max_diff: 0.0,
    };
    for case in &cases {
        let mut caches = g.new_caches();
        let mut input = case.prompt.clone();
        let (mut agree, mut ties, mut diff) = (0, 0, 0f32);
        for (step, want) in case.greedy.iter().enumerate() {
            let logits = g.logits(&input, &mut caches).unwrap();
            let got = argmax(&logits);
            if got == *want {
                agree += 1;
            } else {
                // how far below its own top-1 llama.cpp puts our pick (None: not in its top 5)
                let gap = case.top[step]
                    .iter()
                    .find(|(t, _)| *t == got)
                    .map(|(_, l)| case.top[step][0].1 - l);
                if gap.is_some_and(|g| g < NEAR_TIE) {
                    ties += 1;
                }
                println!(
                    "  {name} {}: step {step}: engine {got} ({:.4}), llama.cpp {want} ({:.4}); llama.cpp's gap {gap:?}",
                    case.name, logits[got as usize], logits[*want as usize]
                );
            }
            for (t, l) in &case.top[step] {
                diff = diff.max((logits[*t as usize] - l).abs());
            }
            input = vec![*want];
        }
        println!(
            "{name} {:<18} agreement {agree}/{n} ({}/{n} up to near-ties), max |logit - llama.cpp| over its top-5: {diff:.4}",
            case.name,
            agree + ties,
            n = case.greedy.len()
        );
        all.strict = all.strict.min(agree);
        all.near_tie = all.near_tie.min(agree + ties);
        all.max_diff = all.max_diff.max(diff);
    }
    all
}

/// A 3-stage split computes exactly what the unsplit model computes: bit-identical
/// logits at every teacher-forced step, and the same free greedy tokens.
fn split_is_exact(model: &Path) {
    let case = &reference(model)[0];
    let whole = Generator::load(model, 1).unwrap();
    let split = Generator::load(model, 3).unwrap();
    assert_eq!(split.stages.len(), 3);
    let (mut cw, mut cs) = (whole.new_caches(), split.new_caches());
    let mut input = case.prompt.clone();
    for (step, next) in case.greedy.iter().enumerate() {
        let lw = whole.logits(&input, &mut cw).unwrap();
        let ls = split.logits(&input, &mut cs).unwrap();
        assert!(
            lw == ls,
            "{}: 3 stages: logits differ at step {step}",
            model.display()
        );
        input = vec![*next];
    }
    let params = SamplingParams::greedy(32);
    let a = whole.generate(&case.prompt, &params, |_| true).unwrap();
    let b = split.generate(&case.prompt, &params, |_| true).unwrap();
    assert_eq!(
        a.tokens,
        b.tokens,
        "{}: 3 stages generate other tokens",
        model.display()
    );
}

/// One family: its F16, Q8_0 and Q4_K_M files against llama.cpp (the bars in the module
/// docs; a file with a tensor type the engine lacks is reported, not hidden); the Q8_0
/// file split in 3 stages is exact.
fn family(label: &str, moe: bool) {
    let (mut summary, mut low) = (Vec::new(), Vec::new());
    for kind in ["F16", "Q8_0", "Q4_K_M"] {
        let model = fixture(label, kind);
        if kind == "Q4_K_M" {
            if let Err(e @ EngineError::UnsupportedQuantization { .. }) = Generator::load(&model, 1)
            {
                println!("NOT RUN {}: {e}", model.display());
                summary.push(format!("{kind}: not run ({e})"));
                continue;
            }
        }
        let a = agreement(&model);
        summary.push(format!(
            "{kind} >= {}/64 ({}/64 up to near-ties), max logit diff {:.3}",
            a.strict, a.near_tie, a.max_diff
        ));
        let ok = match (kind == "F16", moe) {
            (true, false) => a.strict >= 60,
            (false, false) | (true, true) => a.near_tie >= 60,
            (false, true) => a.strict >= 40,
        };
        if !ok {
            low.push(format!(
                "{kind}: {}/64 ({}/64 up to near-ties)",
                a.strict, a.near_tie
            ));
        }
    }
    split_is_exact(&fixture(label, "Q8_0"));
    println!(
        "SUMMARY {label}: {}; 3-stage split exact",
        summary.join("; ")
    );
    assert!(
        low.is_empty(),
        "{label}: below the bar against llama.cpp: {}",
        low.join(", ")
    );
}

#[test]
fn llama() {
    family("llama", false);
}

#[test]
fn llama3_untied_with_rope_freqs() {
    family("llama3-untied", false);
}

#[test]
fn llama_mixtral_experts() {
    family("llama-moe", true);
}

#[test]
fn qwen2() {
    family("qwen2", false);
}

#[test]
fn qwen3() {
    family("qwen3", false);
}

#[test]
fn qwen3moe() {
    family("qwen3moe", true);
}

#[test]
fn gemma2() {
    family("gemma2", false);
}

#[test]
fn gemma3() {
    family("gemma3", false);
}

#[test]
fn phi3() {
    family("phi3", false);
}

/// Per-layer sizes come from the file, so MoE layers and an untied head weigh what
/// they hold (the placement plans memory by these numbers).
#[test]
fn model_info_sizes_follow_the_tensors() {
    let moe = ModelInfo::read(&fixture("qwen3moe", "Q8_0")).unwrap();
    let dense = ModelInfo::read(&fixture("qwen3", "Q8_0")).unwrap();
    assert!(
        moe.layer_bytes[0] > 2 * dense.layer_bytes[0],
        "{:?} vs {:?}",
        moe.layer_bytes,
        dense.layer_bytes
    );
    let stage = engine::Stage::load(&fixture("qwen3moe", "Q8_0"), 1, 2).unwrap();
    let (held, listed) = (stage.weight_bytes() as u64, moe.layer_bytes[1]);
    assert!(
        held <= listed && held as f64 > listed as f64 * 0.95,
        "{held} vs {listed}"
    );
    let norm = |i: &ModelInfo| 4 * i.hidden_size as u64; // output_norm, F32
    let path = fixture("llama3-untied", "Q8_0");
    let untied = ModelInfo::read(&path).unwrap();
    let output = engine::GgufFile::tensor_size(
        &engine::GgufFile::open(&path).unwrap().content,
        "output.weight",
    );
    assert!(output > 0);
    assert_eq!(untied.head_bytes, output + norm(&untied));
    let tied = ModelInfo::read(&fixture("llama", "Q8_0")).unwrap();
    assert_eq!(tied.head_bytes, tied.embed_bytes + norm(&tied));
}

/// A minimal GGUF v3 file: `general.architecture` and one 32-value F32 tensor.
fn tiny_gguf(path: &Path, arch: &str) {
    let mut b: Vec<u8> = Vec::new();
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend_from_slice(&(x.len() as u64).to_le_bytes());
        b.extend_from_slice(x.as_bytes());
    };
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // key-value pairs
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes()); // string
    s(&mut b, arch);
    s(&mut b, "token_embd.weight");
    b.extend_from_slice(&1u32.to_le_bytes()); // dims
    b.extend_from_slice(&32u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // F32
    b.extend_from_slice(&0u64.to_le_bytes()); // offset
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend_from_slice(&[0u8; 128]);
    std::fs::write(path, b).unwrap();
}

#[test]
fn unsupported_architecture_names_the_supported_list() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mamba.gguf");
    tiny_gguf(&p, "mamba");
    for err in [
        ModelInfo::read(&p).unwrap_err(),
        Generator::load(&p, 1).err().unwrap(),
    ] {
        let msg = err.to_string();
        assert!(
            msg.contains("unsupported model architecture 'mamba'"),
            "{msg}"
        );
        for arch in engine::arch::SUPPORTED {
            assert!(msg.contains(arch), "{msg} does not name {arch}");
        }
    }
}

#[test]
fn a_missing_tensor_is_named() {
    // Rename one tensor in the header of a real fixture (same length: offsets stay valid).
    let dir = tempfile::tempdir().unwrap();
    for (label, name, renamed) in [
        (
            "qwen3",
            "blk.2.attn_k_norm.weight",
            "blk.2.attn_k_morm.weight",
        ),
        (
            "gemma2",
            "blk.1.post_ffw_norm.weight",
            "blk.1.post_ffw_morm.weight",
        ),
        (
            "qwen3moe",
            "blk.3.ffn_up_exps.weight",
            "blk.3.ffn_up_expz.weight",
        ),
    ] {
        let mut bytes = std::fs::read(fixture(label, "F16")).unwrap();
        let at = bytes
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap_or_else(|| panic!("{name} not in the {label} fixture"));
        bytes[at..at + name.len()].copy_from_slice(renamed.as_bytes());
        let p = dir.path().join(format!("{label}.gguf"));
        std::fs::write(&p, bytes).unwrap();
        let err = Generator::load(&p, 1).err().unwrap();
        assert!(matches!(err, EngineError::MissingTensor(_)), "{err}");
        assert!(err.to_string().contains(name), "{err}");
        // a stage without that layer does not need it
        let last = ModelInfo::read(&p).unwrap().n_layers;
        let layer: usize = name[4..5].parse().unwrap();
        if layer + 1 < last {
            engine::Stage::load(&p, layer + 1, last).unwrap();
        }
    }
}
