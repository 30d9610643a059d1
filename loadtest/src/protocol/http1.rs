//! HTTP/1.1 through the crate's own engine ([`crate::http1`]): keep-alive connections in a
//! lock-free pool, requests encoded into the worker's [`Scratch`].
//!
//! Hot path: [`Http1::execute`] allocates only for the response headers a step checks (the
//! engine copies each one out); templates render into the worker's [`Scratch`].

use jupiter_core::BoxError;
use jupiter_core::shadow::{ACK_HEADER, ShadowContext};

use super::{Call, Protocol, Scratch, check_http, header_lines, http_probe_acked};
use crate::error::Problem;
use crate::http1::{self, Endpoint, HttpError, Pool};
use crate::scenario::{Action, RunSection, Target};
use crate::stats::ErrorKind;

/// An HTTP/1.1 target.
#[derive(Debug)]
pub(crate) struct Http1 {
    endpoint: Endpoint,
    /// `None`: the name did not resolve; every request is a `connect` error.
    pool: Option<Pool>,
}

/// Connections per HTTP/1.1 target unless the target says (one request each at a time).
const DEFAULT_CONNECTIONS: usize = 1024;

impl Protocol for Http1 {
    async fn connect(target: &Target, run: &RunSection) -> Result<Self, BoxError> {
        let endpoint = Endpoint::parse(target.spec.url.as_deref().unwrap_or_default())?;
        // A name that does not resolve is counted as connect errors, like a refused
        // connection: the run goes on and the thresholds decide.
        let addr = endpoint.resolve().await.ok();
        let max = target.spec.connections.unwrap_or(DEFAULT_CONNECTIONS);
        let tls = match endpoint.tls {
            true => Some(crate::tls::Tls::new(
                &target.spec.tls,
                &endpoint.host,
                b"http/1.1",
            )?),
            false => None,
        };
        Ok(Http1 {
            pool: addr.map(|a| Pool::new(a, tls, max, run.timeout)),
            endpoint,
        })
    }

    async fn probe(&self, target: &Target, context: &ShadowContext) -> Result<(), Problem> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| Problem::new(format!("({}) does not resolve", self.endpoint.host)))?;
        let headers = header_lines(context);
        let mut req = Vec::new();
        http1::encode(
            &mut req,
            &http::Method::GET,
            target.spec.probe.as_bytes(),
            &self.endpoint.authority,
            headers.iter().map(|(k, v)| (k.as_str(), &v[..])),
            None,
        );
        let mut out = http1::Response::default();
        pool.send(
            &req,
            false,
            &[(ACK_HEADER.to_owned(), String::new())],
            false,
            &mut out,
        )
        .await
        .map_err(|e| Problem::caused_by("did not answer the probe", e))?;
        let ack = out.headers.first().map(|(_, v)| v.as_slice());
        http_probe_acked(ack, &target.spec.probe)
    }

    async fn execute(&self, call: Call<'_>, s: &mut Scratch) -> Option<ErrorKind> {
        let Call { step, vars, shadow } = call;
        let Action::Http(request) = &step.action else {
            return Some(ErrorKind::Protocol);
        };
        let Some(pool) = &self.pool else {
            return Some(ErrorKind::Connect);
        };
        let method = &request.method;
        s.path.clear();
        request.path.render(vars, &mut s.path);
        s.headers.resize_with(request.headers.len(), Vec::new);
        for ((_, t), buf) in request.headers.iter().zip(s.headers.iter_mut()) {
            buf.clear();
            t.render(vars, buf);
        }
        let hs = request
            .headers
            .iter()
            .zip(&s.headers)
            .map(|((n, _), v)| (n.as_str(), &v[..]))
            .chain(shadow.headers.iter().map(|(n, v)| (n.as_str(), &v[..])))
            .chain((!vars.cookie.is_empty()).then_some(("cookie", vars.cookie)));
        let body = request.body.as_ref().map(|b| {
            s.body.clear();
            b.render(vars, &mut s.body);
            &s.body[..]
        });
        s.req.clear();
        http1::encode(
            &mut s.req,
            method,
            &s.path,
            &self.endpoint.authority,
            hs,
            body,
        );
        let head = *method == http::Method::HEAD;
        if let Err(e) = pool
            .send(
                &s.req,
                head,
                &step.keep_headers,
                step.needs_body(),
                &mut s.resp,
            )
            .await
        {
            return Some(error_kind(&e));
        }
        let r = &s.resp;
        let hs = || r.headers.iter().map(|(k, v)| (k.as_str(), &v[..]));
        check_http(
            step,
            r.status,
            hs,
            &r.body,
            &mut s.extracted,
            &mut s.set_cookies,
        )
    }
}

/// How an engine error counts.
pub(super) fn error_kind(e: &HttpError) -> ErrorKind {
    match e {
        HttpError::Connect(io) if io.kind() == std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
        HttpError::Connect(_) => ErrorKind::Connect,
        HttpError::Io(_) | HttpError::Handshake(_) | HttpError::Protocol(_) => ErrorKind::Protocol,
    }
}
