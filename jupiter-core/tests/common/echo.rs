//! A tiny hand-written gRPC service (no protoc, no build script): `test.Echo/Say` answers with
//! the server's name and whatever the test's handler adds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
}

type Handler = Arc<dyn Fn(&Request<Msg>) -> String + Send + Sync>;

#[derive(Clone)]
pub struct Echo {
    pub name: String,
    pub handler: Handler,
}

impl Echo {
    pub fn new(
        name: &str,
        handler: impl Fn(&Request<Msg>) -> String + Send + Sync + 'static,
    ) -> Self {
        Echo {
            name: name.to_owned(),
            handler: Arc::new(handler),
        }
    }
}

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

struct Say(Echo);

impl UnaryService<Msg> for Say {
    type Response = Msg;
    type Future = BoxFuture<'static, Result<Response<Msg>, Status>>;

    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let text = format!("{}|{}", self.0.name, (self.0.handler)(&req));
        Box::pin(async move { Ok(Response::new(Msg { text })) })
    }
}

impl tower::Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != "/test.Echo/Say" {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
            Ok(grpc.unary(Say(this), req).await)
        })
    }
}

/// Serves `echo` on a free loopback port; returns the address.
pub async fn serve(echo: Echo) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(echo)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// Calls `Say` through any tonic channel-like service.
pub async fn say<S>(channel: S, text: &str) -> Result<String, Status>
where
    S: tonic::client::GrpcService<Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let resp: Response<Msg> = grpc
        .unary(
            Request::new(Msg {
                text: text.to_owned(),
            }),
            PathAndQuery::from_static("/test.Echo/Say"),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await?;
    Ok(resp.into_inner().text)
}
