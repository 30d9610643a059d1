//! Snapshots: the whole store in one file, written atomically while writers go on, and loaded
//! through a memory map without copying anything: the file's blocks become the engine's
//! segments.
//!
//! # Format
//!
//! ```text
//! header (64 bytes)   magic "JUPOBJS2", format version (u32), shards (u32), revision (u64),
//!                     records (u64), body length (u64), CRC-32 of the body (u32),
//!                     CRC-32 of the header (u32)
//! body                blocks, each: length (u32), shard (u32), then records
//! ```
//!
//! A record is byte for byte what the engine keeps in memory (see `engine/store.rs`: a
//! varint header with the revisions and expiry, then metadata, key and value). A block holds
//! the records of one shard, at most 64 KiB of them (or one larger record), so that loading
//! can hand each block to its shard as a segment over the mapped file: there is nothing to
//! deserialise and nothing is copied. When the shard count changed since the file was
//! written, records are copied to their new shards instead.
//!
//! Why not rkyv (which an earlier format used) or postcard: any serialisation format puts a
//! second encoding between the file and memory. rkyv's archives are readable in place, but
//! its per-record framing cost ~90 bytes an object and loading still had to build the index
//! entry by entry from archived fields; with the engine's own encoding the file *is* the
//! memory layout. (bincode is out regardless: unmaintained, and its 3.0 release is a
//! compile_error tombstone.)
//!
//! # Consistency
//!
//! Shards are walked one at a time (their read lock held only while taking `Arc`s of the
//! segments), so the file is not a single point in time across shards: each object is as it
//! was when its shard was visited. The header's revision is the highest revision written
//! (or the engine's revision when the walk started, if higher).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::Error;
use crate::engine::{Engine, EngineConfig};

const MAGIC: &[u8; 8] = b"JUPOBJS2";
const FORMAT: u32 = 2;
const HEADER: usize = 64;
/// Records per block, in bytes (a larger record gets a block of its own).
const BLOCK: usize = 64 * 1024;

/// What a snapshot wrote or loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Objects.
    pub objects: u64,
    /// The highest revision in the file.
    pub revision: u64,
    /// File size.
    pub bytes: u64,
}

fn header(shards: u32, revision: u64, records: u64, body_len: u64, body_crc: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..16].copy_from_slice(&shards.to_le_bytes());
    h[16..24].copy_from_slice(&revision.to_le_bytes());
    h[24..32].copy_from_slice(&records.to_le_bytes());
    h[32..40].copy_from_slice(&body_len.to_le_bytes());
    h[40..44].copy_from_slice(&body_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[0..44]);
    h[44..48].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Writes `engine` to `path` atomically: a temporary file beside it, fsync, rename, fsync of
/// the directory. A crash at any point leaves the previous snapshot intact. `rate` limits the
/// write speed in bytes per second (0: unlimited) to spare the disk serving other work.
///
/// Memory: one shard's list of record references at a time (24 bytes an object of that
/// shard) and the write buffer; records are written from where they are stored.
///
/// # Errors
///
/// The file could not be written; the previous snapshot is untouched.
pub fn write(engine: &Engine, path: &Path, rate: u64) -> Result<SnapshotStats, Error> {
    let io = |source| Error::Snapshot {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("snapshot"),
        std::process::id()
    ));
    let result = (|| {
        let file = File::create(&tmp).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER]).map_err(io)?;
        let mut crc = crc32fast::Hasher::new();
        let mut body: u64 = 0;
        let mut records: u64 = 0;
        let mut revision = engine.revision();
        let started = Instant::now();
        let mut emit = |out: &mut BufWriter<File>, bytes: &[u8]| -> Result<(), Error> {
            out.write_all(bytes).map_err(io)?;
            crc.update(bytes);
            body += bytes.len() as u64;
            if rate > 0 {
                // Pace: never ahead of `rate` bytes per second.
                let due = Duration::from_secs_f64(body as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(())
        };
        for shard in 0..engine.shard_count() {
            let refs = engine.shard_records(shard);
            let mut at = 0;
            while at < refs.len() {
                // One block: records while they fit (at least one).
                let mut len = refs[at].len as usize;
                let mut end = at + 1;
                while end < refs.len() && len + refs[end].len as usize <= BLOCK {
                    len += refs[end].len as usize;
                    end += 1;
                }
                let mut head = [0u8; 8];
                head[0..4].copy_from_slice(&(len as u32).to_le_bytes());
                head[4..8].copy_from_slice(&(shard as u32).to_le_bytes());
                emit(&mut out, &head)?;
                for r in &refs[at..end] {
                    emit(&mut out, r.bytes())?;
                    revision = revision.max(r.mod_revision());
                }
                records += (end - at) as u64;
                at = end;
            }
        }
        let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let shards = engine.shard_count() as u32;
        file.write_all(&header(shards, revision, records, body, crc.finalize()))
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)?;
        // The rename itself must survive a crash.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(SnapshotStats {
            objects: records,
            revision,
            bytes: HEADER as u64 + body,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Loads a snapshot into a new engine. Records stay in the memory-mapped file: its blocks
/// become the engine's segments, and the `Bytes` handed out point into it. Blocks are
/// indexed on several threads (one group of shards each). Expired objects are skipped.
///
/// # Errors
///
/// The file cannot be read, or is truncated or corrupt (checked by the CRCs and by validating
/// every record): nothing is loaded then.
pub fn load(path: &Path, config: EngineConfig) -> Result<(Engine, SnapshotStats), Error> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(|source| Error::Snapshot {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: the map is read-only, and snapshots are only ever replaced by rename, never
    // modified in place, so the mapped bytes do not change under us.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(|source| {
        Error::Snapshot {
            path: path.to_owned(),
            source,
        }
    })?;
    let all = Bytes::from_owner(map);
    if all.len() < HEADER {
        return Err(corrupt(format!(
            "{} bytes, shorter than the header",
            all.len()
        )));
    }
    let h = &all[..HEADER];
    if &h[0..8] != MAGIC {
        return Err(corrupt(if &h[0..7] == b"JUPOBJS" {
            format!(
                "format {} (this build reads format {FORMAT}); set [objstore.snapshot] on-corrupt = \"start-empty\" and take a new snapshot",
                char::from(h[7])
            )
        } else {
            "not an objstore snapshot (bad magic)".into()
        }));
    }
    let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(44) != crc32fast::hash(&h[0..44]) {
        return Err(corrupt("header checksum mismatch".into()));
    }
    if u32_at(8) != FORMAT {
        return Err(corrupt(format!(
            "format version {} (this build reads {FORMAT})",
            u32_at(8)
        )));
    }
    let (written_shards, revision, records, body_len) =
        (u32_at(12) as usize, u64_at(16), u64_at(24), u64_at(32));
    // Revisions are signed 64-bit numbers to clients (as etcd's are); the next write's must be
    // one too.
    if revision >= i64::MAX as u64 {
        return Err(corrupt(format!(
            "revision {revision} is past the largest revision ({})",
            i64::MAX
        )));
    }
    let body_end = HEADER as u64 + body_len;
    if all.len() as u64 != body_end {
        return Err(corrupt(format!(
            "{} bytes, the header says {body_end} (truncated or appended to)",
            all.len()
        )));
    }
    if crc32fast::hash(&all[HEADER..]) != u32_at(40) {
        return Err(corrupt("body checksum mismatch".into()));
    }
    // The blocks.
    let mut blocks: Vec<(usize, usize, Bytes)> = Vec::new();
    let mut at = HEADER;
    while at < all.len() {
        let head = all
            .get(at..at + 8)
            .ok_or_else(|| corrupt(format!("block header at byte {at} past the end")))?;
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let shard = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
        let end = (at + 8)
            .checked_add(len)
            .filter(|&e| e <= all.len())
            .ok_or_else(|| corrupt(format!("block at byte {at}: length past the end")))?;
        blocks.push((at, shard, all.slice(at + 8..end)));
        at = end;
    }
    let engine = Engine::with_revision(config, revision);
    // Same shard count: blocks go to their shard in place. Otherwise each record is copied.
    let same = written_shards == engine.shard_count();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let results: Vec<Result<u64, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (engine, blocks) = (&engine, &blocks);
                scope.spawn(move || {
                    let mut loaded = 0;
                    for (at, shard, block) in blocks.iter().filter(|b| b.1 % threads == t) {
                        let hint = if same { *shard } else { usize::MAX };
                        loaded += engine
                            .load_block(hint, block.clone())
                            .map_err(|e| format!("block at byte {at}: {e}"))?;
                    }
                    Ok(loaded)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a loader thread panicked".into()))
            })
            .collect()
    });
    let mut loaded = 0;
    for r in results {
        loaded += r.map_err(corrupt)?;
    }
    if loaded > records {
        return Err(corrupt(format!(
            "{loaded} records, the header says {records}"
        )));
    }
    Ok((
        engine,
        SnapshotStats {
            objects: loaded,
            revision,
            bytes: all.len() as u64,
        },
    ))
}

/// Takes snapshots of one engine to one path, one at a time, off the async runtime.
#[derive(Debug)]
pub struct Snapshotter {
    engine: Engine,
    path: PathBuf,
    rate: u64,
    running: tokio::sync::Mutex<()>,
}

impl Snapshotter {
    /// Snapshots of `engine` to `path`, written at most `rate` bytes per second (0: no limit).
    pub fn new(engine: Engine, path: PathBuf, rate: u64) -> Snapshotter {
        Snapshotter {
            engine,
            path,
            rate,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The snapshot file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a snapshot now; waits for one already running to finish first.
    ///
    /// # Errors
    ///
    /// As [`write`].
    pub async fn take(&self) -> Result<SnapshotStats, Error> {
        let _one_at_a_time = self.running.lock().await;
        let (engine, path, rate) = (self.engine.clone(), self.path.clone(), self.rate);
        let started = Instant::now();
        let stats = tokio::task::spawn_blocking(move || write(&engine, &path, rate))
            .await
            .map_err(|e| Error::Snapshot {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })??;
        tracing::info!(
            path = %self.path.display(),
            objects = stats.objects,
            revision = stats.revision,
            bytes = stats.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        Ok(stats)
    }
}

/// Removes temporary files a crash mid-snapshot left beside `path`.
pub fn remove_leftovers(path: &Path) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
