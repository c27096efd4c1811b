//! The engine against llama.cpp's reference output on the default model (made by
//! `scripts/fixtures.sh`: 64 greedy tokens for 2 chat and 2 raw prompts).

mod common;

use common::Prompt;
use engine::{argmax, Generator, SamplingParams};

#[test]
fn prompts_tokenize_exactly_like_llama_cpp() {
    let model = common::model();
    let g = Generator::load(&model, 1).unwrap();
    for case in common::reference() {
        let tokens = match &case.prompt {
            Prompt::Chat(messages) => {
                let tokens = g.chat_tokens(messages).unwrap();
                let text = g.tokenizer.decode(&tokens).unwrap();
                assert_eq!(text, g.template.render(messages, true).unwrap());
                assert!(text.starts_with("<|im_start|>system\n"), "{text}");
                tokens
            }
            Prompt::Raw(text) => g.tokenizer.tokenize(text, true, false).unwrap(),
        };
        assert_eq!(tokens, case.prompt_tokens, "{}", case.name);
    }
}

/// A step where llama.cpp's own top-1 leads the engine's pick by less than this (in
/// llama.cpp's logits) is a near-tie, counted but not failed: the engine's logits differ
/// from llama.cpp's by 0.15 on average (top-5, every step; up to ~1.7 on a few), and which
/// of two such tokens wins also moves with the CPU llama.cpp was built for
/// (`-march=native`): the same llama.cpp version picked the engine's token at a lead of
/// 0.13 in the reference this test used before (made on another machine).
const NEAR_TIE: f32 = 0.3;
/// At most this many near-ties per prompt of 64 steps.
const MIN_AGREE: usize = 60;

/// Fed llama.cpp's greedy tokens, the engine's argmax is llama.cpp's at every step but
/// near-ties, at >= 60 of the 64 steps of each prompt. Measured (docs/performance.md):
/// 251/256 over the four prompts against this project's 2-core machine's AVX-512 build
/// (63, 62, 63, 63; llama.cpp's leads at the other 5 steps 0.09-0.22); 64/64 on the one
/// prompt of the reference made elsewhere that the test used before.
#[test]
fn teacher_forced_argmax_agrees_with_llama_cpp() {
    let model = common::model();
    let g = Generator::load(&model, 1).unwrap();
    let (mut agree, mut ties, mut total) = (0, 0, 0);
    let mut wrong = Vec::new();
    for case in common::reference() {
        assert_eq!(case.greedy_tokens.len(), 64, "{}", case.name);
        let mut caches = g.new_caches();
        let mut input = case.prompt_tokens.clone();
        let mut case_agree = 0;
        for (step, want) in case.greedy_tokens.iter().enumerate() {
            let logits = g.logits(&input, &mut caches).unwrap();
            let got = argmax(&logits);
            total += 1;
            if got == *want {
                case_agree += 1;
            } else {
                // how far llama.cpp's top-1 leads our pick in llama.cpp's own logits
                let gap = case.top[step]
                    .iter()
                    .find(|(t, _)| *t == got)
                    .map(|(_, l)| case.top[step][0].1 - l);
                let line = format!(
                    "{} step {step}: engine picks {got} ({:.4}), llama.cpp {want} ({:.4}); llama.cpp's lead {gap:?}",
                    case.name, logits[got as usize], logits[*want as usize]
                );
                println!("{line}");
                if gap.is_some_and(|g| g < NEAR_TIE) {
                    ties += 1;
                } else {
                    wrong.push(line);
                }
            }
            input = vec![*want];
        }
        println!(
            "{}: teacher-forced agreement {case_agree}/{}",
            case.name,
            case.greedy_tokens.len()
        );
        assert!(
            case_agree >= MIN_AGREE,
            "{}: only {case_agree} of 64 steps agree",
            case.name
        );
        agree += case_agree;
    }
    println!("all prompts: {agree}/{total} agree, {ties} near-ties (< {NEAR_TIE})");
    assert!(
        wrong.is_empty(),
        "{} of {total} steps disagree beyond a near-tie:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Split over 2, 3 and 5 stages (hidden states cross stages as f32, the residual stream's
/// own type, so a hop loses nothing wherever the split falls), the model computes exactly
/// what the unsplit model computes: bit-identical logits at every step of a 64-token
/// greedy run, hence the same tokens.
#[test]
fn split_stages_match_unsplit_model() {
    let model = common::model();
    let case = &common::reference()[0];
    let whole = Generator::load(&model, 1).unwrap();
    let greedy = whole
        .generate(&case.prompt_tokens, &SamplingParams::greedy(64), |_| true)
        .unwrap();
    assert_eq!(greedy.tokens.len(), 64, "{}", greedy.text);
    for stages in [2, 3, 5] {
        let split = Generator::load(&model, stages).unwrap();
        assert_eq!(split.stages.len(), stages);
        let (mut cw, mut cs) = (whole.new_caches(), split.new_caches());
        let mut input = case.prompt_tokens.clone();
        for (step, next) in greedy.tokens.iter().enumerate() {
            let lw = whole.logits(&input, &mut cw).unwrap();
            let ls = split.logits(&input, &mut cs).unwrap();
            assert!(lw == ls, "{stages} stages: logits differ at step {step}");
            assert_eq!(argmax(&ls), *next);
            input = vec![*next];
        }
        let free = split
            .generate(&case.prompt_tokens, &SamplingParams::greedy(64), |_| true)
            .unwrap();
        assert_eq!(free.tokens, greedy.tokens, "{stages} stages: {}", free.text);
    }
}
