//! Lua scripts run by SHA1, loaded on demand.

use std::sync::Arc;

use crate::client::Client;
use crate::cmd::ToArg;
use crate::value::FromReply;
use crate::{Error, cmds};

/// A Lua script, invoked with `EVALSHA`; when the server does not know it yet (after a
/// restart, `SCRIPT FLUSH`, or on a cluster node that never ran it) it is sent once with
/// `EVAL`, which also loads it there. Cheap to clone.
///
/// In cluster mode the script's keys must share one slot: it runs on that slot's primary.
///
/// # Examples
///
/// ```no_run
/// # async fn f(client: redis_client::Client) -> Result<(), redis_client::Error> {
/// use redis_client::Script;
///
/// let incr_capped = Script::new("local v = redis.call('INCR', KEYS[1]) if v > tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) return tonumber(ARGV[1]) end return v");
/// let v: i64 = incr_capped.invoke(&client, &["counter"], &[10]).await?;
/// # let _ = v; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Script {
    code: Arc<str>,
    sha1: Arc<str>,
}

impl Script {
    /// A script from its source.
    pub fn new(code: &str) -> Self {
        let sha1 = sha1_smol::Sha1::from(code).digest().to_string();
        Script {
            code: Arc::from(code),
            sha1: Arc::from(sha1),
        }
    }

    /// The SHA1 the server knows the script by.
    pub fn sha1(&self) -> &str {
        &self.sha1
    }

    /// Runs the script with `keys` and `args`.
    ///
    /// # Errors
    ///
    /// The script's error, or the usual transport errors; [`Error::CrossSlot`] in cluster
    /// mode for keys in different slots.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the script may or may not have run.
    pub async fn invoke<T: FromReply>(
        &self,
        client: &Client,
        keys: &[impl ToArg],
        args: &[impl ToArg],
    ) -> Result<T, Error> {
        match client.query(cmds::evalsha(&self.sha1, keys, args)).await {
            // Not run: send the source, which the server keeps for the next EVALSHA.
            Err(e) if e.server_code() == Some("NOSCRIPT") => {
                client.query(cmds::eval(&self.code, keys, args)).await
            }
            other => other,
        }
    }
}
