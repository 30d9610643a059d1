//! Servers die with the test process: a child test binary starts redis-server and is killed
//! with SIGKILL (no destructor runs); its server must go too (`PR_SET_PDEATHSIG`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

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
        // The child: start a server, say its pid, and wait to be killed. It blocks on its
        // stdin, which the parent holds open: if the parent goes first, EOF ends the wait.
        let redis = testkit::RedisServer::start();
        // After libtest's "test … ..." on the same line.
        println!("server-pid={}", redis.pid().unwrap());
        let _ = std::io::stdin().read_line(&mut String::new());
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
        .stdin(Stdio::piped())
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
    // The kernel delivers the parent-death signal as the child exits; the server's exit is
    // then waited for on a pidfd, which becomes readable when the process ends (the poll's
    // 30 s only bounds a failure).
    // SAFETY: pidfd_open(2) and poll(2) on a descriptor this test owns and closes.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) as libc::c_int;
        if fd >= 0 {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            libc::poll(&mut p, 1, 30_000);
            libc::close(fd);
        }
    }
    assert!(
        !running(pid),
        "redis-server {pid} outlived the test process that started it"
    );
}
