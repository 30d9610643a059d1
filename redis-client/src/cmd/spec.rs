//! Command metadata: flags and key specs (from the generated table), and finding the keys of
//! any command's arguments — for shadow key mapping and for routing.

// The flag constants mirror the server's full set; not every one is read.
#![allow(dead_code)]

use super::table::COMMANDS;

pub(crate) const F_WRITE: u32 = 1 << 0;
pub(crate) const F_READONLY: u32 = 1 << 1;
pub(crate) const F_DENYOOM: u32 = 1 << 2;
pub(crate) const F_ADMIN: u32 = 1 << 3;
pub(crate) const F_PUBSUB: u32 = 1 << 4;
pub(crate) const F_NOSCRIPT: u32 = 1 << 5;
pub(crate) const F_BLOCKING: u32 = 1 << 6;
pub(crate) const F_LOADING: u32 = 1 << 7;
pub(crate) const F_STALE: u32 = 1 << 8;
pub(crate) const F_FAST: u32 = 1 << 9;
pub(crate) const F_NO_AUTH: u32 = 1 << 10;
pub(crate) const F_MAY_REPLICATE: u32 = 1 << 11;
pub(crate) const F_MOVABLEKEYS: u32 = 1 << 12;
pub(crate) const F_NO_MULTI: u32 = 1 << 13;
pub(crate) const F_NO_MANDATORY_KEYS: u32 = 1 << 14;
pub(crate) const F_ALLOW_BUSY: u32 = 1 << 15;
pub(crate) const F_MODULE: u32 = 1 << 16;

pub(crate) const K_RO: u16 = 1 << 0;
pub(crate) const K_RW: u16 = 1 << 1;
pub(crate) const K_OW: u16 = 1 << 2;
pub(crate) const K_RM: u16 = 1 << 3;
pub(crate) const K_ACCESS: u16 = 1 << 4;
pub(crate) const K_UPDATE: u16 = 1 << 5;
pub(crate) const K_INSERT: u16 = 1 << 6;
pub(crate) const K_DELETE: u16 = 1 << 7;
pub(crate) const K_NOT_KEY: u16 = 1 << 8;
pub(crate) const K_INCOMPLETE: u16 = 1 << 9;
pub(crate) const K_VARIABLE_FLAGS: u16 = 1 << 10;

/// Where a key spec starts looking.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Begin {
    /// At this argument index (0 is the command name).
    Index(i16),
    /// After this keyword, searched from `start_from` (negative: from the end, backwards).
    Keyword {
        keyword: &'static str,
        start_from: i16,
    },
    /// Not describable (module commands).
    Unknown,
}

/// How a key spec finds keys from its start.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Find {
    /// Keys every `step` arguments up to `last_key` (relative; negative counts from the end, or
    /// with `limit`, a fraction of the remaining arguments).
    Range {
        last_key: i16,
        step: i16,
        limit: i16,
    },
    /// The argument at `keynum_idx` says how many keys follow from `first_key`.
    Keynum {
        keynum_idx: i16,
        first_key: i16,
        step: i16,
    },
    /// Not describable.
    Unknown,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct KeySpec {
    pub(crate) flags: u16,
    pub(crate) begin: Begin,
    pub(crate) find: Find,
}

/// One command (or `CONTAINER SUBCOMMAND`) as the server describes it.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) arity: i16,
    pub(crate) flags: u32,
    pub(crate) first_key: i16,
    pub(crate) last_key: i16,
    pub(crate) step: i16,
    pub(crate) key_specs: &'static [KeySpec],
}

impl Spec {
    pub(crate) fn is_write(&self) -> bool {
        self.flags & F_WRITE != 0
    }

    pub(crate) fn is_readonly(&self) -> bool {
        self.flags & F_READONLY != 0
    }

    pub(crate) fn is_blocking(&self) -> bool {
        self.flags & F_BLOCKING != 0
    }

    pub(crate) fn is_pubsub(&self) -> bool {
        self.flags & F_PUBSUB != 0
    }

    /// Why shadow traffic cannot run this command with every key mapped into the shadow key
    /// space, or `None` when it can.
    ///
    /// Refused: commands that act on the whole keyspace (flagged read or write with no key
    /// specs: `FLUSHDB`, `KEYS`, `SCAN`, `RANDOMKEY`, `SWAPDB`, …), and commands with a key spec
    /// the server itself cannot describe from the arguments (`SORT … BY`/`GET`/`STORE`,
    /// `MIGRATE … KEYS`): some of their keys would reach live data unmapped.
    pub(crate) fn shadow_unmappable(&self) -> Option<&'static str> {
        if self.key_specs.is_empty() && self.flags & (F_WRITE | F_READONLY) != 0 {
            return Some("it acts on the whole keyspace");
        }
        let partial = self.key_specs.iter().any(|ks| {
            ks.flags & K_NOT_KEY == 0
                && (ks.flags & K_INCOMPLETE != 0
                    || matches!(ks.begin, Begin::Unknown)
                    || matches!(ks.find, Find::Unknown))
        });
        partial.then_some("some of its keys cannot be found from its arguments")
    }

    /// Indices into `args` (0 is the command name) of every key, in argument order, without
    /// duplicates. `args` is the whole command.
    pub(crate) fn key_indices<A: AsRef<[u8]>>(&self, args: &[A]) -> Vec<usize> {
        self.indices(args, false)
    }

    /// As [`key_indices`](Self::key_indices), and sharded channels too (`SPUBLISH`,
    /// `SSUBSCRIBE`: not keys, but routed by slot like keys).
    pub(crate) fn routing_key_indices<A: AsRef<[u8]>>(&self, args: &[A]) -> Vec<usize> {
        self.indices(args, true)
    }

    /// The argument index of the one key of a single-key command (`GET`, `SET`, `HGET`: one
    /// key spec at a fixed index, one key), the hot path of cluster routing.
    pub(crate) fn single_key_index(&self) -> Option<usize> {
        match self.key_specs {
            [
                KeySpec {
                    begin: Begin::Index(i),
                    find: Find::Range { last_key: 0, .. },
                    ..
                },
            ] if *i > 0 => Some(*i as usize),
            _ => None,
        }
    }

    fn indices<A: AsRef<[u8]>>(&self, args: &[A], with_channels: bool) -> Vec<usize> {
        let argc = args.len() as i64;
        let mut keys = Vec::new();
        for ks in self.key_specs {
            if ks.flags & K_NOT_KEY != 0 && !with_channels {
                continue;
            }
            let start = match ks.begin {
                Begin::Index(i) => i64::from(i),
                Begin::Keyword {
                    keyword,
                    start_from,
                } => {
                    let found = if start_from >= 0 {
                        (i64::from(start_from)..argc).find(|&i| {
                            args[i as usize]
                                .as_ref()
                                .eq_ignore_ascii_case(keyword.as_bytes())
                        })
                    } else {
                        let from = argc + i64::from(start_from);
                        (1..=from).rev().find(|&i| {
                            args[i as usize]
                                .as_ref()
                                .eq_ignore_ascii_case(keyword.as_bytes())
                        })
                    };
                    match found {
                        Some(i) => i + 1,
                        None => continue,
                    }
                }
                Begin::Unknown => continue,
            };
            if start <= 0 || start >= argc {
                continue;
            }
            let (first, last, step) = match ks.find {
                Find::Range {
                    last_key,
                    step,
                    limit,
                } => {
                    let last = if last_key >= 0 {
                        start + i64::from(last_key)
                    } else if limit <= 1 {
                        argc + i64::from(last_key)
                    } else {
                        start + ((argc - start) / i64::from(limit)) + i64::from(last_key)
                    };
                    (start, last, i64::from(step.max(1)))
                }
                Find::Keynum {
                    keynum_idx,
                    first_key,
                    step,
                } => {
                    let idx = start + i64::from(keynum_idx);
                    let Some(n) = args
                        .get(idx as usize)
                        .and_then(|a| std::str::from_utf8(a.as_ref()).ok())
                        .and_then(|s| s.parse::<i64>().ok())
                    else {
                        continue;
                    };
                    let first = start + i64::from(first_key);
                    let step = i64::from(step.max(1));
                    // `n` is the caller's number: a count past the arguments (or one that
                    // overflows) names no keys, and the server refuses the command.
                    let Some(last) = n
                        .checked_sub(1)
                        .and_then(|n| n.checked_mul(step))
                        .and_then(|n| n.checked_add(first))
                    else {
                        continue;
                    };
                    (first, last, step)
                }
                Find::Unknown => continue,
            };
            if last >= argc || first > last && last != first - step {
                continue;
            }
            let mut i = first;
            while i <= last {
                let idx = i as usize;
                if !keys.contains(&idx) {
                    keys.push(idx);
                }
                i += step;
            }
        }
        keys.sort_unstable();
        keys
    }
}

/// The spec of `args[0]` (and `args[1]` for container commands), case-insensitive.
pub(crate) fn lookup<A: AsRef<[u8]>>(args: &[A]) -> Option<&'static Spec> {
    let name = args.first()?.as_ref();
    lookup_pair(name, args.get(1).map(|a| a.as_ref()))
}

/// [`lookup`] of a name and its first argument. A name the table holds and that has no
/// subcommands (`GET`, `SET`: nearly every command sent) is answered with one search.
pub(crate) fn lookup_pair(name: &[u8], sub: Option<&[u8]>) -> Option<&'static Spec> {
    if name.len() <= 64 {
        let mut upper = [0u8; 64];
        for (d, s) in upper.iter_mut().zip(name) {
            *d = s.to_ascii_uppercase();
        }
        if let Some(i) = table_index(&upper[..name.len()])
            && !is_container(i)
        {
            return Some(&COMMANDS[i]);
        }
    }
    if let Some(sub) = sub
        && name.len() + 1 + sub.len() <= 64
    {
        let mut full = [0u8; 64];
        full[..name.len()].copy_from_slice(name);
        full[name.len()] = b' ';
        full[name.len() + 1..name.len() + 1 + sub.len()].copy_from_slice(sub);
        if let Some(spec) = find(&full[..name.len() + 1 + sub.len()]) {
            return Some(spec);
        }
    }
    find(name)
}

/// Whether the table's entry `i` has subcommands: they sort right after it (`CONFIG`,
/// `CONFIG GET`, …), as a space sorts before every letter.
fn is_container(i: usize) -> bool {
    let name = COMMANDS[i].name.as_bytes();
    COMMANDS.get(i + 1).is_some_and(|next| {
        let next = next.name.as_bytes();
        next.len() > name.len() && next.starts_with(name) && next[name.len()] == b' '
    })
}

/// Number of commands in the table.
pub(crate) const COUNT: usize = COMMANDS.len();

/// The position of `spec` in the table (specs only come from it).
pub(crate) fn index_of(spec: &'static Spec) -> Option<usize> {
    let base = COMMANDS.as_ptr() as usize;
    let at = spec as *const Spec as usize;
    let i = at.checked_sub(base)? / std::mem::size_of::<Spec>();
    (i < COMMANDS.len() && std::ptr::eq(&COMMANDS[i], spec)).then_some(i)
}

/// The spec of a command by its full name (`"GET"`, `"CONFIG GET"`).
pub(crate) fn by_name(name: &str) -> Option<&'static Spec> {
    find(name.as_bytes())
}

fn find(name: &[u8]) -> Option<&'static Spec> {
    if name.len() > 64 {
        return None;
    }
    let mut upper = [0u8; 64];
    for (d, s) in upper.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    let upper = &upper[..name.len()];
    in_table(upper).or_else(|| super::learn::find(upper))
}

/// The generated table's spec for an upper-case full name.
pub(crate) fn in_table(upper: &[u8]) -> Option<&'static Spec> {
    table_index(upper).map(|i| &COMMANDS[i])
}

/// The table's position of an upper-case name.
fn table_index(upper: &[u8]) -> Option<usize> {
    let Some(key) = packed(upper) else {
        return COMMANDS
            .binary_search_by(|spec| spec.name.as_bytes().cmp(upper))
            .ok();
    };
    // Nearly every name fits: a search over integers, without a `memcmp` call per step (the
    // byte-string search was 5% of a command's client CPU through the redis-rs API).
    let index = PACKED.get_or_init(|| {
        let mut v: Vec<(u128, usize)> = COMMANDS
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((packed(s.name.as_bytes())?, i)))
            .collect();
        v.sort_unstable();
        v
    });
    let at = index.binary_search_by(|(k, _)| k.cmp(&key)).ok()?;
    Some(index[at].1)
}

/// The table's names of up to 15 bytes as integers, sorted, with their positions.
static PACKED: std::sync::OnceLock<Vec<(u128, usize)>> = std::sync::OnceLock::new();

/// A name of 1 to 15 bytes as one integer: the bytes zero-padded to 15, then the length, so
/// distinct names are distinct integers.
fn packed(name: &[u8]) -> Option<u128> {
    if name.is_empty() || name.len() > 15 {
        return None;
    }
    let mut b = [0u8; 16];
    b[..name.len()].copy_from_slice(name);
    b[15] = name.len() as u8;
    Some(u128::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cmd: &str) -> Vec<String> {
        let args: Vec<&str> = cmd.split(' ').collect();
        let spec = lookup(&args).unwrap_or_else(|| panic!("no spec for {cmd}"));
        spec.key_indices(&args)
            .into_iter()
            .map(|i| args[i].to_owned())
            .collect()
    }

    #[test]
    fn key_positions() {
        assert_eq!(keys("GET a"), ["a"]);
        assert_eq!(keys("set a v EX 10"), ["a"]);
        assert_eq!(keys("MSET a 1 b 2 c 3"), ["a", "b", "c"]);
        assert_eq!(keys("DEL a b c"), ["a", "b", "c"]);
        assert_eq!(keys("EVAL script 2 k1 k2 arg"), ["k1", "k2"]);
        assert_eq!(keys("EVALSHA sha 0 arg"), Vec::<String>::new());
        assert_eq!(keys("XREAD COUNT 2 STREAMS s1 s2 0 0"), ["s1", "s2"]);
        assert_eq!(keys("ZUNIONSTORE dst 2 a b WEIGHTS 1 2"), ["dst", "a", "b"]);
        assert_eq!(keys("OBJECT ENCODING k"), ["k"]);
        assert_eq!(keys("BLPOP l1 l2 5"), ["l1", "l2"]);
        assert_eq!(keys("LMOVE src dst LEFT RIGHT"), ["src", "dst"]);
        assert_eq!(keys("PING"), Vec::<String>::new());
    }

    #[test]
    fn absurd_numkeys_name_no_keys_and_do_not_overflow() {
        // Regression: `first + (n - 1) * step` on a caller's numkeys overflowed (a panic in
        // debug builds) for numbers near i64's ends.
        for n in [
            "9223372036854775807",
            "-9223372036854775808",
            "99",
            "-1",
            "0",
        ] {
            let cmd = format!("EVAL s {n} k1 k2");
            assert_eq!(keys(&cmd), Vec::<String>::new(), "{cmd}");
        }
    }

    #[test]
    fn flags_and_lookup() {
        assert!(lookup(&["get"]).unwrap().is_readonly());
        assert!(lookup(&["SET"]).unwrap().is_write());
        assert!(lookup(&["BLPOP"]).unwrap().is_blocking());
        assert!(lookup(&["SUBSCRIBE"]).unwrap().is_pubsub());
        assert!(lookup(&["NOSUCHCMD"]).is_none());
        assert_eq!(lookup(&["config", "get"]).unwrap().name, "CONFIG GET");
        assert_eq!(
            lookup(&["Client", "GetName"]).unwrap().name,
            "CLIENT GETNAME"
        );
        assert_eq!(lookup(&["config", "nosuch"]).unwrap().name, "CONFIG");
        assert_eq!(lookup(&["config"]).unwrap().name, "CONFIG");
        // A key that happens to spell a subcommand does not make `GET` a container.
        assert_eq!(lookup(&["get", "config"]).unwrap().name, "GET");
        assert_eq!(lookup(&["set", "get", "v"]).unwrap().name, "SET");
    }

    #[test]
    fn every_name_in_the_table_is_found_where_it_stands() {
        let mut long = 0;
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(table_index(spec.name.as_bytes()), Some(i), "{}", spec.name);
            long += usize::from(packed(spec.name.as_bytes()).is_none());
            // A prefix or an extension of a name is another name, or none.
            let name = spec.name.as_bytes();
            let shorter = &name[..name.len() - 1];
            if let Some(j) = table_index(shorter) {
                assert_eq!(COMMANDS[j].name.as_bytes(), shorter);
            }
            let longer = [name, b"X"].concat();
            if let Some(j) = table_index(&longer) {
                assert_eq!(COMMANDS[j].name.as_bytes(), longer);
            }
        }
        // Both searches ran: names of more than 15 bytes take the byte-string one.
        assert!(long > 0);
        assert_eq!(table_index(b""), None);
        assert_eq!(table_index(b"GET\0"), None);
    }

    #[test]
    fn every_command_with_subcommands_is_seen_as_a_container() {
        let mut containers = 0;
        for (i, spec) in COMMANDS.iter().enumerate() {
            let parent = spec.name.split_once(' ').map(|(p, _)| p);
            if let Some(parent) = parent {
                let at = table_index(parent.as_bytes()).expect("parent in the table");
                assert!(is_container(at), "{parent} (parent of {})", spec.name);
                containers += usize::from(at + 1 == i);
            } else {
                let has_sub = COMMANDS
                    .iter()
                    .any(|s| s.name.split_once(' ').is_some_and(|(p, _)| p == spec.name));
                assert_eq!(is_container(i), has_sub, "{}", spec.name);
            }
        }
        assert!(containers > 10, "{containers} containers");
    }

    #[test]
    fn shadow_refuses_commands_whose_keys_cannot_all_be_mapped() {
        let why = |cmd: &str| {
            let args: Vec<&str> = cmd.split(' ').collect();
            lookup(&args).unwrap().shadow_unmappable()
        };
        for whole in [
            "FLUSHDB",
            "FLUSHALL ASYNC",
            "KEYS *",
            "SCAN 0",
            "RANDOMKEY",
            "DBSIZE",
            "SWAPDB 0 1",
        ] {
            assert_eq!(why(whole), Some("it acts on the whole keyspace"), "{whole}");
        }
        for partial in [
            "SORT k BY w_* STORE dst",
            "SORT_RO k",
            "MIGRATE h 1 \"\" 0 5 KEYS a b",
        ] {
            assert!(
                why(partial).is_some_and(|w| w.contains("cannot be found")),
                "{partial}"
            );
        }
        for fine in [
            "GET k",
            "MSET a 1 b 2",
            "EVAL s 1 k",
            "PING",
            "PUBLISH ch m",
            "XREAD STREAMS s 0",
        ] {
            assert_eq!(why(fine), None, "{fine}");
        }
    }
}
