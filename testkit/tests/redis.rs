//! Standalone redis-server: start, fault controls, cleanup, parallel starts, missing binary.

use std::time::Duration;

use testkit::resp::Conn;
use testkit::{RedisServer, Reply};

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[test]
fn start_kill_restart_pause_resume_and_cleanup() {
    let redis = RedisServer::start();
    assert!(redis.addr().ip().is_loopback());
    assert_eq!(
        redis.command(&["SET", "k", "v"]).unwrap(),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        redis.command(&["GET", "k"]).unwrap(),
        Reply::Bulk(Some(b"v".to_vec()))
    );
    // No persistence.
    assert_eq!(
        redis.command(&["CONFIG", "GET", "save"]).unwrap(),
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"save".to_vec())),
            Reply::Bulk(Some(Vec::new()))
        ]))
    );

    let pid = redis.pid().unwrap();
    redis.kill();
    assert!(!pid_alive(pid));
    assert!(
        redis.command(&["PING"]).is_err(),
        "killed server must not answer"
    );

    redis.restart();
    assert_eq!(
        redis.command(&["PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );
    assert_eq!(
        redis.command(&["GET", "k"]).unwrap(),
        Reply::Bulk(None),
        "no persistence across restarts"
    );

    let mut conn = Conn::connect(redis.addr(), Duration::from_millis(300)).unwrap();
    redis.pause();
    let err = conn.command(&["PING"]).unwrap_err();
    assert!(err.to_string().contains("read reply"), "{err}");
    redis.resume();
    let mut conn = Conn::connect(redis.addr(), Duration::from_secs(2)).unwrap();
    assert_eq!(
        conn.command(&["PING"]).unwrap(),
        Reply::Simple("PONG".into())
    );

    let (dir, pid) = (redis.dir().to_path_buf(), redis.pid().unwrap());
    assert!(dir.exists());
    drop(redis);
    assert!(!dir.exists(), "temp dir removed");
    assert!(!pid_alive(pid), "process gone");
}

#[test]
fn config_directives_apply() {
    let redis = RedisServer::builder()
        .config("requirepass", "s3cret")
        .start();
    let reply = redis.command(&["GET", "x"]).unwrap();
    assert!(
        matches!(reply, Reply::Error(ref e) if e.starts_with("NOAUTH")),
        "{reply:?}"
    );
    let mut conn = Conn::connect(redis.addr(), Duration::from_secs(2)).unwrap();
    assert_eq!(
        conn.command(&["AUTH", "s3cret"]).unwrap(),
        Reply::Simple("OK".into())
    );
}

#[test]
fn a_panicking_test_still_stops_its_server() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let redis = RedisServer::start();
        tx.send((redis.pid().unwrap(), redis.dir().to_path_buf()))
            .unwrap();
        panic!("test failure");
    })
    .join();
    assert!(result.is_err());
    let (pid, dir) = rx.recv().unwrap();
    assert!(!pid_alive(pid));
    assert!(!dir.exists());
}

#[test]
fn many_servers_in_parallel_get_distinct_ports() {
    let handles: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(RedisServer::start))
        .collect();
    let servers: Vec<RedisServer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 8);
    for s in &servers {
        assert_eq!(s.command(&["PING"]).unwrap(), Reply::Simple("PONG".into()));
    }
}

#[test]
fn a_missing_binary_names_itself_and_the_install_command() {
    let err = RedisServer::builder()
        .binary("redis-server-not-installed")
        .try_start()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`redis-server-not-installed` not found in PATH"),
        "{msg}"
    );
    assert!(msg.contains("./scripts/test.sh"), "{msg}");
    let err = testkit::Etcd::try_start_with("etcd-not-installed")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`etcd-not-installed` not found") && err.contains("./scripts/test.sh"),
        "{err}"
    );
}
