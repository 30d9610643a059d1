//! Lua scripts run by SHA1, loaded on demand.

use std::sync::Arc;

use crate::client::Client;
use crate::cmd::ToArg;
use crate::value::FromReply;
use crate::{Error, cmds};

/// A Lua script, invoked with `EVALSHA` and loaded with `SCRIPT LOAD` when the server does not
/// know it yet (after a restart or `SCRIPT FLUSH`). Cheap to clone.
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
    /// The script's error, or the usual transport errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the script may or may not have run.
    pub async fn invoke<T: FromReply, K: ToArg, A: ToArg>(
        &self,
        client: &Client,
        keys: &[K],
        args: &[A],
    ) -> Result<T, Error> {
        match client.query(cmds::evalsha(&self.sha1, keys, args)).await {
            Err(e) if e.server_code() == Some("NOSCRIPT") => {
                let loaded: String = client.query(cmds::script_load(&self.code)).await?;
                debug_assert_eq!(loaded, *self.sha1);
                client.query(cmds::evalsha(&self.sha1, keys, args)).await
            }
            other => other,
        }
    }
}
