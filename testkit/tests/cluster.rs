//! A real 6-node Redis Cluster: forms, survives a master kill by failover, takes the node back.

use std::time::Duration;

use testkit::{RedisCluster, Reply};

#[test]
fn forms_fails_over_and_rejoins() {
    let cluster = RedisCluster::start();
    assert_eq!(cluster.nodes().len(), 6);
    for n in cluster.nodes() {
        let info = n.command(&["CLUSTER", "INFO"]).unwrap().text().unwrap();
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(info.contains("cluster_known_nodes:6"), "{info}");
    }
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);

    // A key is served by its slot's master, and MOVED elsewhere.
    let mut served = 0;
    for n in cluster.nodes() {
        match n.command(&["SET", "{user1}", "x"]).unwrap() {
            Reply::Simple(ok) if ok == "OK" => served += 1,
            Reply::Error(e) => assert!(e.starts_with("MOVED"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(served, 1);

    // Kill master 0: its replica (node 3) takes over.
    let victim = &cluster.nodes()[0];
    assert_eq!(victim.role().unwrap(), "master");
    victim.kill();
    cluster.nodes()[3]
        .wait_role("master", Duration::from_secs(30))
        .unwrap();
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    assert_eq!(cluster.masters().len(), 3);

    // The old master comes back as a replica of the promoted one.
    victim.restart();
    cluster.wait_ok(Duration::from_secs(30)).unwrap();
    victim.wait_role("slave", Duration::from_secs(30)).unwrap();
    assert_eq!(cluster.replicas().len(), 3);

    // Pausing a replica leaves the cluster serving, after the others have detected its
    // failure (not merely before `cluster-node-timeout` could pass).
    let replica = &cluster.nodes()[4];
    let id = cluster.node_id(replica).unwrap();
    replica.pause();
    assert!(replica.is_paused());
    cluster
        .wait_failed(&id, true, Duration::from_secs(30))
        .unwrap();
    cluster.wait_ok(Duration::from_secs(10)).unwrap();
    replica.resume();
    cluster
        .wait_failed(&id, false, Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        replica.command(&["PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
}
