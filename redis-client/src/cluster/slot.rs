//! Hash slots: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384.

use crate::Error;
use crate::cmd::Cmd;
use crate::cmd::spec::Spec;

/// Slots in a Redis Cluster.
pub(crate) const SLOTS: usize = 16384;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), one table lookup per byte.
const TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The part of a key that is hashed: between the first `{` and the next `}` when that is not
/// empty (`{user1}:name` → `user1`), else the whole key.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = memchr::memchr(b'{', key)
        && let Some(len) = memchr::memchr(b'}', &key[open + 1..])
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS as u16 - 1)
}

/// The slot a command routes by: its keys' (sharded channels' for `SPUBLISH`), which must all
/// be one; `None` for a command without keys.
///
/// # Errors
///
/// [`Error::CrossSlot`] for keys in different slots.
pub(crate) fn cmd_slot(cmd: &Cmd, spec: Option<&'static Spec>) -> Result<Option<u16>, Error> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    if let Some(i) = spec.single_key_index() {
        return Ok(cmd.arg_at(i).map(key_slot));
    }
    let args = cmd.arg_slices();
    let mut first = None;
    for i in spec.routing_key_indices(&args) {
        let slot = key_slot(args[i]);
        match first {
            None => first = Some(slot),
            Some(f) if f != slot => {
                return Err(Error::CrossSlot {
                    command: spec.name.to_owned(),
                    first: f,
                    other: slot,
                });
            }
            Some(_) => {}
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(key_slot(b"{user1}:name"), key_slot(b"user1"));
        assert_eq!(key_slot(b"{user1}:name"), key_slot(b"{user1}:age"));
        // An empty tag hashes the whole key; only the first `{` counts.
        assert_eq!(key_slot(b"{}x"), crc16(b"{}x") & 16383);
        assert_eq!(key_slot(b"a{b}{c}"), key_slot(b"b"));
        assert_eq!(key_slot(b"a{bc"), crc16(b"a{bc") & 16383);
        assert_eq!(key_slot(b"{{a}}"), key_slot(b"{a"));
    }

    #[test]
    fn commands_route_by_their_keys() {
        let slot = |c: Cmd| cmd_slot(&c, c.spec());
        assert_eq!(slot(crate::cmds::get("foo")).unwrap(), Some(12182));
        assert_eq!(slot(crate::cmds::ping()).unwrap(), None);
        assert_eq!(
            slot(crate::cmds::mget(&["{t}a", "{t}b"])).unwrap(),
            Some(key_slot(b"t"))
        );
        let e = slot(crate::cmds::sinter(&["foo", "bar"])).unwrap_err();
        assert!(
            matches!(
                e,
                Error::CrossSlot {
                    first: 12182,
                    other: 5061,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            slot(crate::cmds::spublish("foo", "m")).unwrap(),
            Some(12182),
            "a sharded channel routes by its slot"
        );
        assert_eq!(
            slot(crate::cmds::eval("return 1", &["foo"], &["x"])).unwrap(),
            Some(12182)
        );
        assert_eq!(
            slot(crate::cmds::xread(&["foo"], &["0"], None, None)).unwrap(),
            Some(12182)
        );
    }
}
