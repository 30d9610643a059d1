use std::path::PathBuf;

/// The test command that installs every server binary the tests need.
pub const INSTALL_HINT: &str = "install the test dependencies with ./scripts/test.sh \
     (it runs apt-get install redis-server redis-tools etcd-server etcd-client protobuf-compiler)";

/// Why a server could not be started or queried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server binary is not installed.
    #[error("testkit: `{binary}` not found in PATH; {hint}", hint = INSTALL_HINT)]
    MissingBinary {
        /// The binary's name.
        binary: String,
    },
    /// The process could not be spawned.
    #[error("testkit: cannot spawn {program}")]
    Spawn {
        /// The program path.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited or never answered; `log` is the tail of its output.
    #[error("testkit: {what} did not become ready: {reason}\n--- last lines of its log ---\n{log}")]
    NotReady {
        /// Which server.
        what: String,
        /// What went wrong.
        reason: String,
        /// Tail of the server's log.
        log: String,
    },
    /// A request to a server failed.
    #[error("testkit: {what}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A server answered something unexpected.
    #[error("testkit: {0}")]
    Protocol(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
