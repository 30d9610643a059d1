//! Free loopback ports.
//!
//! The kernel picks a free port when we bind `127.0.0.1:0`; we release it and hand it to the
//! server. Another process may grab it in between, so servers that fail to start are retried
//! with fresh ports (see `start_with_retry`). Within this process, ports already handed out are
//! never handed out again, so parallel tests of one binary cannot collide even if the kernel
//! returns a recently released port.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

use crate::Error;

/// A port that was free a moment ago and that this process has not handed out before.
pub fn free_port() -> Result<u16, Error> {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Default::default);
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("bind 127.0.0.1:0", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("local_addr", e))?
            .port();
        if given.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return Ok(port);
        }
    }
    Err(Error::Protocol(
        "no free loopback port after 100 attempts".into(),
    ))
}
