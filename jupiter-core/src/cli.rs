//! What the project's command lines (`jupiter`, `objstore`, `loadtest`) share: how an error
//! is printed, and that a reader who went away (`… | head`) is not an error.
//!
//! Each binary parses its arguments with clap and exits with its documented codes; these two
//! functions keep the rest alike.

use std::error::Error;
use std::io::{ErrorKind, Write};

/// Prints `program: error: <e>`, then each cause on its own `  caused by: …` line, to stderr.
///
/// A closed stderr is ignored: there is nowhere left to report to.
pub fn print_error(program: &str, e: &(dyn Error + 'static)) {
    let _ = std::io::stderr()
        .lock()
        .write_all(render_error(program, e).as_bytes());
}

/// The text [`print_error`] writes.
pub fn render_error(program: &str, e: &(dyn Error + 'static)) -> String {
    let mut text = format!("{program}: error: {e}\n");
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str("  caused by: ");
        text.push_str(&cause.to_string());
        text.push('\n');
        source = cause.source();
    }
    text
}

/// Writes `bytes` (text, or a value as it is) to stdout and flushes. `Ok(false)` when the reader closed the pipe: stop
/// writing and exit as if done (`println!` would panic there).
///
/// # Errors
///
/// Any other write error (a full disk behind a redirection).
pub fn write_stdout(bytes: impl AsRef<[u8]>) -> std::io::Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes.as_ref()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Prints one line of progress on stdout, like `println!`, but a reader that went away
/// (`| head`) or any other write error ends the output, not the program.
///
/// ```
/// jupiter_core::say!("listening on {}", "127.0.0.1:7070");
/// ```
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = $crate::cli::write_stdout(format!("{}\n", format_args!($($arg)*)));
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn every_cause_is_printed_under_the_error() {
        let e = Layer(
            "invalid config",
            Some(Box::new(Layer(
                "app.toml:3: key port",
                Some(Box::new(Layer("not a number", None))),
            ))),
        );
        assert_eq!(
            render_error("jupiter", &e),
            "jupiter: error: invalid config\n  caused by: app.toml:3: key port\n  caused by: not a number\n"
        );
        assert_eq!(
            render_error("jupiter", &Layer("alone", None)),
            "jupiter: error: alone\n"
        );
    }
}
