//! Commands: the [`Cmd`] builder, argument encoding, and command metadata.

mod learn;
pub(crate) mod spec;
mod table;

pub(crate) use self::learn::learn;

use bytes::{BufMut, Bytes, BytesMut};

use self::spec::Spec;
use crate::resp::put_bulk;

/// Space kept at the front of a command's buffer for the `*<argc>` header, written when the
/// command is finished so the arguments are encoded once, in place.
const HEADROOM: usize = 16;

/// Bytes of a command-buffer arena: small commands are cut from one allocation of this size
/// per thread, shared (one reference count) by the commands cut from it.
const ARENA: usize = 16 * 1024;

thread_local! {
    static ARENA_BUF: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// An empty buffer of `capacity` bytes for a command. A small one is cut from the thread's
/// arena: no allocation of its own, and it freezes into `Bytes` whose clones (kept for a
/// retry or a redirection) only count references, where a buffer of its own would allocate a
/// shared header at the first clone. (A command that outlives its peers keeps at most one
/// arena of 16 KiB alive.) A larger one gets its own allocation.
fn command_buf(capacity: usize) -> BytesMut {
    if capacity > ARENA / 8 {
        return BytesMut::with_capacity(capacity);
    }
    ARENA_BUF.with(|arena| {
        let mut arena = arena.borrow_mut();
        if arena.capacity() < capacity {
            *arena = BytesMut::with_capacity(ARENA);
        }
        let rest = arena.split_off(capacity);
        std::mem::replace(&mut *arena, rest)
    })
}

/// A command and its arguments, encoded as they are added.
///
/// # Examples
///
/// ```
/// use redis_client::cmd;
///
/// let c = cmd("SET").arg("user:1").arg(42).arg("EX").arg(60);
/// assert_eq!(c.name(), "SET");
/// assert_eq!(c.len(), 5);
/// ```
#[derive(Clone)]
pub struct Cmd {
    buf: BytesMut,
    argc: u32,
    spec: Option<&'static Spec>,
    /// Built to stay inside the shadow key space already (the `SCAN` stream's `MATCH`): the
    /// shadow policy sends it as it is.
    shadow_mapped: bool,
    /// Why an argument could not be encoded (the command fails before it is sent).
    invalid: Option<Box<str>>,
}

impl std::fmt::Debug for Cmd {
    // Arguments are never printed: they may hold values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cmd")
            .field("name", &self.name())
            .field("argc", &self.argc)
            .finish()
    }
}

/// A command named `name` (`"GET"`, or `"CONFIG"` followed by `.arg("GET")`).
pub fn cmd(name: &str) -> Cmd {
    Cmd::new(name)
}

impl Cmd {
    /// A command named `name`.
    pub fn new(name: &str) -> Cmd {
        let mut buf = command_buf(64 + name.len());
        buf.put_bytes(0, HEADROOM);
        put_bulk(&mut buf, name.as_bytes());
        Cmd {
            buf,
            argc: 1,
            spec: None,
            shadow_mapped: false,
            invalid: None,
        }
    }

    /// A known command: `name` is its encoded name word(s) and `words` how many, both resolved
    /// once per call site.
    pub(crate) fn known(spec: &'static Spec, name: &[u8], words: u32, capacity: usize) -> Cmd {
        let mut buf = command_buf(HEADROOM + name.len() + capacity);
        buf.put_bytes(0, HEADROOM);
        buf.put_slice(name);
        Cmd {
            buf,
            argc: words,
            spec: Some(spec),
            shadow_mapped: false,
            invalid: None,
        }
    }

    /// A command from raw arguments, the name first (another client's command type, such as
    /// redis-rs's), encoded once; its spec resolved once. `None` for no arguments.
    #[cfg(feature = "redis-rs")]
    pub(crate) fn from_raw<'a, I>(args: I) -> Option<Cmd>
    where
        I: Iterator<Item = &'a [u8]> + Clone,
    {
        // `$<len>\r\n` and `\r\n` around each: at most 24 bytes of framing per argument.
        let size = args
            .clone()
            .try_fold(0usize, |n, a| n.checked_add(a.len())?.checked_add(24))?;
        let mut buf = command_buf(HEADROOM.checked_add(size)?);
        buf.put_bytes(0, HEADROOM);
        let mut first = args.clone();
        let spec = spec::lookup_pair(first.next()?, first.next());
        let mut argc = 0u32;
        for a in args {
            put_bulk(&mut buf, a);
            argc = argc.checked_add(1)?;
        }
        Some(Cmd {
            buf,
            argc,
            spec,
            shadow_mapped: false,
            invalid: None,
        })
    }

    /// The encoded name word(s) of `spec`, for [`Cmd::known`].
    pub(crate) fn encoded_name(spec: &Spec) -> (Vec<u8>, u32) {
        let mut b = BytesMut::new();
        let mut n = 0;
        for word in spec.name.split(' ') {
            put_bulk(&mut b, word.as_bytes());
            n += 1;
        }
        (b.to_vec(), n)
    }

    /// Appends an argument.
    #[must_use]
    pub fn arg(mut self, a: impl ToArg) -> Self {
        self.push(a);
        self
    }

    /// Appends several arguments.
    #[must_use]
    pub fn args<A: ToArg>(mut self, args: impl IntoIterator<Item = A>) -> Self {
        for a in args {
            self.push(a);
        }
        self
    }

    /// Appends an argument in place.
    pub(crate) fn push(&mut self, a: impl ToArg) {
        let mark = self.buf.len();
        match a.try_write_arg(&mut self.buf) {
            Ok(()) => self.argc += a.count(),
            Err(why) => {
                // Keep the encoding well-formed (the arguments stay parseable); the command
                // is refused when sent.
                self.buf.truncate(mark);
                if self.invalid.is_none() {
                    self.invalid = Some(format!("argument {}: {why}", self.argc).into());
                }
            }
        }
    }

    /// Why an argument could not be encoded, if one could not.
    pub(crate) fn invalid(&self) -> Option<&str> {
        self.invalid.as_deref()
    }

    /// Number of arguments, the name included.
    pub fn len(&self) -> usize {
        self.argc as usize
    }

    /// Always false: a command has at least its name.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The command's name as the server knows it (`GET`, `CONFIG GET`); `?` if unknown.
    pub fn name(&self) -> &'static str {
        self.spec().map_or("?", |s| s.name)
    }

    pub(crate) fn spec(&self) -> Option<&'static Spec> {
        self.spec
            .or_else(|| spec::lookup_pair(self.arg_at(0)?, self.arg_at(1)))
    }

    /// Argument `index` (0 is the name's first word), found without allocating: the cluster
    /// router reads a single-key command's key with it on every command.
    pub(crate) fn arg_at(&self, index: usize) -> Option<&[u8]> {
        let b = &self.buf[HEADROOM..];
        let mut i = 0;
        let mut n = 0;
        while i < b.len() {
            // `$<len>\r\n<data>\r\n`, written by us.
            let nl = memchr::memchr(b'\n', &b[i..])? + i;
            let len = parse_len(b.get(i + 1..nl.checked_sub(1)?)?)?;
            let start = nl + 1;
            if n == index {
                return b.get(start..start + len);
            }
            i = start + len + 2;
            n += 1;
        }
        None
    }

    /// The arguments, as encoded (for key mapping and routing; not on the live hot path).
    pub(crate) fn arg_slices(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(self.argc as usize);
        let b = &self.buf[HEADROOM..];
        let mut i = 0;
        while i < b.len() {
            // `$<len>\r\n<data>\r\n`, written by us.
            let nl = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .expect("well-formed")
                + i;
            let len: usize = std::str::from_utf8(&b[i + 1..nl - 1])
                .expect("ascii")
                .parse()
                .expect("length");
            out.push(&b[nl + 1..nl + 1 + len]);
            i = nl + 1 + len + 2;
        }
        out
    }

    /// Marks a command built to stay inside the shadow key space already.
    pub(crate) fn shadow_mapped(mut self) -> Cmd {
        self.shadow_mapped = true;
        self
    }

    pub(crate) fn is_shadow_mapped(&self) -> bool {
        self.shadow_mapped
    }

    /// The first word (the command's name as given), upper case.
    pub(crate) fn first_word(&self) -> String {
        let args = self.arg_slices();
        String::from_utf8_lossy(args[0]).to_ascii_uppercase()
    }

    /// A copy with every key argument (by the command's key specs) prefixed.
    pub(crate) fn with_prefixed_keys(&self, prefix: &[u8]) -> Cmd {
        let Some(spec) = self.spec() else {
            return self.clone();
        };
        let args = self.arg_slices();
        let keys = spec.key_indices(&args);
        let mut out = Cmd {
            buf: BytesMut::with_capacity(self.buf.len() + keys.len() * prefix.len()),
            argc: 0,
            spec: self.spec,
            shadow_mapped: true,
            invalid: self.invalid.clone(),
        };
        out.buf.put_bytes(0, HEADROOM);
        for (i, a) in args.iter().enumerate() {
            if keys.contains(&i) {
                let mut k = Vec::with_capacity(prefix.len() + a.len());
                k.extend_from_slice(prefix);
                k.extend_from_slice(a);
                out.push(k.as_slice());
            } else {
                out.push(*a);
            }
        }
        out
    }

    /// The wire encoding: the header written into the headroom, no copy of the arguments.
    pub(crate) fn finish(mut self) -> Bytes {
        let mut head = [0u8; HEADROOM];
        let mut n = 0;
        head[n] = b'*';
        n += 1;
        let mut digits = itoa::Buffer::new();
        let text = digits.format(self.argc);
        head[n..n + text.len()].copy_from_slice(text.as_bytes());
        n += text.len();
        head[n..n + 2].copy_from_slice(b"\r\n");
        n += 2;
        let start = HEADROOM - n;
        self.buf[start..HEADROOM].copy_from_slice(&head[..n]);
        bytes::Buf::advance(&mut self.buf, start);
        self.buf.freeze()
    }
}

fn parse_len(digits: &[u8]) -> Option<usize> {
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))?
    })
}

/// Something that encodes as command arguments: strings, bytes, numbers, and collections of
/// them.
pub trait ToArg {
    /// Appends the argument(s) as bulk strings.
    fn write_arg(&self, out: &mut BytesMut);

    /// As [`write_arg`](Self::write_arg), or why the value cannot be an argument (a [`Json`]
    /// value that does not serialize). A command with such an argument fails with
    /// [`Error::Argument`](crate::Error::Argument) before anything is sent. Default: never
    /// fails.
    ///
    /// [`Json`]: crate::Json
    ///
    /// # Errors
    ///
    /// The reason, for the error message.
    fn try_write_arg(&self, out: &mut BytesMut) -> Result<(), String> {
        self.write_arg(out);
        Ok(())
    }

    /// How many arguments `write_arg` writes. Default is 1.
    fn count(&self) -> u32 {
        1
    }
}

impl ToArg for str {
    fn write_arg(&self, out: &mut BytesMut) {
        put_bulk(out, self.as_bytes());
    }
}

impl ToArg for String {
    fn write_arg(&self, out: &mut BytesMut) {
        put_bulk(out, self.as_bytes());
    }
}

impl ToArg for [u8] {
    fn write_arg(&self, out: &mut BytesMut) {
        put_bulk(out, self);
    }
}

impl<const N: usize> ToArg for [u8; N] {
    fn write_arg(&self, out: &mut BytesMut) {
        put_bulk(out, self);
    }
}

impl ToArg for Vec<u8> {
    fn write_arg(&self, out: &mut BytesMut) {
        put_bulk(out, self);
    }
}

impl ToArg for Bytes {
    fn write_arg(&self, out: &mut BytesMut) {
        put_bulk(out, self);
    }
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl ToArg for $t {
            fn write_arg(&self, out: &mut BytesMut) {
                put_bulk(out, itoa::Buffer::new().format(*self).as_bytes());
            }
        }
    )*};
}
// Not `u8`/`i8`: `[u8]` and `Vec<u8>` are byte strings, not lists of numbers.
int_arg!(i16, i32, i64, i128, isize, u16, u32, u64, u128, usize);

impl ToArg for f64 {
    fn write_arg(&self, out: &mut BytesMut) {
        if self.is_infinite() {
            put_bulk(out, if *self > 0.0 { b"+inf" } else { b"-inf" });
        } else {
            put_bulk(out, ryu::Buffer::new().format(*self).as_bytes());
        }
    }
}

impl ToArg for f32 {
    fn write_arg(&self, out: &mut BytesMut) {
        f64::from(*self).write_arg(out);
    }
}

impl<T: ToArg + ?Sized> ToArg for &T {
    fn write_arg(&self, out: &mut BytesMut) {
        (**self).write_arg(out);
    }

    fn try_write_arg(&self, out: &mut BytesMut) -> Result<(), String> {
        (**self).try_write_arg(out)
    }

    fn count(&self) -> u32 {
        (**self).count()
    }
}

impl<T: ToArg> ToArg for Option<T> {
    fn write_arg(&self, out: &mut BytesMut) {
        if let Some(v) = self {
            v.write_arg(out);
        }
    }

    fn try_write_arg(&self, out: &mut BytesMut) -> Result<(), String> {
        self.as_ref().map_or(Ok(()), |v| v.try_write_arg(out))
    }

    fn count(&self) -> u32 {
        self.as_ref().map_or(0, ToArg::count)
    }
}

impl<T: ToArg> ToArg for [T] {
    fn write_arg(&self, out: &mut BytesMut) {
        for v in self {
            v.write_arg(out);
        }
    }

    fn try_write_arg(&self, out: &mut BytesMut) -> Result<(), String> {
        self.iter().try_for_each(|v| v.try_write_arg(out))
    }

    fn count(&self) -> u32 {
        self.iter().map(ToArg::count).sum()
    }
}

impl<T: ToArg> ToArg for Vec<T> {
    fn write_arg(&self, out: &mut BytesMut) {
        self.as_slice().write_arg(out);
    }

    fn try_write_arg(&self, out: &mut BytesMut) -> Result<(), String> {
        self.as_slice().try_write_arg(out)
    }

    fn count(&self) -> u32 {
        self.as_slice().count()
    }
}

impl<A: ToArg, B: ToArg> ToArg for (A, B) {
    fn write_arg(&self, out: &mut BytesMut) {
        self.0.write_arg(out);
        self.1.write_arg(out);
    }

    fn try_write_arg(&self, out: &mut BytesMut) -> Result<(), String> {
        self.0.try_write_arg(out)?;
        self.1.try_write_arg(out)
    }

    fn count(&self) -> u32 {
        self.0.count() + self.1.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_place() {
        let c = cmd("SET")
            .arg("k")
            .arg(12)
            .arg(1.5f64)
            .arg(&["a", "b"][..])
            .arg(None::<&str>);
        assert_eq!(c.len(), 6);
        assert_eq!(
            &c.finish()[..],
            b"*6\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n1.5\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
    }

    #[test]
    fn keys_are_prefixed_by_spec() {
        let c = cmd("mset").arg("a").arg("1").arg("b").arg("2");
        let mapped = c.with_prefixed_keys(b"shadow:");
        assert_eq!(
            mapped.arg_slices(),
            vec![&b"mset"[..], b"shadow:a", b"1", b"shadow:b", b"2"]
        );
        let e = cmd("EVAL").arg("return 1").arg(1).arg("k").arg("notakey");
        assert_eq!(e.with_prefixed_keys(b"s:").arg_slices()[3], b"s:k");
        assert_eq!(e.with_prefixed_keys(b"s:").arg_slices()[4], b"notakey");
    }
}
