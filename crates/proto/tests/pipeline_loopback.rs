//! The generated PipelineService server and client talk over a real HTTP/2
//! connection on 127.0.0.1: header first, then one response per step.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use proto::v1::{
    forward_request::Msg, ForwardHeader, ForwardRequest, ForwardResponse, ForwardStep,
};
use proto::{PipelineService, PipelineServiceClient, PipelineServiceServer};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

/// A toy last stage: answers each step with the number of tokens it has seen.
struct Counter;

#[tonic::async_trait]
impl PipelineService for Counter {
    type ForwardStream = Pin<Box<dyn Stream<Item = Result<ForwardResponse, Status>> + Send>>;

    async fn forward(
        &self,
        request: Request<Streaming<ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let mut input = request.into_inner();
        let header = match input.message().await? {
            Some(ForwardRequest {
                msg: Some(Msg::Header(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("first message must be the header")),
        };
        let out = async_stream(input, header);
        Ok(Response::new(Box::pin(out)))
    }
}

fn async_stream(
    input: Streaming<ForwardRequest>,
    header: ForwardHeader,
) -> impl Stream<Item = Result<ForwardResponse, Status>> + Send {
    input.scan(0u32, move |seen, msg| {
        let reply = match msg {
            Ok(ForwardRequest {
                msg: Some(Msg::Step(step)),
            }) => {
                *seen += step.tokens.len() as u32;
                Ok(ForwardResponse {
                    token: Some(*seen + header.layer_start),
                    compute_us: 1,
                    ..Default::default()
                })
            }
            Ok(_) => Err(Status::invalid_argument("expected a step")),
            Err(e) => Err(e),
        };
        futures::future::ready(Some(reply))
    })
}

#[tokio::test]
async fn forward_stream_round_trips_over_loopback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PipelineServiceServer::new(Counter))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let mut client = PipelineServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let header = ForwardRequest {
        msg: Some(Msg::Header(ForwardHeader {
            request_id: "r1".into(),
            layer_start: 100,
            layer_end: 130,
            ..Default::default()
        })),
    };
    let steps = (0..3u32).map(|i| ForwardRequest {
        msg: Some(Msg::Step(ForwardStep {
            position: i,
            tokens: vec![i; (i + 1) as usize],
            n_tokens: i + 1,
            ..Default::default()
        })),
    });
    let outbound = futures::stream::iter(std::iter::once(header).chain(steps));
    let mut replies = client.forward(outbound).await.unwrap().into_inner();
    let mut tokens = Vec::new();
    while let Some(r) = replies.message().await.unwrap() {
        tokens.push(r.token.unwrap());
    }
    assert_eq!(tokens, vec![101, 103, 106]);

    // A stream that starts with a step is refused with a clear status.
    let bad = futures::stream::iter(vec![ForwardRequest {
        msg: Some(Msg::Step(ForwardStep::default())),
    }]);
    let Err(status) = client.forward(bad).await else {
        panic!("a stream starting with a step must be rejected");
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    server.abort();
}
