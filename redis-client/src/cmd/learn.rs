//! Commands the generated table does not know (module commands, newer servers): their specs
//! are learned from the server's `COMMAND INFO` reply, once per name per process, so shadow
//! traffic can map their keys as it does for known commands.
//!
//! Learned specs live for the process (they are leaked, like the table's are static): the set
//! is bounded by the commands servers report, never by what callers send, because a name the
//! server does not know is not cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, RwLock};

use super::spec::*;
use crate::resp::Frame;

/// Most learned specs kept; past it nothing more is learned (and such commands are refused
/// under shadow traffic, as unknown ones are).
const MAX_LEARNED: usize = 4096;

/// Learned specs by upper-case full name.
type Learned = HashMap<Box<[u8]>, &'static Spec>;

static LEARNED: LazyLock<RwLock<Learned>> = LazyLock::new(|| RwLock::new(HashMap::new()));
/// Whether anything was learned: lookups of unknown names skip the lock until then.
static ANY: AtomicBool = AtomicBool::new(false);

/// A learned spec by full upper-case name (`"FOO"`, `"FOO BAR"`).
pub(crate) fn find(upper: &[u8]) -> Option<&'static Spec> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    LEARNED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(upper)
        .copied()
}

/// Learns every command (and subcommand) described in a reply to `COMMAND INFO names…`.
/// Returns how many were new.
///
/// Each entry is kept under the name it was asked by, not the one it reports: a command
/// renamed by the server's `rename-command` reports its original name.
pub(crate) fn learn(reply: &Frame, names: &[&str]) -> usize {
    let mut parsed = Vec::new();
    for (i, entry) in list(reply).unwrap_or_default().iter().enumerate() {
        parse_entry(entry, None, names.get(i).copied(), &mut parsed);
    }
    let mut map = LEARNED.write().unwrap_or_else(|e| e.into_inner());
    let mut new = 0;
    for p in parsed {
        if map.len() >= MAX_LEARNED {
            break;
        }
        if map.contains_key(p.name.as_bytes()) || in_table(p.name.as_bytes()).is_some() {
            continue;
        }
        let spec = leak(p);
        map.insert(spec.name.as_bytes().into(), spec);
        new += 1;
    }
    if new > 0 {
        ANY.store(true, Ordering::Release);
    }
    new
}

struct Parsed {
    name: String,
    arity: i16,
    flags: u32,
    first_key: i16,
    last_key: i16,
    step: i16,
    key_specs: Vec<ParsedKeySpec>,
}

struct ParsedKeySpec {
    flags: u16,
    begin: ParsedBegin,
    find: Find,
}

enum ParsedBegin {
    Index(i16),
    Keyword { keyword: String, start_from: i16 },
    Unknown,
}

fn leak(p: Parsed) -> &'static Spec {
    let key_specs: Vec<KeySpec> = p
        .key_specs
        .into_iter()
        .map(|k| KeySpec {
            flags: k.flags,
            begin: match k.begin {
                ParsedBegin::Index(i) => Begin::Index(i),
                ParsedBegin::Keyword {
                    keyword,
                    start_from,
                } => Begin::Keyword {
                    keyword: Box::leak(keyword.into_boxed_str()),
                    start_from,
                },
                ParsedBegin::Unknown => Begin::Unknown,
            },
            find: k.find,
        })
        .collect();
    Box::leak(Box::new(Spec {
        name: Box::leak(p.name.into_boxed_str()),
        arity: p.arity,
        flags: p.flags,
        first_key: p.first_key,
        last_key: p.last_key,
        step: p.step,
        key_specs: Box::leak(key_specs.into_boxed_slice()),
    }))
}

/// One `COMMAND INFO` entry: `[name, arity, flags, first, last, step, acl, tips, key specs,
/// subcommands]` (Redis 7; Redis 6 stops after `acl` and has no key specs).
fn parse_entry(entry: &Frame, parent: Option<&str>, asked: Option<&str>, out: &mut Vec<Parsed>) {
    let Some(fields) = list(entry) else { return };
    let Some(raw) = fields.first().and_then(text) else {
        return;
    };
    let raw = String::from_utf8_lossy(raw).to_ascii_uppercase();
    // Subcommands are reported as `container|sub`.
    let name = match (parent, asked) {
        (Some(p), _) => format!("{p} {}", raw.rsplit('|').next().unwrap_or(&raw)),
        (None, Some(asked)) => asked.to_ascii_uppercase(),
        (None, None) => raw,
    };
    let int_at = |i: usize| fields.get(i).and_then(int).unwrap_or(0) as i16;
    let flags = fields
        .get(2)
        .and_then(list)
        .unwrap_or_default()
        .iter()
        .filter_map(text)
        .map(command_flag)
        .fold(0, |a, b| a | b);
    let (first_key, last_key, step) = (int_at(3), int_at(4), int_at(5));
    let mut key_specs: Vec<ParsedKeySpec> = match fields.get(8) {
        Some(specs) => list(specs)
            .unwrap_or_default()
            .iter()
            .map(parse_key_spec)
            .collect(),
        None => Vec::new(),
    };
    if fields.get(8).is_none() && first_key > 0 {
        // A server without key specs (Redis 6): the legacy first/last/step range, and when
        // the keys move with the arguments, a spec that says they cannot all be found.
        key_specs.push(ParsedKeySpec {
            flags: K_RW,
            begin: ParsedBegin::Index(first_key),
            find: Find::Range {
                last_key: if last_key < 0 {
                    last_key
                } else {
                    last_key - first_key
                },
                step: step.max(1),
                limit: 0,
            },
        });
    }
    if fields.get(8).is_none() && flags & F_MOVABLEKEYS != 0 {
        key_specs.push(ParsedKeySpec {
            flags: K_INCOMPLETE,
            begin: ParsedBegin::Unknown,
            find: Find::Unknown,
        });
    }
    let subs = fields.get(9);
    out.push(Parsed {
        name: name.clone(),
        arity: int_at(1),
        flags,
        first_key,
        last_key,
        step,
        key_specs,
    });
    for sub in subs.and_then(list).unwrap_or_default() {
        parse_entry(sub, Some(&name), None, out);
    }
}

fn field<'a>(map: &[(&'a Frame, &'a Frame)], name: &str) -> Option<&'a Frame> {
    map.iter()
        .find(|(k, _)| text(k).is_some_and(|t| t.eq_ignore_ascii_case(name.as_bytes())))
        .map(|(_, v)| *v)
}

/// A `{type, spec}` map: its type, lower case, and the spec's pairs.
fn typed(f: Option<&Frame>) -> (Option<Vec<u8>>, Vec<(&Frame, &Frame)>) {
    let m = f.map(pairs).unwrap_or_default();
    let kind = field(&m, "type")
        .and_then(text)
        .map(<[u8]>::to_ascii_lowercase);
    (kind, field(&m, "spec").map(pairs).unwrap_or_default())
}

fn parse_key_spec(f: &Frame) -> ParsedKeySpec {
    let map = pairs(f);
    let get = |k: &str| field(&map, k);
    let flags = get("flags")
        .and_then(list)
        .unwrap_or_default()
        .iter()
        .filter_map(text)
        .map(key_flag)
        .fold(0, |a, b| a | b);
    let num = |spec: &[(&Frame, &Frame)], k: &str| field(spec, k).and_then(int).map(|n| n as i16);
    let (bkind, bspec) = typed(get("begin_search"));
    let begin = match bkind.as_deref() {
        Some(b"index") => num(&bspec, "index").map_or(ParsedBegin::Unknown, ParsedBegin::Index),
        Some(b"keyword") => {
            let keyword = field(&bspec, "keyword")
                .and_then(text)
                .map(|t| String::from_utf8_lossy(t).into_owned());
            match (keyword, num(&bspec, "startfrom")) {
                (Some(keyword), Some(start_from)) => ParsedBegin::Keyword {
                    keyword,
                    start_from,
                },
                _ => ParsedBegin::Unknown,
            }
        }
        _ => ParsedBegin::Unknown,
    };
    let (fkind, fspec) = typed(get("find_keys"));
    let find = match fkind.as_deref() {
        Some(b"range") => match (
            num(&fspec, "lastkey"),
            num(&fspec, "keystep"),
            num(&fspec, "limit"),
        ) {
            (Some(last_key), Some(step), Some(limit)) => Find::Range {
                last_key,
                step,
                limit,
            },
            _ => Find::Unknown,
        },
        Some(b"keynum") => match (
            num(&fspec, "keynumidx"),
            num(&fspec, "firstkey"),
            num(&fspec, "keystep"),
        ) {
            (Some(keynum_idx), Some(first_key), Some(step)) => Find::Keynum {
                keynum_idx,
                first_key,
                step,
            },
            _ => Find::Unknown,
        },
        _ => Find::Unknown,
    };
    ParsedKeySpec { flags, begin, find }
}

fn command_flag(name: &[u8]) -> u32 {
    match &name.to_ascii_lowercase()[..] {
        b"write" => F_WRITE,
        b"readonly" => F_READONLY,
        b"denyoom" => F_DENYOOM,
        b"admin" => F_ADMIN,
        b"pubsub" => F_PUBSUB,
        b"noscript" => F_NOSCRIPT,
        b"blocking" => F_BLOCKING,
        b"loading" => F_LOADING,
        b"stale" => F_STALE,
        b"fast" => F_FAST,
        b"no_auth" => F_NO_AUTH,
        b"may_replicate" => F_MAY_REPLICATE,
        b"movablekeys" => F_MOVABLEKEYS,
        b"no_multi" => F_NO_MULTI,
        b"no_mandatory_keys" => F_NO_MANDATORY_KEYS,
        b"allow_busy" => F_ALLOW_BUSY,
        b"module" => F_MODULE,
        _ => 0,
    }
}

fn key_flag(name: &[u8]) -> u16 {
    match &name.to_ascii_lowercase()[..] {
        b"ro" => K_RO,
        b"rw" => K_RW,
        b"ow" => K_OW,
        b"rm" => K_RM,
        b"access" => K_ACCESS,
        b"update" => K_UPDATE,
        b"insert" => K_INSERT,
        b"delete" => K_DELETE,
        b"not_key" => K_NOT_KEY,
        b"incomplete" => K_INCOMPLETE,
        b"variable_flags" => K_VARIABLE_FLAGS,
        _ => 0,
    }
}

fn text(f: &Frame) -> Option<&[u8]> {
    f.as_bytes().map(|b| &b[..])
}

fn int(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(i) => Some(*i),
        _ => std::str::from_utf8(text(f)?).ok()?.parse().ok(),
    }
}

/// The items of an array or set (RESP2 sends sets as arrays).
fn list(f: &Frame) -> Option<&[Frame]> {
    match f {
        Frame::Array(v) | Frame::Set(v) => Some(v),
        _ => None,
    }
}

/// The pairs of a map (RESP3) or of a flat key-value array (RESP2).
fn pairs(f: &Frame) -> Vec<(&Frame, &Frame)> {
    match f {
        Frame::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        Frame::Array(v) => v.chunks_exact(2).map(|c| (&c[0], &c[1])).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn b(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn arr(v: Vec<Frame>) -> Frame {
        Frame::Array(v)
    }

    /// A RESP2 `COMMAND INFO` entry shaped like Redis 7's for a module command that takes a
    /// destination key and a counted list of source keys.
    fn module_entry(name: &str) -> Frame {
        let index_spec = arr(vec![
            b("flags"),
            arr(vec![b("OW"), b("update")]),
            b("begin_search"),
            arr(vec![
                b("type"),
                b("index"),
                b("spec"),
                arr(vec![b("index"), Frame::Integer(1)]),
            ]),
            b("find_keys"),
            arr(vec![
                b("type"),
                b("range"),
                b("spec"),
                arr(vec![
                    b("lastkey"),
                    Frame::Integer(0),
                    b("keystep"),
                    Frame::Integer(1),
                    b("limit"),
                    Frame::Integer(0),
                ]),
            ]),
        ]);
        let keynum_spec = arr(vec![
            b("flags"),
            arr(vec![b("RO"), b("access")]),
            b("begin_search"),
            arr(vec![
                b("type"),
                b("index"),
                b("spec"),
                arr(vec![b("index"), Frame::Integer(2)]),
            ]),
            b("find_keys"),
            arr(vec![
                b("type"),
                b("keynum"),
                b("spec"),
                arr(vec![
                    b("keynumidx"),
                    Frame::Integer(0),
                    b("firstkey"),
                    Frame::Integer(1),
                    b("keystep"),
                    Frame::Integer(1),
                ]),
            ]),
        ]);
        arr(vec![
            b(name),
            Frame::Integer(-4),
            arr(vec![
                Frame::Simple(Bytes::from_static(b"write")),
                Frame::Simple(Bytes::from_static(b"module")),
            ]),
            Frame::Integer(1),
            Frame::Integer(1),
            Frame::Integer(1),
            arr(vec![]),
            arr(vec![]),
            arr(vec![index_spec, keynum_spec]),
            arr(vec![]),
        ])
    }

    #[test]
    fn learns_key_specs_from_a_command_info_reply() {
        let reply = arr(vec![module_entry("mymod.merge"), Frame::Null]);
        assert_eq!(learn(&reply, &[]), 1);
        // Learned once: a second reply adds nothing.
        assert_eq!(learn(&reply, &[]), 0);
        // Kept under the name asked by (a renamed command reports its original name).
        assert_eq!(
            learn(&arr(vec![module_entry("mymod.merge")]), &["merge2"]),
            1
        );
        assert!(super::super::spec::lookup(&["MERGE2"]).is_some_and(|s| s.is_write()));
        let spec = super::super::spec::lookup(&["MyMod.Merge"]).expect("learned");
        assert!(spec.is_write());
        let args = ["MYMOD.MERGE", "dst", "2", "a", "b", "extra"];
        let keys: Vec<&str> = spec.key_indices(&args).iter().map(|&i| args[i]).collect();
        assert_eq!(keys, ["dst", "a", "b"]);
        assert!(spec.shadow_unmappable().is_none());
    }

    #[test]
    fn a_server_without_key_specs_falls_back_to_the_legacy_range() {
        let entry = arr(vec![
            b("oldmod.get"),
            Frame::Integer(2),
            Frame::Set(vec![Frame::Simple(Bytes::from_static(b"readonly"))]),
            Frame::Integer(1),
            Frame::Integer(1),
            Frame::Integer(1),
            arr(vec![]),
        ]);
        let moving = arr(vec![
            b("oldmod.multi"),
            Frame::Integer(-2),
            arr(vec![b("write"), b("movablekeys")]),
            Frame::Integer(0),
            Frame::Integer(0),
            Frame::Integer(0),
            arr(vec![]),
        ]);
        assert_eq!(learn(&arr(vec![entry, moving]), &[]), 2);
        let get = super::super::spec::lookup(&["oldmod.get"]).unwrap();
        assert!(get.is_readonly());
        assert_eq!(get.key_indices(&["OLDMOD.GET", "k"]), [1]);
        let multi = super::super::spec::lookup(&["oldmod.multi"]).unwrap();
        assert!(multi.shadow_unmappable().is_some());
    }
}
