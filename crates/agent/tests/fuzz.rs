//! Property tests (bounded case counts) of the decoders that face untrusted input:
//! the OpenAI JSON body, the proto sampling parameters and the hidden-state frames.

use agent::api::openai::ChatCompletionRequest;
use engine::HiddenState;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Arbitrary JSON values, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("model".to_string()),
                    Just("messages".to_string()),
                    Just("role".to_string()),
                    Just("content".to_string()),
                    Just("max_tokens".to_string()),
                    Just("temperature".to_string()),
                    Just("top_p".to_string()),
                    Just("stop".to_string()),
                    Just("stream".to_string()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Checks what a validated request promises.
fn check_valid(req: &ChatCompletionRequest) {
    if let Ok(v) = req.validate(49152) {
        assert!(!v.messages.is_empty());
        let p = &v.params;
        assert!(p.max_tokens >= 1);
        assert!((0.0..=2.0).contains(&p.temperature));
        assert!(p.top_p > 0.0 && p.top_p <= 1.0);
        assert!(p.repeat_penalty > 0.0 && p.repeat_penalty.is_finite());
        assert!(p.stop.len() <= 4);
        assert!((1..=8).contains(&v.n));
        assert!(p.logit_bias.iter().all(|(t, _)| *t < 49152));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_chat_decoder(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(req) = serde_json::from_slice::<ChatCompletionRequest>(&b) {
            check_valid(&req);
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_validation_holds(v in any_json()) {
        if let Ok(req) = serde_json::from_value::<ChatCompletionRequest>(v) {
            check_valid(&req);
        }
    }

    #[test]
    fn near_valid_chat_bodies_validate_or_explain(
        role in prop_oneof![Just("user"), Just("system"), Just("assistant"), Just("developer"), Just("robot"), Just("")],
        content in ".{0,40}",
        max_tokens in prop_oneof![any::<i64>(), -2i64..5000],
        temperature in prop_oneof![any::<f32>(), -1.0f32..3.0],
        top_p in prop_oneof![any::<f32>(), 0.0f32..1.5],
    ) {
        let body = json!({
            "messages": [{"role": role, "content": content}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
        });
        if let Ok(req) = serde_json::from_value::<ChatCompletionRequest>(body) {
            match req.validate(49152) {
                Ok(_) => check_valid(&req),
                Err(msg) => prop_assert!(!msg.is_empty()),
            }
        }
    }

    #[test]
    fn proto_sampling_params_never_panic(
        temperature in proptest::option::of(any::<f32>()),
        top_k in proptest::option::of(any::<u32>()),
        top_p in proptest::option::of(any::<f32>()),
        max_tokens in proptest::option::of(any::<u32>()),
        seed in proptest::option::of(any::<u64>()),
    ) {
        let p = proto::v1::SamplingParams {
            temperature, top_k, top_p, max_tokens, seed,
            ..Default::default()
        };
        let s = agent::api::convert::sampling_from_proto(Some(&p), 256);
        prop_assert_eq!(s.max_tokens, max_tokens.map_or(256, |m| m as usize));
    }

    #[test]
    fn hidden_frames_decode_only_when_the_shape_matches(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        n_tokens in prop_oneof![0usize..8, any::<usize>()],
        dim in prop_oneof![0usize..600, any::<usize>()],
    ) {
        let finite = bytes
            .chunks_exact(4)
            .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
        let ok = n_tokens > 0
            && dim > 0
            && n_tokens.checked_mul(dim).and_then(|v| v.checked_mul(4)) == Some(bytes.len())
            && finite;
        match HiddenState::from_bytes(&bytes, n_tokens, dim) {
            Ok(h) => {
                prop_assert!(ok);
                prop_assert_eq!(h.n_tokens, n_tokens);
                prop_assert_eq!(h.dim, dim);
                let back = h.to_bytes();
                prop_assert_eq!(back, bytes);
            }
            Err(e) => {
                prop_assert!(!ok, "valid shape refused: {e}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn well_shaped_frames_round_trip(n_tokens in 1usize..6, dim in 1usize..64, seed in any::<u64>()) {
        let mut x = seed | 1;
        let vals: Vec<f32> = (0..n_tokens * dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x % 2001) as f32 - 1000.0) / 64.0
            })
            .collect();
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let h = HiddenState::from_bytes(&bytes, n_tokens, dim).unwrap();
        prop_assert_eq!(h.to_bytes(), bytes);
    }
}
