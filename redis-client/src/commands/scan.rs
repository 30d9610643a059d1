//! Cursor commands: a constructor for one page (`SCAN cursor …`) and a method that streams
//! every page, so callers never handle cursors.

use std::collections::VecDeque;
use std::future::Future;

use bytes::Bytes;
use futures::Stream;
use jupiter_core::shadow::{Access, Route, ShadowTarget};

use super::{arg_bytes, known, with_scores};
use crate::cmd::{Cmd, ToArg};
use crate::{Client, Error};

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`: one page; see [`Client::scan`].
pub fn scan(cursor: u64, pattern: Option<&str>, count: Option<u64>, key_type: Option<&str>) -> Cmd {
    let mut c = scan_like(known!("SCAN", 64), cursor, pattern, count);
    if let Some(t) = key_type {
        c.push(("TYPE", t));
    }
    c
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count]`: one page; see [`Client::hscan`].
pub fn hscan(key: impl ToArg, cursor: u64, pattern: Option<&str>, count: Option<u64>) -> Cmd {
    scan_like(known!("HSCAN", 64).arg(key), cursor, pattern, count)
}

/// `SSCAN key cursor [MATCH pattern] [COUNT count]`: one page; see [`Client::sscan`].
pub fn sscan(key: impl ToArg, cursor: u64, pattern: Option<&str>, count: Option<u64>) -> Cmd {
    scan_like(known!("SSCAN", 64).arg(key), cursor, pattern, count)
}

/// `ZSCAN key cursor [MATCH pattern] [COUNT count]`: one page; see [`Client::zscan`].
pub fn zscan(key: impl ToArg, cursor: u64, pattern: Option<&str>, count: Option<u64>) -> Cmd {
    scan_like(known!("ZSCAN", 64).arg(key), cursor, pattern, count)
}

fn scan_like(mut c: Cmd, cursor: u64, pattern: Option<&str>, count: Option<u64>) -> Cmd {
    c.push(cursor);
    if let Some(p) = pattern {
        c.push(("MATCH", p));
    }
    if let Some(n) = count {
        c.push(("COUNT", n));
    }
    c
}

impl Client {
    /// All keys matching `pattern`, by `SCAN` (never `KEYS`, which blocks the server), as a
    /// stream. In cluster mode it scans every primary in turn. Under shadow traffic it scans
    /// the shadow key space and yields keys without the shadow prefix.
    ///
    /// Keys added or removed during the scan may or may not be seen; a key present throughout
    /// is seen at least once (Redis's `SCAN` guarantee), per node.
    ///
    /// # Errors
    ///
    /// The stream yields an error (and ends) when a page fails: see [`Client::query`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream at any point is safe.
    pub fn scan(
        &self,
        pattern: Option<&str>,
        count: Option<u64>,
    ) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
        let prefix = self.shadow_scan_prefix();
        let pattern = match (&prefix, pattern) {
            (Ok(Some(p)), pat) => Some(format!(
                "{}{}",
                glob_escape(&String::from_utf8_lossy(p)),
                pat.unwrap_or("*")
            )),
            (_, pat) => pat.map(str::to_owned),
        };
        let client = self.clone();
        let nodes = self.scan_targets();
        let node_count = nodes.len();
        cursor_stream(node_count, move |node, cursor| {
            let (client, pattern, prefix) = (client.clone(), pattern.clone(), prefix.clone());
            let target = nodes.get(node).cloned().flatten();
            async move {
                let prefix = prefix.map_err(Error::ShadowRefused)?;
                let page = scan(cursor, pattern.as_deref(), count, None).shadow_mapped();
                let (next, keys): (u64, Vec<Bytes>) = client.query_on(target, page).await?;
                let keys = match prefix {
                    Some(p) => keys
                        .into_iter()
                        .map(|k| k.slice(p.len().min(k.len())..))
                        .collect(),
                    None => keys,
                };
                Ok((next, keys))
            }
        })
    }

    /// The shadow key prefix SCAN must stay within (its `MATCH` starts with it), or the
    /// refusal.
    fn shadow_scan_prefix(&self) -> Result<Option<Bytes>, jupiter_core::shadow::ShadowRefused> {
        match self.inner.shadow.route(Access::Read)? {
            Route::Live => Ok(None),
            Route::Shadow => match self.inner.shadow.target() {
                ShadowTarget::KeyPrefix(p) => Ok(Some(Bytes::copy_from_slice(p))),
                _ => Ok(None),
            },
        }
    }

    /// All field/value pairs of a hash by `HSCAN`, as a stream.
    ///
    /// # Errors
    ///
    /// As [`scan`](Self::scan).
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream at any point is safe.
    pub fn hscan(
        &self,
        key: impl ToArg,
        pattern: Option<&str>,
        count: Option<u64>,
    ) -> impl Stream<Item = Result<(Bytes, Bytes), Error>> + Send + 'static {
        let key = arg_bytes(&key);
        let (client, pattern) = (self.clone(), pattern.map(str::to_owned));
        cursor_stream(1, move |_, cursor| {
            let (client, key, pattern) = (client.clone(), key.clone(), pattern.clone());
            async move {
                let (next, flat): (u64, Vec<Bytes>) = client
                    .query(hscan(key, cursor, pattern.as_deref(), count))
                    .await?;
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(f), Some(v)) = (it.next(), it.next()) {
                    pairs.push((f, v));
                }
                Ok((next, pairs))
            }
        })
    }

    /// All members of a set by `SSCAN`, as a stream.
    ///
    /// # Errors
    ///
    /// As [`scan`](Self::scan).
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream at any point is safe.
    pub fn sscan(
        &self,
        key: impl ToArg,
        pattern: Option<&str>,
        count: Option<u64>,
    ) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
        let key = arg_bytes(&key);
        let (client, pattern) = (self.clone(), pattern.map(str::to_owned));
        cursor_stream(1, move |_, cursor| {
            let (client, key, pattern) = (client.clone(), key.clone(), pattern.clone());
            async move {
                client
                    .query::<(u64, Vec<Bytes>)>(sscan(key, cursor, pattern.as_deref(), count))
                    .await
            }
        })
    }

    /// All `(member, score)` pairs of a sorted set by `ZSCAN`, as a stream.
    ///
    /// # Errors
    ///
    /// As [`scan`](Self::scan).
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream at any point is safe.
    pub fn zscan(
        &self,
        key: impl ToArg,
        pattern: Option<&str>,
        count: Option<u64>,
    ) -> impl Stream<Item = Result<(Bytes, f64), Error>> + Send + 'static {
        let key = arg_bytes(&key);
        let (client, pattern) = (self.clone(), pattern.map(str::to_owned));
        cursor_stream(1, move |_, cursor| {
            let (client, key, pattern) = (client.clone(), key.clone(), pattern.clone());
            async move {
                let (next, page): (u64, crate::resp::Frame) = client
                    .query(zscan(key, cursor, pattern.as_deref(), count))
                    .await?;
                Ok((next, with_scores(page)?))
            }
        })
    }
}

/// A stream over a cursor-paged command on `nodes` targets in turn: calls `page(node,
/// cursor)` until the cursor comes back 0, then moves to the next node, yielding each page's
/// items in order. The first error ends the stream.
fn cursor_stream<T, F, Fut>(
    nodes: usize,
    page: F,
) -> impl Stream<Item = Result<T, Error>> + Send + 'static
where
    T: Send + 'static,
    F: Fn(usize, u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(u64, Vec<T>), Error>> + Send,
{
    struct State<T, F> {
        page: F,
        nodes: usize,
        node: usize,
        cursor: Option<u64>,
        buffered: VecDeque<T>,
    }
    futures::stream::unfold(
        State {
            page,
            nodes,
            node: 0,
            cursor: (nodes > 0).then_some(0),
            buffered: VecDeque::new(),
        },
        |mut st| async move {
            loop {
                if let Some(item) = st.buffered.pop_front() {
                    return Some((Ok(item), st));
                }
                let cursor = st.cursor?;
                match (st.page)(st.node, cursor).await {
                    Ok((next, items)) => {
                        st.buffered.extend(items);
                        st.cursor = if next != 0 {
                            Some(next)
                        } else {
                            st.node += 1;
                            (st.node < st.nodes).then_some(0)
                        };
                    }
                    Err(e) => {
                        st.cursor = None;
                        return Some((Err(e), st));
                    }
                }
            }
        },
    )
}

/// `s` as a glob pattern matching itself (for `MATCH`): `*`, `?`, `[`, `]` and `\` escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
