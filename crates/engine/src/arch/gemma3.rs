//! `gemma3`: Gemma 3 (text). Gemma 2's layout without attention soft-capping, plus
//! per-head Q/K norms; when `attention.sliding_window` is set, 5 of every 6 layers (or
//! `attention.sliding_window_pattern`) are local: windowed, with their own rope base
//! (`rope.freq_base_swa`, default 10 000) and no rope scaling, while global layers use
//! `rope.freq_base` and the file's scaling. Final soft-capping only if the file sets it.
//! Queries scaled by `1 / sqrt(head_dim)` (27B, 62 layers: `1 / sqrt(dim / n_heads)`).

use super::{sliding_layers, Spec};
use crate::block::{Gate, RopeMode, RopeSpec};
use crate::error::Result;
use crate::gguf::GgufFile;

pub fn spec(f: &GgufFile) -> Result<Spec> {
    let mut s = Spec::base(f, RopeMode::Neox)?;
    let m = f.md();
    s.gate = Gate::Gelu;
    s.post_norms = true;
    s.qk_norm = true;
    s.embed_scale = Some((s.dim as f32).sqrt());
    s.final_softcap = Some(m.f32_or(&s.key("final_logit_softcapping"), 0.0)?).filter(|c| *c != 0.0);
    let q = if s.n_layers == 62 {
        s.dim / s.n_heads
    } else {
        s.head_dim
    };
    s.scale_queries(1.0 / (q as f32).sqrt());
    let window = m.usize_or(&s.key("attention.sliding_window"), 0)?;
    if window > 0 {
        let global = &s.ropes[0];
        let local = RopeSpec {
            base: m.f32_or(&s.key("rope.freq_base_swa"), 10000.0)?,
            freq_scale: 1.0,
            ..global.clone()
        };
        s.slide(&sliding_layers(f, 6)?, window, local);
    }
    Ok(s)
}
