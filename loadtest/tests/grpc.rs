//! Generic gRPC steps against a real tonic server on loopback: a small accounts service (its
//! `.proto` below, its messages written by hand with prost) beside the standard health and
//! reflection services, behind jupiter-core's shadow layer.
//!
//! `Login` gives a token; `Whoami` answers only calls that carry it in `authorization`.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use prost::Message as _;
use tonic::body::Body;

const ACCOUNTS_PROTO: &str = r#"
syntax = "proto3";
package shop.v1;

service Accounts {
  rpc Login(LoginRequest) returns (LoginReply);
  rpc Whoami(WhoamiRequest) returns (WhoamiReply);
}

message LoginRequest { string user = 1; int64 seq = 2; }
message LoginReply { string token = 1; }
message WhoamiRequest {}
message WhoamiReply { string user = 1; int64 calls = 2; }
"#;

const HEALTH_PROTO: &str = r#"
syntax = "proto3";
package grpc.health.v1;

message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct LoginRequest {
    #[prost(string, tag = "1")]
    user: String,
    #[prost(int64, tag = "2")]
    seq: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LoginReply {
    #[prost(string, tag = "1")]
    token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WhoamiRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct WhoamiReply {
    #[prost(string, tag = "1")]
    user: String,
    #[prost(int64, tag = "2")]
    calls: i64,
}

/// What the service saw.
#[derive(Debug, Default)]
struct Seen {
    logins: AtomicU64,
    /// `Whoami` calls with a valid token.
    authorized: AtomicU64,
    /// `Whoami` calls without one (answered UNAUTHENTICATED).
    refused: AtomicU64,
    /// Calls that came tagged as shadow traffic.
    shadow: AtomicU64,
}

#[derive(Clone, Default)]
struct Accounts(Arc<Seen>);

impl tonic::server::NamedService for Accounts {
    const NAME: &'static str = "shop.v1.Accounts";
}

struct Login(Arc<Seen>);

impl tonic::server::UnaryService<LoginRequest> for Login {
    type Response = LoginReply;
    type Future = std::future::Ready<Result<tonic::Response<LoginReply>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<LoginRequest>) -> Self::Future {
        self.0.logins.fetch_add(1, Ordering::Relaxed);
        let user = request.into_inner().user;
        std::future::ready(Ok(tonic::Response::new(LoginReply {
            token: format!("tok-{user}"),
        })))
    }
}

struct Whoami(Arc<Seen>);

impl tonic::server::UnaryService<WhoamiRequest> for Whoami {
    type Response = WhoamiReply;
    type Future = std::future::Ready<Result<tonic::Response<WhoamiReply>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<WhoamiRequest>) -> Self::Future {
        let user = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer tok-"))
            .map(str::to_owned);
        std::future::ready(match user {
            Some(user) => {
                let calls = self.0.authorized.fetch_add(1, Ordering::Relaxed) + 1;
                Ok(tonic::Response::new(WhoamiReply {
                    user,
                    calls: calls as i64,
                }))
            }
            None => {
                self.0.refused.fetch_add(1, Ordering::Relaxed);
                Err(tonic::Status::unauthenticated("log in first"))
            }
        })
    }
}

impl tower::Service<http::Request<Body>> for Accounts {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let seen = self.0.clone();
        Box::pin(async move {
            if jupiter_core::shadow::ShadowContext::current().is_some() {
                seen.shadow.fetch_add(1, Ordering::Relaxed);
            }
            Ok(match request.uri().path() {
                "/shop.v1.Accounts/Login" => {
                    let codec = tonic_prost::ProstCodec::<LoginReply, LoginRequest>::default();
                    tonic::server::Grpc::new(codec)
                        .unary(Login(seen), request)
                        .await
                }
                "/shop.v1.Accounts/Whoami" => {
                    let codec = tonic_prost::ProstCodec::<WhoamiReply, WhoamiRequest>::default();
                    tonic::server::Grpc::new(codec)
                        .unary(Whoami(seen), request)
                        .await
                }
                _ => tonic::Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A running server: what it saw, and its address. Stops when dropped.
struct Server {
    seen: Arc<Seen>,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Which reflection service the server offers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reflection {
    V1,
    /// Only the older one (grpc-go and grpc-java servers of before 2022).
    V1alpha,
    None,
}

/// Serves the accounts, health and reflection services behind the shadow layer (shadow
/// traffic on) on a free loopback port.
async fn serve() -> Server {
    serve_with(Reflection::V1, None).await
}

/// [`serve`] offering `offered`, over TLS with the certificate in `tls` (`common::issue`'s)
/// if given.
async fn serve_with(offered: Reflection, tls: Option<&std::path::Path>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accounts.proto"), ACCOUNTS_PROTO).unwrap();
    let fds = protox::compile(["accounts.proto"], [dir.path()]).unwrap();
    // The reflection service keeps the encoded set for the server's life.
    let encoded: &'static [u8] = Box::leak(fds.encode_to_vec().into_boxed_slice());
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(encoded)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = (offered == Reflection::V1).then(|| reflection().build_v1().unwrap());
    let v1alpha = (offered == Reflection::V1alpha).then(|| reflection().build_v1alpha().unwrap());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<Accounts>().await;
    let metrics = jupiter_core::metrics::Metrics::new();
    let shadow = jupiter_core::shadow::ShadowLayer::new(
        "accounts",
        jupiter_core::shadow::ShadowSwitch::new(jupiter_core::shadow::ShadowMode::On),
        &metrics,
    );
    let accounts = Accounts::default();
    let seen = accounts.0.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder();
    if let Some(dir) = tls {
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(dir.join("server.pem")).unwrap(),
            std::fs::read(dir.join("server.key")).unwrap(),
        );
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap();
    }
    tokio::spawn(
        builder
            .layer(shadow)
            .add_service(health_service)
            .add_optional_service(v1)
            .add_optional_service(v1alpha)
            .add_service(accounts)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = rx.await;
                },
            ),
    );
    Server {
        seen,
        addr,
        _stop: tx,
    }
}

/// The journey's scenario: health check, log in, whoami with the token (`authorization`'s
/// value is `auth`); `source` is how the target finds its descriptors.
fn journey(addr: SocketAddr, source: &str, auth: &str) -> String {
    format!(
        r#"
        [targets.accounts]
        kind = "grpc"
        url = "http://{addr}"
        {source}
        [[scenarios]]
        name = "journey"
        executor = "constant-vus"
        vus = 4
        iterations = 40
        flow = "sequence"
        [[scenarios.steps]]
        name = "health"
        grpc = {{ method = "grpc.health.v1.Health/Check", body = '{{"service": "shop.v1.Accounts"}}' }}
        checks = {{ json = {{ "$.status" = "SERVING" }} }}
        [[scenarios.steps]]
        name = "login"
        grpc = {{ method = "shop.v1.Accounts/Login", body = '{{"user": "ann", "seq": {{{{seq}}}}}}' }}
        extract = {{ token = {{ json = "$.token" }} }}
        [[scenarios.steps]]
        name = "whoami"
        grpc = {{ method = "shop.v1.Accounts/Whoami", metadata = {{ authorization = "{auth}" }} }}
        checks = {{ status = [0], json = {{ "$.user" = "ann" }} }}
        extract = {{ calls = {{ regex = '"calls":"?(\d+)' }} }}
        "#
    )
}

/// Writes the two `.proto` files next to where the scenario will be.
fn protos() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accounts.proto"), ACCOUNTS_PROTO).unwrap();
    std::fs::create_dir(dir.path().join("health")).unwrap();
    std::fs::write(dir.path().join("health").join("health.proto"), HEALTH_PROTO).unwrap();
    dir
}

async fn run_in(
    dir: &tempfile::TempDir,
    text: &str,
) -> (loadtest::report::Report, loadtest::Outcome) {
    let path = dir.path().join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    common::run_file(&path, Default::default()).await.unwrap()
}

/// Runs `text` in `dir`; every step must have sent its 40 requests with none failed.
async fn passes(dir: &tempfile::TempDir, text: &str) {
    let (report, _) = run_in(dir, text).await;
    for step in &report.scenarios[0].steps {
        assert_eq!(
            (step.requests, step.failed),
            (40, 0),
            "{}: {:?}",
            step.name,
            step.errors
        );
    }
}

/// Why the run of the scenario at `path` did not start, with every cause.
async fn refusal(path: &std::path::Path) -> String {
    let err = common::run_file(path, Default::default())
        .await
        .unwrap_err();
    common::chain(&err)
}

const FROM_PROTOS: &str = r#"protos = ["accounts.proto", "health/health.proto"]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_over_grpc_passes_with_the_extracted_token_and_fails_without() {
    let server = serve().await;
    let dir = protos();
    let (report, outcome) = run_in(
        &dir,
        &journey(server.addr, FROM_PROTOS, "Bearer {{var.token}}"),
    )
    .await;
    let s = &report.scenarios[0];
    for step in &s.steps {
        assert_eq!(step.requests, 40, "{}", step.name);
        assert_eq!(step.failed, 0, "{}: {:?}", step.name, step.errors);
    }
    assert_eq!(outcome, loadtest::Outcome::Passed);
    let seen = &server.seen;
    assert_eq!(seen.logins.load(Ordering::Relaxed), 40);
    assert_eq!(seen.authorized.load(Ordering::Relaxed), 40);
    assert_eq!(seen.refused.load(Ordering::Relaxed), 0);
    // Every call to this service came tagged (the probe went to the health service).
    assert_eq!(seen.shadow.load(Ordering::Relaxed), 80);

    // Without the token: every whoami is refused, and the step's status check says so.
    let (report, outcome) = run_in(&dir, &journey(server.addr, FROM_PROTOS, "Bearer none")).await;
    let whoami = &report.scenarios[0].steps[2];
    assert_eq!(whoami.failed, 40);
    assert_eq!(whoami.errors["check"], 40);
    assert_eq!(seen.refused.load(Ordering::Relaxed), 40);
    assert_eq!(seen.authorized.load(Ordering::Relaxed), 40);
    assert_eq!(
        outcome,
        loadtest::Outcome::Passed,
        "no thresholds: the run itself passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_serves_where_v1_is_not_offered_and_none_is_an_error() {
    let server = serve_with(Reflection::V1alpha, None).await;
    let dir = tempfile::tempdir().unwrap();
    passes(
        &dir,
        &journey(server.addr, "reflection = true", "Bearer {{var.token}}"),
    )
    .await;

    let server = serve_with(Reflection::None, None).await;
    let path = dir.path().join("scenario.toml");
    std::fs::write(&path, journey(server.addr, "reflection = true", "x")).unwrap();
    let msg = refusal(&path).await;
    assert!(
        msg.contains("accounts") && msg.contains("no reflection service"),
        "{msg}"
    );
    assert_eq!(
        server.seen.logins.load(Ordering::Relaxed),
        0,
        "nothing was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_descriptors_can_come_from_the_servers_reflection_service() {
    let server = serve().await;
    let dir = tempfile::tempdir().unwrap();
    passes(
        &dir,
        &journey(server.addr, "reflection = true", "Bearer {{var.token}}"),
    )
    .await;
    assert_eq!(server.seen.authorized.load(Ordering::Relaxed), 40);

    // A method the server does not offer: the run does not start, and says which step.
    let text = journey(server.addr, "reflection = true", "x")
        .replace("shop.v1.Accounts/Whoami", "shop.v1.Accounts/Whoever");
    let path = dir.path().join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    let msg = refusal(&path).await;
    assert!(
        msg.contains("whoami") && msg.contains("Whoever") && msg.contains("Login, Whoami"),
        "{msg}"
    );
    assert_eq!(
        server.seen.logins.load(Ordering::Relaxed),
        40,
        "nothing was sent"
    );
}

#[test]
fn grpc_settings_are_checked_when_the_scenario_loads() {
    let dir = protos();
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let cases = [
        (
            journey(addr, FROM_PROTOS, "x").replace("Accounts/Whoami", "Accounts/Whoever"),
            "scenarios[0].steps[2].grpc.method",
            "has no method \"Whoever\"",
        ),
        (
            journey(addr, FROM_PROTOS, "x")
                .replace(r#""user": "ann", "seq": {{seq}}"#, r#""name": 1"#),
            "scenarios[0].steps[1].grpc.body",
            "shop.v1.LoginRequest",
        ),
        (
            journey(addr, FROM_PROTOS, "x").replace("accounts.proto\"", "missing.proto\""),
            "targets.accounts.protos",
            "no such file",
        ),
        (
            journey(addr, &format!("{FROM_PROTOS}\nreflection = true"), "x"),
            "targets.accounts.reflection",
            "not both",
        ),
        (
            journey(addr, "", "x"),
            "targets.accounts",
            "reflection = true",
        ),
        (
            journey(addr, FROM_PROTOS, "x").replace("shop.v1.Accounts/Login", "Login"),
            "scenarios[0].steps[1].grpc.method",
            "package.Service/Method",
        ),
        (
            journey(addr, FROM_PROTOS, "x").replace("authorization =", "Bad-Key-bin ="),
            "scenarios[0].steps[2].grpc.metadata",
            "metadata key",
        ),
    ];
    for (text, key, says) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let o = common::loadtest(&["validate", path.to_str().unwrap()]);
        let out = common::text(&o);
        assert_eq!(o.status.code(), Some(2), "{key}: {out}");
        assert!(out.contains("bad.toml"), "names the file: {out}");
        assert!(out.contains(key), "names {key}: {out}");
        assert!(out.contains(says), "{key} says {says:?}: {out}");
    }
    let path = dir.path().join("good.toml");
    std::fs::write(&path, journey(addr, FROM_PROTOS, "x")).unwrap();
    let o = common::loadtest(&["validate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_server_that_is_gone_is_a_connect_error_for_every_call() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = protos();
    let source = format!("{FROM_PROTOS}\nlive = false");
    let (report, _) = run_in(&dir, &journey(addr, &source, "x")).await;
    let health = &report.scenarios[0].steps[0];
    assert_eq!(health.requests, 40);
    assert_eq!(health.errors["connect"], 40, "{:?}", health.errors);
    assert_eq!(report.scenarios[0].iterations_cut_short, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_checks_the_certificate() {
    let dir = protos();
    common::issue(dir.path());
    let server = serve_with(Reflection::V1, Some(dir.path())).await;
    let https = |tls: &str| {
        journey(
            server.addr,
            &format!("{FROM_PROTOS}\n{tls}"),
            "Bearer {{var.token}}",
        )
        .replace("http://127.0.0.1:", "https://localhost:")
    };
    passes(&dir, &https(r#"tls = { ca-file = "ca.pem" }"#)).await;
    assert_eq!(server.seen.authorized.load(Ordering::Relaxed), 40);

    // Without the CA: not a public root, the probe fails and nothing reaches the service.
    let path = dir.path().join("scenario.toml");
    std::fs::write(&path, https("")).unwrap();
    let msg = refusal(&path).await;
    assert!(
        msg.contains("accounts") && msg.contains("certificate"),
        "{msg}"
    );
    assert_eq!(server.seen.logins.load(Ordering::Relaxed), 40);
}
