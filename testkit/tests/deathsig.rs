//! Servers die with the test process: a child test binary starts redis-server and is killed
//! with SIGKILL (no destructor runs); its server must go too (`PR_SET_PDEATHSIG`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "TESTKIT_DEATHSIG_CHILD";

/// Whether `pid` runs: present in /proc and not a zombie (one nobody reaped yet counts as gone).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

#[test]
fn a_killed_test_process_takes_its_servers_with_it() {
    if std::env::var_os(CHILD).is_some() {
        // The child: start a server, say its pid, and wait to be killed (bounded).
        let redis = testkit::RedisServer::start();
        // After libtest's "test … ..." on the same line.
        println!("server-pid={}", redis.pid().unwrap());
        std::thread::sleep(Duration::from_secs(20));
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_test_process_takes_its_servers_with_it",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid: u32 = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split_once("server-pid=")
                .and_then(|(_, p)| p.trim().parse().ok())
        })
        .expect("the child printed its server's pid");
    assert!(running(pid), "the child's redis-server {pid} runs");
    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel delivers the parent-death signal as the child exits; the server then needs a
    // moment to be torn down. The deadline only bounds a failure.
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(pid) {
        assert!(
            Instant::now() < deadline,
            "redis-server {pid} outlived the test process that started it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
