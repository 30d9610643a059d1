//! Real servers for tests: `redis-server` standalone, a 6-node Redis Cluster, and etcd, each on
//! free loopback ports in its own temp dir, started and waited for, and stopped and cleaned up on
//! drop — also when the test panics, and also when the test process is killed (children get
//! `PR_SET_PDEATHSIG`).
//!
//! A dev-dependency only. Never a mock: tests talk to the real thing.
//!
//! # Layout
//!
//! - [`RedisServer`] (standalone) and [`RedisCluster`] (3 masters + 3 replicas), each node a
//!   [`RedisNode`] with `kill`, `pause` (SIGSTOP), `resume` (SIGCONT) and `restart`.
//! - [`Etcd`]: single member, same controls, data kept across restarts.
//! - [`resp`]: a blocking RESP client to prepare and inspect servers independently of the
//!   client under test.
//! - [`free_port`]: loopback ports that are free and not yet handed out by this process.
//! - [`Service`]: one of our own binaries ([`workspace_bin`]) as a real process, its output
//!   collected so a test can wait for "listening on …" and read its logs.
//!
//! A missing binary is a test failure whose message names the binary and the command that
//! installs it (`./scripts/test.sh`).
//!
//! # Example
//!
//! ```no_run
//! let redis = testkit::RedisServer::start();
//! redis.command(&["SET", "k", "v"]).unwrap();
//! redis.kill();
//! assert!(redis.command(&["PING"]).is_err());
//! redis.restart();
//! assert_eq!(redis.command(&["PING"]).unwrap(), testkit::Reply::Simple("PONG".into()));
//! ```

mod capture;
mod error;
mod etcd;
mod ports;
mod process;
mod redis;
pub mod resp;
mod service;

pub use capture::{SharedBuf, with_logs};
pub use error::{Error, INSTALL_HINT};
pub use etcd::Etcd;
pub use ports::free_port;
pub use process::{binary, sigstop};
pub use redis::{RedisBuilder, RedisCluster, RedisClusterBuilder, RedisNode, RedisServer};
pub use resp::Reply;
pub use service::{Service, workspace_bin};
