//! Pooled embeddings from the last stage: a split model gives exactly the unsplit
//! model's vector, pooling matches the per-position rows, and normalize gives unit norm.

mod common;

use engine::{Generator, Output, Pooling, Stage, StageInput, StageOutput};

/// Runs `tokens` through `stages` in `chunks` chunks with the given output mode and
/// returns every last-stage output (one per chunk) as (rows, data).
fn run(
    stages: &[Stage],
    tokens: &[u32],
    chunk: usize,
    pooling: Pooling,
    normalize: bool,
) -> Vec<(usize, Vec<f32>)> {
    let mut caches: Vec<_> = stages.iter().map(|s| s.new_cache()).collect();
    caches
        .last_mut()
        .unwrap()
        .set_output(Output::Embedding { pooling, normalize });
    let mut outs = Vec::new();
    for part in tokens.chunks(chunk) {
        let mut input = StageInput::Tokens(part.to_vec());
        for (stage, cache) in stages.iter().zip(caches.iter_mut()) {
            input = match stage.forward(input, cache).unwrap() {
                StageOutput::Hidden(h) => StageInput::Hidden(h),
                StageOutput::Logits(_) => panic!("an embedding sequence returned logits"),
            };
        }
        match input {
            StageInput::Hidden(h) => {
                assert_eq!(h.dim, stages[0].spec().dim);
                assert_eq!(h.data.len(), h.n_tokens * h.dim);
                outs.push((h.n_tokens, h.data));
            }
            StageInput::Tokens(_) => unreachable!(),
        }
    }
    outs
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt()
}

const TEXT: &str = "The lighthouse keeper watched the storm roll in over the grey sea.";

#[test]
fn split_model_pools_like_the_whole_model() {
    let model = common::model();
    let whole = Generator::load(&model, 1).unwrap();
    let split = Generator::load(&model, 3).unwrap();
    assert_eq!(split.stages.len(), 3);
    let tokens = whole.tokenizer.tokenize(TEXT, true, false).unwrap();
    assert!(tokens.len() > 8);
    for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Last] {
        for normalize in [false, true] {
            let a = run(&whole.stages, &tokens, tokens.len(), pooling, normalize);
            let b = run(&split.stages, &tokens, tokens.len(), pooling, normalize);
            assert_eq!(a.len(), 1);
            assert_eq!(a[0].0, 1, "one pooled row");
            assert_eq!(a, b, "{pooling:?} normalize={normalize}: split differs");
            let n = norm(&a[0].1);
            if normalize {
                assert!((n - 1.0).abs() < 1e-5, "{pooling:?}: norm {n}");
            } else {
                assert!(n > 1e-3 && (n - 1.0).abs() > 1e-3, "{pooling:?}: norm {n}");
            }
        }
    }
}

#[test]
fn pooling_matches_the_per_position_rows() {
    let model = common::model();
    let g = Generator::load(&model, 1).unwrap();
    let dim = g.stages[0].spec().dim;
    let tokens = g.tokenizer.tokenize(TEXT, true, false).unwrap();
    let n = tokens.len();
    let rows = run(&g.stages, &tokens, n, Pooling::None, false);
    assert_eq!(rows.len(), 1);
    let (n_rows, rows) = &rows[0];
    assert_eq!(*n_rows, n);
    let mut mean = vec![0f64; dim];
    for row in rows.chunks_exact(dim) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, v)| *m += *v as f64 / n as f64);
    }
    let pooled = |p| run(&g.stages, &tokens, n, p, false).remove(0).1;
    let got = pooled(Pooling::Mean);
    for (a, b) in got.iter().zip(&mean) {
        assert!((*a as f64 - b).abs() < 1e-5, "mean pooling {a} vs {b}");
    }
    assert_eq!(pooled(Pooling::Cls), rows[..dim].to_vec());
    assert_eq!(pooled(Pooling::Last), rows[(n - 1) * dim..].to_vec());

    // Pooling::None with normalize: every row unit-length.
    let unit = run(&g.stages, &tokens, n, Pooling::None, true).remove(0).1;
    for row in unit.chunks_exact(dim) {
        assert!((norm(row) - 1.0).abs() < 1e-5);
    }
}

/// A prompt sent in chunks pools over all its positions: the output after the last chunk
/// is the whole text's embedding (to rounding: chunking changes matmul batch shapes).
#[test]
fn chunked_prompt_pools_every_position() {
    let model = common::model();
    let g = Generator::load(&model, 3).unwrap();
    let tokens = g.tokenizer.tokenize(TEXT, true, false).unwrap();
    for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Last] {
        let whole = run(&g.stages, &tokens, tokens.len(), pooling, true);
        let chunked = run(&g.stages, &tokens, 5, pooling, true);
        assert_eq!(chunked.len(), tokens.len().div_ceil(5));
        let (a, b) = (&whole[0].1, &chunked.last().unwrap().1);
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "{pooling:?}: chunked differs by {diff}");
    }
}
