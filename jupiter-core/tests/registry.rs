//! The registry: in-process, and etcd against a real etcd with its failure modes (lease expiry
//! of a dead process, etcd restart, unreachable etcd), Go Jupiter wire compatibility, and
//! `/registry` on the governance server.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jupiter_core::governance::Governance;
use jupiter_core::registry::{
    EtcdRegistry, Instances, LocalRegistry, Registry, RegistryConfig, RegistryKind, ServiceInfo,
    Target,
};
use jupiter_core::{Error, Metrics};
use testkit::Etcd;
use tokio::sync::watch;

fn config(etcd: &Etcd, ttl: Duration) -> RegistryConfig {
    RegistryConfig {
        kind: RegistryKind::Etcd,
        endpoints: vec![etcd.endpoint()],
        ttl,
        timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// A registry on `etcd` whose leases last `ttl`.
async fn connected(etcd: &Etcd, ttl: Duration) -> EtcdRegistry {
    EtcdRegistry::connect(config(etcd, ttl)).await.unwrap()
}

fn addrs(rx: &watch::Receiver<Instances>) -> Vec<String> {
    rx.borrow().iter().map(|i| i.address.clone()).collect()
}

/// Waits (bounded) until the watched set has exactly `want`.
async fn converge(rx: &mut watch::Receiver<Instances>, want: &[&str], within: Duration) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    let r = tokio::time::timeout(within, async {
        loop {
            if addrs(rx) == want {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        r.is_ok() && addrs(rx) == want,
        "wanted {want:?}, have {:?}",
        addrs(rx)
    );
}

/// A plain etcd client, to look at (or tamper with) what the registry wrote.
async fn raw_client(etcd: &Etcd) -> etcd_client::Client {
    etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap()
}

/// Revokes the lease `key` was put under, behind the registry's back (as if it expired).
/// Returns the revoked lease.
async fn revoke_lease_of(raw: &mut etcd_client::Client, key: &str) -> i64 {
    let lease = raw.get(key, None).await.unwrap().kvs()[0].lease();
    raw.lease_revoke(lease).await.unwrap();
    lease
}

fn target() -> Target {
    Target::new("grpc", "objstore", "prod")
}

fn instance(addr: &str) -> ServiceInfo {
    ServiceInfo::new("objstore", "grpc", addr)
        .mode("prod")
        .zone("z1")
}

#[tokio::test]
async fn local_registry_follows_registrations() {
    let registry = LocalRegistry::new();
    let mut rx = registry.discover(target()).await.unwrap();
    assert!(rx.borrow().is_empty());
    let a = registry.register(instance("127.0.0.1:7001")).await.unwrap();
    let b = registry.register(instance("127.0.0.1:7002")).await.unwrap();
    // Another service does not show up.
    let _other = registry
        .register(ServiceInfo::new("cache", "grpc", "127.0.0.1:7003").mode("prod"))
        .await
        .unwrap();
    converge(
        &mut rx,
        &["127.0.0.1:7001", "127.0.0.1:7002"],
        Duration::from_secs(1),
    )
    .await;
    drop(a);
    converge(&mut rx, &["127.0.0.1:7002"], Duration::from_secs(1)).await;
    b.deregister().await.unwrap();
    converge(&mut rx, &[], Duration::from_secs(1)).await;
}

#[tokio::test]
async fn etcd_registry_is_wire_compatible_with_go_jupiter() {
    let etcd = Etcd::start();
    let registry = connected(&etcd, Duration::from_secs(10)).await;
    let _guard = registry
        .register(instance("127.0.0.1:7070").meta("shard", "3"))
        .await
        .unwrap();

    // What we write, read raw.
    let mut raw = raw_client(&etcd).await;
    let got = raw
        .get("grpc:objstore:v1:prod/127.0.0.1:7070", None)
        .await
        .unwrap();
    let kv = &got.kvs()[0];
    assert_ne!(kv.lease(), 0, "attached to the process lease");
    let v: serde_json::Value = serde_json::from_slice(kv.value()).unwrap();
    assert_eq!(v["Op"], 0);
    assert_eq!(v["Addr"], "127.0.0.1:7070");
    assert_eq!(v["MetadataX"]["name"], "objstore");
    assert_eq!(v["MetadataX"]["scheme"], "grpc");
    assert_eq!(v["MetadataX"]["mode"], "prod");
    assert_eq!(v["MetadataX"]["zone"], "z1");
    assert_eq!(v["MetadataX"]["kind"], 1);
    assert_eq!(v["MetadataX"]["metadata"]["shard"], "3");

    // What a Go Jupiter service writes, discovered by us.
    let go = r#"{"Op":0,"Addr":"10.0.0.2:9090","MetadataX":{"name":"objstore","appId":"","scheme":"grpc","address":"10.0.0.2:9090","weight":100,"enable":true,"healthy":true,"metadata":null,"region":"","zone":"z2","kind":1,"version":"v1","mode":"prod","hostname":"go-host","deployment":"","group":""}}"#;
    raw.put("grpc:objstore:v1:prod/10.0.0.2:9090", go, None)
        .await
        .unwrap();
    // Keys that are not host:port under the prefix are ignored, as Go Jupiter ignores them.
    raw.put("grpc:objstore:v1:prod/configurators/x", "{}", None)
        .await
        .unwrap();
    let mut rx = registry.discover(target()).await.unwrap();
    converge(
        &mut rx,
        &["10.0.0.2:9090", "127.0.0.1:7070"],
        Duration::from_secs(5),
    )
    .await;
    let go_instance = rx
        .borrow()
        .iter()
        .find(|i| i.address == "10.0.0.2:9090")
        .cloned()
        .unwrap();
    assert_eq!(go_instance.hostname, "go-host");
    assert_eq!(go_instance.zone, "z2");

    // Go Jupiter's delete marker (Op 1) removes the instance.
    raw.put(
        "grpc:objstore:v1:prod/10.0.0.2:9090",
        r#"{"Op":1,"Addr":"10.0.0.2:9090"}"#,
        None,
    )
    .await
    .unwrap();
    converge(&mut rx, &["127.0.0.1:7070"], Duration::from_secs(5)).await;
}

#[tokio::test]
async fn etcd_registrations_come_and_go_and_show_on_the_governance_server() {
    let etcd = Etcd::start();
    let ours = connected(&etcd, Duration::from_secs(10)).await;
    let theirs = connected(&etcd, Duration::from_secs(10)).await;
    let mut rx = theirs.discover(target()).await.unwrap();
    let a = ours.register(instance("127.0.0.1:7001")).await.unwrap();
    let b = ours.register(instance("127.0.0.1:7002")).await.unwrap();
    converge(
        &mut rx,
        &["127.0.0.1:7001", "127.0.0.1:7002"],
        Duration::from_secs(5),
    )
    .await;

    // /registry shows what was registered and discovered.
    let view: Arc<dyn Registry> = Arc::new(ours.clone());
    let _ours_rx = view.discover(target()).await.unwrap();
    let addr = common::governance(
        Governance::builder()
            .metrics(&Metrics::new())
            .registry(view),
    )
    .await;
    let body = common::http(addr, "GET", "/registry", "").await.body;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["kind"], "etcd");
    let keys: Vec<&str> = json["registered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "grpc:objstore:v1:prod/127.0.0.1:7001",
            "grpc:objstore:v1:prod/127.0.0.1:7002"
        ]
    );
    assert_eq!(
        json["discovered"]["grpc:objstore:v1:prod"],
        serde_json::json!(["127.0.0.1:7001", "127.0.0.1:7002"])
    );

    a.deregister().await.unwrap();
    converge(&mut rx, &["127.0.0.1:7002"], Duration::from_secs(5)).await;
    drop(b);
    converge(&mut rx, &[], Duration::from_secs(5)).await;
    ours.close().await.unwrap();
}

#[tokio::test]
async fn a_process_killed_without_deregistering_disappears_after_the_lease_ttl() {
    let etcd = Etcd::start();
    let cfg = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        cfg.path(),
        format!(
            "[app]\nname = \"victim\"\nmode = \"test\"\n[governance]\naddr = \"127.0.0.1:0\"\n[registry]\nkind = \"etcd\"\nendpoints = [\"{}\"]\nttl = \"2s\"\n",
            etcd.endpoint()
        ),
    )
    .unwrap();
    let watcher = connected(&etcd, Duration::from_secs(10)).await;
    let mut rx = watcher
        .discover(Target::new("http", "victim", "test"))
        .await
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jupiter"))
        .args(["serve", "--config"])
        .arg(cfg.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let appeared = tokio::time::timeout(Duration::from_secs(20), async {
        while rx.borrow_and_update().is_empty() {
            rx.changed().await.unwrap();
        }
    })
    .await;
    assert!(appeared.is_ok(), "the service never registered");
    let registered = rx.borrow()[0].clone();
    assert_eq!(
        registered.kind,
        jupiter_core::registry::ServiceKind::Governor
    );
    // The lease the key lives under.
    let mut raw = raw_client(&etcd).await;
    let keys = raw
        .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let lease = keys
        .kvs()
        .iter()
        .find(|kv| kv.key_str().is_ok_and(|k| k.contains(":victim:")))
        .map(|kv| kv.lease())
        .expect("the victim's key");
    assert_ne!(lease, 0, "registered under a lease");
    // Its governance key for Prometheus and Juno, under the same lease (bounded wait: the
    // registrars run one after the other).
    let prometheus = format!(
        "/prometheus/job/victim/{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
    );
    let mut prometheus_lease = None;
    for _ in 0..400 {
        let got = raw.get(prometheus.as_str(), None).await.unwrap();
        if let Some(kv) = got.kvs().first() {
            prometheus_lease = Some(kv.lease());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        prometheus_lease,
        Some(lease),
        "{prometheus} under the process lease"
    );

    child.kill().unwrap(); // SIGKILL: no deregistration
    child.wait().unwrap();
    converge(&mut rx, &[], Duration::from_secs(15)).await;
    assert!(
        raw.get(prometheus.as_str(), None)
            .await
            .unwrap()
            .kvs()
            .is_empty(),
        "{prometheus} went with the lease"
    );
    // Gone because its lease expired (nobody was left to revoke it or delete the key): etcd
    // no longer knows the lease. No timing band: the cause, not the moment.
    let ttl = raw.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(ttl.ttl(), -1, "the lease {lease} expired");
}

#[tokio::test]
async fn etcd_restart_and_lease_loss_are_survived() {
    let etcd = Etcd::start();
    let ours = connected(&etcd, Duration::from_secs(2)).await;
    let theirs = connected(&etcd, Duration::from_secs(10)).await;
    let mut rx = theirs.discover(target()).await.unwrap();
    let _a = ours.register(instance("127.0.0.1:7001")).await.unwrap();
    converge(&mut rx, &["127.0.0.1:7001"], Duration::from_secs(5)).await;

    // etcd down: registering fails with a clear error within the deadline, never hangs.
    etcd.kill();
    let err = ours.register(instance("127.0.0.1:7002")).await.unwrap_err();
    assert!(err.retryable(), "{err}");
    assert!(err.to_string().contains(&etcd.endpoint()), "{err}");
    tokio::time::sleep(Duration::from_secs(3)).await; // longer than the TTL
    etcd.restart();

    // The keep-alive supervisor and the watch come back on their own; a later change is seen.
    let _c = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match ours.register(instance("127.0.0.1:7003")).await {
                Ok(g) => return g,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("registry usable again after etcd restart");
    converge(
        &mut rx,
        &["127.0.0.1:7001", "127.0.0.1:7003"],
        Duration::from_secs(15),
    )
    .await;

    // The lease revoked behind our back (as if it expired): keys are deleted, then re-put.
    let mut raw = raw_client(&etcd).await;
    let lease = revoke_lease_of(&mut raw, "grpc:objstore:v1:prod/127.0.0.1:7001").await;
    // Regression: the watched set may still show both instances from before the revoke, so
    // wait for the key itself to come back rather than for the set (the key was read while
    // still deleted and the test indexed an empty reply).
    let new_lease = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let reply = raw
                .get("grpc:objstore:v1:prod/127.0.0.1:7001", None)
                .await
                .unwrap();
            match reply.kvs().first().map(|kv| kv.lease()) {
                Some(l) if l != lease => return l,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the key is re-put after its lease was revoked");
    assert_ne!(new_lease, lease, "re-put under a new lease");
    converge(
        &mut rx,
        &["127.0.0.1:7001", "127.0.0.1:7003"],
        Duration::from_secs(15),
    )
    .await;
}

// Paused time: nothing listens on the port, so the runtime idles through every timeout and
// retry delay at once, and the time `connect` took is exact (virtual), not a wall-clock band.
#[tokio::test(start_paused = true)]
async fn unreachable_etcd_is_a_clear_error_not_a_hang() {
    let port = testkit::free_port().unwrap();
    let cfg = RegistryConfig {
        kind: RegistryKind::Etcd,
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        timeout: Duration::from_millis(500),
        start_retry: Duration::from_secs(1),
        ..Default::default()
    };
    let t0 = tokio::time::Instant::now();
    let err = EtcdRegistry::connect(cfg).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { .. } | Error::Etcd { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "retried for start-retry"
    );
}

/// Regression: etcd-client reports keep-alive of a lease that no longer exists as an error when
/// the stream is opened (not as a TTL-0 response); the supervisor used to retry that dead lease
/// forever and never re-registered.
#[tokio::test]
async fn a_lease_lost_while_the_keep_alive_stream_was_down_is_regranted() {
    let etcd = Etcd::start();
    // A long TTL: keep-alives every 10 s, so nothing tells the open stream about the revoke
    // before etcd goes down.
    let ours = connected(&etcd, Duration::from_secs(30)).await;
    let _a = ours.register(instance("127.0.0.1:7001")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut raw = raw_client(&etcd).await;
    revoke_lease_of(&mut raw, "grpc:objstore:v1:prod/127.0.0.1:7001").await;
    etcd.kill();
    etcd.restart();

    let theirs = connected(&etcd, Duration::from_secs(10)).await;
    let mut rx = theirs.discover(target()).await.unwrap();
    converge(&mut rx, &["127.0.0.1:7001"], Duration::from_secs(20)).await;
}

#[tokio::test]
async fn the_governance_address_is_registered_for_prometheus_and_juno_under_the_lease() {
    use jupiter_core::app::{App, component_fn};
    use jupiter_core::registry::{GovernanceRegistrar, ServiceRegistrar};
    let etcd = Etcd::start();
    let registry: Arc<dyn Registry> = Arc::new(connected(&etcd, Duration::from_secs(10)).await);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let app = App::builder("orders")
        .governance(Some("127.0.0.1:0".parse().unwrap()))
        .handle_signals(false)
        .build()
        .register_governance(registry.clone())
        .on_governance_bound(move |addr| {
            let _ = bound_tx.send(addr);
        })
        .registrar(ServiceRegistrar::new(
            registry.clone(),
            instance("127.0.0.1:7071"),
        ));
    let stop = app.shutdown_handle();
    let app = app.component(component_fn("server", move |mut ctx| async move {
        ctx.ready();
        let _ = ready_tx.send(());
        ctx.stopped().await;
        Ok(())
    }));
    let running = tokio::spawn(app.run());
    let governance = bound_rx.await.unwrap();
    ready_rx.await.unwrap();

    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let key = format!("/prometheus/job/orders/{host}");
    assert_eq!(
        GovernanceRegistrar::entry("orders", &host, governance).0,
        key
    );
    let mut raw = raw_client(&etcd).await;
    // Registrars run once every component is ready: bounded wait for the keys.
    let mut found = None;
    for _ in 0..200 {
        let got = raw.get(key.as_str(), None).await.unwrap();
        if let Some(kv) = got.kvs().first() {
            found = Some((kv.value_str().unwrap().to_owned(), kv.lease()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (value, lease) = found.expect("the governance key was registered");
    assert_eq!(
        value,
        governance.to_string(),
        "ip:port of the governance server"
    );
    let instance_key = raw
        .get("grpc:objstore:v1:prod/127.0.0.1:7071", None)
        .await
        .unwrap();
    assert_eq!(
        instance_key.kvs()[0].lease(),
        lease,
        "the same lease as the instance"
    );
    assert_ne!(lease, 0);
    // Bound to an unspecified address, the value names the host.
    let any: std::net::SocketAddr = "0.0.0.0:9246".parse().unwrap();
    assert_eq!(
        GovernanceRegistrar::entry("orders", &host, any).1,
        format!("{host}:9246")
    );

    // Graceful shutdown deletes it.
    stop.shutdown();
    running.await.unwrap().unwrap();
    assert!(raw.get(key.as_str(), None).await.unwrap().kvs().is_empty());
    assert!(
        raw.get("grpc:objstore:v1:prod/127.0.0.1:7071", None)
            .await
            .unwrap()
            .kvs()
            .is_empty()
    );
}

#[tokio::test]
async fn the_local_registry_keeps_no_governance_key() {
    let registry = LocalRegistry::new();
    let reg = registry
        .register_key("/prometheus/job/a/h".into(), "127.0.0.1:1".into())
        .await
        .unwrap();
    assert_eq!(reg.key(), "/prometheus/job/a/h");
    reg.deregister().await.unwrap();
    assert_eq!(
        Registry::snapshot(&registry)["registered"],
        serde_json::json!([])
    );
}

/// An encoded descriptor set with `shop.Orders` (methods Get, Put) and an empty `shop.Empty`.
fn shop_descriptor() -> Vec<u8> {
    use prost::Message;
    use prost_types::{
        FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };
    let method = |name: &str| MethodDescriptorProto {
        name: Some(name.into()),
        input_type: Some(".shop.Req".into()),
        output_type: Some(".shop.Resp".into()),
        ..Default::default()
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("shop.proto".into()),
            package: Some("shop".into()),
            service: vec![
                ServiceDescriptorProto {
                    name: Some("Orders".into()),
                    method: vec![method("Get"), method("Put")],
                    ..Default::default()
                },
                ServiceDescriptorProto {
                    name: Some("Empty".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A provider key read back as dubbo-go reads it: the child `url.QueryUnescape`d, then parsed
/// as a URL. Returns (scheme, address, path, parameters).
fn parse_like_dubbo_go(
    key: &str,
    prefix: &str,
) -> (
    String,
    String,
    String,
    std::collections::BTreeMap<String, String>,
) {
    use jupiter_core::registry::dubbo::decode;
    let child = key.strip_prefix(prefix).expect("under the providers path");
    let url = decode(child).expect("query-unescapes");
    let (scheme, rest) = url.split_once("://").expect("a scheme");
    let (addr_path, query) = rest.split_once('?').expect("parameters");
    let (addr, path) = addr_path.split_once('/').expect("a path");
    let params = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("k=v");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (scheme.into(), addr.into(), path.into(), params)
}

#[tokio::test]
async fn dubbo_provider_keys_are_written_as_dubbo_does_and_removed_on_shutdown() {
    use jupiter_core::app::Registrar;
    use jupiter_core::registry::dubbo::{DubboNaming, DubboService};
    use jupiter_core::registry::{AlsoRegister, ServiceRegistrar};
    let etcd = Etcd::start();
    let descriptor = shop_descriptor();
    let dubbo_config = RegistryConfig {
        also_register: vec![AlsoRegister::Dubbo],
        ..config(&etcd, Duration::from_secs(10))
    };
    let registry: Arc<dyn Registry> = Arc::new(EtcdRegistry::connect(dubbo_config).await.unwrap());
    let raw = raw_client(&etcd).await;
    let list = |prefix: &'static str| {
        let mut raw = raw.clone();
        async move {
            let got = raw
                .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .unwrap();
            got.kvs()
                .iter()
                .map(|kv| {
                    (
                        kv.key_str().unwrap().to_owned(),
                        kv.value_str().unwrap().to_owned(),
                        kv.lease(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };

    // The default naming: the proto's full service name, Dubbo's default group.
    let service =
        DubboService::from_descriptor(&descriptor, "shop.Orders", DubboNaming::Proto).unwrap();
    assert_eq!(service.methods, ["Get", "Put"]);
    let registrar = ServiceRegistrar::new(
        registry.clone(),
        ServiceInfo::new("orders", "grpc", "127.0.0.1:50051").mode("prod"),
    )
    .dubbo(service);
    registrar.register().await.unwrap();
    let keys = list("/dubbo/").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (key, value, lease) = &keys[0];
    let (scheme, addr, path, params) = parse_like_dubbo_go(key, "/dubbo/shop.Orders/providers/");
    assert_eq!(
        (scheme.as_str(), addr.as_str(), path.as_str()),
        ("grpc", "127.0.0.1:50051", "shop.Orders")
    );
    assert_eq!(params["interface"], "shop.Orders");
    assert_eq!(
        params["methods"], "Get,Put",
        "methods non-empty, from the descriptor"
    );
    assert_eq!(params["side"], "provider");
    assert_eq!(params["application"], "orders");
    assert_eq!(params["dubbo"], "2.0.2");
    assert_eq!(params["anyhost"], "false");
    assert_eq!(params["dynamic"], "true");
    assert!(params["timestamp"].parse::<u64>().unwrap() > 1_600_000_000_000);
    assert!(!params.contains_key("group") && !params.contains_key("version"));
    // The value is the lease id in decimal, as Dubbo's Java registry writes it, and the key
    // shares the instance's lease.
    assert_ne!(*lease, 0);
    assert_eq!(value, &lease.to_string());
    let jupiter_key = list("grpc:orders:v1:prod/").await;
    assert_eq!(jupiter_key.len(), 1);
    assert_eq!(jupiter_key[0].2, *lease, "one lease for both keys");

    // The lease lost (revoked): both keys come back under the new one, and the Dubbo value
    // names the new lease.
    raw.clone().lease_revoke(*lease).await.unwrap();
    // (Keys are put back one after the other: wait for both.)
    let mut back = None;
    for _ in 0..400 {
        let instance = list("grpc:orders:v1:prod/").await;
        if let [(_, value, new_lease)] = list("/dubbo/").await.as_slice()
            && *new_lease != *lease
            && instance.first().is_some_and(|i| i.2 == *new_lease)
        {
            back = Some((value.clone(), *new_lease));
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (value, new_lease) = back.expect("both re-registered under one new lease");
    assert_eq!(value, new_lease.to_string());

    // Graceful shutdown removes both.
    registrar.deregister().await.unwrap();
    assert!(list("/dubbo/").await.is_empty());
    assert!(list("grpc:orders:v1:prod/").await.is_empty());

    // Dubbo 2.7's gRPC naming, with a group, version and weight.
    let service =
        DubboService::from_descriptor(&descriptor, "shop.Orders", DubboNaming::Dubbo27Grpc)
            .unwrap()
            .group("blue")
            .version("1.0.0")
            .weight(50);
    assert_eq!(service.interface, "shop.DubboOrdersGrpc$IOrders");
    let registrar = ServiceRegistrar::new(
        registry.clone(),
        ServiceInfo::new("orders", "grpc", "127.0.0.1:50052").mode("prod"),
    )
    .dubbo(service);
    registrar.register().await.unwrap();
    let keys = list("/blue/").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (_, _, path, params) = parse_like_dubbo_go(
        &keys[0].0,
        "/blue/shop.DubboOrdersGrpc%24IOrders/providers/",
    );
    assert_eq!(path, "shop.DubboOrdersGrpc$IOrders");
    assert_eq!(params["group"], "blue");
    assert_eq!(params["version"], "1.0.0");
    assert_eq!(params["weight"], "50");
    registrar.deregister().await.unwrap();
    assert!(list("/blue/").await.is_empty());

    // Descriptor errors name the service.
    for (name, why) in [
        ("shop.Empty", "no methods"),
        ("shop.Nope", "not in the descriptor"),
    ] {
        let e = DubboService::from_descriptor(&descriptor, name, DubboNaming::Proto).unwrap_err();
        let text = jupiter_core::cli::render_error("test", &e);
        assert!(text.contains(name) && text.contains(why), "{text}");
    }
    assert!(DubboService::from_descriptor(b"\xff\xff", "shop.Orders", DubboNaming::Proto).is_err());
}

#[tokio::test]
async fn without_also_register_no_dubbo_key_is_written() {
    use jupiter_core::app::Registrar;
    use jupiter_core::registry::ServiceRegistrar;
    use jupiter_core::registry::dubbo::{DubboNaming, DubboService};
    let etcd = Etcd::start();
    let registry: Arc<dyn Registry> = Arc::new(connected(&etcd, Duration::from_secs(10)).await);
    let service =
        DubboService::from_descriptor(&shop_descriptor(), "shop.Orders", DubboNaming::Proto)
            .unwrap();
    let registrar = ServiceRegistrar::new(
        registry,
        ServiceInfo::new("orders", "grpc", "127.0.0.1:50051").mode("prod"),
    )
    .dubbo(service);
    registrar.register().await.unwrap();
    let mut raw = raw_client(&etcd).await;
    let all = raw
        .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let keys: Vec<&str> = all.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(keys, ["grpc:orders:v1:prod/127.0.0.1:50051"]);
    registrar.deregister().await.unwrap();
}

#[test]
fn also_register_accepts_only_known_layouts() {
    let metrics = Metrics::new();
    let config = jupiter_core::config::Config::builder()
        .toml("app.toml", "[registry]\nalso-register = [\"zookeeper\"]\n")
        .no_env()
        .metrics(&metrics)
        .build()
        .unwrap();
    let e = config.get::<RegistryConfig>("registry").unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("also-register") && text.contains("zookeeper"),
        "{text}"
    );
    let ok = jupiter_core::config::Config::builder()
        .toml("app.toml", "[registry]\nalso-register = [\"dubbo\"]\n")
        .no_env()
        .metrics(&metrics)
        .build()
        .unwrap();
    assert_eq!(
        ok.get::<RegistryConfig>("registry").unwrap().also_register,
        [jupiter_core::registry::AlsoRegister::Dubbo]
    );
}

/// A provider key in the form Java Dubbo 2.7's etcd3 registry writes for a gRPC service of
/// its gRPC code generator (written by hand in that format; the value is the lease id).
const JAVA_DUBBO_KEY: &str = "/dubbo/org.apache.dubbo.demo.DubboGreeterGrpc%24IGreeter/providers/grpc%3A%2F%2F192.168.1.5%3A50051%2Forg.apache.dubbo.demo.DubboGreeterGrpc%24IGreeter%3Fanyhost%3Dtrue%26application%3Ddemo-provider%26deprecated%3Dfalse%26dubbo%3D2.0.2%26dynamic%3Dtrue%26generic%3Dfalse%26interface%3Dorg.apache.dubbo.demo.DubboGreeterGrpc%24IGreeter%26methods%3DsayHello%2CsayHelloAsync%26pid%3D4242%26release%3D2.7.8%26side%3Dprovider%26timestamp%3D1607000000000";

#[tokio::test]
async fn dubbo_providers_are_discovered_filtered_and_followed() {
    use jupiter_core::registry::dubbo::{DubboTarget, encode};
    let etcd = Etcd::start();
    let registry = connected(&etcd, Duration::from_secs(10)).await;
    let mut raw = raw_client(&etcd).await;
    let iface = "org.apache.dubbo.demo.DubboGreeterGrpc$IGreeter";
    raw.put(JAVA_DUBBO_KEY, "7587849204417863173", None)
        .await
        .unwrap();
    // Others under the same interface: a versioned one, a disabled one, a dubbo:// one.
    let provider = |addr: &str, extra: &str, scheme: &str| {
        let url = format!(
            "{scheme}://{addr}/{iface}?application=demo&interface={iface}&methods=sayHello&side=provider{extra}"
        );
        format!("/dubbo/{}/providers/{}", encode(iface), encode(&url))
    };
    raw.put(
        provider("10.0.0.2:50051", "&version=2.0.0", "grpc"),
        "1",
        None,
    )
    .await
    .unwrap();
    raw.put(
        provider("10.0.0.3:50051", "&enabled=false", "grpc"),
        "1",
        None,
    )
    .await
    .unwrap();
    raw.put(provider("10.0.0.4:20880", "", "dubbo"), "1", None)
        .await
        .unwrap();
    raw.put(provider("10.0.0.5:50051", "", "tri"), "1", None)
        .await
        .unwrap();

    let mut any = registry
        .discover(Target::dubbo(DubboTarget::new(iface)))
        .await
        .unwrap();
    converge(
        &mut any,
        &["10.0.0.2:50051", "10.0.0.5:50051", "192.168.1.5:50051"],
        Duration::from_secs(5),
    )
    .await;
    let java = any
        .borrow()
        .iter()
        .find(|i| i.address == "192.168.1.5:50051")
        .cloned()
        .unwrap();
    assert_eq!((java.scheme.as_str(), java.name.as_str()), ("grpc", iface));
    assert_eq!(java.metadata["application"], "demo-provider");
    let mut v2 = registry
        .discover(Target::dubbo(DubboTarget::new(iface).version("2.0.0")))
        .await
        .unwrap();
    converge(&mut v2, &["10.0.0.2:50051"], Duration::from_secs(5)).await;
    let mut v1 = registry
        .discover(Target::dubbo(DubboTarget::new(iface).version("1.0.0")))
        .await
        .unwrap();
    converge(&mut v1, &[], Duration::from_secs(5)).await;
    // Another group is another path.
    let blue = format!(
        "/blue/{}/providers/{}",
        encode(iface),
        encode(&format!(
            "grpc://10.0.0.9:50051/{iface}?group=blue&interface={iface}&methods=sayHello"
        ))
    );
    raw.put(blue.as_str(), "1", None).await.unwrap();
    let mut in_blue = registry
        .discover(Target::dubbo(DubboTarget::new(iface).group("blue")))
        .await
        .unwrap();
    converge(&mut in_blue, &["10.0.0.9:50051"], Duration::from_secs(5)).await;

    // Followed: the Java provider leaves, a new one comes.
    raw.delete(JAVA_DUBBO_KEY, None).await.unwrap();
    converge(
        &mut any,
        &["10.0.0.2:50051", "10.0.0.5:50051"],
        Duration::from_secs(5),
    )
    .await;
    raw.put(provider("10.0.0.6:50051", "", "grpc"), "1", None)
        .await
        .unwrap();
    converge(
        &mut any,
        &["10.0.0.2:50051", "10.0.0.5:50051", "10.0.0.6:50051"],
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn our_dubbo_registration_is_discovered_as_a_dubbo_provider() {
    use jupiter_core::app::Registrar;
    use jupiter_core::registry::dubbo::{DubboNaming, DubboService, DubboTarget};
    use jupiter_core::registry::{AlsoRegister, ServiceRegistrar};
    let etcd = Etcd::start();
    let registry = EtcdRegistry::connect(RegistryConfig {
        also_register: vec![AlsoRegister::Dubbo],
        ..config(&etcd, Duration::from_secs(10))
    })
    .await
    .unwrap();
    let shared: Arc<dyn Registry> = Arc::new(registry.clone());
    let service =
        DubboService::from_descriptor(&shop_descriptor(), "shop.Orders", DubboNaming::Proto)
            .unwrap()
            .version("1.0.0");
    let registrar = ServiceRegistrar::new(
        shared,
        ServiceInfo::new("orders", "grpc", "127.0.0.1:50061").mode("prod"),
    )
    .dubbo(service);
    registrar.register().await.unwrap();
    let mut rx = registry
        .discover(Target::dubbo(
            DubboTarget::new("shop.Orders").version("1.0.0"),
        ))
        .await
        .unwrap();
    converge(&mut rx, &["127.0.0.1:50061"], Duration::from_secs(5)).await;
    registrar.deregister().await.unwrap();
    converge(&mut rx, &[], Duration::from_secs(5)).await;
}

/// Set in the child of [`a_killed_process_s_dubbo_key_goes_with_its_lease`]: the etcd
/// endpoint it registers with.
const DUBBO_CHILD: &str = "JUPITER_TEST_DUBBO_CHILD";

#[test]
fn a_killed_process_s_dubbo_key_goes_with_its_lease() {
    use std::io::{BufRead, BufReader};
    if let Some(endpoint) = std::env::var_os(DUBBO_CHILD) {
        // The child: register a Dubbo provider under a 2 s lease, say so, and wait to be
        // killed (EOF on stdin, held by the parent, ends the wait if the parent goes first).
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use jupiter_core::app::Registrar;
            use jupiter_core::registry::dubbo::{DubboNaming, DubboService};
            use jupiter_core::registry::{AlsoRegister, ServiceRegistrar};
            let registry = EtcdRegistry::connect(RegistryConfig {
                kind: RegistryKind::Etcd,
                endpoints: vec![endpoint.to_string_lossy().into_owned()],
                ttl: Duration::from_secs(2),
                also_register: vec![AlsoRegister::Dubbo],
                ..Default::default()
            })
            .await
            .unwrap();
            let service = DubboService::from_descriptor(
                &shop_descriptor(),
                "shop.Orders",
                DubboNaming::Proto,
            )
            .unwrap();
            let registrar = ServiceRegistrar::new(
                Arc::new(registry),
                ServiceInfo::new("orders", "grpc", "127.0.0.1:50071").mode("prod"),
            )
            .dubbo(service);
            registrar.register().await.unwrap();
            println!("dubbo-registered");
            tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
                .await
                .unwrap()
                .unwrap();
        });
        return;
    }
    let etcd = Etcd::start();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_process_s_dubbo_key_goes_with_its_lease",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DUBBO_CHILD, etcd.endpoint())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let registered = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("dubbo-registered"));
    assert!(registered, "the child registered its Dubbo provider");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut raw = raw_client(&etcd).await;
        let dubbo = |raw: &mut etcd_client::Client| {
            let mut raw = raw.clone();
            async move {
                let got = raw
                    .get(
                        "/dubbo/shop.Orders/providers/",
                        Some(etcd_client::GetOptions::new().with_prefix()),
                    )
                    .await
                    .unwrap();
                got.kvs().iter().map(|kv| kv.lease()).collect::<Vec<_>>()
            }
        };
        let leases = dubbo(&mut raw).await;
        assert_eq!(leases.len(), 1, "the provider key is there");
        child.kill().unwrap(); // SIGKILL: no deregistration
        child.wait().unwrap();
        // Gone once its lease expires (2 s TTL; the bound only limits a failure).
        let mut gone = false;
        for _ in 0..600 {
            if dubbo(&mut raw).await.is_empty() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(gone, "the Dubbo key outlived its process");
        let ttl = raw.lease_time_to_live(leases[0], None).await.unwrap();
        assert_eq!(ttl.ttl(), -1, "removed by the lease's expiry");
    });
}
