//! Explicit pipelines and `MULTI`/`EXEC` transactions.

use bytes::{Bytes, BytesMut};

use crate::Error;
use crate::client::{Client, Mode, Routed, check};
use crate::cmd::Cmd;
use crate::conn::{Connection, Reply};
use crate::resp::Frame;
use crate::value::FromReply;

/// Commands sent together in one write, their replies returned together. As a transaction
/// (`Client::transaction`), wrapped in `MULTI`/`EXEC` and run atomically.
///
/// Nothing from other callers interleaves with a pipeline's commands on the shared connection,
/// so a transaction without `WATCH` needs no connection of its own.
///
/// In cluster mode a pipeline's commands are sent per node (in order within each node), and
/// each reply comes back where its command stood; commands caught by a slot move are
/// redirected like single commands. A transaction needs every key in one slot.
///
/// # Examples
///
/// ```no_run
/// # async fn f(client: redis_client::Client) -> Result<(), redis_client::Error> {
/// use std::time::Duration;
/// use redis_client::cmds;
///
/// let mut p = client.pipeline();
/// p.add(cmds::set("a", 1)).add(cmds::incr("a")).add(cmds::get("a"));
/// let (_, n, a): ((), i64, String) = p.query().await?;
/// assert_eq!((n, a.as_str()), (2, "2"));
///
/// let mut tx = client.transaction();
/// tx.add(cmds::incr("counter")).add(cmds::expire("counter", Duration::from_secs(60)));
/// let results: Option<(i64, bool)> = tx.query().await?; // None if a WATCHed key changed
/// # let _ = results; Ok(()) }
/// ```
pub struct Pipeline {
    client: Client,
    conn: Option<Connection>,
    entries: Vec<Entry>,
    atomic: bool,
    readonly: bool,
    error: Option<Error>,
    /// A dedicated connection's slot, which every key must be in.
    bound_slot: Option<u16>,
}

/// One command of a pipeline.
pub(crate) enum Entry {
    /// Encoded and routed; in cluster mode, with its slot (`None`: keyless).
    Ready(Bytes, Option<u16>),
    /// A shadow command whose spec must be learned before it can be mapped (`add` cannot
    /// wait for the server; `exec` can).
    Learn(Cmd),
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("commands", &self.entries.len())
            .field("transaction", &self.atomic)
            .finish()
    }
}

impl Pipeline {
    pub(crate) fn new(client: Client, atomic: bool) -> Self {
        Pipeline {
            client,
            conn: None,
            entries: Vec::new(),
            atomic,
            readonly: true,
            error: None,
            bound_slot: None,
        }
    }

    pub(crate) fn on_connection(client: Client, conn: Connection, slot: Option<u16>) -> Self {
        Pipeline {
            conn: Some(conn),
            bound_slot: slot,
            ..Pipeline::new(client, true)
        }
    }

    /// Adds a command. A command the shadow policy refuses, one that would block, or (in
    /// cluster mode) one whose keys span slots makes the whole pipeline fail when queried,
    /// before anything is sent.
    pub fn add(&mut self, cmd: Cmd) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        if let Err(e) = self.try_add(cmd) {
            self.error = Some(e);
        }
        self
    }

    fn try_add(&mut self, cmd: Cmd) -> Result<(), Error> {
        let spec = cmd.spec();
        match crate::dedicated::placement(&cmd, spec) {
            crate::dedicated::Placement::Blocking(_) if !self.atomic => {
                return Err(Error::Unsupported {
                    command: cmd.first_word(),
                    reason: "a blocking command in a pipeline would stall the shared connection",
                });
            }
            crate::dedicated::Placement::Refused(reason) => {
                return Err(Error::Unsupported {
                    command: cmd.first_word(),
                    reason,
                });
            }
            _ => {}
        }
        self.readonly &= spec.is_some_and(|s| s.is_readonly());
        match self.client.route(cmd)? {
            Routed::Ready(cmd) => {
                let slot = self.slot_of(&cmd)?;
                self.entries.push(Entry::Ready(cmd.finish(), slot));
            }
            Routed::Learn(cmd) => self.entries.push(Entry::Learn(cmd)),
        }
        Ok(())
    }

    /// The slot of a routed command in cluster mode (`None` standalone or keyless), checking
    /// that a transaction stays in one slot.
    fn slot_of(&self, cmd: &Cmd) -> Result<Option<u16>, Error> {
        if !self.client.is_cluster() {
            return Ok(None);
        }
        let slot = crate::cluster::cmd_slot(cmd, cmd.spec())?;
        if let Some(slot) = slot
            && (self.atomic || self.bound_slot.is_some())
        {
            let first = self.bound_slot.or_else(|| {
                self.entries.iter().find_map(|e| match e {
                    Entry::Ready(_, s) => *s,
                    Entry::Learn(_) => None,
                })
            });
            if let Some(first) = first
                && first != slot
            {
                return Err(Error::CrossSlot {
                    command: "MULTI".to_owned(),
                    first,
                    other: slot,
                });
            }
        }
        Ok(slot)
    }

    /// Number of commands added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no command was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sends the commands and converts the replies (all of them, as one array; for a
    /// transaction, `EXEC`'s reply: null when a `WATCH`ed key changed).
    ///
    /// # Errors
    ///
    /// The first error reply among the commands, a transaction the server refused
    /// (`EXECABORT`), or the usual transport errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the replies are read and discarded.
    pub async fn query<T: FromReply>(self) -> Result<T, Error> {
        let frames = self.exec().await?;
        match frames {
            None => T::from_reply(Frame::Null),
            Some(frames) => {
                let frames = frames
                    .into_iter()
                    .map(check)
                    .collect::<Result<Vec<_>, _>>()?;
                T::from_reply(Frame::Array(frames))
            }
        }
    }

    /// Sends the commands and returns each reply or error reply separately.
    ///
    /// # Errors
    ///
    /// Transport errors, a refused transaction. `Ok(None)`: a transaction aborted by `WATCH`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the replies are read and discarded.
    pub async fn query_each(self) -> Result<Option<Vec<Result<Frame, Error>>>, Error> {
        Ok(self
            .exec()
            .await?
            .map(|frames| frames.into_iter().map(check).collect()))
    }

    async fn exec(self) -> Result<Option<Vec<Frame>>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.entries.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut cmds = Vec::with_capacity(self.entries.len());
        for entry in self.entries {
            match entry {
                Entry::Ready(data, slot) => cmds.push((data, slot)),
                Entry::Learn(cmd) => {
                    let cmd = self.client.route_learning(cmd).await?;
                    let slot = if self.client.is_cluster() {
                        crate::cluster::cmd_slot(&cmd, cmd.spec())?
                    } else {
                        None
                    };
                    cmds.push((cmd.finish(), slot));
                }
            }
        }
        let count = cmds.len() as u32;
        // A transaction may write; a pipeline of reads may be resent after a broken connection.
        let retry = !self.atomic && self.readonly;
        if let (Mode::Cluster(router), None) = (&self.client.inner.mode, &self.conn) {
            return if self.atomic {
                router.transaction(cmds, self.client.deadline()).await
            } else {
                router
                    .pipeline(cmds, retry, self.client.deadline())
                    .await
                    .map(Some)
            };
        }
        let (data, replies) = encode(&cmds, self.atomic);
        let frames = match (&self.conn, &self.client.inner.mode) {
            (Some(conn), _) => {
                let deadline = self.client.deadline();
                match conn.request(data, replies, retry, deadline).await? {
                    Reply::Many(f) => f,
                    Reply::One(f) => vec![f],
                }
            }
            (None, Mode::Single(pool)) => self.client.send_many(pool, data, replies, retry).await?,
            (None, Mode::Cluster(_)) => unreachable!("cluster pipelines returned above"),
        };
        if !self.atomic {
            return Ok(Some(frames));
        }
        exec_reply(frames, count)
    }
}

/// The commands as one request, wrapped in `MULTI`/`EXEC` when atomic; how many replies.
pub(crate) fn encode(cmds: &[(Bytes, Option<u16>)], atomic: bool) -> (Bytes, u32) {
    let len: usize = cmds.iter().map(|(d, _)| d.len()).sum();
    let mut all = BytesMut::with_capacity(len + 32);
    if atomic {
        all.extend_from_slice(MULTI);
    }
    for (d, _) in cmds {
        all.extend_from_slice(d);
    }
    if atomic {
        all.extend_from_slice(EXEC);
    }
    let replies = cmds.len() as u32 + if atomic { 2 } else { 0 };
    (all.freeze(), replies)
}

pub(crate) const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
pub(crate) const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// A transaction's replies: `MULTI`'s OK, a QUEUED (or a queueing error) per command, then
/// `EXEC`'s reply. `None` when a `WATCH`ed key changed.
pub(crate) fn exec_reply(frames: Vec<Frame>, count: u32) -> Result<Option<Vec<Frame>>, Error> {
    let mut it = frames.into_iter();
    check(it.next().unwrap_or(Frame::Null))?;
    let mut queue_error = None;
    for _ in 0..count {
        if let Some(Frame::Error(e)) = it.next() {
            queue_error.get_or_insert(e);
        }
    }
    match it.next() {
        Some(Frame::Error(e)) => Err(Error::Server(queue_error.unwrap_or(e))),
        Some(Frame::Null) => Ok(None),
        Some(Frame::Array(results)) => Ok(Some(results)),
        Some(other) => Err(crate::value::mismatch::<Vec<Frame>>(&other)),
        None => Err(crate::value::mismatch::<Vec<Frame>>(&Frame::Null)),
    }
}
