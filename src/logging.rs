//! The binary's log output: tracing on stderr, coloured only for a person at a terminal.

use std::io::IsTerminal;

/// Logs to stderr at the level `SAWMILL_LOG` asks for (`info,tantivy=warn` by default).
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SAWMILL_LOG")
                .unwrap_or_else(|_| "info,tantivy=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .init();
}

/// Colour codes only for a terminal: in a file, a pipe or journald they are noise that
/// breaks `grep` and log parsers. `NO_COLOR` set to anything but the empty string turns
/// colour off everywhere (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
