//! Any unary gRPC method of any service: descriptors from the scenario's `.proto` files
//! (compiled when it loads, with protox) or from the server's reflection service (asked when
//! the run connects); request bodies are JSON templates, replies are turned back into JSON for
//! extraction.
//!
//! Hot path: [`Grpc::execute`] sends bytes. A body with no template is encoded once, when the
//! run connects; a templated one is rendered into the worker's [`Scratch`], read into a dynamic
//! message and encoded per request. A reply is decoded only when the step extracts from it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use jupiter_core::BoxError;
use jupiter_core::shadow::ShadowContext;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::{Call, Protocol, Scratch, check_status};
use crate::error::Problem;
use crate::scenario::{Action, GrpcCall, GrpcResolved, RunSection, Step, Target};
use crate::stats::ErrorKind;

/// What the probe calls: every server built on tonic or grpc-go can offer it, and the shadow
/// layer acknowledges the tag whatever the answer (`UNIMPLEMENTED` included).
const PROBE_PATH: &str = "/grpc.health.v1.Health/Check";
/// Most descriptor files taken from a reflection service (a service's files and their
/// imports): a server that keeps sending is cut off.
const MAX_REFLECTED_FILES: usize = 1024;

/// A gRPC target.
#[derive(Debug)]
pub(crate) struct Grpc {
    channels: Vec<Channel>,
    next: AtomicUsize,
    pool: DescriptorPool,
    timeout: Duration,
}

impl Protocol for Grpc {
    async fn connect(target: &Target, run: &RunSection) -> Result<Self, BoxError> {
        let url = target.spec.url.clone().unwrap_or_default();
        let parsed = crate::http1::Endpoint::parse(&url)?;
        // TLS is loadtest's own (rustls, the target's `tls` table: a CA file or insecure), so
        // tonic gets the connection ready-made; ALPN offers h2.
        let tls = parsed
            .tls
            .then(|| crate::tls::Tls::new(&target.spec.tls, &parsed.host, b"h2"))
            .transpose()?;
        let endpoint = Endpoint::from_shared(format!("http://{}", parsed.authority))?
            .connect_timeout(run.timeout)
            .tcp_nodelay(true);
        let channels: Vec<Channel> = (0..target.spec.connections.unwrap_or(1))
            .map(|_| match &tls {
                None => endpoint.connect_lazy(),
                Some(tls) => {
                    let (tls, addr) = (tls.clone(), (parsed.host.clone(), parsed.port));
                    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                        let (tls, addr) = (tls.clone(), addr.clone());
                        async move {
                            let tcp = tokio::net::TcpStream::connect(addr).await?;
                            let _ = tcp.set_nodelay(true);
                            let stream = tls.connect(tcp).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    }))
                }
            })
            .collect();
        let pool = match &target.descriptors {
            Some(pool) => pool.clone(),
            None => tokio::time::timeout(run.timeout, reflect(channels[0].clone()))
                .await
                .map_err(|_| "its reflection service did not answer in time")??,
        };
        Ok(Grpc {
            channels,
            next: AtomicUsize::new(0),
            pool,
            timeout: run.timeout,
        })
    }

    async fn probe(&self, _target: &Target, context: &ShadowContext) -> Result<(), Problem> {
        let mut request = tonic::Request::new(Bytes::new());
        shadow_metadata(request.metadata_mut(), context);
        let ack = |m: &MetadataMap| {
            m.get(jupiter_core::shadow::ACK_HEADER)
                .map(|v| v.as_bytes().to_vec())
        };
        let path = http::uri::PathAndQuery::from_static(PROBE_PATH);
        let ack = match self.unary(request, path).await {
            Ok(r) => ack(r.metadata()),
            Err(s) if is_transport(&s) => {
                return Err(Problem::caused_by("did not answer the probe", s));
            }
            Err(s) => ack(s.metadata()),
        };
        super::probe_ack(ack.as_deref(), PROBE_PATH)
    }

    async fn execute(&self, call: Call<'_>, s: &mut Scratch) -> Option<ErrorKind> {
        let Call { step, vars, shadow } = call;
        let Action::Grpc(grpc) = &step.action else {
            return Some(ErrorKind::Protocol);
        };
        // Set for every step of this target when the run connected it.
        let Some(resolved) = grpc.resolved.get() else {
            return Some(ErrorKind::Protocol);
        };
        let body = match &resolved.body {
            Some(b) => b.clone(),
            None => {
                s.body.clear();
                grpc.body.render(vars, &mut s.body);
                // The template made JSON the message does not take: the scenario's fault, a
                // check error of this step.
                let Ok(m) = message_from_json(&resolved.input, &s.body) else {
                    return Some(ErrorKind::Check);
                };
                Bytes::from(m.encode_to_vec())
            }
        };
        let mut request = tonic::Request::new(body);
        if let Some(ctx) = &shadow.context {
            shadow_metadata(request.metadata_mut(), ctx);
        }
        for (k, v) in &grpc.metadata {
            s.path.clear();
            v.render(vars, &mut s.path);
            let Ok(value) = AsciiMetadataValue::try_from(&s.path[..]) else {
                return Some(ErrorKind::Check);
            };
            request.metadata_mut().insert(k.clone(), value);
        }
        let (code, metadata, reply) = match self.unary(request, grpc.path.clone()).await {
            Ok(r) => {
                let (metadata, reply, _) = r.into_parts();
                (Code::Ok, metadata, reply)
            }
            Err(s) if s.code() == Code::DeadlineExceeded && s.metadata().is_empty() => {
                return Some(ErrorKind::Timeout);
            }
            Err(s) if is_transport(&s) => return Some(ErrorKind::Connect),
            Err(s) => (s.code(), s.metadata().clone(), Bytes::new()),
        };
        if let Some(e) = check_status(step, code as u16, code == Code::Ok) {
            return Some(e);
        }
        extract(step, &resolved.output, metadata, &reply, &mut s.extracted)
    }
}

impl Grpc {
    /// Fills `step`'s method descriptors (and its encoded body, if it has no template) from
    /// this target's descriptors. An unknown method or a body the message does not take is
    /// an error naming the step.
    pub(crate) fn prepare(&self, step: &Step) -> Result<(), BoxError> {
        let Action::Grpc(grpc) = &step.action else {
            return Ok(());
        };
        let resolved =
            resolve(&self.pool, grpc).map_err(|(_, e)| format!("step {:?}: {e}", step.name))?;
        let _ = grpc.resolved.set(resolved);
        Ok(())
    }

    /// One unary call with this target's timeout, on the next connection in turn.
    async fn unary(
        &self,
        mut request: tonic::Request<Bytes>,
        path: http::uri::PathAndQuery,
    ) -> Result<tonic::Response<Bytes>, Status> {
        request.set_timeout(self.timeout);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        let mut client = tonic::client::Grpc::new(self.channels[i].clone());
        let call = async {
            client
                .ready()
                .await
                .map_err(|e| Status::from_error(Box::new(e)))?;
            client.unary(request, path, RawCodec).await
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("timed out")))
    }
}

/// Whether `status` stands for a connection that could not be made or broke (tonic's own,
/// not the server's answer).
fn is_transport(status: &Status) -> bool {
    status.code() == Code::Unavailable && status.metadata().is_empty()
}

/// The shadow tag as request metadata.
fn shadow_metadata(metadata: &mut MetadataMap, context: &ShadowContext) {
    let mut headers = http::HeaderMap::new();
    context.inject(&mut headers);
    for (k, v) in &headers {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::AsciiMetadataKey::from_bytes(k.as_str().as_bytes()),
            AsciiMetadataValue::try_from(v.as_bytes()),
        ) {
            metadata.insert(k, v);
        }
    }
}

/// `grpc`'s method in `pool`, and its body encoded if it has no template; an error names the
/// field at fault (`method` or `body`).
pub(crate) fn resolve(
    pool: &DescriptorPool,
    grpc: &GrpcCall,
) -> Result<GrpcResolved, (&'static str, String)> {
    let (service, method) = grpc.method.rsplit_once('/').ok_or_else(|| {
        (
            "method",
            format!("{:?} is not package.Service/Method", grpc.method),
        )
    })?;
    let Some(svc) = pool.get_service_by_name(service) else {
        let known: Vec<_> = pool.services().map(|s| s.full_name().to_owned()).collect();
        return Err((
            "method",
            format!(
                "no service {service:?} in the descriptors (services: {})",
                known.join(", ")
            ),
        ));
    };
    let Some(m) = svc.methods().find(|m| m.name() == method) else {
        let known: Vec<_> = svc.methods().map(|m| m.name().to_owned()).collect();
        return Err((
            "method",
            format!(
                "service {service:?} has no method {method:?} (methods: {})",
                known.join(", ")
            ),
        ));
    };
    if m.is_client_streaming() || m.is_server_streaming() {
        return Err((
            "method",
            format!(
                "{} is a streaming method; steps call unary methods",
                grpc.method
            ),
        ));
    }
    let body = match grpc.body.as_static() {
        Some(json) => Some(Bytes::from(
            message_from_json(&m.input(), json)
                .map_err(|e| {
                    (
                        "body",
                        format!("the body is not a {}: {e}", m.input().full_name()),
                    )
                })?
                .encode_to_vec(),
        )),
        None => None,
    };
    Ok(GrpcResolved {
        input: m.input(),
        output: m.output(),
        body,
    })
}

/// JSON (the proto3 mapping) as a `desc` message.
fn message_from_json(desc: &MessageDescriptor, json: &[u8]) -> Result<DynamicMessage, String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let m = DynamicMessage::deserialize(desc.clone(), &mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(m)
}

/// The step's checks on a reply's fields and its extractions: its fields as JSON (`json`,
/// `regex`, `body-contains`) or its metadata (`header`). A reply that does not decode, or a
/// value not in it, is a check error.
fn extract(
    step: &Step,
    output: &MessageDescriptor,
    metadata: MetadataMap,
    reply: &[u8],
    extracted: &mut Vec<(std::sync::Arc<str>, Vec<u8>)>,
) -> Option<ErrorKind> {
    if step.extract.is_empty() && !step.checks.needs_body() {
        return None;
    }
    let Ok(json) = DynamicMessage::decode(output.clone(), reply)
        .map_err(|_| ())
        .and_then(|m| serde_json::to_vec(&m).map_err(|_| ()))
    else {
        return Some(ErrorKind::Check);
    };
    if let Some(e) = super::check_body(step, &json) {
        return Some(e);
    }
    let headers = metadata.into_headers();
    let pairs = || headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
    for e in &step.extract {
        let Some(value) = crate::scenario::extract(&e.how, pairs, &json) else {
            return Some(ErrorKind::Check);
        };
        extracted.push((e.var.clone(), value));
    }
    None
}

/// Asks the server's reflection service for every service it offers and the files that
/// declare them, imports included: v1, or v1alpha where only that is offered (grpc-go and
/// grpc-java servers of before 2022).
async fn reflect(channel: Channel) -> Result<DescriptorPool, BoxError> {
    if let Some(pool) = reflect_v1(channel.clone()).await? {
        return Ok(pool);
    }
    reflect_v1alpha(channel)
        .await?
        .ok_or_else(|| "offers no reflection service (v1 or v1alpha)".into())
}

/// One reflection client per protocol version: the two are the same messages in two packages.
/// `None` when the server does not offer that version.
macro_rules! reflect_with {
    ($name:ident, $version:ident) => {
        async fn $name(channel: Channel) -> Result<Option<DescriptorPool>, BoxError> {
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;

            let mut client = ServerReflectionClient::new(channel);
            // One request at a time on one stream: send, read the answer, decide what to ask
            // next.
            let (tx, rx) = tokio::sync::mpsc::channel::<ServerReflectionRequest>(4);
            let ask = |m: MessageRequest| ServerReflectionRequest {
                host: String::new(),
                message_request: Some(m),
            };
            tx.send(ask(MessageRequest::ListServices(String::new())))
                .await?;
            let mut answers = match client.server_reflection_info(tokio_stream_of(rx)).await {
                Ok(answers) => answers.into_inner(),
                Err(s) if s.code() == Code::Unimplemented => return Ok(None),
                Err(s) => {
                    return Err(format!(
                        "its reflection service ({}) answered {}: {}",
                        stringify!($version),
                        s.code(),
                        s.message()
                    )
                    .into());
                }
            };
            // The stream's next answer; an error answer, an empty one or the end is an error.
            let mut next = async || -> Result<MessageResponse, BoxError> {
                match answers.message().await {
                    Ok(Some(r)) => match r.message_response {
                        Some(MessageResponse::ErrorResponse(e)) => Err(format!(
                            "its reflection service answered error {}: {}",
                            e.error_code, e.error_message
                        )
                        .into()),
                        Some(m) => Ok(m),
                        None => Err("its reflection service sent an empty answer".into()),
                    },
                    Ok(None) => Err("its reflection service closed the stream".into()),
                    Err(s) => Err(format!("its reflection service failed: {}", s.message()).into()),
                }
            };
            let services = match next().await? {
                MessageResponse::ListServicesResponse(l) => l.service,
                _ => return Err("its reflection service did not list its services".into()),
            };
            let mut files: Vec<prost_reflect::prost_types::FileDescriptorProto> = Vec::new();
            let mut wanted: Vec<MessageRequest> = services
                .into_iter()
                .filter(|s| !s.name.starts_with("grpc.reflection."))
                .map(|s| MessageRequest::FileContainingSymbol(s.name))
                .collect();
            while let Some(request) = wanted.pop() {
                if let MessageRequest::FileByFilename(name) = &request
                    && files.iter().any(|f| f.name() == name)
                {
                    continue;
                }
                tx.send(ask(request)).await?;
                let MessageResponse::FileDescriptorResponse(r) = next().await? else {
                    return Err(
                        "its reflection service answered a file request with something else".into(),
                    );
                };
                for raw in r.file_descriptor_proto {
                    let file = prost_reflect::prost_types::FileDescriptorProto::decode(&raw[..])?;
                    if files.iter().any(|f| f.name() == file.name()) {
                        continue;
                    }
                    for dep in &file.dependency {
                        wanted.push(MessageRequest::FileByFilename(dep.clone()));
                    }
                    files.push(file);
                    if files.len() > MAX_REFLECTED_FILES {
                        return Err(format!(
                            "its reflection service sent over {MAX_REFLECTED_FILES} files"
                        )
                        .into());
                    }
                }
            }
            let mut pool = DescriptorPool::new();
            pool.add_file_descriptor_protos(files)?;
            Ok(Some(pool))
        }
    };
}

reflect_with!(reflect_v1, v1);
reflect_with!(reflect_v1alpha, v1alpha);

/// The receiving half of a channel as a stream of requests.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Bytes in, bytes out: requests are encoded before the call, replies decoded only if needed.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Compiles a target's `.proto` files (with protox, no protoc): `includes` are the folders
/// imports are found in; each file's own folder is one too.
pub(crate) fn compile(
    protos: &[std::path::PathBuf],
    includes: &[std::path::PathBuf],
) -> Result<DescriptorPool, String> {
    let mut dirs: Vec<std::path::PathBuf> = includes.to_vec();
    for p in protos {
        let dir = p.parent().map(|d| d.to_path_buf()).unwrap_or_default();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let fds = protox::compile(protos, &dirs).map_err(|e| e.to_string())?;
    DescriptorPool::from_file_descriptor_set(fds).map_err(|e| e.to_string())
}
