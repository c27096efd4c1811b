//! The generated PipelineService server and client talk over a real HTTP/2
//! connection on 127.0.0.1: one long-lived Link stream, frames both ways.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use proto::v1::{link_msg::Msg, LinkFrame, LinkHello, LinkMsg, SeqStep};
use proto::{PipelineService, PipelineServiceClient, PipelineServiceServer};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

/// A toy stage: answers every ping with a pong and every step with a pong carrying the
/// number of tokens seen so far.
struct Counter;

#[tonic::async_trait]
impl PipelineService for Counter {
    type LinkStream = Pin<Box<dyn Stream<Item = Result<LinkFrame, Status>> + Send>>;

    async fn link(
        &self,
        request: Request<Streaming<LinkFrame>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let mut input = request.into_inner();
        match input
            .message()
            .await?
            .and_then(|f| f.msgs.into_iter().next())
        {
            Some(LinkMsg {
                msg: Some(Msg::Hello(_)),
            }) => {}
            _ => return Err(Status::invalid_argument("a link starts with a hello")),
        }
        let mut seen = 0u64;
        let out = input.map(move |frame| {
            let frame = frame?;
            let mut msgs = Vec::new();
            for m in frame.msgs {
                match m.msg {
                    Some(Msg::Ping(t)) => msgs.push(LinkMsg {
                        msg: Some(Msg::Pong(t)),
                    }),
                    Some(Msg::Step(s)) => {
                        seen += s.tokens.len() as u64;
                        msgs.push(LinkMsg {
                            msg: Some(Msg::Pong(seen)),
                        });
                    }
                    _ => return Err(Status::invalid_argument("unexpected message")),
                }
            }
            Ok(LinkFrame { msgs })
        });
        Ok(Response::new(Box::pin(out)))
    }
}

fn frame(msg: Msg) -> LinkFrame {
    LinkFrame {
        msgs: vec![LinkMsg { msg: Some(msg) }],
    }
}

#[tokio::test]
async fn link_frames_flow_both_ways_over_http2() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PipelineServiceServer::new(Counter))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut client = PipelineServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(frame(Msg::Hello(LinkHello {
        node_id: "a".into(),
        api_addr: addr.to_string(),
        model: "m".into(),
    })))
    .await
    .unwrap();
    let mut answers = client
        .link(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for (i, n) in [3usize, 1, 1].into_iter().enumerate() {
        tx.send(frame(Msg::Step(SeqStep {
            seq: 9,
            position: i as u32,
            tokens: vec![7; n],
            ..Default::default()
        })))
        .await
        .unwrap();
    }
    tx.send(frame(Msg::Ping(12345))).await.unwrap();
    let mut pongs = Vec::new();
    for _ in 0..4 {
        let f = answers.message().await.unwrap().unwrap();
        match f.msgs[0].msg {
            Some(Msg::Pong(v)) => pongs.push(v),
            ref other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pongs, vec![3, 4, 5, 12345]);
}
