//! A real single-member etcd: start, put/get, kill/restart keeps data, pause/resume.

use testkit::Etcd;

#[test]
fn start_put_kill_restart_pause() {
    let etcd = Etcd::start();
    assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
    etcd.put("/testkit/a", "one").unwrap();
    assert_eq!(etcd.get("/testkit/a").unwrap().as_deref(), Some("one"));
    assert_eq!(etcd.get("/testkit/missing").unwrap(), None);

    etcd.kill();
    assert!(!etcd.is_running());
    assert!(
        etcd.get("/testkit/a").is_err(),
        "killed etcd must not answer"
    );
    etcd.restart();
    assert_eq!(
        etcd.get("/testkit/a").unwrap().as_deref(),
        Some("one"),
        "data survives a restart"
    );

    etcd.pause();
    assert!(
        etcd.get("/testkit/a").is_err(),
        "paused etcd must not answer"
    );
    etcd.resume();
    assert_eq!(etcd.get("/testkit/a").unwrap().as_deref(), Some("one"));
}
