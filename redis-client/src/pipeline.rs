//! Explicit pipelines and `MULTI`/`EXEC` transactions.

use bytes::BytesMut;

use crate::Error;
use crate::client::{Client, Routed, check};
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
/// # Examples
///
/// ```no_run
/// # async fn f(client: redis_client::Client) -> Result<(), redis_client::Error> {
/// use redis_client::cmds;
///
/// let mut p = client.pipeline();
/// p.add(cmds::set("a", 1)).add(cmds::incr("a")).add(cmds::get("a"));
/// let (_, n, a): ((), i64, String) = p.query().await?;
/// assert_eq!((n, a.as_str()), (2, "2"));
///
/// let mut tx = client.transaction();
/// tx.add(cmds::incr("counter")).add(cmds::expire("counter", 60));
/// let results: Option<(i64, bool)> = tx.query().await?; // None if a WATCHed key changed
/// # let _ = results; Ok(()) }
/// ```
pub struct Pipeline {
    client: Client,
    conn: Option<Connection>,
    data: BytesMut,
    count: u32,
    atomic: bool,
    readonly: bool,
    error: Option<Error>,
    /// Shadow commands whose specs must be learned before they can be mapped, with where in
    /// `data` each goes (`add` cannot wait for the server; `exec` can).
    unlearned: Vec<(usize, Cmd)>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("commands", &self.count)
            .field("transaction", &self.atomic)
            .finish()
    }
}

impl Pipeline {
    pub(crate) fn new(client: Client, atomic: bool) -> Self {
        Pipeline {
            client,
            conn: None,
            data: BytesMut::new(),
            count: 0,
            atomic,
            readonly: true,
            error: None,
            unlearned: Vec::new(),
        }
    }

    pub(crate) fn on_connection(client: Client, conn: Connection, atomic: bool) -> Self {
        Pipeline {
            conn: Some(conn),
            ..Pipeline::new(client, atomic)
        }
    }

    /// Adds a command. A command the shadow policy refuses, or one that would block, makes the
    /// whole pipeline fail when queried, before anything is sent.
    pub fn add(&mut self, cmd: Cmd) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        let spec = cmd.spec();
        if !self.atomic
            && spec.is_some_and(|s| {
                matches!(
                    crate::dedicated::placement(&cmd, Some(s)),
                    crate::dedicated::Placement::Blocking(_)
                )
            })
        {
            self.error = Some(Error::Invalid(format!(
                "blocking command {} in a pipeline would stall the shared connection",
                cmd.name()
            )));
            return self;
        }
        if let Some(crate::dedicated::Placement::Refused(why)) =
            spec.map(|s| crate::dedicated::placement(&cmd, Some(s)))
        {
            self.error = Some(Error::Invalid(why.to_owned()));
            return self;
        }
        self.readonly &= spec.is_some_and(|s| s.is_readonly());
        match self.client.route(cmd) {
            Ok(Routed::Ready(cmd)) => {
                self.data.extend_from_slice(&cmd.finish());
                self.count += 1;
            }
            Ok(Routed::Learn(cmd)) => {
                self.unlearned.push((self.data.len(), cmd));
                self.count += 1;
            }
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Number of commands added.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no command was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
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
    pub async fn query_each(self) -> Result<Option<Vec<Result<Frame, Error>>>, Error> {
        Ok(self
            .exec()
            .await?
            .map(|frames| frames.into_iter().map(check).collect()))
    }

    async fn exec(mut self) -> Result<Option<Vec<Frame>>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.count == 0 {
            return Ok(Some(Vec::new()));
        }
        if !self.unlearned.is_empty() {
            // Learn and map them, then splice each in where it was added.
            let mut data = BytesMut::with_capacity(self.data.len() + 256);
            let mut at = 0;
            for (offset, cmd) in std::mem::take(&mut self.unlearned) {
                let cmd = self.client.route_learning(cmd).await?;
                data.extend_from_slice(&self.data[at..offset]);
                data.extend_from_slice(&cmd.finish());
                at = offset;
            }
            data.extend_from_slice(&self.data[at..]);
            self.data = data;
        }
        let (data, replies) = if self.atomic {
            let mut all = BytesMut::with_capacity(self.data.len() + 32);
            all.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
            all.extend_from_slice(&self.data);
            all.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
            (all.freeze(), self.count + 2)
        } else {
            (self.data.freeze(), self.count)
        };
        // A transaction may write; a pipeline of reads may be resent after a broken connection.
        let retry = !self.atomic && self.readonly;
        let frames = match &self.conn {
            Some(conn) => {
                let fut = conn.request(data, replies, retry, None);
                let reply = match self.client.inner.config.timeout() {
                    Some(t) => tokio::time::timeout(t, fut)
                        .await
                        .map_err(|_| Error::Timeout(t))??,
                    None => fut.await?,
                };
                match reply {
                    Reply::Many(f) => f,
                    Reply::One(f) => vec![f],
                }
            }
            None => self.client.send_many(data, replies, retry).await?,
        };
        if !self.atomic {
            return Ok(Some(frames));
        }
        // MULTI's OK, a QUEUED (or a queueing error) per command, then EXEC's reply.
        let mut it = frames.into_iter();
        check(it.next().unwrap_or(Frame::Null))?;
        let mut queue_error = None;
        for _ in 0..self.count {
            if let Some(Frame::Error(e)) = it.next() {
                queue_error.get_or_insert(e);
            }
        }
        match it.next() {
            Some(Frame::Error(e)) => Err(Error::Server(queue_error.unwrap_or(e))),
            Some(Frame::Null) => Ok(None),
            Some(Frame::Array(results)) => Ok(Some(results)),
            Some(other) => Err(crate::value::mismatch::<Vec<Frame>>(&other)),
            None => Err(Error::Invalid("transaction reply missing".into())),
        }
    }
}
