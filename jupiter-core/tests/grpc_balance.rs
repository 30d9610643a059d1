//! The balanced tonic channel over discovered instances (registry on real etcd): spreads
//! calls, follows registrations, and never hangs when no instance can answer.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::echo::{Echo, say, serve};
use jupiter_core::registry::grpc::BalancedChannel;
use jupiter_core::registry::{
    EtcdRegistry, Registration, Registry, RegistryConfig, RegistryKind, ServiceInfo, Target,
};
use testkit::Etcd;
use tonic::Code;

fn target() -> Target {
    Target::new("grpc", "echo", "test")
}

async fn registry(etcd: &Etcd) -> EtcdRegistry {
    EtcdRegistry::connect(RegistryConfig {
        kind: RegistryKind::Etcd,
        endpoints: vec![etcd.endpoint()],
        timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Registers `name` at `addr` as its only instance and makes one call through a balanced
/// channel with a 1 s connect and 300 ms request timeout, which must fail (and not hang).
async fn call_the_only_instance(
    reg: &EtcdRegistry,
    name: &str,
    addr: String,
) -> (Registration, tonic::Status) {
    let registration = reg
        .register(ServiceInfo::new(name, "grpc", addr).mode("test"))
        .await
        .unwrap();
    let ch = BalancedChannel::with_timeouts(
        reg.discover(Target::new("grpc", name, "test"))
            .await
            .unwrap(),
        Duration::from_secs(1),
        Duration::from_millis(300),
    );
    let err = tokio::time::timeout(Duration::from_secs(10), say(ch, "x"))
        .await
        .expect("no hang")
        .unwrap_err();
    (registration, err)
}

async fn wait_for(channel: &BalancedChannel, n: usize) {
    for _ in 0..500 {
        if channel.instances().len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "channel has {:?}, wanted {n} instances",
        channel.instances()
    );
}

#[tokio::test]
async fn balances_follows_and_never_hangs() {
    let etcd = Etcd::start();
    let reg = registry(&etcd).await;
    let channel = BalancedChannel::with_timeouts(
        reg.discover(target()).await.unwrap(),
        Duration::from_secs(1),
        Duration::from_millis(500),
    );

    // No instance: UNAVAILABLE at once.
    let err = say(channel.clone(), "hi").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("no instance of"), "{err}");

    let a = serve(Echo::new("a", |_| String::new())).await;
    let b = serve(Echo::new("b", |_| String::new())).await;
    let ga = reg
        .register(ServiceInfo::new("echo", "grpc", a.to_string()).mode("test"))
        .await
        .unwrap();
    let _gb = reg
        .register(ServiceInfo::new("echo", "grpc", b.to_string()).mode("test"))
        .await
        .unwrap();
    wait_for(&channel, 2).await;

    let mut hits: HashMap<String, usize> = HashMap::new();
    for i in 0..200 {
        let reply = say(channel.clone(), &i.to_string()).await.unwrap();
        *hits
            .entry(reply.split('|').next().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(
        hits.values().all(|&n| n >= 40),
        "both instances take a share: {hits:?}"
    );

    // Deregistered: no more calls go there.
    ga.deregister().await.unwrap();
    wait_for(&channel, 1).await;
    for _ in 0..20 {
        assert!(say(channel.clone(), "x").await.unwrap().starts_with("b|"));
    }
}

#[tokio::test]
async fn dead_and_silent_instances_fail_within_the_deadline() {
    let etcd = Etcd::start();
    let reg = registry(&etcd).await;

    // Registered, but nothing listens there.
    let dead = format!("127.0.0.1:{}", testkit::free_port().unwrap());
    let (_g1, err) = call_the_only_instance(&reg, "dead", dead).await;
    assert!(
        matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{err}"
    );

    // A real gRPC server (etcd) stopped with SIGSTOP: the kernel accepts connections into
    // its backlog and nothing ever answers.
    let silent = testkit::Etcd::start();
    silent.pause();
    let (_g2, err) = call_the_only_instance(&reg, "silent", silent.addr().to_string()).await;
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    silent.resume();
}

#[tokio::test]
async fn a_dubbo_grpc_provider_is_called_through_the_balanced_channel() {
    use jupiter_core::registry::dubbo::{DubboTarget, encode};
    let etcd = Etcd::start();
    let reg = registry(&etcd).await;
    // A gRPC server registered as a Java Dubbo-gRPC provider registers itself: by its
    // interface-level provider key alone.
    let addr = serve(Echo::new("java", |_| String::new())).await;
    let iface = "echo.DubboEchoGrpc$IEcho";
    let url = format!(
        "grpc://{addr}/{iface}?anyhost=false&application=java-echo&dubbo=2.0.2&interface={iface}&methods=Say&side=provider"
    );
    let key = format!("/dubbo/{}/providers/{}", encode(iface), encode(&url));
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    raw.put(key, "0", None).await.unwrap();
    let channel = BalancedChannel::with_timeouts(
        reg.discover(Target::dubbo(DubboTarget::new(iface)))
            .await
            .unwrap(),
        Duration::from_secs(1),
        Duration::from_secs(2),
    );
    wait_for(&channel, 1).await;
    let reply = say(channel.clone(), "hello").await.unwrap();
    assert!(reply.starts_with("java|"), "{reply}");
}
