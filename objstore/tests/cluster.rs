//! Many nodes through the registry, with real processes: three (then four) objstore servers
//! registered in a real etcd, a [`ClusterClient`] that discovers them, replication R = 2, a
//! node killed with SIGKILL, a node joining, and the CLI acting on the whole cluster.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use jupiter_core::registry::{EtcdRegistry, RegistryConfig, RegistryKind};
use objstore::client::{Client, ClientConfig, PutOptions};
use objstore::cluster::{ClusterClient, ClusterConfig};
use testkit::{Etcd, Service};

const START: Duration = Duration::from_secs(30);
const MODE: &str = "cluster-test";

fn registry_config(etcd: &Etcd) -> RegistryConfig {
    RegistryConfig {
        kind: RegistryKind::Etcd,
        endpoints: vec![etcd.endpoint()],
        ttl: Duration::from_secs(2),
        ..RegistryConfig::default()
    }
}

/// One objstore process registered in `etcd`; its gRPC address.
fn node(etcd: &Etcd, dir: &Path, i: usize) -> (Service, String) {
    let config = dir.join(format!("node{i}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
            [app]
            name = "objstore"
            mode = "{MODE}"
            [governance]
            addr = "127.0.0.1:0"
            [registry]
            kind = "etcd"
            endpoints = ["{}"]
            ttl = "2s"
            [objstore]
            listen = "127.0.0.1:0"
            "#,
            etcd.endpoint()
        ),
    )
    .unwrap();
    let s = Service::start(
        &format!("objstore node {i}"),
        Path::new(env!("CARGO_BIN_EXE_objstore")),
        ["serve", "--config", config.to_str().unwrap()],
        [("RUST_LOG", "info")],
    )
    .unwrap();
    let addr = s.wait_for("objstore listening on grpc://", START).unwrap();
    // Registered once serving.
    s.wait_for("registered key=", START).unwrap();
    (s, addr)
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("value {i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_keys_survive_a_killed_node_and_the_client_follows_a_joining_one() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<(Service, String)> = (0..3).map(|i| node(&etcd, dir.path(), i)).collect();
    let registry = EtcdRegistry::connect(registry_config(&etcd)).await.unwrap();
    let config = |w: usize| ClusterConfig {
        mode: MODE.into(),
        replicas: 2,
        write_quorum: Some(w),
        client: ClientConfig {
            timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        },
        ..ClusterConfig::default()
    };
    let cluster = ClusterClient::discover(&registry, config(2)).await.unwrap();
    let mut addrs: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
    addrs.sort();
    assert_eq!(cluster.nodes(), addrs);

    // 300 keys, each on exactly its two owners.
    for i in 0..300 {
        let key = format!("k/{i}");
        cluster
            .put(key.as_bytes(), value(i), PutOptions::default())
            .await
            .unwrap();
    }
    let direct: Vec<(String, Client)> = addrs
        .iter()
        .map(|a| {
            (
                a.clone(),
                Client::connect_lazy(a, ClientConfig::default()).unwrap(),
            )
        })
        .collect();
    let mut per_node = [0usize; 3];
    for i in 0..300 {
        let key = format!("k/{i}");
        let owners = cluster.owners_of(key.as_bytes());
        assert_eq!(owners.len(), 2);
        for (n, (addr, c)) in direct.iter().enumerate() {
            let held = c.get(key.as_bytes()).await.unwrap().is_some();
            assert_eq!(held, owners.contains(addr), "{key} on {addr}");
            per_node[n] += usize::from(held);
        }
    }
    assert_eq!(per_node.iter().sum::<usize>(), 600);
    // The whole cluster's listing: every key once.
    assert_eq!(cluster.list_all(b"k/").await.unwrap().len(), 300);

    // SIGKILL one node: every key stays readable.
    let (dead, dead_addr) = nodes.remove(0);
    dead.kill();
    for i in 0..300 {
        let key = format!("k/{i}");
        let got = cluster.get(key.as_bytes()).await.unwrap();
        assert_eq!(got.map(|o| o.value), Some(value(i)), "{key}");
    }
    assert_eq!(cluster.list_all(b"k/").await.unwrap().len(), 300);
    // A key the dead node owns: W = 2 cannot be met, W = 1 can. (Over the three addresses
    // as they were: the registry drops the dead node once its lease ends.)
    let fixed: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let strict = ClusterClient::from_addresses(&fixed, config(2)).unwrap();
    let lenient = ClusterClient::from_addresses(&fixed, config(1)).unwrap();
    let orphan = (0..10_000)
        .map(|i| format!("new/{i}"))
        .find(|k| strict.owners_of(k.as_bytes()).contains(&dead_addr))
        .unwrap();
    let refused = strict
        .put(orphan.as_bytes(), value(0), PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, objstore::Error::Unavailable(ref m) if m.contains("1 of the 2")),
        "{refused:?}"
    );
    lenient
        .put(orphan.as_bytes(), value(1), PutOptions::default())
        .await
        .unwrap();

    // The dead node's lease ends and a new node joins: the client follows both, no restart.
    let (_joined, joined_addr) = node(&etcd, dir.path(), 3);
    let followed = cluster
        .wait_for_nodes(START, |n| {
            n.contains(&joined_addr) && !n.contains(&dead_addr) && n.len() == 3
        })
        .await;
    assert!(followed, "the client uses {:?}", cluster.nodes());
    let on_new = (0..10_000)
        .map(|i| format!("joined/{i}"))
        .find(|k| cluster.owners_of(k.as_bytes()).contains(&joined_addr))
        .unwrap();
    cluster
        .put(on_new.as_bytes(), value(7), PutOptions::default())
        .await
        .unwrap();
    let direct_new = Client::connect_lazy(&joined_addr, ClientConfig::default()).unwrap();
    assert_eq!(
        direct_new
            .get(on_new.as_bytes())
            .await
            .unwrap()
            .map(|o| o.value),
        Some(value(7))
    );

    // The CLI acts on the whole cluster through the registry.
    let registry_url = format!("etcd://{}", etcd.addr());
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_objstore"))
            .args(args)
            .args([
                "--registry",
                &registry_url,
                "--mode",
                MODE,
                "--replicas",
                "2",
            ])
            .output()
            .unwrap()
    };
    let ls = cli(&["ls", "k/"]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ls.stdout).lines().count(), 300);
    // A key written after the join: placed on the node set the CLI sees too.
    let get = cli(&["get", &on_new]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(get.stdout, b"value 7");
}

/// Freezes (`STOP`) or resumes (`CONT`) a node: it keeps its data but answers nothing.
fn signal(node: &Service, sig: &str) {
    let pid = node.pid().expect("the node runs").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_repair_copies_that_missed_writes_and_deletes_stay_deleted() {
    use objstore::cluster::{STAMP_KEY, TOMBSTONE_KEY};
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<(Service, String)> = (0..3).map(|i| node(&etcd, dir.path(), i)).collect();
    let addrs: Vec<&str> = nodes.iter().map(|(_, a)| a.as_str()).collect();
    let cluster = ClusterClient::from_addresses(
        &addrs,
        ClusterConfig {
            replicas: 2,
            write_quorum: Some(1),
            client: ClientConfig {
                timeout: Duration::from_millis(500),
                ..ClientConfig::default()
            },
            ..ClusterConfig::default()
        },
    )
    .unwrap();
    let key = |i: usize| format!("k/{i}");
    let v = |round: usize, i: usize| Bytes::from(format!("v{round} {i}"));
    for i in 0..60 {
        cluster
            .put(key(i).as_bytes(), v(1, i), PutOptions::default())
            .await
            .unwrap();
    }
    // Node 0 is frozen while keys are rewritten (0..50) and deleted (50..60): it keeps the
    // first values, its partner takes the new ones (W = 1).
    let (paused, paused_addr) = (&nodes[0].0, nodes[0].1.clone());
    let on_paused: Vec<usize> = (0..60)
        .filter(|&i| cluster.owners_of(key(i).as_bytes()).contains(&paused_addr))
        .collect();
    assert!(on_paused.len() > 20, "{on_paused:?}");
    signal(paused, "STOP");
    let writes = (0..50).map(|i| {
        let cluster = cluster.clone();
        async move {
            cluster
                .put(key(i).as_bytes(), v(2, i), PutOptions::default())
                .await
        }
    });
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    let deletes = (50..60).map(|i| {
        let cluster = cluster.clone();
        async move { cluster.delete(key(i).as_bytes()).await }
    });
    for r in futures::future::join_all(deletes).await {
        assert!(r.unwrap().is_some(), "the key existed");
    }
    signal(paused, "CONT");
    let direct = Client::connect_lazy(&paused_addr, ClientConfig::default()).unwrap();
    let stale = on_paused[0];
    assert_eq!(
        direct
            .get(key(stale).as_bytes())
            .await
            .unwrap()
            .unwrap()
            .value,
        v(1, stale),
        "the paused node holds the old value"
    );
    assert_eq!(cluster.repairs(), 0);

    // Every read returns the last write, and rewrites the paused node's stale copies.
    for i in 0..60 {
        let got = cluster.get(key(i).as_bytes()).await.unwrap();
        if i < 50 {
            let o = got.unwrap_or_else(|| panic!("{} lost", key(i)));
            assert_eq!(o.value, v(2, i));
            assert!(
                !o.info.metadata.contains_key(STAMP_KEY),
                "{:?}",
                o.info.metadata
            );
        } else {
            assert!(got.is_none(), "{} came back: {got:?}", key(i));
        }
    }
    assert_eq!(cluster.repairs(), on_paused.len() as u64);
    for &i in &on_paused {
        let copy = direct.get(key(i).as_bytes()).await.unwrap().unwrap();
        if i < 50 {
            assert_eq!(copy.value, v(2, i), "{} repaired", key(i));
        } else {
            assert!(copy.info.metadata.contains_key(TOMBSTONE_KEY), "{}", key(i));
        }
    }
    // Repaired copies agree: reading again writes nothing.
    for i in 0..60 {
        cluster.get(key(i).as_bytes()).await.unwrap();
        cluster.head(key(i).as_bytes()).await.unwrap();
    }
    assert_eq!(cluster.repairs(), on_paused.len() as u64);
    let listed = cluster.list_all(b"k/").await.unwrap();
    assert_eq!(listed.len(), 50, "tombstones are not listed");
    assert!(listed.iter().all(|(_, i)| i.metadata.is_empty()));

    // A copy removed around the cluster client is written back by the next `head`.
    let gone = on_paused.iter().copied().find(|&i| i < 50).unwrap();
    direct.delete(key(gone).as_bytes()).await.unwrap();
    let info = cluster.head(key(gone).as_bytes()).await.unwrap().unwrap();
    assert_eq!(info.size, v(2, gone).len() as u64);
    assert_eq!(cluster.repairs(), on_paused.len() as u64 + 1);
    assert_eq!(
        direct
            .get(key(gone).as_bytes())
            .await
            .unwrap()
            .unwrap()
            .value,
        v(2, gone)
    );

    // `if_absent` holds over a tombstone, not over a live key.
    let if_absent = PutOptions {
        if_absent: true,
        ..PutOptions::default()
    };
    cluster
        .put(key(55).as_bytes(), v(3, 55), if_absent.clone())
        .await
        .unwrap();
    assert_eq!(
        cluster
            .get(key(55).as_bytes())
            .await
            .unwrap()
            .unwrap()
            .value,
        v(3, 55)
    );
    let refused = cluster
        .put(key(1).as_bytes(), v(3, 1), if_absent)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, objstore::Error::Precondition { .. }),
        "{refused:?}"
    );
    assert_eq!(
        cluster.get(key(1).as_bytes()).await.unwrap().unwrap().value,
        v(2, 1)
    );
}
