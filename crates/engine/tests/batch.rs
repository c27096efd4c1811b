//! Batched forward passes compute, for every sequence, exactly what it computes alone.

mod common;

use engine::{argmax, Generator, Seq, Stage, StageInput, StageOutput};

fn logits(out: StageOutput) -> Vec<f32> {
    match out {
        StageOutput::Logits(l) => l,
        StageOutput::Hidden(_) => panic!("expected logits from the last stage"),
    }
}

/// Three prompts of different lengths prefilled in one batch, then decoded together for
/// 16 steps (one of them joining late): every logit equals the one-sequence run's, bit for bit.
#[test]
fn batched_sequences_equal_single_runs() {
    let model = common::model();
    let g = Generator::load(&model, 1).unwrap();
    let stage: &Stage = &g.stages[0];
    let prompts: Vec<Vec<u32>> = [
        "Tell me a short story about a robot who learns to paint.",
        "What is the capital of France?",
        "Write a haiku about the sea, the wind and a lighthouse keeper at night.",
    ]
    .iter()
    .map(|p| {
        g.chat_tokens(&[engine::ChatMessage::new("user", p)])
            .unwrap()
    })
    .collect();

    // Alone: greedy 16 tokens each, recording the logits of every step.
    let alone: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|p| {
            let mut cache = stage.new_cache();
            let mut input = p.clone();
            (0..16)
                .map(|_| {
                    let l = logits(
                        stage
                            .forward(StageInput::Tokens(input.clone()), &mut cache)
                            .unwrap(),
                    );
                    input = vec![argmax(&l)];
                    l
                })
                .collect()
        })
        .collect();

    // Together: sequences 0 and 1 start at once; 2 joins at step 3 with its prompt
    // in the same batch as the others' decode steps.
    let mut caches: Vec<_> = (0..3).map(|_| stage.new_cache()).collect();
    let mut next: Vec<Vec<u32>> = prompts.clone();
    let mut step = [0usize; 3];
    for round in 0..19 {
        let active: Vec<usize> = (0..3)
            .filter(|&i| step[i] < 16 && (i < 2 || round >= 3))
            .collect();
        if active.is_empty() {
            break;
        }
        let mut seqs: Vec<Seq> = Vec::new();
        let mut rest: &mut [engine::KvCache] = &mut caches;
        let mut idx = 0;
        for &i in &active {
            let (_, tail) = rest.split_at_mut(i - idx);
            let (mine, tail) = tail.split_at_mut(1);
            rest = tail;
            idx = i + 1;
            seqs.push(Seq {
                input: StageInput::Tokens(next[i].clone()),
                cache: &mut mine[0],
            });
        }
        let outs = stage.forward_batch(&mut seqs).unwrap();
        for (&i, out) in active.iter().zip(outs) {
            let l = logits(out);
            assert!(
                l == alone[i][step[i]],
                "sequence {i}, step {}: batched logits differ from the single run",
                step[i]
            );
            next[i] = vec![argmax(&l)];
            step[i] += 1;
        }
    }
    assert_eq!(step, [16, 16, 16]);
}
