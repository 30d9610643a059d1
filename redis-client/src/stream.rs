//! Reply types of stream commands.

use std::collections::HashMap;

use bytes::Bytes;

use crate::Error;
use crate::resp::Frame;
use crate::value::{FromReply, elements, mismatch, pairs};

/// One stream entry: its id and its field/value pairs, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// `1700000000000-0`
    pub id: String,
    /// Field/value pairs.
    pub fields: Vec<(Bytes, Bytes)>,
}

impl StreamEntry {
    /// The value of `field`, if present.
    pub fn get(&self, field: &str) -> Option<&Bytes> {
        self.fields
            .iter()
            .find(|(f, _)| f == field.as_bytes())
            .map(|(_, v)| v)
    }

    /// The fields as a map (later duplicates win).
    pub fn to_map(&self) -> HashMap<Bytes, Bytes> {
        self.fields.iter().cloned().collect()
    }
}

impl FromReply for StreamEntry {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        let (id, fields): (String, Frame) = FromReply::from_reply(frame)?;
        let fields = pairs(fields)?
            .into_iter()
            .map(|(f, v)| Ok((Bytes::from_reply(f)?, Bytes::from_reply(v)?)))
            .collect::<Result<_, Error>>()?;
        Ok(StreamEntry { id, fields })
    }
}

/// The entries read from one stream by `XREAD`/`XREADGROUP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRead {
    /// The stream's key.
    pub key: String,
    /// Its entries.
    pub entries: Vec<StreamEntry>,
}

/// `XREAD`'s reply: RESP2 array of `[key, entries]`, RESP3 map; null (timeout) is empty.
pub(crate) fn stream_reads(frame: Frame) -> Result<Vec<StreamRead>, Error> {
    let list = match frame {
        Frame::Null => return Ok(Vec::new()),
        Frame::Map(p) => p,
        Frame::Array(items) => items
            .into_iter()
            .map(|item| {
                let mut kv = elements(item)?;
                if kv.len() != 2 {
                    return Err(mismatch::<StreamRead>(&Frame::Array(kv)));
                }
                let v = kv.pop().expect("two");
                Ok((kv.pop().expect("two"), v))
            })
            .collect::<Result<_, Error>>()?,
        other => return Err(mismatch::<Vec<StreamRead>>(&other)),
    };
    list.into_iter()
        .map(|(k, v)| {
            Ok(StreamRead {
                key: String::from_reply(k)?,
                entries: Vec::from_reply(v)?,
            })
        })
        .collect()
}

/// `XPENDING key group`'s summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingSummary {
    /// Entries delivered and not acknowledged.
    pub count: u64,
    /// Smallest pending id.
    pub first_id: Option<String>,
    /// Largest pending id.
    pub last_id: Option<String>,
    /// Pending count per consumer.
    pub consumers: Vec<(String, u64)>,
}

/// `[count, first-id, last-id, [[consumer, count], ...]]`
type RawPending = (
    u64,
    Option<String>,
    Option<String>,
    Option<Vec<(String, u64)>>,
);

impl FromReply for PendingSummary {
    fn from_reply(frame: Frame) -> Result<Self, Error> {
        let (count, first_id, last_id, consumers): RawPending = FromReply::from_reply(frame)?;
        Ok(PendingSummary {
            count,
            first_id,
            last_id,
            consumers: consumers.unwrap_or_default(),
        })
    }
}
