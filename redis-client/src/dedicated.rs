//! Dedicated connections: for blocking commands (kept off the shared connections, where they
//! would stall everyone behind them) and for `WATCH`-based optimistic transactions, whose state
//! lives on one connection across round trips.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::client::{Client, check, reply_one};
use crate::cmd::Cmd;
use crate::cmd::spec::Spec;
use crate::conn::Connection;
use crate::resp::Frame;
use crate::value::FromReply;
use crate::{Error, Pipeline};

/// Idle dedicated connections kept for reuse by blocking commands.
const MAX_IDLE: usize = 8;

pub(crate) enum Placement {
    Shared,
    /// Blocking, for at most this long (`None`: until the server answers).
    Blocking(Option<Duration>),
    Refused(&'static str),
}

/// Where a command may run.
pub(crate) fn placement(cmd: &Cmd, spec: Option<&'static Spec>) -> Placement {
    let Some(spec) = spec else {
        return Placement::Shared;
    };
    match spec.name {
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE"
        | "SUNSUBSCRIBE" => {
            return Placement::Refused(
                "subscribe through Client::subscriber(), not as a plain command",
            );
        }
        "MONITOR" | "SYNC" | "PSYNC" => {
            return Placement::Refused(
                "MONITOR and replication commands take over a connection; not supported",
            );
        }
        "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH" => {
            return Placement::Refused(
                "use Client::transaction() or Dedicated::watch() for transactions",
            );
        }
        _ => {}
    }
    if !spec.is_blocking() {
        return Placement::Shared;
    }
    let args = cmd.arg_slices();
    let secs = |a: Option<&&[u8]>| {
        a.and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse::<f64>().ok())
    };
    let block = match spec.name {
        // The block time is an argument only when asked for.
        "XREAD" | "XREADGROUP" => {
            match args.iter().position(|a| a.eq_ignore_ascii_case(b"BLOCK")) {
                None => return Placement::Shared,
                Some(i) => secs(args.get(i + 1)).map(|ms| ms / 1000.0),
            }
        }
        "BLMPOP" | "BZMPOP" => secs(args.get(1)),
        "WAIT" | "WAITAOF" => secs(args.last()).map(|ms| ms / 1000.0),
        _ => secs(args.last()),
    };
    Placement::Blocking(match block {
        Some(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
        _ => None,
    })
}

/// One connection of your own: commands on it run in order, nothing else shares it. Closed
/// when dropped.
///
/// # Examples
///
/// ```no_run
/// # async fn f(client: redis_client::Client) -> Result<(), redis_client::Error> {
/// use redis_client::cmds;
///
/// // Optimistic locking: the EXEC fails (None) if `balance` changed after WATCH.
/// let conn = client.dedicated().await?;
/// conn.query::<()>(redis_client::cmd("WATCH").arg("balance")).await?;
/// let balance: i64 = conn.query::<Option<i64>>(cmds::get("balance")).await?.unwrap_or(0);
/// let mut tx = conn.transaction();
/// tx.add(cmds::set("balance", balance + 10));
/// let committed: Option<Vec<redis_client::resp::Frame>> = tx.query().await?;
/// # let _ = committed; Ok(()) }
/// ```
pub struct Dedicated {
    client: Client,
    conn: Connection,
    task: AbortHandle,
}

impl std::fmt::Debug for Dedicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedicated")
            .field("addr", &self.conn.addr)
            .finish()
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        // A blocked command may never be answered: stop the task rather than wait for it.
        self.task.abort();
    }
}

impl Dedicated {
    /// Sends a command on this connection (any command but subscriptions) and converts the
    /// reply. Blocking commands wait as long as they ask to.
    ///
    /// # Errors
    ///
    /// As [`Client::query`].
    ///
    /// # Cancel safety
    ///
    /// Cancelling a command leaves its reply to be discarded when it comes; a blocking command
    /// cancelled while blocked holds the connection until the server answers it, so drop the
    /// `Dedicated` instead of reusing it.
    pub async fn query<T: FromReply>(&self, cmd: Cmd) -> Result<T, Error> {
        T::from_reply(self.query_frame(cmd).await?)
    }

    async fn query_frame(&self, cmd: Cmd) -> Result<Frame, Error> {
        let spec = cmd.spec();
        let block = match spec.map(|s| (s.name, s.is_pubsub())) {
            Some(("SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE", _)) => {
                return Err(Error::Invalid(
                    "subscribe through Client::subscriber(), not as a plain command".into(),
                ));
            }
            _ => match placement(&cmd, spec) {
                Placement::Blocking(b) => Some(b),
                _ => None,
            },
        };
        let cmd = self.client.route_learning(cmd).await?;
        let fut = self.conn.request(cmd.finish(), 1, false, None);
        let timeout = match (block, self.client.inner.config.timeout()) {
            (Some(None), _) | (None, None) => None,
            (Some(Some(b)), t) => Some(b + t.unwrap_or_default()),
            (None, Some(t)) => Some(t),
        };
        let reply = match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| Error::Timeout(t))??,
            None => fut.await?,
        };
        check(reply_one(reply)?)
    }

    /// A `MULTI`/`EXEC` transaction on this connection (after `WATCH`, it fails with `None`
    /// when a watched key changed).
    pub fn transaction(&self) -> Pipeline {
        Pipeline::on_connection(self.client.clone(), self.conn.clone(), true)
    }
}

impl Client {
    /// Opens a connection of your own (for `WATCH` transactions, or anything that must not be
    /// shared) and waits until it answers.
    ///
    /// # Errors
    ///
    /// The server does not answer within the connect timeout.
    pub async fn dedicated(&self) -> Result<Dedicated, Error> {
        let (conn, task) = Connection::spawn(Arc::clone(&self.inner.config), None);
        let d = Dedicated {
            client: self.clone(),
            conn,
            task,
        };
        let t = self.inner.config.connect_timeout + Duration::from_millis(500);
        match tokio::time::timeout(t, d.query_frame(crate::cmds::ping())).await {
            Ok(Ok(_)) => Ok(d),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Connect {
                addr: self.addr(),
                source: Box::new(Error::Timeout(t)),
            }),
        }
    }

    /// Runs a blocking command on an idle dedicated connection (or a new one), which goes back
    /// to the idle set only if the command completed.
    pub(crate) async fn blocking_query(
        &self,
        cmd: Cmd,
        _block: Option<Duration>,
    ) -> Result<Frame, Error> {
        let idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let d = match idle {
            Some(d) => d,
            None => self.dedicated().await?,
        };
        let result = d.query_frame(cmd).await;
        let reusable = match &result {
            Ok(_) => true,
            Err(e) => matches!(e, Error::Server(_) | Error::Type { .. }),
        };
        if reusable {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(d);
            }
        }
        result
    }
}
