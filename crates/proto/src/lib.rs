//! gRPC protocol of distributed-llm, package `distributed_llm.v1`.
//!
//! Generated at build time from `proto/distributed_llm.proto` by protox (no `protoc`
//! needed) and tonic-prost-build. Three services:
//!
//! - [`NodeService`](v1::node_service_server::NodeService): node info, members and plan,
//!   models, metrics snapshots (unary and streamed).
//! - [`InferenceService`](v1::inference_service_server::InferenceService): streamed
//!   text generation for clients.
//! - [`PipelineService`](v1::pipeline_service_server::PipelineService): one long-lived
//!   bidi `Link` stream per pair of agents, multiplexing every sequence's messages.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds `tonic-reflection` (v1 and v1alpha).

/// Generated messages, clients (`*_client`) and servers (`*_server`).
#[allow(clippy::large_enum_variant)] // prost's oneof enums hold messages inline
pub mod v1 {
    tonic::include_proto!("distributed_llm.v1");
}

pub use v1::inference_service_client::InferenceServiceClient;
pub use v1::inference_service_server::{InferenceService, InferenceServiceServer};
pub use v1::node_service_client::NodeServiceClient;
pub use v1::node_service_server::{NodeService, NodeServiceServer};
pub use v1::pipeline_service_client::PipelineServiceClient;
pub use v1::pipeline_service_server::{PipelineService, PipelineServiceServer};

/// Encoded `google.protobuf.FileDescriptorSet` of the protocol, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/distributed_llm_descriptor.bin"));

/// Fully qualified names of the three services, as reflection lists them.
pub const SERVICE_NAMES: [&str; 3] = [
    "distributed_llm.v1.NodeService",
    "distributed_llm.v1.InferenceService",
    "distributed_llm.v1.PipelineService",
];

/// A layer range as people see it everywhere (TUI, `/health`, logs, docs): half-open,
/// `[0,10)` = layers 0 to 9, so neighbours `[0,10)` `[10,20)` never look overlapping.
pub fn fmt_layers(start: u64, end: u64) -> String {
    format!("[{start},{end})")
}

/// A plan version as people see it everywhere (TUI, `/health`, logs): 16 hex digits.
/// (Prometheus carries its low 53 bits as a number, `/v1/cluster` the whole u64.)
pub fn fmt_plan(version: u64) -> String {
    format!("{version:016x}")
}

impl std::fmt::Display for v1::LayerRange {
    /// `[start,end)`, as [`fmt_layers`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fmt_layers(self.start.into(), self.end.into()))
    }
}

impl v1::LayerRange {
    /// Number of layers in the range (0 when empty or inverted).
    pub fn len(&self) -> u32 {
        self.end.saturating_sub(self.start)
    }

    /// True when the range holds no layer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl v1::MemberState {
    /// Lower-case label ("alive", "suspect", "dead", "unspecified").
    pub fn label(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_set_contains_the_three_services() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let file = fds
            .file
            .iter()
            .find(|f| f.package() == "distributed_llm.v1")
            .expect("package distributed_llm.v1 in the descriptor set");
        let services: Vec<String> = file
            .service
            .iter()
            .map(|s| format!("{}.{}", file.package(), s.name()))
            .collect();
        for name in SERVICE_NAMES {
            assert!(
                services.iter().any(|s| s == name),
                "{name} missing: {services:?}"
            );
        }
        let link = file
            .service
            .iter()
            .find(|s| s.name() == "PipelineService")
            .unwrap()
            .method
            .iter()
            .find(|m| m.name() == "Link")
            .unwrap();
        assert!(link.client_streaming() && link.server_streaming());
    }

    #[test]
    fn link_frame_round_trips() {
        let hidden: Vec<u8> = (0..2 * 576 * 2).map(|i| (i % 251) as u8).collect();
        let frame = LinkFrame {
            msgs: vec![
                LinkMsg {
                    msg: Some(link_msg::Msg::Step(SeqStep {
                        seq: u64::MAX,
                        position: 7,
                        tokens: vec![1, 2],
                        dim: 576,
                        hidden: hidden.clone(),
                        sample: true,
                    })),
                },
                LinkMsg {
                    msg: Some(link_msg::Msg::Close(42)),
                },
            ],
        };
        let back = LinkFrame::decode(frame.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, frame);
        match &back.msgs[0].msg {
            Some(link_msg::Msg::Step(step)) => assert_eq!(step.hidden, hidden),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn optional_sampling_fields_distinguish_unset_from_zero() {
        let greedy = SamplingParams {
            temperature: Some(0.0),
            ..Default::default()
        };
        let back = SamplingParams::decode(greedy.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.temperature, Some(0.0));
        assert_eq!(back.top_k, None);
        let unset = SamplingParams::decode(&[][..]).unwrap();
        assert_eq!(unset.temperature, None);
    }

    #[test]
    fn generate_response_final_event_round_trips() {
        let msg = GenerateResponse {
            event: Some(generate_response::Event::Done(FinalEvent {
                finish_reason: "length".into(),
                usage: Some(Usage {
                    prompt_tokens: 12,
                    completion_tokens: 8,
                }),
                timings: Some(Timings {
                    ttft_ms: 31.5,
                    tokens_per_second: 40.0,
                    total_ms: 231.0,
                }),
                request_id: "r1".into(),
                choice: 1,
                tool_calls: vec![ToolCall {
                    id: "c".into(),
                    name: "add".into(),
                    arguments_json: "{}".into(),
                }],
            })),
        };
        let back = GenerateResponse::decode(msg.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn layer_range_len() {
        assert_eq!(LayerRange { start: 3, end: 10 }.len(), 7);
        assert!(LayerRange { start: 5, end: 5 }.is_empty());
        assert!(LayerRange { start: 6, end: 5 }.is_empty());
        assert_eq!(MemberState::Dead.label(), "dead");
    }
}
