//! The tokenizers against llama.cpp: for every vocabulary of the fixtures (SmolLM's BPE,
//! llama-bpe, qwen2, SentencePiece Gemma- and Phi-3-style, and llama.cpp's real llama-bpe,
//! qwen2, phi-3 and llama-spm vocabularies), on a corpus with English, CJK, emoji, code and
//! whitespace runs plus llama.cpp's own tokenizer test inputs: the token ids of all four
//! `llama_tokenize(add_special, parse_special)` runs, every token's piece, both
//! `llama_detokenize` variants and the streaming decoder.
//!
//! The fixtures come from `scripts/fixtures.sh` (llama.cpp built from source; cached, so
//! cheap after the first run). A missing fixture fails the test, never skips it.

use candle_core::quantized::gguf_file::Content;
use engine::{ChatMessage, ChatTemplate, Tokenizer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory a fixture script prints last (it builds what is missing).
fn run_script(name: &str, marker: &str) -> PathBuf {
    let script = repo().join("scripts").join(name);
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        dir.join(marker).is_file(),
        "no {marker} in {} (printed by {name})",
        dir.display()
    );
    dir
}

/// `scripts/fixtures.sh`: fixture models and their llama.cpp references.
fn fixtures() -> PathBuf {
    run_script("fixtures.sh", "manifest.json")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (delete the fixture directory's .complete stamp to rebuild)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// The GGUF a reference was made from: a fixture model, or one of llama.cpp's vocabularies.
fn vocab_file(dir: &Path, from: &str) -> PathBuf {
    if let Some(name) = from.strip_prefix("llama.cpp models/") {
        let root = dir.join("../llama.cpp");
        for version in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for src in std::fs::read_dir(version.path().join("src"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = src.path().join("vendor/llama.cpp/models").join(name);
                if p.is_file() {
                    return p;
                }
            }
        }
        panic!(
            "{name}: not found under {} (run scripts/llama-cpp.sh)",
            root.display()
        );
    }
    let p = dir.join(from);
    assert!(
        p.is_file(),
        "{} is missing (run scripts/fixtures.sh)",
        p.display()
    );
    p
}

fn metadata(path: &Path) -> Content {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Content::read(&mut f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tokenizer(path: &Path) -> Tokenizer {
    Tokenizer::from_metadata(&metadata(path).metadata)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Tally {
    texts: usize,
    tokens: usize,
    token_mismatches: usize,
    decode_mismatches: usize,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, msg: String) {
        if self.failures.len() < 8 {
            self.failures.push(msg);
        }
    }
}

fn check(name: &str, tok: &Tokenizer, reference: &Value) -> Tally {
    let mut t = Tally::default();
    for e in reference["entries"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        t.texts += 1;
        for run in e["runs"].as_array().unwrap() {
            let (add, parse) = (
                run["add_special"].as_bool().unwrap(),
                run["parse_special"].as_bool().unwrap(),
            );
            let want = ids(&run["tokens"]);
            t.tokens += want.len();
            let got = tok.tokenize(text, add, parse).unwrap();
            if got != want {
                t.token_mismatches += 1;
                t.fail(format!("{name} tokenize({text:?}, add_special={add}, parse_special={parse}):\n  llama.cpp {want:?}\n  engine    {got:?}"));
            }
            let pieces: Vec<String> = want.iter().map(|&id| hex(tok.piece(id))).collect();
            let want_pieces: Vec<String> = run["pieces_hex"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            let detok = String::from_utf8_lossy(&tok.detokenize(&want, false, true)).into_owned();
            let detok_rm =
                String::from_utf8_lossy(&tok.detokenize(&want, true, false)).into_owned();
            let mut stream = tok.stream();
            let mut streamed = String::new();
            for &id in &want {
                streamed.push_str(&stream.push(id).unwrap().unwrap_or_default());
            }
            streamed.push_str(&stream.finish());
            let joined: Vec<u8> = want.iter().flat_map(|&id| tok.piece(id).to_vec()).collect();
            let decoded_ok = pieces == want_pieces
                && detok == run["detokenize"].as_str().unwrap()
                && detok_rm == run["detokenize_remove_special"].as_str().unwrap()
                && streamed == String::from_utf8_lossy(&joined)
                && tok.decode(&want).unwrap() == detok;
            if !decoded_ok {
                t.decode_mismatches += 1;
                t.fail(format!(
                    "{name} decode of {want:?} ({text:?}):\n  llama.cpp {:?} / {:?}\n  engine    {detok:?} / {detok_rm:?} / streamed {streamed:?}",
                    run["detokenize"], run["detokenize_remove_special"]
                ));
            }
        }
    }
    t
}

#[test]
fn tokenizers_agree_with_llama_cpp() {
    let dir = fixtures();
    let manifest = read_json(&dir.join("manifest.json"));
    let list = manifest["tokenizers"]
        .as_array()
        .expect("manifest.json lists no tokenizers");
    assert!(!list.is_empty(), "manifest.json lists no tokenizers");
    let mut failures = Vec::new();
    for entry in list {
        let name = entry["name"].as_str().unwrap();
        let tok = tokenizer(&vocab_file(&dir, entry["vocab_from"].as_str().unwrap()));
        let reference = read_json(&dir.join(entry["reference"].as_str().unwrap()));
        let vocab = &reference["vocab"];
        assert_eq!(
            tok.vocab_size() as u64,
            vocab["n_tokens"].as_u64().unwrap(),
            "{name}: vocabulary size"
        );
        assert_eq!(
            tok.add_bos(),
            vocab["add_bos"].as_bool().unwrap(),
            "{name}: add_bos"
        );
        assert_eq!(
            tok.eos() as i64,
            vocab["eos"].as_i64().unwrap(),
            "{name}: eos"
        );
        assert_eq!(
            tok.bos().map_or(-1, i64::from),
            vocab["bos"].as_i64().unwrap(),
            "{name}: bos"
        );
        let eot = vocab["eot"].as_i64().unwrap();
        assert!(
            eot < 0 || tok.is_eog(eot as u32),
            "{name}: eot {eot} is not end-of-generation"
        );
        let t = check(name, &tok, &reference);
        println!(
            "{name:16} {:?}/{:<12} {:4} texts x 4 runs, {:6} tokens: {} token mismatches, {} decode mismatches",
            tok.kind(),
            tok.pre_tokenizer().unwrap_or("-"),
            t.texts,
            t.tokens,
            t.token_mismatches,
            t.decode_mismatches
        );
        failures.extend(t.failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The other pre-tokenizers (`scripts/tokenizer-variants.sh`): llama.cpp's own test
/// vocabularies, and Llama 3's vocabulary with `tekken` / `gpt-4o` / no pre-tokenizer.
#[test]
fn pre_tokenizer_variants_agree_with_llama_cpp() {
    let dir = run_script("tokenizer-variants.sh", "manifest.json");
    let manifest = read_json(&dir.join("manifest.json"));
    let mut failures = Vec::new();
    let mut names = Vec::new();
    for v in manifest["variants"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let tok = tokenizer(Path::new(v["gguf"].as_str().unwrap()));
        let reference = read_json(&dir.join(v["reference"].as_str().unwrap()));
        let t = check(name, &tok, &reference);
        println!(
            "{name:16} {:?}/{:<14} {:4} texts x 4 runs, {:6} tokens: {} token mismatches, {} decode mismatches",
            tok.kind(),
            tok.pre_tokenizer().unwrap_or("-"),
            t.texts,
            t.tokens,
            t.token_mismatches,
            t.decode_mismatches
        );
        failures.extend(t.failures);
        names.push(tok.pre_tokenizer().unwrap_or("-"));
    }
    for pre in [
        "tekken",
        "gpt-4o",
        "default",
        "deepseek-llm",
        "deepseek-coder",
        "falcon",
    ] {
        assert!(
            names.contains(&pre),
            "no variant uses the {pre} pre-tokenizer: {names:?}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `is_eog` / `eog_ids` accept exactly the tokens llama.cpp's `llama_vocab_is_eog` does.
#[test]
fn end_of_generation_sets_agree_with_llama_cpp() {
    fixtures(); // eog.json covers the fixture models too
    let dir = run_script("tokenizer-variants.sh", "eog.json");
    let eog = read_json(&dir.join("eog.json"));
    let eog = eog.as_object().unwrap();
    assert!(eog.len() >= 16, "eog.json has {} vocabularies", eog.len());
    for (file, want) in eog {
        let tok = tokenizer(Path::new(file));
        assert_eq!(tok.eog_ids(), ids(want).as_slice(), "{file}");
        assert!(tok.eog_ids().iter().all(|&id| tok.is_eog(id)));
    }
    println!(
        "end-of-generation sets of {} vocabularies identical",
        eog.len()
    );
}

/// A character split over byte-fallback tokens is held until it is whole.
#[test]
fn streaming_holds_partial_characters() {
    let dir = fixtures();
    let tok = tokenizer(&vocab_file(
        &dir,
        "llama.cpp models/ggml-vocab-llama-spm.gguf",
    ));
    let ids = tok.tokenize("🦙!", false, false).unwrap();
    let byte_tokens = ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"].map(|t| tok.token_id(t).unwrap());
    assert_eq!(&ids[1..5], &byte_tokens, "{ids:?}");
    let mut stream = tok.stream();
    let pieces: Vec<Option<String>> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
    assert_eq!(pieces[1..4], [None, None, None], "{pieces:?}");
    assert_eq!(pieces[4].as_deref(), Some("🦙"));
    assert_eq!(tok.decode(&ids).unwrap(), "🦙!");
}

#[test]
fn chat_prompt_bos_is_not_doubled() {
    let dir = fixtures();
    let tok = tokenizer(&vocab_file(
        &dir,
        "llama.cpp models/ggml-vocab-llama-bpe.gguf",
    ));
    assert!(tok.add_bos());
    let bos = tok.bos().unwrap();
    let with = tok
        .encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
        .unwrap();
    let without = tok
        .encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
        .unwrap();
    assert_eq!(with, without);
    assert_eq!(with[0], bos);
    assert_ne!(with[1], bos);
    let eot = tok.token_id("<|eot_id|>").unwrap();
    assert!(tok.is_eog(eot) && tok.is_eog(tok.eos()));
    assert_eq!(*with.last().unwrap(), eot);
}

#[test]
fn unsupported_tokenizers_are_named() {
    use candle_core::quantized::gguf_file::Value as V;
    let mut meta = std::collections::HashMap::new();
    meta.insert("tokenizer.ggml.model".to_string(), V::String("bert".into()));
    meta.insert(
        "tokenizer.ggml.tokens".to_string(),
        V::Array(vec![V::String("a".into())]),
    );
    let err = Tokenizer::from_metadata(&meta).err().unwrap().to_string();
    assert!(
        err.contains("'bert'") && err.contains("gpt2") && err.contains("llama"),
        "{err}"
    );
    meta.insert("tokenizer.ggml.model".to_string(), V::String("gpt2".into()));
    meta.insert(
        "tokenizer.ggml.pre".to_string(),
        V::String("nonesuch".into()),
    );
    meta.insert("tokenizer.ggml.merges".to_string(), V::Array(vec![]));
    let err = Tokenizer::from_metadata(&meta).err().unwrap().to_string();
    assert!(
        err.contains("'nonesuch'") && err.contains("llama-bpe") && err.contains("qwen2"),
        "{err}"
    );
}

/// Every family's chat template (from the fixture GGUF) renders and tokenizes exactly as
/// the reference did: jinja2 render, then `llama_tokenize(add_special=false,
/// parse_special=true)`; `encode` adds BOS on top only where the model asks for it and
/// the template did not write it (what llama-server does).
#[test]
fn chat_prompts_render_and_tokenize_like_the_reference() {
    use candle_core::quantized::gguf_file::Value as V;
    let dir = fixtures();
    let manifest = read_json(&dir.join("manifest.json"));
    let (mut families, mut prompts) = (0, 0);
    for m in manifest["models"].as_array().unwrap() {
        if m["type"] != "F16" {
            continue;
        }
        let file = m["file"].as_str().unwrap();
        let content = metadata(&dir.join(file));
        let tok = Tokenizer::from_metadata(&content.metadata).unwrap();
        let Some(V::String(source)) = content.metadata.get("tokenizer.chat_template") else {
            panic!("{file}: no tokenizer.chat_template");
        };
        let text_of =
            |id: Option<u32>| id.map(|i| String::from_utf8_lossy(tok.piece(i)).into_owned());
        let template = ChatTemplate::new(
            source,
            text_of(tok.bos()).unwrap_or_default(),
            text_of(Some(tok.eos())).unwrap_or_default(),
        )
        .unwrap();
        template.set_now(Some(1_721_952_000)); // 26 Jul 2024, the reference's fixed date
        let reference = read_json(&dir.join(m["reference"].as_str().unwrap()));
        families += 1;
        for case in reference["cases"].as_array().unwrap() {
            let Some(messages) = case.get("messages") else {
                continue;
            };
            let messages: Vec<ChatMessage> = messages
                .as_array()
                .unwrap()
                .iter()
                .map(|m| ChatMessage::from_json(m.clone()).unwrap())
                .collect();
            if let Some(why) = case["skipped"].as_str() {
                // the template refused the conversation (Gemma 2 and a system message)
                let err = template.render(&messages, true).unwrap_err().to_string();
                assert!(err.contains(why), "{file}: {err}");
                continue;
            }
            let text = template.render(&messages, true).unwrap();
            assert_eq!(
                text,
                case["prompt_text"].as_str().unwrap(),
                "{file}: {}",
                case["name"]
            );
            let want = ids(&case["prompt_tokens"]);
            assert_eq!(
                tok.tokenize(&text, false, true).unwrap(),
                want,
                "{file}: {}",
                case["name"]
            );
            let bos_written = tok.bos().is_some_and(|b| want.first() == Some(&b));
            let mut expected = want.clone();
            if tok.add_bos() && !bos_written {
                expected.insert(0, tok.bos().unwrap());
            }
            assert_eq!(
                tok.encode(&text).unwrap(),
                expected,
                "{file}: {}",
                case["name"]
            );
            prompts += 1;
        }
    }
    println!("{prompts} chat prompts of {families} families rendered and tokenized exactly");
    assert!(
        families >= 8 && prompts >= 16,
        "{families} families, {prompts} prompts"
    );
}
