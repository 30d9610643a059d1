//! The typed commands: one list, from which both the constructors in [`cmds`](crate::cmds)
//! and the methods on [`Client`] are generated.
//!
//! # Adding a command
//!
//! Add one entry to the group's file (`strings.rs`, `keys.rs`, …):
//!
//! ```text
//! /// `GETDEL key`: the value, or null.
//! fn getdel<T>(key: impl ToArg) -> T {
//!     known!("GETDEL", 32).arg(key)
//! }
//! ```
//!
//! That makes `cmds::getdel(key) -> Cmd` (for pipelines, transactions and `Client::query`)
//! and `Client::getdel::<T>(key) -> Result<T, Error>` with the same docs, plus the sections
//! every method carries (`# Errors`, `# Cancel safety`). `<T>` makes the reply type the
//! caller's choice (any [`FromReply`]); `-> u64` fixes it. A reply that needs reshaping names
//! a function after the type: `-> Vec<(T, f64)> => with_scores`.
//!
//! Cursor commands (`SCAN`, `HSCAN`, …) are the one exception: their constructor is one page
//! and their method a stream over every page, both written out in `scan.rs`.

mod hashes;
mod keys;
mod lists;
mod options;
mod scan;
mod scripting;
mod server;
mod sets;
mod streams;
mod strings;
mod zsets;

pub use self::hashes::*;
pub use self::keys::*;
pub use self::lists::*;
pub use self::options::*;
pub use self::scan::{hscan, scan, sscan, zscan};
pub use self::scripting::*;
pub use self::server::*;
pub use self::sets::*;
pub use self::streams::*;
pub use self::strings::*;
pub use self::zsets::*;

use std::time::{Duration, SystemTime};

use bytes::BytesMut;

use crate::cmd::ToArg;
use crate::resp::put_bulk;

/// A known command: its spec and encoded name resolved once per call site, then a buffer
/// sized for `$cap` bytes of arguments.
macro_rules! known {
    ($name:literal, $cap:expr) => {{
        static KNOWN: std::sync::OnceLock<(&'static $crate::cmd::spec::Spec, Vec<u8>, u32)> =
            std::sync::OnceLock::new();
        let (spec, name, words) = KNOWN.get_or_init(|| {
            let spec = $crate::cmd::spec::by_name($name)
                .expect(concat!($name, " is in the command table"));
            let (name, words) = $crate::cmd::Cmd::encoded_name(spec);
            (spec, name, words)
        });
        $crate::cmd::Cmd::known(spec, name, *words, $cap)
    }};
}
pub(crate) use known;

/// Declares commands; see the module docs. Each entry becomes a constructor (a `pub fn` in
/// the group's module, re-exported from `cmds`) and a method on `Client`.
macro_rules! commands {
    ($(
        $(#[$attr:meta])*
        fn $name:ident $(<$T:ident>)? ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty
            $(=> $conv:path)? $body:block
    )*) => {$(
        $(#[$attr])*
        #[doc = ""]
        #[doc = concat!("Sent by [`Client::", stringify!($name), "`](crate::Client::",
            stringify!($name), "); this builds it for pipelines, transactions and ",
            "[`Client::query`](crate::Client::query).")]
        pub fn $name($($arg: $ty),*) -> $crate::cmd::Cmd $body

        impl $crate::Client {
            $(#[$attr])*
            #[doc = ""]
            #[doc = "# Errors"]
            #[doc = ""]
            #[doc = "An error reply from the server ([`Error::Server`](crate::Error::Server)), \
                     no reply within the command timeout, a lost connection, a refused shadow \
                     request, or a reply that does not convert into the return type."]
            #[doc = ""]
            #[doc = "# Cancel safety"]
            #[doc = ""]
            #[doc = "Cancel safe: dropping the future never desynchronizes a connection (its \
                     reply is read and discarded); the command may or may not have run."]
            pub async fn $name $(<$T: $crate::FromReply>)? (&self, $($arg: $ty),*)
                -> Result<$ret, $crate::Error>
            {
                let cmd = $name($($arg),*);
                commands!(@reply self, cmd $(, $conv)?)
            }
        }
    )*};
    // `query_frame` directly, not `query`: one async layer less to move on every command.
    (@reply $self:ident, $cmd:ident) => {
        $crate::FromReply::from_reply($self.query_frame($cmd).await?)
    };
    (@reply $self:ident, $cmd:ident, $conv:path) => {
        $conv($self.query_frame($cmd).await?)
    };
}
pub(crate) use commands;

/// A duration as whole milliseconds (`PX`, `PEXPIRE`, `BLOCK`, `XAUTOCLAIM`'s idle time),
/// rounded up: a non-zero duration never becomes 0, which Redis reads as "no expiry allowed"
/// (`PX 0` is an error) or "block forever" (`BLOCK 0`).
pub(crate) struct Millis(pub(crate) Duration);

impl Millis {
    pub(crate) fn get(&self) -> Result<i64, String> {
        let d = self.0;
        let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
        i64::try_from(ms).map_err(|_| format!("{d:?} is longer than Redis accepts"))
    }
}

impl ToArg for Millis {
    fn write_arg(&self, out: &mut BytesMut) {
        let _ = self.try_write_arg(out);
    }

    fn try_write_arg(&self, out: &mut BytesMut) -> Result<(), String> {
        put_bulk(out, itoa::Buffer::new().format(self.get()?).as_bytes());
        Ok(())
    }
}

/// A blocking command's timeout in seconds with millisecond precision (`BLPOP k 1.5`); zero
/// is "block until served".
pub(crate) struct Seconds(pub(crate) Duration);

impl ToArg for Seconds {
    fn write_arg(&self, out: &mut BytesMut) {
        let _ = self.try_write_arg(out);
    }

    fn try_write_arg(&self, out: &mut BytesMut) -> Result<(), String> {
        // Blocking commands are not a hot path: formatting through a String is fine.
        let ms = Millis(self.0).get()?;
        put_bulk(out, format!("{}.{:03}", ms / 1000, ms % 1000).as_bytes());
        Ok(())
    }
}

/// A point in time as Unix milliseconds (`PXAT`, `PEXPIREAT`).
pub(crate) struct UnixMillis(pub(crate) SystemTime);

impl ToArg for UnixMillis {
    fn write_arg(&self, out: &mut BytesMut) {
        let _ = self.try_write_arg(out);
    }

    fn try_write_arg(&self, out: &mut BytesMut) -> Result<(), String> {
        let since = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| "a time before the Unix epoch".to_owned())?;
        Millis(since).try_write_arg(out)
    }
}

/// The argument's bytes as one value (without the RESP framing `write_arg` adds); empty for
/// an argument that encodes to nothing (`None`).
pub(crate) fn arg_bytes(a: &(impl ToArg + ?Sized)) -> bytes::Bytes {
    let mut b = BytesMut::new();
    a.write_arg(&mut b);
    let Some(nl) = b.iter().position(|&c| c == b'\n') else {
        return bytes::Bytes::new();
    };
    let end = b.len().saturating_sub(2).max(nl + 1);
    bytes::Bytes::copy_from_slice(&b[nl + 1..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(a: impl ToArg) -> Result<String, String> {
        let mut b = BytesMut::new();
        a.try_write_arg(&mut b)?;
        Ok(String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn durations_encode_checked_and_rounded_up() {
        assert_eq!(
            enc(Millis(Duration::from_secs(2))).unwrap(),
            "$4\r\n2000\r\n"
        );
        assert_eq!(
            enc(Millis(Duration::from_micros(1))).unwrap(),
            "$1\r\n1\r\n"
        );
        assert_eq!(enc(Millis(Duration::ZERO)).unwrap(), "$1\r\n0\r\n");
        assert!(enc(Millis(Duration::MAX)).is_err());
        assert_eq!(
            enc(Seconds(Duration::from_millis(1500))).unwrap(),
            "$5\r\n1.500\r\n"
        );
        assert_eq!(
            enc(Seconds(Duration::from_millis(50))).unwrap(),
            "$5\r\n0.050\r\n"
        );
        assert_eq!(enc(Seconds(Duration::ZERO)).unwrap(), "$5\r\n0.000\r\n");
        assert!(enc(Seconds(Duration::MAX)).is_err());
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(enc(UnixMillis(at)).unwrap(), "$13\r\n1700000000123\r\n");
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert!(enc(UnixMillis(before)).is_err());
    }

    #[test]
    fn arg_bytes_of_nothing_is_empty() {
        // Regression: an argument that encodes to nothing underflowed `len - 2` in pubsub.
        assert_eq!(arg_bytes(&None::<&str>), bytes::Bytes::new());
        assert_eq!(arg_bytes(&""), bytes::Bytes::new());
        assert_eq!(arg_bytes(&"ab"), bytes::Bytes::from_static(b"ab"));
    }
}
