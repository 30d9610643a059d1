//! The protocols a step can speak, one file each, behind one trait.
//!
//! # Adding a protocol
//!
//! 1. A file here with a type implementing [`Protocol`]: how it connects, how it proves that a
//!    live target keeps shadow traffic apart, and how it sends one request.
//! 2. A variant in [`TargetClient`] and a line in `dispatch!` below; a branch in
//!    [`TargetClient::connect`] that picks it from the target's `kind`.
//! 3. Its `kind` ([`TargetKind`]) and its request ([`Action`](crate::scenario::Action)) in the
//!    scenario file.
//!
//! # Hot path
//!
//! [`Protocol::execute`] runs once per request, on a worker's task. It must not take a lock,
//! log, or allocate beyond what the protocol's own client needs: rendered templates go into
//! the worker's [`Scratch`], reused from one request to the next. Dispatch is a `match` over
//! [`TargetClient`]; no boxed future, no trait object.

mod grpc;
mod http1;
mod http2;
mod objstore;
mod redis;
mod websocket;

pub(crate) use self::grpc::{compile as compile_protos, resolve as resolve_grpc};

use std::time::{Duration, Instant};

use jupiter_core::shadow::ShadowContext;

use crate::error::Problem;
use crate::scenario::{RunSection, Step, Target, TargetKind};
use crate::stats::ErrorKind;
use crate::template::Vars;
use jupiter_core::BoxError;

/// One protocol's client for one target: made once, probed once, then shared by every worker.
pub(crate) trait Protocol: Sized + Send + Sync {
    /// Sets up the client for `target`. Connections may be opened lazily: a target that does
    /// not answer counts as `connect` errors during the run, and the thresholds decide.
    async fn connect(target: &Target, run: &RunSection) -> Result<Self, BoxError>;

    /// Checks that the target acknowledges shadow traffic tagged with `context`; the error's
    /// message is a phrase that follows the target's name (`did not answer the probe`).
    ///
    /// Called only for a live target that a scenario uses, within the run's request timeout.
    async fn probe(&self, target: &Target, context: &ShadowContext) -> Result<(), Problem>;

    /// Sends one request of `call.step` and checks the answer: `None` when it passed, else
    /// why not.
    ///
    /// `scratch` holds the worker's reused buffers; `scratch.resp.sent` is set to when the
    /// request was handed to a connection, if that is later than the call (the start of the
    /// service time).
    async fn execute(&self, call: Call<'_>, scratch: &mut Scratch) -> Option<ErrorKind>;
}

/// One request of a step, as the run hands it to a protocol.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call<'a> {
    /// The step.
    pub(crate) step: &'a Step,
    /// What its templates read.
    pub(crate) vars: &'a Vars<'a>,
    /// How the request is tagged as shadow traffic.
    pub(crate) shadow: &'a Shadow,
}

/// An HTTP target's answer to the probe: its acknowledgement header's value, if any.
fn http_probe_acked(ack: Option<&[u8]>, probe: &str) -> Result<(), Problem> {
    probe_ack(ack, &format!("GET {probe}"))
}

/// A target's acknowledgement of the tagged probe (`what` names the request): an error
/// without one, or when it says the target's shadow switch is `off` (it refuses shadow
/// traffic: every request of the run would fail).
pub(crate) fn probe_ack(ack: Option<&[u8]>, what: &str) -> Result<(), Problem> {
    match ack {
        None => Err(Problem::new(format!(
            "answered {what} without the {} header",
            jupiter_core::shadow::ACK_HEADER
        ))),
        Some(b"off") => Err(Problem::new(format!(
            "answered {what} with {}: off (its shadow switch is off: it refuses shadow traffic)",
            jupiter_core::shadow::ACK_HEADER
        ))),
        Some(_) => Ok(()),
    }
}

/// How every request of the run is tagged as shadow traffic, prepared once.
#[derive(Debug, Default)]
pub(crate) struct Shadow {
    /// The context (`None` with `[run] shadow = false`).
    pub(crate) context: Option<ShadowContext>,
    /// The same as header lines (name, value), for engines that encode their own requests.
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

impl Shadow {
    pub(crate) fn new(context: Option<ShadowContext>) -> Shadow {
        let headers = context.as_ref().map_or_else(Vec::new, header_lines);
        Shadow { context, headers }
    }
}

/// `context` as header lines (name, value).
pub(crate) fn header_lines(context: &ShadowContext) -> Vec<(String, Vec<u8>)> {
    let mut map = http::HeaderMap::new();
    context.inject(&mut map);
    map.iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// A worker's reused buffers.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// A rendered path, key or command word.
    pub(crate) path: Vec<u8>,
    /// An encoded request.
    pub(crate) req: Vec<u8>,
    /// A rendered body.
    pub(crate) body: Vec<u8>,
    /// Rendered header values.
    pub(crate) headers: Vec<Vec<u8>>,
    /// The last HTTP/1.1 response, and when its request was sent.
    pub(crate) resp: crate::http1::Response,
    /// What the last request's `extract` took from its response.
    pub(crate) extracted: Vec<(std::sync::Arc<str>, Vec<u8>)>,
    /// What the last response's `set-cookie` headers set (name, value).
    pub(crate) set_cookies: Vec<(String, String)>,
}

impl Scratch {
    /// Forgets when the previous request was sent.
    pub(crate) fn begin(&mut self) {
        self.resp.sent = None;
        self.extracted.clear();
        self.set_cookies.clear();
    }

    /// When the request was handed to a connection, if a protocol said so.
    pub(crate) fn sent(&self) -> Option<Instant> {
        self.resp.sent
    }
}

/// The client of one target, whatever its protocol.
// One per target, made once: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum TargetClient {
    /// HTTP/1.1.
    Http1(http1::Http1),
    /// HTTP/2 with prior knowledge.
    Http2(http2::Http2),
    /// objstore over gRPC.
    Objstore(self::objstore::Objstore),
    /// Redis.
    Redis(self::redis::Redis),
    /// Any gRPC service.
    Grpc(grpc::Grpc),
    /// WebSocket.
    Websocket(websocket::Websocket),
}

/// Runs `$body` with `$p` bound to the protocol inside `$client`.
macro_rules! dispatch {
    ($client:expr, $p:ident => $body:expr) => {
        match $client {
            TargetClient::Http1($p) => $body,
            TargetClient::Http2($p) => $body,
            TargetClient::Objstore($p) => $body,
            TargetClient::Redis($p) => $body,
            TargetClient::Grpc($p) => $body,
            TargetClient::Websocket($p) => $body,
        }
    };
}

impl TargetClient {
    /// The client `target`'s kind calls for.
    pub(crate) async fn connect(target: &Target, run: &RunSection) -> Result<Self, BoxError> {
        Ok(match target.spec.kind {
            TargetKind::Http if target.spec.http2 => {
                TargetClient::Http2(http2::Http2::connect(target, run).await?)
            }
            TargetKind::Http => TargetClient::Http1(http1::Http1::connect(target, run).await?),
            TargetKind::Objstore => {
                TargetClient::Objstore(self::objstore::Objstore::connect(target, run).await?)
            }
            TargetKind::Redis => {
                TargetClient::Redis(self::redis::Redis::connect(target, run).await?)
            }
            TargetKind::Grpc => TargetClient::Grpc(grpc::Grpc::connect(target, run).await?),
            TargetKind::Websocket => {
                TargetClient::Websocket(websocket::Websocket::connect(target, run).await?)
            }
        })
    }

    /// Readies `step` (one of this target's) for the run: a gRPC step's method is looked up
    /// in the descriptors the target has now (from its server's reflection service, if so).
    pub(crate) fn prepare(&self, step: &Step) -> Result<(), BoxError> {
        match self {
            TargetClient::Grpc(g) => g.prepare(step),
            _ => Ok(()),
        }
    }

    /// [`Protocol::probe`], within `timeout`.
    pub(crate) async fn probe(
        &self,
        target: &Target,
        context: &ShadowContext,
        timeout: Duration,
    ) -> Result<(), Problem> {
        let probe = async { dispatch!(self, p => p.probe(target, context).await) };
        tokio::time::timeout(timeout, probe)
            .await
            .map_err(|_| Problem::new("did not answer the probe in time"))?
    }

    /// [`Protocol::execute`].
    pub(crate) async fn execute(&self, call: Call<'_>, scratch: &mut Scratch) -> Option<ErrorKind> {
        dispatch!(self, p => p.execute(call, scratch).await)
    }
}

/// Whether `status` passes the step's status check (or, without one, `default_ok`).
pub(crate) fn check_status(step: &Step, status: u16, default_ok: bool) -> Option<ErrorKind> {
    match &step.checks.status {
        Some(list) => (!list.contains(&status)).then_some(ErrorKind::Check),
        None => (!default_ok).then_some(ErrorKind::Status),
    }
}

/// The step's checks on an HTTP answer: its `status` (without a status check, 2xx and 3xx
/// pass), then its body and headers; and what it extracts and the cookies it sets.
///
/// `headers` yields the answer's headers afresh for each checked header, so they are not
/// collected first: a step without checks allocates nothing here.
pub(crate) fn check_http<'a, I>(
    step: &Step,
    status: u16,
    headers: impl Fn() -> I,
    body: &[u8],
    extracted: &mut Vec<(std::sync::Arc<str>, Vec<u8>)>,
    set_cookies: &mut Vec<(String, String)>,
) -> Option<ErrorKind>
where
    I: Iterator<Item = (&'a str, &'a [u8])>,
{
    if let Some(e) = check_status(step, status, (200..400).contains(&status)) {
        return Some(e);
    }
    // Then cookies: an answer of a passing status sets them whatever the other checks say.
    if step.cookies {
        for (k, v) in headers() {
            if !k.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let pair = v.split(|&b| b == b';').next().unwrap_or_default();
            let text = String::from_utf8_lossy(pair);
            if let Some((name, value)) = text.split_once('=') {
                set_cookies.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }
    if let Some(e) = check_body(step, body) {
        return Some(e);
    }
    for (name, want) in &step.checks.headers {
        let ok = headers().any(|(k, v)| k.eq_ignore_ascii_case(name) && v == want.as_bytes());
        if !ok {
            return Some(ErrorKind::Check);
        }
    }
    // A value that is not there fails the step like a check (and the iteration stops).
    for e in &step.extract {
        let Some(value) = crate::scenario::extract(&e.how, &headers, body) else {
            return Some(ErrorKind::Check);
        };
        extracted.push((e.var.clone(), value));
    }
    None
}

/// The step's checks on an answer's body: `body-contains`, then its `json` fields.
pub(crate) fn check_body(step: &Step, body: &[u8]) -> Option<ErrorKind> {
    if let Some(needle) = &step.checks.body_contains
        && !contains(body, needle)
    {
        return Some(ErrorKind::Check);
    }
    for (path, want) in &step.checks.json {
        let got = crate::scenario::extract(path, std::iter::empty::<(&str, &[u8])>, body);
        if got.as_deref() != Some(&want[..]) {
            return Some(ErrorKind::Check);
        }
    }
    None
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::{contains, probe_ack};

    #[test]
    fn an_empty_needle_is_always_contained() {
        assert!(contains(b"", b""));
        assert!(contains(b"abc", b"bc"));
        assert!(!contains(b"ab", b"abc"));
    }

    #[test]
    fn a_probe_acknowledged_with_the_switch_off_is_a_refusal() {
        assert!(probe_ack(Some(b"on"), "GET /").is_ok());
        assert!(probe_ack(Some(b"watch"), "GET /").is_ok());
        let off = probe_ack(Some(b"off"), "GET /").unwrap_err().message;
        assert!(off.contains("shadow switch is off"), "{off}");
        let none = probe_ack(None, "GET /").unwrap_err().message;
        assert!(
            none.contains("without the x-jupiter-shadow-ack header"),
            "{none}"
        );
    }
}
