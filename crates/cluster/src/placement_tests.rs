use super::*;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

fn cap(id: &str, mem: u64, cores: u32) -> Capacity {
    Capacity {
        node_id: id.into(),
        memory_available: mem,
        memory_limit: None,
        cpu_cores: cores,
        gpu_memory: 0,
    }
}

/// SmolLM2-135M Q4_1-like footprint: 30 layers, tied 28 MiB embedding/head.
fn smol() -> ModelFootprint {
    ModelFootprint::uniform(30, 2 * MIB, 28 * MIB, 28 * MIB)
}

/// xorshift64*: deterministic pseudo-random inputs without extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn assert_valid(model: &ModelFootprint, nodes: &[Capacity], p: &Plan) {
    assert!(p.covers_all(), "gap or overlap: {p:?}");
    assert_eq!(p.n_layers, model.n_layers);
    assert_eq!(p.version, plan_version(p.n_layers, &p.assignments));
    let ids: Vec<&str> = p.assignments.iter().map(|a| a.node_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "stages must follow node-id order");
    let table = CostTable::new(model);
    for a in &p.assignments {
        let node = nodes.iter().find(|n| n.node_id == a.node_id).unwrap();
        assert!(
            table.cost(a.start, a.end) <= node.budget(),
            "{a:?} exceeds budget {}",
            node.budget()
        );
    }
}

#[test]
fn single_node_holds_everything() {
    let nodes = [cap("a", 8 * GIB, 4)];
    let p = plan(&smol(), &nodes).unwrap();
    assert_eq!(
        p.assignments,
        vec![Assignment {
            node_id: "a".into(),
            start: 0,
            end: 30
        }]
    );
    assert!(p.covers_all());
    assert_eq!(p.stage_of("a").unwrap().len(), 30);
    assert!(p.stage_of("b").is_none());
    assert!(p.next_stage("a").is_none());
}

#[test]
fn equal_nodes_get_equal_shares_in_id_order() {
    let nodes = [
        cap("c", 4 * GIB, 2),
        cap("a", 4 * GIB, 2),
        cap("b", 4 * GIB, 2),
    ];
    let p = plan(&smol(), &nodes).unwrap();
    let got: Vec<(&str, usize, usize)> = p
        .assignments
        .iter()
        .map(|a| (a.node_id.as_str(), a.start, a.end))
        .collect();
    assert_eq!(got, vec![("a", 0, 10), ("b", 10, 20), ("c", 20, 30)]);
    assert_eq!(p.next_stage("a").unwrap().node_id, "b");
    assert_eq!(p.stage_index("c"), Some(2));
}

#[test]
fn shares_are_proportional_to_memory() {
    let nodes = [cap("a", 8 * GIB, 4), cap("b", 4 * GIB, 4)];
    let p = plan(&smol(), &nodes).unwrap();
    assert_eq!(p.stage_of("a").unwrap().len(), 20);
    assert_eq!(p.stage_of("b").unwrap().len(), 10);
}

#[test]
fn more_cores_raise_the_share() {
    let nodes = [cap("a", 4 * GIB, 16), cap("b", 4 * GIB, 1)];
    let p = plan(&smol(), &nodes).unwrap();
    assert!(p.stage_of("a").unwrap().len() > p.stage_of("b").unwrap().len());
}

#[test]
fn random_inputs_always_cover_without_gap_or_overlap() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let n_nodes = 1 + (round % 8);
        let n_layers = 1 + rng.below(64) as usize;
        let layer_bytes: Vec<u64> = (0..n_layers).map(|_| MIB + rng.below(64 * MIB)).collect();
        let model = ModelFootprint {
            n_layers,
            layer_bytes,
            embed_bytes: rng.below(512 * MIB),
            head_bytes: rng.below(512 * MIB),
        };
        let nodes: Vec<Capacity> = (0..n_nodes)
            .map(|i| Capacity {
                node_id: format!("node-{}", rng.below(1000) * 10 + i as u64),
                memory_available: rng.below(16 * GIB),
                memory_limit: rng.below(2).eq(&0).then(|| rng.below(16 * GIB)),
                cpu_cores: 1 + rng.below(32) as u32,
                gpu_memory: rng.below(2) * rng.below(80 * GIB),
            })
            .collect();
        match plan(&model, &nodes) {
            Ok(p) => {
                assert_valid(&model, &nodes, &p);
                let usable = nodes
                    .iter()
                    .filter(|n| n.budget() >= *model.layer_bytes.iter().min().unwrap())
                    .count();
                if usable <= n_layers && usable == p.assignments.len() {
                    assert!(p.assignments.iter().all(|a| !a.is_empty()));
                }
            }
            Err(PlacementError::InsufficientMemory { missing, .. }) => assert!(missing > 0),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

#[test]
fn every_node_gets_layers_when_nodes_fit() {
    for n_nodes in 1..=8 {
        let nodes: Vec<Capacity> = (0..n_nodes)
            .map(|i| cap(&format!("n{i}"), (1 + i as u64) * GIB, 2))
            .collect();
        let p = plan(&smol(), &nodes).unwrap();
        assert_valid(&smol(), &nodes, &p);
        assert_eq!(p.assignments.len(), n_nodes, "{p:?}");
    }
}

#[test]
fn input_order_does_not_matter() {
    let mut nodes = vec![
        cap("x", 3 * GIB, 8),
        cap("b", 5 * GIB, 2),
        cap("m", GIB, 4),
        cap("a", 7 * GIB, 1),
    ];
    let p1 = plan(&smol(), &nodes).unwrap();
    nodes.reverse();
    let p2 = plan(&smol(), &nodes).unwrap();
    nodes.swap(0, 2);
    let p3 = plan(&smol(), &nodes).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(p1, p3);
    assert_eq!(p1.version, p3.version);
}

#[test]
fn small_containers_get_a_budget() {
    let c = cap("a", 200 * MIB, 1);
    assert_eq!(c.budget(), 192 * MIB);
    let p = plan(&smol(), &[c, cap("b", 200 * MIB, 1)]).unwrap();
    assert_eq!(p.assignments.len(), 2);
}

#[test]
fn small_memory_fluctuations_do_not_change_the_plan() {
    let a = [
        cap("a", 4 * GIB + 10 * MIB, 4),
        cap("b", 2 * GIB + 100 * MIB, 4),
    ];
    let b = [
        cap("a", 4 * GIB + 200 * MIB, 4),
        cap("b", 2 * GIB + 3 * MIB, 4),
    ];
    assert_eq!(plan(&smol(), &a).unwrap(), plan(&smol(), &b).unwrap());
}

#[test]
fn version_changes_with_assignments() {
    let p1 = plan(&smol(), &[cap("a", 4 * GIB, 2), cap("b", 4 * GIB, 2)]).unwrap();
    let p2 = plan(&smol(), &[cap("a", 8 * GIB, 2), cap("b", 4 * GIB, 2)]).unwrap();
    let p3 = plan(&smol(), &[cap("a", 4 * GIB, 2), cap("c", 4 * GIB, 2)]).unwrap();
    assert_ne!(p1.version, p2.version);
    assert_ne!(p1.version, p3.version);
    // Pinned: the version must be identical on every machine and build.
    let fixed = Plan::new(
        2,
        vec![Assignment {
            node_id: "a".into(),
            start: 0,
            end: 2,
        }],
    );
    assert_eq!(fixed.version, plan_version(2, &fixed.assignments));
    assert_eq!(fixed.version, {
        let mut h = Fnv64::default();
        h.u64(2).u64(1).str("a").u64(0).u64(2);
        h.finish()
    });
}

#[test]
fn memory_limit_caps_the_share() {
    // 10 layers of 100 MiB; "big" would get most layers but is capped at 512 MiB.
    let model = ModelFootprint::uniform(10, 100 * MIB, 0, 0);
    let mut big = cap("big", 64 * GIB, 32);
    big.memory_limit = Some(512 * MIB);
    let nodes = [big, cap("small", 2 * GIB, 1)];
    let p = plan(&model, &nodes).unwrap();
    assert_valid(&model, &nodes, &p);
    assert_eq!(p.stage_of("big").unwrap().len(), 5);
    assert_eq!(p.stage_of("small").unwrap().len(), 5);
}

#[test]
fn first_and_last_stage_pay_embedding_and_head() {
    // 6 layers of 100 MiB, embedding and head 300 MiB each, budgets 512 MiB.
    // "a" has by far the largest weight, but with the embedding it fits only 2 layers.
    let model = ModelFootprint::uniform(6, 100 * MIB, 300 * MIB, 300 * MIB);
    let nodes = [
        cap("a", 512 * MIB, 64),
        cap("b", 512 * MIB, 1),
        cap("c", 512 * MIB, 1),
    ];
    let p = plan(&model, &nodes).unwrap();
    assert_valid(&model, &nodes, &p);
    let lens: Vec<usize> = p.assignments.iter().map(|a| a.len()).collect();
    assert_eq!(lens, vec![2, 2, 2]);
}

#[test]
fn node_too_small_for_one_layer_gets_nothing() {
    let model = ModelFootprint::uniform(8, 300 * MIB, 0, 0);
    let nodes = [
        cap("a", 4 * GIB, 2),
        cap("tiny", 256 * MIB, 2),
        cap("z", 4 * GIB, 2),
    ];
    let p = plan(&model, &nodes).unwrap();
    assert_valid(&model, &nodes, &p);
    assert!(p.stage_of("tiny").is_none());
    assert_eq!(p.assignments.len(), 2);
}

#[test]
fn more_nodes_than_layers_leaves_the_lightest_out() {
    let model = ModelFootprint::uniform(2, MIB, 0, 0);
    let nodes = [cap("a", GIB, 1), cap("b", 8 * GIB, 1), cap("c", 4 * GIB, 1)];
    let p = plan(&model, &nodes).unwrap();
    assert!(p.covers_all());
    assert_eq!(p.assignments.len(), 2);
    assert!(p.stage_of("a").is_none());
}

#[test]
fn too_small_cluster_reports_missing_bytes() {
    // 30 layers * 100 MiB = 3000 MiB, budgets 2 * 1024 MiB -> 952 MiB missing.
    let model = ModelFootprint::uniform(30, 100 * MIB, 0, 0);
    let nodes = [cap("a", GIB, 2), cap("b", GIB, 2)];
    match plan(&model, &nodes) {
        Err(PlacementError::InsufficientMemory {
            needed,
            available,
            missing,
            usable,
            nodes,
        }) => {
            assert_eq!(needed, 3000 * MIB);
            assert_eq!(available, 2 * GIB);
            assert_eq!(missing, 3000 * MIB - 2 * GIB);
            assert_eq!((usable, nodes), (2, 2));
        }
        other => panic!("expected InsufficientMemory, got {other:?}"),
    }
}

#[test]
fn contiguity_can_cost_more_than_the_raw_shortfall() {
    // Layers of 300 MiB on two 512 MiB nodes: 2 layers need 600 MiB, only one fits
    // per node... which works. Three layers cannot be split: 300 MiB missing.
    let model = ModelFootprint::uniform(3, 300 * MIB, 0, 0);
    let nodes = [cap("a", 512 * MIB, 1), cap("b", 512 * MIB, 1)];
    match plan(&model, &nodes) {
        Err(PlacementError::InsufficientMemory { missing, .. }) => {
            assert_eq!(missing, 88 * MIB, "best split 2+1 overflows by 600-512 MiB")
        }
        other => panic!("expected InsufficientMemory, got {other:?}"),
    }
}

#[test]
fn bad_inputs_are_rejected() {
    let bad = ModelFootprint {
        n_layers: 3,
        layer_bytes: vec![1, 2],
        embed_bytes: 0,
        head_bytes: 0,
    };
    assert!(matches!(
        plan(&bad, &[cap("a", GIB, 1)]),
        Err(PlacementError::InvalidModel { .. })
    ));
    assert_eq!(plan(&smol(), &[]), Err(PlacementError::NoNodes));
    assert_eq!(
        plan(&smol(), &[cap("a", GIB, 1), cap("a", GIB, 1)]),
        Err(PlacementError::DuplicateNode("a".into()))
    );
}

#[test]
fn covers_all_detects_gaps_overlaps_and_empty_ranges() {
    let a = |id: &str, s, e| Assignment {
        node_id: id.into(),
        start: s,
        end: e,
    };
    assert!(Plan::new(4, vec![a("x", 0, 2), a("y", 2, 4)]).covers_all());
    assert!(!Plan::new(4, vec![a("x", 0, 2), a("y", 3, 4)]).covers_all());
    assert!(!Plan::new(4, vec![a("x", 0, 3), a("y", 2, 4)]).covers_all());
    assert!(!Plan::new(4, vec![a("x", 0, 4), a("y", 4, 4)]).covers_all());
    assert!(!Plan::new(4, vec![a("x", 0, 3)]).covers_all());
    assert!(!Plan::new(0, vec![]).covers_all());
}

/// All ways to give `n_nodes` ordered nodes contiguous (possibly empty) counts summing to `n`.
fn all_splits(n_nodes: usize, n: usize) -> Vec<Vec<usize>> {
    if n_nodes == 1 {
        return vec![vec![n]];
    }
    (0..=n)
        .flat_map(|c| {
            all_splits(n_nodes - 1, n - c)
                .into_iter()
                .map(move |mut rest| {
                    rest.insert(0, c);
                    rest
                })
        })
        .collect()
}

#[test]
fn dp_agrees_with_brute_force_on_small_cases() {
    let mut rng = Rng(42);
    let mut solved = 0;
    for _ in 0..400 {
        let n_layers = 1 + rng.below(7) as usize;
        let n_nodes = 1 + rng.below(4) as usize;
        let model = ModelFootprint {
            n_layers,
            layer_bytes: (0..n_layers)
                .map(|_| (1 + rng.below(3)) * 100 * MIB)
                .collect(),
            embed_bytes: rng.below(3) * 100 * MIB,
            head_bytes: rng.below(3) * 100 * MIB,
        };
        let nodes: Vec<Capacity> = (0..n_nodes)
            .map(|i| {
                cap(
                    &format!("n{i}"),
                    rng.below(5) * 256 * MIB,
                    1 + rng.below(8) as u32,
                )
            })
            .collect();
        let table = CostTable::new(&model);
        let usable: Vec<&Capacity> = nodes
            .iter()
            .filter(|n| n.budget() >= *model.layer_bytes.iter().min().unwrap())
            .collect();
        let fits = |split: &Vec<usize>| {
            let mut s = 0;
            split.iter().zip(&usable).all(|(c, n)| {
                let ok = *c == 0 || table.cost(s, s + c) <= n.budget();
                s += c;
                ok
            })
        };
        let splits = if usable.is_empty() {
            vec![]
        } else {
            all_splits(usable.len(), n_layers)
        };
        let any_fit = splits.iter().any(fits);
        let full_fit = splits.iter().any(|s| fits(s) && s.iter().all(|c| *c > 0));
        match plan(&model, &nodes) {
            Ok(p) => {
                solved += 1;
                assert!(any_fit);
                assert_valid(&model, &nodes, &p);
                if full_fit {
                    assert_eq!(p.assignments.len(), usable.len(), "{p:?} {nodes:?}");
                }
            }
            Err(PlacementError::InsufficientMemory { missing, .. }) => {
                assert!(
                    !any_fit,
                    "a split fits but plan failed: {nodes:?} {model:?}"
                );
                assert!(missing > 0);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(solved > 50, "too few solvable random cases: {solved}");
}
