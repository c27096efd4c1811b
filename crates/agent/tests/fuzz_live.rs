//! Property tests against one running agent on 127.0.0.1 (bounded cases, each call
//! under a timeout): random pipeline messages on a Link (the agent's message decoding and
//! its stage worker) are taken or refused with a fault that has a message, and the link
//! still answers a ping; random Generate requests either succeed or fail with a non-OK
//! status and a message.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proto::v1::{
    link_msg, GenerateRequest, LinkFrame, LinkHello, LinkMsg, RouteHop, SamplingParams, SeqOpen,
    SeqStep,
};
use proto::InferenceServiceClient;
use tokio_stream::StreamExt;

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

fn step_strategy() -> impl Strategy<Value = SeqStep> {
    // A well-formed first step (token ids, no hidden state), or anything.
    let valid = proptest::collection::vec(0u32..49_152, 1..5).prop_map(|tokens| SeqStep {
        seq: 1,
        tokens,
        sample: true,
        ..Default::default()
    });
    prop_oneof![1 => valid, 3 => any_step()]
}

fn any_step() -> impl Strategy<Value = SeqStep> {
    (
        prop_oneof![0u32..16, any::<u32>()],
        proptest::collection::vec(prop_oneof![0u32..49_152, any::<u32>()], 0..6),
        prop_oneof![Just(0u32), Just(576), 0u32..1024, any::<u32>()],
        prop_oneof![Just(0usize), Just(1152), Just(2304), 0usize..3000],
        prop_oneof![Just(1u64), any::<u64>()],
    )
        .prop_map(|(position, tokens, dim, len, seq)| SeqStep {
            seq,
            position,
            tokens,
            dim,
            hidden: (0..len).map(|i| (i * 31 % 251) as u8 & 0x3b).collect(),
            sample: seq % 2 == 0,
        })
}

/// Sends frames then a ping on a fresh Link: `Err(message)` if a fault came back first,
/// `Ok(())` if the pong did; panics on a hang, a fault without a message or a link error.
async fn link_outcome(
    ch: tonic::transport::Channel,
    mut frames: Vec<LinkFrame>,
) -> Result<(), String> {
    frames.push(LinkFrame {
        msgs: vec![LinkMsg {
            msg: Some(link_msg::Msg::Ping(1)),
        }],
    });
    let r = proto::PipelineServiceClient::new(ch)
        .link(tokio_stream::iter(frames).chain(tokio_stream::pending()))
        .await;
    let mut stream = r.expect("the link opens").into_inner();
    match tokio::time::timeout(CALL, stream.message()).await {
        Err(_) => panic!("no answer within {CALL:?}"),
        Ok(Err(s)) => panic!("the link broke: {s:?}"),
        Ok(Ok(None)) => panic!("the link closed"),
        Ok(Ok(Some(f))) => match f.msgs.into_iter().next().and_then(|m| m.msg) {
            Some(link_msg::Msg::Pong(_)) => Ok(()),
            Some(link_msg::Msg::Fault(f)) => {
                assert!(!f.message.trim().is_empty(), "{f:?}");
                Err(f.message)
            }
            other => panic!("unexpected answer {other:?}"),
        },
    }
}

#[test]
fn random_steps_and_generate_requests_are_served_or_refused_clearly() {
    let model = model();
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
    let (node, addr) = (
        "fuzz-live".to_string(),
        format!("127.0.0.1:{}", a.ports.api),
    );
    proptest!(cfg, |(start in prop_oneof![Just(0u32), 0u32..40], end in prop_oneof![Just(30u32), 0u32..40], steps in proptest::collection::vec(step_strategy(), 1..3))| {
        let hello = LinkMsg { msg: Some(link_msg::Msg::Hello(LinkHello { node_id: "prop".into(), ..Default::default() })) };
        let open = LinkMsg {
            msg: Some(link_msg::Msg::Open(SeqOpen {
                seq: 1,
                hops: vec![RouteHop { node_id: node.clone(), api_addr: addr.clone(), layer_start: start, layer_end: end }],
                origin_node: node.clone(),
                origin_addr: addr.clone(),
                sampling: Some(SamplingParams { max_tokens: Some(1), ..Default::default() }),
                prompt_len: 4,
                ..Default::default()
            })),
        };
        let mut msgs = vec![open];
        msgs.extend(steps.into_iter().map(|s| LinkMsg { msg: Some(link_msg::Msg::Step(s)) }));
        msgs.push(LinkMsg { msg: Some(link_msg::Msg::Close(1)) });
        let frames = vec![LinkFrame { msgs: vec![hello] }, LinkFrame { msgs }];
        let ch = ch.clone();
        let r = rt.block_on(link_outcome(ch, frames));
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
        "Link: {} taken, {} refused; Generate: {} served, {} refused",
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
