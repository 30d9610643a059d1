//! Snapshots: the whole store in one file, written atomically while writers go on, and loaded
//! through a memory map without copying values.
//!
//! # Format
//!
//! ```text
//! header (64 bytes)   magic "JUPOBJS1", format version (u32), revision (u64), records (u64),
//!                     body length (u64), CRC-32 of the body (u32), CRC-32 of the header (u32)
//! body                records, each: length (u64), padding to 16, an rkyv archive of the
//!                     object (key, value, revisions, expiry, content type, metadata), padding
//! ```
//!
//! rkyv: its archives are read in place (validated, then borrowed), which is what lets values
//! stay in the mapped file; it is maintained, unlike bincode. Each record is its own archive,
//! so writing never builds the whole data set in memory: one record's buffer at a time.
//!
//! # Consistency
//!
//! Shards are walked one at a time (their read lock held only while cloning `Arc`s), so the
//! file is not a single point in time across shards: each object is as it was when its shard
//! was visited. The header's revision is the highest revision in the file.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rkyv::rancor;
use rkyv::with::InlineAsBox;

use crate::engine::{Engine, EngineConfig, Object, now_ms};

const MAGIC: &[u8; 8] = b"JUPOBJS1";
const FORMAT: u32 = 1;
const HEADER: usize = 64;
const ALIGN: usize = 16;

/// What went wrong with a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid snapshot (truncated, corrupt, another format).
    #[error("snapshot {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One object as written (borrowed: nothing is copied to build it).
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Record<'a> {
    #[rkyv(with = InlineAsBox)]
    key: &'a [u8],
    #[rkyv(with = InlineAsBox)]
    value: &'a [u8],
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    /// 0: none.
    expires_at_ms: u64,
    #[rkyv(with = InlineAsBox)]
    content_type: &'a str,
    metadata: Vec<(String, String)>,
}

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

fn pad(n: usize) -> usize {
    (ALIGN - n % ALIGN) % ALIGN
}

fn header(revision: u64, records: u64, body_len: u64, body_crc: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
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
/// # Errors
///
/// The file could not be written; the previous snapshot is untouched.
pub fn write(engine: &Engine, path: &Path, rate: u64) -> Result<SnapshotStats, SnapshotError> {
    let io = |source| SnapshotError::Io {
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
        let mut buf = rkyv::util::AlignedVec::<ALIGN>::new();
        let started = Instant::now();
        let zeros = [0u8; ALIGN];
        for shard in 0..engine.shard_count() {
            for (key, o) in engine.shard_entries(shard) {
                let record = Record {
                    key: &key,
                    value: &o.value,
                    create_revision: o.create_revision,
                    mod_revision: o.mod_revision,
                    version: o.version,
                    expires_at_ms: o.expires_at_ms.unwrap_or(0),
                    content_type: o.content_type.as_deref().unwrap_or(""),
                    metadata: o.metadata.clone(),
                };
                buf.clear();
                buf = rkyv::api::high::to_bytes_in::<_, rancor::Error>(&record, buf).map_err(
                    |e| {
                        io(std::io::Error::other(format!(
                            "cannot encode a record: {e}"
                        )))
                    },
                )?;
                let len = (buf.len() as u64).to_le_bytes();
                let chunks: [&[u8]; 4] = [&len, &zeros[..pad(8)], &buf, &zeros[..pad(buf.len())]];
                for c in chunks {
                    out.write_all(c).map_err(io)?;
                    crc.update(c);
                    body += c.len() as u64;
                }
                records += 1;
                revision = revision.max(o.mod_revision);
                if rate > 0 {
                    // Pace: never ahead of `rate` bytes per second.
                    let due = Duration::from_secs_f64(body as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        }
        let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header(revision, records, body, crc.finalize()))
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

/// Loads a snapshot into a new engine. Values (and keys) stay in the memory-mapped file: the
/// `Bytes` handed out point into it. Expired objects are skipped.
///
/// # Errors
///
/// The file cannot be read, or is truncated or corrupt (checked by the CRCs and by validating
/// every record): nothing is loaded then.
pub fn load(path: &Path, config: EngineConfig) -> Result<(Engine, SnapshotStats), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(|source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: the map is read-only, and snapshots are only ever replaced by rename, never
    // modified in place, so the mapped bytes do not change under us.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    })?;
    let _ = map.advise(memmap2::Advice::Sequential);
    let all = Bytes::from_owner(map);
    if all.len() < HEADER {
        return Err(corrupt(format!(
            "{} bytes, shorter than the header",
            all.len()
        )));
    }
    let h = &all[..HEADER];
    if &h[0..8] != MAGIC {
        return Err(corrupt("not an objstore snapshot (bad magic)".into()));
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
    let (revision, records, body_len) = (u64_at(16), u64_at(24), u64_at(32));
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
    let engine = Engine::with_revision(config, revision);
    let now = now_ms();
    let mut at = HEADER;
    let mut loaded = 0;
    for n in 0..records {
        let bad = |what: &str| corrupt(format!("record {n} at byte {at}: {what}"));
        if at + 8 > all.len() {
            return Err(bad("past the end"));
        }
        let len = u64::from_le_bytes(all[at..at + 8].try_into().expect("8 bytes")) as usize;
        let start = at + 8 + pad(8);
        let end = start
            .checked_add(len)
            .filter(|&e| e <= all.len())
            .ok_or_else(|| bad("length past the end"))?;
        let archived = rkyv::access::<ArchivedRecord<'_>, rancor::Error>(&all[start..end])
            .map_err(|e| bad(&e.to_string()))?;
        at = end + pad(len);
        let expires = archived.expires_at_ms.to_native();
        if expires != 0 && expires <= now {
            continue;
        }
        let content_type = archived.content_type.get();
        engine.restore(
            all.slice_ref(archived.key.get()),
            Object {
                value: all.slice_ref(archived.value.get()),
                create_revision: archived.create_revision.to_native(),
                mod_revision: archived.mod_revision.to_native(),
                version: archived.version.to_native(),
                expires_at_ms: (expires != 0).then_some(expires),
                content_type: (!content_type.is_empty()).then(|| content_type.to_owned()),
                metadata: archived
                    .metadata
                    .iter()
                    .map(|t| (t.0.as_str().to_owned(), t.1.as_str().to_owned()))
                    .collect(),
            },
        );
        loaded += 1;
    }
    if at != all.len() {
        return Err(corrupt(format!(
            "{} bytes after the last record",
            all.len() - at
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
    pub async fn take(&self) -> Result<SnapshotStats, SnapshotError> {
        let _one_at_a_time = self.running.lock().await;
        let (engine, path, rate) = (self.engine.clone(), self.path.clone(), self.rate);
        let started = Instant::now();
        let stats = tokio::task::spawn_blocking(move || write(&engine, &path, rate))
            .await
            .map_err(|e| SnapshotError::Io {
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
