//! Capturing what code under test logs: [`with_logs`] runs a future with a subscriber of its
//! own writing plain text (no colour codes) into a [`SharedBuf`].

use std::sync::{Arc, Mutex};

/// Bytes written by any clone, kept in one buffer.
#[derive(Clone, Debug, Default)]
pub struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    /// Everything written so far, as text (invalid UTF-8 replaced).
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `fut` to completion on a new current-thread runtime, with a subscriber of this thread
/// only (events up to `level`, span closes included, no colour codes); returns its output
/// and everything logged meanwhile.
///
/// A test using it is best alone in its binary: tracing caches per-callsite interest
/// process-wide, and another thread hitting the same callsites without a subscriber can race
/// with it.
///
/// # Panics
///
/// The runtime cannot be built.
pub fn with_logs<T>(
    level: tracing::Level,
    fut: impl std::future::Future<Output = T>,
) -> (T, String) {
    let logs = SharedBuf::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(move || sink.clone())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(fut)
    });
    (out, logs.contents())
}
