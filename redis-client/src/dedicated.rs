//! Dedicated connections: for blocking commands (kept off the shared connections, where they
//! would stall everyone behind them) and for `WATCH`-based optimistic transactions, whose state
//! lives on one connection across round trips.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::client::{Client, Mode, check};
use crate::cmd::spec::Spec;
use crate::cmd::{Cmd, ToArg};
use crate::conn::{Deadline, Reply};
use crate::pool::{Link, Pool, reply_one};
use crate::resp::Frame;
use crate::value::FromReply;
use crate::{Error, Pipeline};

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
                "use Client::transaction() or Dedicated::transaction() (after WATCH on a Dedicated) for transactions",
            );
        }
        "CLIENT TRACKING" => {
            return Placement::Refused(
                "tracking applies to every pooled connection: set tracking in the client's configuration",
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
    // A caller's number: anything that is no duration (negative, NaN, past `Duration::MAX`)
    // waits as long as the server does, which answers those itself.
    Placement::Blocking(match block {
        Some(s) if s > 0.0 => Duration::try_from_secs_f64(s).ok(),
        _ => None,
    })
}

/// How long a blocking command may take: its block time plus the command timeout, or no
/// limit for one that blocks until served.
fn blocking_deadline(block: Option<Duration>, timeout: Option<Duration>) -> Option<Deadline> {
    let block = block?;
    Some(Deadline::after(
        block.saturating_add(timeout.unwrap_or_default()),
    ))
}

/// One connection of your own: commands on it run in order, nothing else shares it. Closed
/// when dropped.
///
/// In cluster mode it is bound to one slot's primary ([`Client::dedicated_for`]): commands
/// with keys in another slot fail with [`Error::CrossSlot`] before anything is sent.
///
/// # Examples
///
/// ```no_run
/// # async fn f(client: redis_client::Client) -> Result<(), redis_client::Error> {
/// use redis_client::cmds;
///
/// // Optimistic locking: the EXEC fails (None) if `balance` changed after WATCH.
/// let conn = client.dedicated_for("balance").await?;
/// conn.query::<()>(redis_client::cmd("WATCH").arg("balance")).await?;
/// let balance: i64 = conn.query::<Option<i64>>(cmds::get("balance")).await?.unwrap_or(0);
/// let mut tx = conn.transaction();
/// tx.add(cmds::set("balance", balance + 10));
/// let committed: Option<Vec<redis_client::resp::Frame>> = tx.query().await?;
/// # let _ = committed; Ok(()) }
/// ```
pub struct Dedicated {
    client: Client,
    link: Link,
    slot: Option<u16>,
}

impl std::fmt::Debug for Dedicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedicated")
            .field("addr", &self.link.conn.addr)
            .field("slot", &self.slot)
            .finish()
    }
}

impl Dedicated {
    /// Sends a command on this connection (any command but subscriptions) and converts the
    /// reply. Blocking commands wait as long as they ask to.
    ///
    /// # Errors
    ///
    /// As [`Client::query`]; in cluster mode [`Error::CrossSlot`] for a key outside this
    /// connection's slot.
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
        let block = match spec.map(|s| s.name) {
            Some("SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE") => {
                return Err(Error::Unsupported {
                    command: cmd.first_word(),
                    reason: "subscribe through Client::subscriber(), not as a plain command",
                });
            }
            _ => match placement(&cmd, spec) {
                Placement::Blocking(b) => Some(b),
                _ => None,
            },
        };
        let cmd = self.client.route_learning(cmd).await?;
        if let Some(bound) = self.slot
            && let Some(slot) = crate::cluster::cmd_slot(&cmd, spec)?
            && slot != bound
        {
            return Err(Error::CrossSlot {
                command: cmd.first_word(),
                first: bound,
                other: slot,
            });
        }
        let timeout = self.client.inner.config.timeout();
        let deadline = match block {
            Some(b) => blocking_deadline(b, timeout),
            None => timeout.map(Deadline::after),
        };
        let reply = self
            .link
            .conn
            .request(cmd.finish(), 1, false, deadline)
            .await?;
        check(reply_one(reply))
    }

    /// A `MULTI`/`EXEC` transaction on this connection (after `WATCH`, it fails with `None`
    /// when a watched key changed).
    pub fn transaction(&self) -> Pipeline {
        Pipeline::on_connection(self.client.clone(), self.link.conn.clone(), self.slot)
    }
}

impl Client {
    /// Opens a connection of your own (for `WATCH` transactions, or anything that must not be
    /// shared) and waits until it answers. In cluster mode use
    /// [`dedicated_for`](Self::dedicated_for).
    ///
    /// # Errors
    ///
    /// The server does not answer within the connect timeout; [`Error::Unsupported`] on a
    /// cluster.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a connection not handed out is closed.
    pub async fn dedicated(&self) -> Result<Dedicated, Error> {
        match &self.inner.mode {
            Mode::Single(pool) => self.open_dedicated(pool.clone(), None).await,
            Mode::Cluster(_) => Err(Error::Unsupported {
                command: "dedicated".to_owned(),
                reason: "in cluster mode a dedicated connection serves one slot: use Client::dedicated_for(key)",
            }),
        }
    }

    /// A dedicated connection to the server of `key` (in cluster mode, the primary of its
    /// slot; the connection then serves that slot only).
    ///
    /// # Errors
    ///
    /// As [`dedicated`](Self::dedicated); in cluster mode the slot map could not be read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn dedicated_for(&self, key: impl ToArg) -> Result<Dedicated, Error> {
        match &self.inner.mode {
            Mode::Single(pool) => self.open_dedicated(pool.clone(), None).await,
            Mode::Cluster(router) => {
                // The key as sent: under shadow traffic, mapped.
                let probe = self.route_learning(crate::cmds::get(key)).await?;
                let slot = crate::cluster::cmd_slot(&probe, probe.spec())?.unwrap_or(0);
                let pool = router.primary_for(slot).await?;
                self.open_dedicated(pool, Some(slot)).await
            }
        }
    }

    async fn open_dedicated(&self, pool: Arc<Pool>, slot: Option<u16>) -> Result<Dedicated, Error> {
        let d = Dedicated {
            client: self.clone(),
            link: Link::open(&pool.settings),
            slot,
        };
        let t = self.inner.config.connect_timeout + Duration::from_millis(500);
        match tokio::time::timeout(t, d.query_frame(crate::cmds::ping())).await {
            Ok(Ok(_)) => Ok(d),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Connect {
                addr: pool.addr.to_string(),
                source: Box::new(Error::Timeout(t)),
            }),
        }
    }

    /// Runs a (routed) blocking command on an idle dedicated connection of its server, or a
    /// new one; in cluster mode following redirections.
    pub(crate) async fn blocking_query(
        &self,
        cmd: Cmd,
        block: Option<Duration>,
    ) -> Result<Frame, Error> {
        let deadline = blocking_deadline(block, self.inner.config.timeout());
        match &self.inner.mode {
            Mode::Single(pool) => check(blocking_call(pool, cmd.finish(), deadline).await?),
            Mode::Cluster(router) => check(router.blocking(cmd, deadline).await?),
        }
    }
}

/// Sends `data` (one command, or `ASKING` and one) on a dedicated connection of `pool`'s
/// server, which goes back to the idle set if the command completed. The last reply.
pub(crate) async fn blocking_call(
    pool: &Pool,
    data: Bytes,
    deadline: Option<Deadline>,
) -> Result<Frame, Error> {
    let replies = if data.starts_with(crate::cluster::ASKING) {
        2
    } else {
        1
    };
    let link = pool
        .take_idle()
        .unwrap_or_else(|| Link::open(&pool.settings));
    let result = link
        .conn
        .request(data, replies, false, deadline)
        .await
        .map(|r| match r {
            // `ASKING`'s OK, then the command's reply.
            Reply::Many(mut v) => v.pop().unwrap_or(Frame::Null),
            Reply::One(f) => f,
        });
    let reusable = match &result {
        Ok(_) => true,
        Err(e) => matches!(e, Error::Server(_) | Error::Type { .. }),
    };
    if reusable {
        pool.put_idle(link);
    }
    result
}
