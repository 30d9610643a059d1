//! HTTP/2 with prior knowledge, through hyper: a few multiplexed connections per target,
//! each shared by the workers whose number maps to it.
//!
//! Hot path: [`Http2::execute`] builds a hyper request (its URI, rendered header values and
//! body are allocations hyper needs owned); the connection slot is read without a lock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use jupiter_core::BoxError;
use jupiter_core::shadow::{ACK_HEADER, ShadowContext};

use super::http1::error_kind;
use super::{Call, Protocol, Scratch, check_http, http_probe_acked};
use crate::error::Problem;
use crate::http1::{Endpoint, HttpError, MAX_BODY};
use crate::scenario::{Action, RunSection, Target};
use crate::stats::ErrorKind;

/// Connections per HTTP/2 target unless the target says.
const DEFAULT_CONNECTIONS: usize = 4;

/// An HTTP/2 target: a few multiplexed connections, opened on first use and reopened when
/// closed.
pub(crate) struct Http2 {
    endpoint: Endpoint,
    /// `None`: the name did not resolve; every request is a `connect` error.
    addr: Option<SocketAddr>,
    /// `https://`: the handshake of every new connection.
    tls: Option<crate::tls::Tls>,
    conns: Vec<ArcSwapOption<SendRequest<Full<Bytes>>>>,
    /// Held while opening a connection, so that waiting workers do not open one each.
    connecting: tokio::sync::Mutex<()>,
    timeout: Duration,
}

impl std::fmt::Debug for Http2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2")
            .field("endpoint", &self.endpoint)
            .field("addr", &self.addr)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Http2 {
    /// The connection for worker `i`, opened if it is not open.
    async fn sender(&self, i: usize) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        // `conns` is never empty: the scenario refuses `connections = 0`, and `connect`
        // makes at least one slot.
        let Some(slot) = self.conns.get(i % self.conns.len().max(1)) else {
            return Err(HttpError::Connect(std::io::Error::other(
                "no connection slot",
            )));
        };
        if let Some(s) = slot.load_full()
            && !s.is_closed()
        {
            return Ok((*s).clone());
        }
        let _g = self.connecting.lock().await;
        if let Some(s) = slot.load_full()
            && !s.is_closed()
        {
            return Ok((*s).clone());
        }
        let addr = self.addr.ok_or_else(|| {
            HttpError::Connect(std::io::Error::other(format!(
                "{} does not resolve",
                self.endpoint.host
            )))
        })?;
        let stream =
            tokio::time::timeout(self.timeout, crate::http1::connect(addr, self.tls.as_ref()))
                .await
                .map_err(|_| HttpError::Connect(std::io::ErrorKind::TimedOut.into()))?
                .map_err(HttpError::Connect)?;
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .map_err(HttpError::Handshake)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        slot.store(Some(Arc::new(send.clone())));
        Ok(send)
    }
}

impl Protocol for Http2 {
    async fn connect(target: &Target, run: &RunSection) -> Result<Self, BoxError> {
        let endpoint = Endpoint::parse(target.spec.url.as_deref().unwrap_or_default())?;
        // As for HTTP/1.1: a name that does not resolve counts as connect errors.
        let addr = endpoint.resolve().await.ok();
        let n = target
            .spec
            .connections
            .unwrap_or(DEFAULT_CONNECTIONS)
            .max(1);
        // HTTPS: ALPN `h2` (without TLS, HTTP/2 is spoken by prior knowledge).
        let tls = match endpoint.tls {
            true => Some(crate::tls::Tls::new(
                &target.spec.tls,
                &endpoint.host,
                b"h2",
            )?),
            false => None,
        };
        Ok(Http2 {
            endpoint,
            addr,
            tls,
            conns: (0..n).map(|_| ArcSwapOption::empty()).collect(),
            connecting: tokio::sync::Mutex::new(()),
            timeout: run.timeout,
        })
    }

    async fn probe(&self, target: &Target, context: &ShadowContext) -> Result<(), Problem> {
        let failed = |e: BoxError| Problem::caused_by("did not answer the probe", e);
        let mut send = self.sender(0).await.map_err(|e| failed(e.into()))?;
        let mut req = http::Request::builder()
            .uri(format!(
                "{}://{}{}",
                self.endpoint.scheme(),
                self.endpoint.authority,
                target.spec.probe
            ))
            .body(Full::new(Bytes::new()))
            .map_err(|e| Problem::caused_by("has a probe path that is not a URI", e))?;
        context.inject(req.headers_mut());
        let resp = send.send_request(req).await.map_err(|e| failed(e.into()))?;
        let ack = resp.headers().get(ACK_HEADER).map(|v| v.as_bytes());
        http_probe_acked(ack, &target.spec.probe)
    }

    async fn execute(&self, call: Call<'_>, s: &mut Scratch) -> Option<ErrorKind> {
        let Call { step, vars, shadow } = call;
        let Action::Http(request) = &step.action else {
            return Some(ErrorKind::Protocol);
        };
        // The worker number picks the connection: a worker keeps to one, the workers spread.
        let mut send = match self.sender(vars.vu as usize).await {
            Ok(s) => s,
            Err(e) => return Some(error_kind(&e)),
        };
        s.path.clear();
        request.path.render(vars, &mut s.path);
        let uri = format!(
            "{}://{}{}",
            self.endpoint.scheme(),
            self.endpoint.authority,
            String::from_utf8_lossy(&s.path)
        );
        let mut b = http::Request::builder()
            .method(request.method.clone())
            .uri(uri);
        for (n, t) in &request.headers {
            b = b.header(n, t.render_vec(vars));
        }
        if !vars.cookie.is_empty() {
            b = b.header(http::header::COOKIE, vars.cookie);
        }
        let body = match &request.body {
            Some(t) => Bytes::from(t.render_vec(vars)),
            None => Bytes::new(),
        };
        let Ok(mut req) = b.body(Full::new(body)) else {
            return Some(ErrorKind::Protocol);
        };
        if let Some(ctx) = &shadow.context {
            ctx.inject(req.headers_mut());
        }
        let Ok(resp) = send.send_request(req).await else {
            return Some(ErrorKind::Protocol);
        };
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Some(ErrorKind::Protocol),
        };
        let hs = || {
            parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
        };
        check_http(
            step,
            status,
            hs,
            &body,
            &mut s.extracted,
            &mut s.set_cookies,
        )
    }
}
