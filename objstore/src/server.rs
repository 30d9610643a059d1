//! The gRPC service on the engine: `jupiter.objstore.v1.ObjectStore`, plus the standard health
//! and reflection services.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use jupiter_core::Metrics;
use jupiter_core::metrics::{Code, HandleMetrics};
use jupiter_core::shadow::{Access, Route, ShadowPolicy};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::Error;
use crate::engine::{Condition, Engine, EventKind, Object, Put};
use crate::proto;
use crate::proto::object_store_server::ObjectStore;

pub use crate::protocol::{CURRENT_REVISION, MAX_BATCH, MAX_LIST, RESUME_FROM};
const PAGE_TOKEN_PREFIX: &str = "v1.";

/// Service limits and policies. Its `Debug` output never shows the token.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Largest object, in bytes (Put, Upload).
    pub max_object: usize,
    /// Where shadow traffic goes: keys under this prefix. Live keys may not start with it.
    pub shadow_prefix: Option<Bytes>,
    /// A bearer token every call must carry (`authorization: Bearer <token>`).
    pub auth_token: Option<String>,
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("max_object", &self.max_object)
            .field("shadow_prefix", &self.shadow_prefix)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_object: 64 * 1024 * 1024,
            shadow_prefix: Some(Bytes::from_static(b"__shadow__/")),
            auth_token: None,
        }
    }
}

/// The ObjectStore service.
#[derive(Clone, Debug)]
pub struct Service {
    engine: Engine,
    config: ServiceConfig,
    shadow: ShadowPolicy,
    metrics: Metrics,
    snapshots: Option<std::sync::Arc<crate::snapshot::Snapshotter>>,
}

type Result<T> = std::result::Result<Response<T>, Status>;

/// `status` carrying `value` under `key` in its metadata.
fn with_number(mut status: Status, key: &'static str, value: u64) -> Status {
    status
        .metadata_mut()
        .insert(key, tonic::metadata::MetadataValue::from(value));
    status
}

fn status(e: Error) -> Status {
    match e {
        Error::Invalid(m) => Status::invalid_argument(m),
        Error::Precondition { current } => match current {
            Some(r) => with_number(
                Status::failed_precondition(format!("condition failed: current revision is {r}")),
                CURRENT_REVISION,
                r,
            ),
            None => Status::failed_precondition("condition failed: the key does not exist"),
        },
        Error::Exhausted(m) => Status::resource_exhausted(m),
        Error::NotFound => Status::not_found("no such key"),
        e @ (Error::Compacted { .. } | Error::Future { .. } | Error::Lagged { .. }) => {
            Status::out_of_range(e.to_string())
        }
        // Not what the engine answers a call (client-side and snapshot errors).
        e => Status::internal(e.to_string()),
    }
}

fn meta(o: &Object) -> proto::ObjectMeta {
    proto::ObjectMeta {
        create_revision: o.create_revision,
        mod_revision: o.mod_revision,
        version: o.version,
        etag: o.etag(),
        size: o.value.len() as u64,
        content_type: o.content_type.clone().unwrap_or_default(),
        metadata: o.metadata.iter().cloned().collect(),
        expires_at_ms: o.expires_at_ms.unwrap_or(0),
    }
}

fn condition(c: Option<proto::Condition>) -> Condition {
    match c.and_then(|c| c.kind) {
        None => Condition::Always,
        Some(proto::condition::Kind::IfAbsent(true)) => Condition::IfAbsent,
        Some(proto::condition::Kind::IfAbsent(false)) => Condition::Always,
        Some(proto::condition::Kind::IfRevision(r)) => Condition::IfRevision(r),
        Some(proto::condition::Kind::IfEtag(t)) => Condition::IfEtag(t),
    }
}

fn encode_token(key: &[u8]) -> String {
    let mut s = String::with_capacity(PAGE_TOKEN_PREFIX.len() + key.len() * 2);
    s.push_str(PAGE_TOKEN_PREFIX);
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn decode_token(token: &str) -> std::result::Result<Vec<u8>, Status> {
    let bad = || Status::invalid_argument("invalid page_token: pass next_page_token unchanged");
    let hex = token.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(bad)?;
    if hex.len() % 2 != 0 || hex.is_empty() {
        return Err(bad());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

impl Service {
    /// A service on `engine`.
    pub fn new(engine: Engine, config: ServiceConfig, metrics: &Metrics) -> Service {
        let shadow = match &config.shadow_prefix {
            Some(p) => ShadowPolicy::key_prefix("objstore", p),
            None => ShadowPolicy::none("objstore"),
        };
        Service {
            engine,
            config,
            shadow,
            metrics: metrics.clone(),
            snapshots: None,
        }
    }

    /// Serves the Snapshot call with `snapshots`.
    #[must_use]
    pub fn with_snapshots(
        mut self,
        snapshots: std::sync::Arc<crate::snapshot::Snapshotter>,
    ) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// The tonic server for this service, with its message limits.
    pub fn into_server(self) -> proto::object_store_server::ObjectStoreServer<Service> {
        // Room for the largest object plus the message's other fields.
        let limit = self.config.max_object + 64 * 1024;
        proto::object_store_server::ObjectStoreServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// The prefix of the key space a request may touch: the shadow namespace under a shadow
    /// context, else live keys. Refused shadow requests are PERMISSION_DENIED.
    fn route(&self, access: Access) -> std::result::Result<Option<&[u8]>, Status> {
        match self.shadow.route(access) {
            Err(e) => Err(Status::permission_denied(e.to_string())),
            Ok(Route::Live) => Ok(None),
            Ok(Route::Shadow) => Ok(self.config.shadow_prefix.as_deref()),
        }
    }

    /// The stored key for a client's key. Reads check it as writes do: an empty or oversized
    /// key is INVALID_ARGUMENT everywhere, never a NOT_FOUND.
    fn key(&self, key: Bytes, access: Access) -> std::result::Result<Bytes, Status> {
        let stored = self.map_key(key, access)?;
        self.engine.check_key(&stored).map_err(status)?;
        Ok(stored)
    }

    fn map_key(&self, key: Bytes, access: Access) -> std::result::Result<Bytes, Status> {
        match self.route(access)? {
            None => {
                if let Some(p) = &self.config.shadow_prefix
                    && key.starts_with(p)
                {
                    return Err(Status::invalid_argument(
                        "keys under the shadow prefix are reserved for shadow traffic",
                    ));
                }
                Ok(key)
            }
            Some(prefix) => {
                if key.is_empty() {
                    return Err(Status::invalid_argument("key is empty"));
                }
                let mut k = BytesMut::with_capacity(prefix.len() + key.len());
                k.extend_from_slice(prefix);
                k.extend_from_slice(&key);
                Ok(k.freeze())
            }
        }
    }

    /// The client's view of a stored key.
    fn unmap(&self, key: &Bytes, shadow: Option<&[u8]>) -> Bytes {
        match shadow {
            Some(p) => key.slice(p.len().min(key.len())..),
            None => key.clone(),
        }
    }

    fn check_auth<T>(&self, req: &Request<T>) -> std::result::Result<(), Status> {
        let Some(token) = &self.config.auth_token else {
            return Ok(());
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }

    fn to_put(&self, p: proto::PutRequest) -> std::result::Result<Put, Status> {
        if p.value.len() > self.config.max_object {
            return Err(Status::invalid_argument(format!(
                "value of {} bytes exceeds the limit of {} bytes",
                p.value.len(),
                self.config.max_object
            )));
        }
        Ok(Put {
            // Both go as they are: the engine copies them into a segment (the one copy on
            // the way in), so the transport's receive buffer is released after the call.
            key: self.key(p.key, Access::Write)?,
            value: p.value,
            ttl: (p.ttl_ms > 0).then(|| Duration::from_millis(p.ttl_ms)),
            content_type: (!p.content_type.is_empty()).then_some(p.content_type),
            metadata: sorted(p.metadata),
            condition: condition(p.condition),
        })
    }

    fn do_put(&self, p: proto::PutRequest) -> std::result::Result<proto::PutResponse, Status> {
        let put = self.to_put(p)?;
        let o = self.engine.put(put).map_err(status)?;
        Ok(proto::PutResponse {
            revision: o.mod_revision,
            meta: Some(meta(&o)),
        })
    }
}

fn sorted(m: HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_unstable();
    v
}

/// Compares without an early exit, so the time taken does not reveal how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

/// Records `server_handle_*{type="grpc"}` for one call.
struct Call<'a> {
    recorder: Option<jupiter_core::metrics::Recorder<'a>>,
}

impl Call<'_> {
    fn finish<T>(mut self, r: &std::result::Result<T, Status>) {
        if let Some(rec) = self.recorder.take() {
            rec.finish(match r {
                Ok(_) => Code::OK,
                Err(s) => Code::grpc(s.code() as i32),
            });
        }
    }
}

/// The metric series of `method` for the caller of `req` (by IP address; resolved series
/// cost the registry a read lock and a lookup).
fn series<T>(metrics: &Metrics, method: &'static str, req: &Request<T>) -> HandleMetrics {
    match req.remote_addr() {
        Some(a) => metrics.server("grpc", method, a.ip()),
        None => metrics.server("grpc", method, "unknown"),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

macro_rules! call {
    ($self:ident, $method:literal, $req:ident, $body:expr) => {{
        let handle = series(&$self.metrics, $method, &$req);
        let call = Call {
            recorder: Some(handle.start()),
        };
        let r = (|| -> std::result::Result<_, Status> {
            $self.check_auth(&$req)?;
            $body
        })();
        call.finish(&r);
        r.map(Response::new)
    }};
}

#[tonic::async_trait]
impl ObjectStore for Service {
    async fn put(&self, req: Request<proto::PutRequest>) -> Result<proto::PutResponse> {
        call!(self, "/jupiter.objstore.v1.ObjectStore/Put", req, {
            let p = req.get_ref().clone();
            self.do_put(p)
        })
    }

    async fn get(&self, req: Request<proto::GetRequest>) -> Result<proto::GetResponse> {
        call!(self, "/jupiter.objstore.v1.ObjectStore/Get", req, {
            let key = self.key(req.get_ref().key.clone(), Access::Read)?;
            let o = self
                .engine
                .get(&key)
                .ok_or_else(|| Status::not_found("no such key"))?;
            Ok(proto::GetResponse {
                value: o.value.clone(),
                meta: Some(meta(&o)),
            })
        })
    }

    async fn head(&self, req: Request<proto::HeadRequest>) -> Result<proto::HeadResponse> {
        call!(self, "/jupiter.objstore.v1.ObjectStore/Head", req, {
            let key = self.key(req.get_ref().key.clone(), Access::Read)?;
            let o = self
                .engine
                .get(&key)
                .ok_or_else(|| Status::not_found("no such key"))?;
            Ok(proto::HeadResponse {
                meta: Some(meta(&o)),
            })
        })
    }

    async fn delete(&self, req: Request<proto::DeleteRequest>) -> Result<proto::DeleteResponse> {
        call!(self, "/jupiter.objstore.v1.ObjectStore/Delete", req, {
            let r = req.get_ref();
            let key = self.key(r.key.clone(), Access::Write)?;
            let revision = self
                .engine
                .delete(&key, &condition(r.condition.clone()))
                .map_err(status)?;
            Ok(proto::DeleteResponse { revision })
        })
    }

    async fn list(&self, req: Request<proto::ListRequest>) -> Result<proto::ListResponse> {
        call!(self, "/jupiter.objstore.v1.ObjectStore/List", req, {
            let r = req.get_ref();
            let limit = match r.limit as usize {
                0 => 1000,
                n if n > MAX_LIST => {
                    return Err(Status::invalid_argument(format!(
                        "limit {n} exceeds {MAX_LIST}"
                    )));
                }
                n => n,
            };
            let shadow = self.route(Access::Read)?;
            let mut prefix = shadow.map(<[u8]>::to_vec).unwrap_or_default();
            prefix.extend_from_slice(&r.prefix);
            let after = if r.page_token.is_empty() {
                None
            } else {
                let mut k = shadow.map(<[u8]>::to_vec).unwrap_or_default();
                k.extend(decode_token(&r.page_token)?);
                Some(k)
            };
            // Live listings never show the shadow namespace.
            let exclude = match shadow {
                None => self.config.shadow_prefix.as_deref(),
                Some(_) => None,
            };
            let (page, more) =
                self.engine
                    .list_excluding(&prefix, after.as_deref(), limit, exclude);
            let next_page_token = match (more, page.last()) {
                (true, Some(last)) => encode_token(&self.unmap(&last.key, shadow)),
                _ => String::new(),
            };
            Ok(proto::ListResponse {
                items: page
                    .iter()
                    .map(|l| proto::ListItem {
                        key: self.unmap(&l.key, shadow),
                        meta: Some(meta(&l.object)),
                    })
                    .collect(),
                next_page_token,
            })
        })
    }

    async fn batch_get(
        &self,
        req: Request<proto::BatchGetRequest>,
    ) -> Result<proto::BatchGetResponse> {
        call!(self, "/jupiter.objstore.v1.ObjectStore/BatchGet", req, {
            let keys = &req.get_ref().keys;
            if keys.len() > MAX_BATCH {
                return Err(Status::invalid_argument(format!(
                    "{} keys exceed the batch limit of {MAX_BATCH}",
                    keys.len()
                )));
            }
            let mut items = Vec::with_capacity(keys.len());
            for k in keys {
                let stored = self.key(k.clone(), Access::Read)?;
                items.push(match self.engine.get(&stored) {
                    Some(o) => proto::BatchGetItem {
                        key: k.clone(),
                        found: true,
                        value: o.value.clone(),
                        meta: Some(meta(&o)),
                    },
                    None => proto::BatchGetItem {
                        key: k.clone(),
                        ..Default::default()
                    },
                });
            }
            Ok(proto::BatchGetResponse { items })
        })
    }

    async fn batch_put(
        &self,
        req: Request<proto::BatchPutRequest>,
    ) -> Result<proto::BatchPutResponse> {
        call!(self, "/jupiter.objstore.v1.ObjectStore/BatchPut", req, {
            let puts = &req.get_ref().puts;
            if puts.len() > MAX_BATCH {
                return Err(Status::invalid_argument(format!(
                    "{} writes exceed the batch limit of {MAX_BATCH}",
                    puts.len()
                )));
            }
            let results = puts
                .iter()
                .map(|p| match self.do_put(p.clone()) {
                    Ok(put) => proto::BatchPutResult {
                        code: 0,
                        message: String::new(),
                        put: Some(put),
                        current_revision: None,
                    },
                    Err(s) => proto::BatchPutResult {
                        code: s.code() as i32,
                        message: s.message().to_owned(),
                        put: None,
                        current_revision: s
                            .metadata()
                            .get(CURRENT_REVISION)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok()),
                    },
                })
                .collect();
            Ok(proto::BatchPutResponse { results })
        })
    }

    type WatchStream = BoxStream<proto::WatchEvent>;

    async fn watch(&self, req: Request<proto::WatchRequest>) -> Result<Self::WatchStream> {
        call!(self, "/jupiter.objstore.v1.ObjectStore/Watch", req, {
            let r = req.get_ref().clone();
            let shadow = self.route(Access::Read)?.map(Bytes::copy_from_slice);
            let mut prefix = shadow.as_deref().map(<[u8]>::to_vec).unwrap_or_default();
            prefix.extend_from_slice(&r.prefix);
            let mut watcher = self
                .engine
                .watch(Bytes::from(prefix), r.start_revision)
                .map_err(|e| Status::out_of_range(e.to_string()))?;
            let live_shadow = self.config.shadow_prefix.clone();
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(async move {
                loop {
                    // A watcher whose client went away ends now, not at its next event: on a
                    // quiet prefix that could be never.
                    let next = tokio::select! {
                        next = watcher.next() => next,
                        () = tx.closed() => return,
                    };
                    let Some(next) = next else { return };
                    let item = match next {
                        Ok(e) => {
                            if shadow.is_none()
                                && live_shadow.as_ref().is_some_and(|p| e.key.starts_with(p))
                            {
                                continue;
                            }
                            let key = match &shadow {
                                Some(p) => e.key.slice(p.len().min(e.key.len())..),
                                None => e.key.clone(),
                            };
                            Ok(proto::WatchEvent {
                                revision: e.revision,
                                key,
                                r#type: match e.kind {
                                    EventKind::Put => proto::EventType::Put,
                                    EventKind::Delete => proto::EventType::Delete,
                                    EventKind::Expire => proto::EventType::Expire,
                                    EventKind::Evict => proto::EventType::Evict,
                                } as i32,
                                meta: e.object.as_ref().map(meta),
                                value: match (&e.object, r.include_values) {
                                    (Some(o), true) => o.value.clone(),
                                    _ => Bytes::new(),
                                },
                            })
                        }
                        Err(Error::Lagged { resume_from }) => Err(with_number(
                            Status::out_of_range(format!(
                                "watcher fell behind; resume from revision {resume_from}"
                            )),
                            RESUME_FROM,
                            resume_from,
                        )),
                        Err(e) => Err(Status::out_of_range(e.to_string())),
                    };
                    let end = item.is_err();
                    if tx.send(item).await.is_err() || end {
                        return;
                    }
                }
            });
            let stream: Self::WatchStream =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(stream)
        })
    }

    async fn upload(
        &self,
        req: Request<Streaming<proto::UploadChunk>>,
    ) -> Result<proto::PutResponse> {
        let handle = series(
            &self.metrics,
            "/jupiter.objstore.v1.ObjectStore/Upload",
            &req,
        );
        let call = Call {
            recorder: Some(handle.start()),
        };
        let r = async {
            self.check_auth(&req)?;
            let mut stream = req.into_inner();
            let (header, size) = match stream.next().await {
                Some(Ok(proto::UploadChunk {
                    part:
                        Some(proto::upload_chunk::Part::Header(proto::UploadHeader {
                            put: Some(put),
                            size,
                        })),
                })) => (put, size),
                Some(Err(s)) => return Err(s),
                _ => {
                    return Err(Status::invalid_argument(
                        "the first upload message must be the header (put and size)",
                    ));
                }
            };
            if !header.value.is_empty() {
                return Err(Status::invalid_argument(
                    "the upload header carries no value; send it in data chunks",
                ));
            }
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > self.config.max_object {
                return Err(Status::invalid_argument(format!(
                    "object of {size} bytes exceeds the limit of {} bytes",
                    self.config.max_object
                )));
            }
            let mut value = BytesMut::with_capacity(size);
            while let Some(chunk) = stream.next().await {
                // A broken stream (client gone) stores nothing.
                match chunk?.part {
                    Some(proto::upload_chunk::Part::Data(d)) => {
                        if value.len() + d.len() > size {
                            return Err(Status::invalid_argument(format!(
                                "more data than the {size} bytes announced"
                            )));
                        }
                        value.extend_from_slice(&d);
                    }
                    _ => return Err(Status::invalid_argument("a second upload header")),
                }
            }
            if value.len() != size {
                return Err(Status::aborted(format!(
                    "upload ended after {} of {size} bytes; nothing stored",
                    value.len()
                )));
            }
            self.do_put(proto::PutRequest {
                value: value.freeze(),
                ..header
            })
        }
        .await;
        call.finish(&r);
        r.map(Response::new)
    }

    async fn snapshot(
        &self,
        req: Request<proto::SnapshotRequest>,
    ) -> Result<proto::SnapshotResponse> {
        let handle = series(
            &self.metrics,
            "/jupiter.objstore.v1.ObjectStore/Snapshot",
            &req,
        );
        let call = Call {
            recorder: Some(handle.start()),
        };
        let r = self.snapshot_call(req).await;
        call.finish(&r);
        r.map(Response::new)
    }

    type DownloadStream = BoxStream<proto::DownloadChunk>;

    async fn download(&self, req: Request<proto::DownloadRequest>) -> Result<Self::DownloadStream> {
        call!(self, "/jupiter.objstore.v1.ObjectStore/Download", req, {
            let r = req.get_ref();
            let chunk = match r.chunk_size as usize {
                0 => 64 * 1024,
                n if (16 * 1024..=64 * 1024).contains(&n) => n,
                n => {
                    return Err(Status::invalid_argument(format!(
                        "chunk_size {n} is outside 16 KiB..=64 KiB"
                    )));
                }
            };
            let key = self.key(r.key.clone(), Access::Read)?;
            let o = self
                .engine
                .get(&key)
                .ok_or_else(|| Status::not_found("no such key"))?;
            let first = proto::DownloadChunk {
                part: Some(proto::download_chunk::Part::Meta(meta(&o))),
            };
            // Slices of the stored value: no copy.
            let value = o.value;
            let chunks = (0..value.len()).step_by(chunk).map(move |at| {
                Ok(proto::DownloadChunk {
                    part: Some(proto::download_chunk::Part::Data(
                        value.slice(at..(at + chunk).min(value.len())),
                    )),
                })
            });
            let stream: Self::DownloadStream =
                Box::pin(tokio_stream::iter(std::iter::once(Ok(first)).chain(chunks)));
            Ok(stream)
        })
    }
}

impl Service {
    async fn snapshot_call(
        &self,
        req: Request<proto::SnapshotRequest>,
    ) -> std::result::Result<proto::SnapshotResponse, Status> {
        self.check_auth(&req)?;
        // Shadow traffic never triggers operations on live data.
        if self.route(Access::Write)?.is_some() {
            return Err(Status::permission_denied(
                "shadow requests cannot take snapshots",
            ));
        }
        let s = self
            .snapshots
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("no snapshot path is configured"))?;
        let stats = s
            .take()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(proto::SnapshotResponse {
            objects: stats.objects,
            revision: stats.revision,
            bytes: stats.bytes,
            path: s.path().display().to_string(),
        })
    }
}

/// Runs the ObjectStore, health and reflection services on `listener` until `shutdown`.
///
/// # Errors
///
/// The transport failed.
pub async fn serve(
    service: Service,
    listener: tokio::net::TcpListener,
    shadow: jupiter_core::shadow::ShadowLayer,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::result::Result<(), tonic::transport::Error> {
    serve_with(service, listener, shadow, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given.
///
/// # Errors
///
/// The TLS settings are invalid, or the transport failed.
pub async fn serve_with(
    service: Service,
    listener: tokio::net::TcpListener,
    shadow: jupiter_core::shadow::ShadowLayer,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::result::Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<proto::object_store_server::ObjectStoreServer<Service>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    // grpcurl before 1.9, Postman and grpcio's reflection client ask v1alpha only.
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .layer(shadow)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(
            // Small replies must not wait for Nagle (40 ms with a delayed ACK on the peer).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let k = b"a/\x00\xff";
        assert_eq!(decode_token(&encode_token(k)).unwrap(), k);
        for bad in ["", "v1.", "v1.abc", "v2.00", "v1.zz", "garbage"] {
            assert_eq!(
                decode_token(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn engine_errors_map_to_statuses() {
        use tonic::Code;
        for (e, code) in [
            (Error::Invalid("x".into()), Code::InvalidArgument),
            (
                Error::Precondition { current: Some(3) },
                Code::FailedPrecondition,
            ),
            (Error::Exhausted("x".into()), Code::ResourceExhausted),
            (Error::NotFound, Code::NotFound),
        ] {
            assert_eq!(status(e).code(), code);
        }
    }
}
