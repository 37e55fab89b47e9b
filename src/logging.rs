//! The process's log output: `tracing` events to stdout, filtered by
//! `CONCLAVE_LOG` (`EnvFilter` syntax, default `info,openraft=warn,sled=warn`), as
//! human text or one JSON object per line (`conclave serve --log-format json`, or
//! `CONCLAVE_LOG_FORMAT=json`). Text has ANSI colours only when stdout is a
//! terminal, so a log redirected to a file holds no escape codes.
//!
//! Spans are part of each line: a client request's `request{method, route,
//! request_id, index}` (`server::observe`) prefixes every event logged while it is
//! handled (JSON: the `span` and `spans` fields).
//!
//! Must not depend on anything of the node: the binary calls [`init`] once, first.

use std::io::IsTerminal;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The log filter's environment variable.
pub const LOG_FILTER_ENV: &str = "CONCLAVE_LOG";
/// The log format's environment variable (`text` or `json`).
pub const LOG_FORMAT_ENV: &str = "CONCLAVE_LOG_FORMAT";
const DEFAULT_FILTER: &str = "info,openraft=warn,sled=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `tracing`'s human format (colours on a terminal only).
    #[default]
    Text,
    /// One JSON object per line, with the current span and its parents.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?} is not text or json")),
        }
    }
}

impl LogFormat {
    /// The format asked for: `flag` if given, else `CONCLAVE_LOG_FORMAT`, else text.
    pub fn chosen(flag: Option<LogFormat>) -> Result<LogFormat, String> {
        match (flag, std::env::var(LOG_FORMAT_ENV)) {
            (Some(format), _) => Ok(format),
            (None, Ok(text)) => text.parse(),
            (None, Err(_)) => Ok(LogFormat::Text),
        }
    }
}

/// The subscriber writing to `writer` in `format`, with colours if `ansi`.
pub fn subscriber<W>(
    format: LogFormat,
    ansi: bool,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

/// Installs the process's subscriber: stdout, `format`, colours only on a
/// terminal, the filter from `CONCLAVE_LOG`.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env(LOG_FILTER_ENV).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::stdout().is_terminal();
    let subscriber = subscriber(format, ansi, filter, std::io::stdout);
    // Only fails if a subscriber is already set (then that one stays).
    let _ = tracing::subscriber::set_global_default(subscriber);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into shared memory, standing for a file (not a terminal).
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Memory {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Memory {
        type Writer = Memory;

        fn make_writer(&'a self) -> Memory {
            self.clone()
        }
    }

    fn log_through(format: LogFormat, ansi: bool) -> String {
        let memory = Memory::default();
        let subscriber = subscriber(format, ansi, EnvFilter::new("info"), memory.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                route = "/v1/kv/{*key}",
                request_id = "r-1",
                index = tracing::field::Empty
            );
            let _entered = span.enter();
            span.record("index", 42u64);
            tracing::warn!(node = 1, "something happened");
        });
        let bytes = memory.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn text_to_a_non_terminal_has_no_escape_codes_and_carries_the_span() {
        // What `init` chooses when stdout is not a terminal (a file, a pipe).
        let text = log_through(LogFormat::Text, false);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("request_id=\"r-1\""), "{text}");
        assert!(text.contains("index=42"), "{text}");
        assert!(log_through(LogFormat::Text, true).contains('\x1b'));
    }

    #[test]
    fn json_is_one_object_per_line_with_the_request_span() {
        let text = log_through(LogFormat::Json, false);
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["fields"]["message"], "something happened", "{line}");
        assert_eq!(line["span"]["request_id"], "r-1", "{line}");
        assert_eq!(line["span"]["index"], 42, "{line}");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn the_format_flag_wins_and_a_bad_name_is_refused() {
        assert_eq!(
            LogFormat::chosen(Some(LogFormat::Json)),
            Ok(LogFormat::Json)
        );
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
