//! Placement with non-uniform layers: the agent plans with each layer's own bytes (MoE
//! layers are several times a dense one) and charges an untied head to the last stage,
//! so no node is given more than its memory.

use agent::node::membership::plan;
use agent::node::view::{Liveness, MemberView};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn member(id: &str, memory: u64, cores: u32) -> MemberView {
    MemberView {
        node_id: id.into(),
        api_addr: format!("127.0.0.1:{}", 9000 + id.len()),
        gossip_addr: String::new(),
        metrics_addr: String::new(),
        state: Liveness::Alive,
        is_self: false,
        cpu_cores: cores,
        memory_total: memory,
        memory_available: memory,
        gpu_count: 0,
        gpu_memory_total: 0,
        models: vec!["moe".into()],
        layers: None,
        healthy: true,
        generation: 1,
        version: String::new(),
        plan_version: 0,
    }
}

/// A MoE model's facts: one dense layer, then `n_moe` expert layers.
fn moe_info(n_moe: usize, dense: u64, moe: u64, embed: u64, head: u64) -> engine::ModelInfo {
    let mut layer_bytes = vec![dense];
    layer_bytes.extend(std::iter::repeat_n(moe, n_moe));
    engine::ModelInfo {
        name: "moe".into(),
        architecture: "qwen3moe".into(),
        n_layers: layer_bytes.len(),
        hidden_size: 2048,
        n_heads: 32,
        n_kv_heads: 4,
        head_dim: 128,
        value_dim: 128,
        ffn_size: 6144,
        vocab_size: 151_936,
        context_length: 4096,
        rope_theta: 1e6,
        rms_eps: 1e-6,
        bos_token_id: 0,
        eos_token_id: 1,
        file_bytes: layer_bytes.iter().sum::<u64>() + embed + head,
        embed_bytes: embed,
        head_bytes: head,
        layer_bytes,
    }
}

/// Bytes the node holding `r` needs.
fn need(info: &engine::ModelInfo, r: &std::ops::Range<usize>) -> u64 {
    let mut b: u64 = info.layer_bytes[r.clone()].iter().sum();
    if r.start == 0 {
        b += info.embed_bytes;
    }
    if r.end == info.n_layers {
        b += info.head_bytes;
    }
    b
}

#[test]
fn moe_layers_and_an_untied_head_are_placed_by_their_bytes() {
    // 1 dense layer of 256 MiB, 11 MoE layers of 1.5 GiB, 512 MiB embedding and untied head.
    let info = moe_info(11, 256 * MIB, 1536 * MIB, 512 * MIB, 512 * MIB + 8 * 1024);
    let members = [
        member("a", 8 * GIB, 8),
        member("b", 8 * GIB, 8),
        member("c", 4 * GIB, 8),
    ];
    let p = plan(&members, &info, "moe").unwrap();
    assert!(p.gaps().is_empty(), "{p:?}");
    assert_eq!(p.slices.last().unwrap().range.end, info.n_layers);
    for s in &p.slices {
        let m = members.iter().find(|m| m.node_id == s.node_id).unwrap();
        assert!(
            need(&info, &s.range) <= m.memory_available,
            "{} holds {:?}: {} MiB",
            s.node_id,
            s.range,
            need(&info, &s.range) / MIB
        );
    }
    // "c" (4 GiB) holds the head: room for 2 MoE layers, although 12 layers over the
    // nodes' shares would give it more.
    let c = p.slices.iter().find(|s| s.node_id == "c").unwrap();
    assert!(c.range.len() <= 2, "{p:?}");

    // A fast node with 3 GiB wants many layers; its memory decides how many: the small
    // dense layer and one MoE layer (2.25 GiB with the embedding), where layers of the
    // average size would allow only one.
    let members = [
        member("a", 3 * GIB, 4096),
        member("b", 16 * GIB, 8),
        member("c", 16 * GIB, 8),
    ];
    let mut uniform = info.clone();
    uniform.layer_bytes = vec![info.layer_bytes.iter().sum::<u64>() / 12; 12];
    let first = |i: &engine::ModelInfo| plan(&members, i, "moe").unwrap().slices[0].range.clone();
    assert_eq!(first(&info), 0..2);
    assert_eq!(first(&uniform), 0..1);
}
