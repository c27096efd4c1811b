//! Property tests against one running agent on 127.0.0.1 (bounded cases, each call
//! under a timeout): random pipeline steps (the agent's Step decoding) and random
//! Generate requests either succeed or fail with a non-OK status and a message.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proto::v1::{
    forward_request, ForwardHeader, ForwardRequest, ForwardStep, GenerateRequest, SamplingParams,
};
use proto::{InferenceServiceClient, PipelineServiceClient};

const CALL: Duration = Duration::from_secs(30);

/// `Ok(())` for a served call, `Err(message)` for a refused one; panics on a hang or
/// an error without a message.
async fn outcome<T>(
    r: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
) -> Result<(), String> {
    let check = |s: tonic::Status| {
        assert_ne!(s.code(), tonic::Code::Ok);
        assert!(!s.message().trim().is_empty(), "{s:?}");
        Err(s.message().to_string())
    };
    let mut stream = match r {
        Ok(r) => r.into_inner(),
        Err(s) => return check(s),
    };
    match tokio::time::timeout(CALL, stream.message()).await {
        Err(_) => panic!("no answer within {CALL:?}"),
        Ok(Err(s)) => check(s),
        Ok(Ok(_)) => Ok(()),
    }
}

fn step_strategy() -> impl Strategy<Value = ForwardStep> {
    // A well-formed first step (token ids, no hidden state), or anything.
    let valid = proptest::collection::vec(0u32..49_152, 1..5).prop_map(|tokens| ForwardStep {
        position: 0,
        n_tokens: tokens.len() as u32,
        tokens,
        dim: 0,
        hidden: vec![],
    });
    prop_oneof![1 => valid, 3 => any_step()]
}

fn any_step() -> impl Strategy<Value = ForwardStep> {
    (
        prop_oneof![0u32..16, any::<u32>()],
        proptest::collection::vec(prop_oneof![0u32..49_152, any::<u32>()], 0..6),
        prop_oneof![0u32..4, any::<u32>()],
        prop_oneof![Just(0u32), Just(576), 0u32..1024, any::<u32>()],
        prop_oneof![Just(0usize), Just(1152), Just(2304), 0usize..3000],
    )
        .prop_map(|(position, tokens, n_tokens, dim, len)| ForwardStep {
            position,
            tokens,
            n_tokens,
            dim,
            hidden: (0..len).map(|i| (i * 31 % 251) as u8 & 0x3b).collect(),
        })
}

#[test]
fn random_steps_and_generate_requests_are_served_or_refused_clearly() {
    let Some(model) = model() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let a = Agent::start("fuzz-live", Ports::new(), &[], &model);
    rt.block_on(wait_for(
        "the agent to be healthy",
        Duration::from_secs(90),
        || async {
            let r = get(&a.url("/health")).await.ok()?;
            (r.status == 200).then_some(())
        },
    ));
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", a.ports.api))
        .unwrap()
        .timeout(CALL)
        .connect_lazy();

    let tally = std::cell::RefCell::new([[0usize; 2]; 2]);
    let cfg = ProptestConfig::with_cases(64);
    proptest!(cfg, |(start in prop_oneof![Just(0u32), 0u32..40], end in prop_oneof![Just(30u32), 0u32..40], steps in proptest::collection::vec(step_strategy(), 1..3))| {
        let mut msgs = vec![ForwardRequest {
            msg: Some(forward_request::Msg::Header(ForwardHeader {
                request_id: "prop".into(),
                layer_start: start,
                layer_end: end,
                ..Default::default()
            })),
        }];
        msgs.extend(steps.into_iter().map(|s| ForwardRequest { msg: Some(forward_request::Msg::Step(s)) }));
        let ch = ch.clone();
        let r = rt.block_on(async move {
            outcome(PipelineServiceClient::new(ch).forward(tokio_stream::iter(msgs)).await).await
        });
        tally.borrow_mut()[0][r.is_err() as usize] += 1;
    });

    let cfg = ProptestConfig::with_cases(64);
    proptest!(cfg, |(prompt in ".{0,40}", model_name in proptest::option::of(prop_oneof![Just("SmolLM2-135M-Instruct.Q4_1".to_string()), ".{0,8}"]), temperature in proptest::option::of(any::<f32>()), top_p in proptest::option::of(any::<f32>()), top_k in proptest::option::of(any::<u32>()), max_tokens in proptest::option::of(prop_oneof![0u32..4, any::<u32>()]))| {
        let req = GenerateRequest {
            prompt,
            model: model_name,
            sampling: Some(SamplingParams {
                temperature,
                top_p,
                top_k,
                // Keep accepted requests short.
                max_tokens: Some(max_tokens.map_or(2, |m| if m < 4 { m } else { m | 0x8000_0000 })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ch = ch.clone();
        let r = rt.block_on(async move {
            outcome(InferenceServiceClient::new(ch).generate(req).await).await
        });
        tally.borrow_mut()[1][r.is_err() as usize] += 1;
    });

    let t = tally.borrow();
    eprintln!(
        "Forward: {} served, {} refused; Generate: {} served, {} refused",
        t[0][0], t[0][1], t[1][0], t[1][1]
    );
    rt.block_on(async {
        let h = get(&a.url("/health")).await.expect("health after the fuzz");
        assert_eq!(h.status, 200, "{}", h.text());
        let r = post_json(
            &a.url("/v1/chat/completions"),
            &chat_body("Say hi.", 3, false),
        )
        .await
        .expect("chat after the fuzz");
        assert_eq!(r.status, 200, "{}", r.text());
    });
}
