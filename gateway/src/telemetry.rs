//! Log output: human-readable by default, JSON lines for machines.

use tracing_subscriber::EnvFilter;

/// The log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// The default filter: lifecycle events; per-request detail is at `debug` and `trace`.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber with `filter` (`RUST_LOG` syntax; the binary reads it from
/// `MESHFED_LOG`), by default [`DEFAULT_FILTER`].
pub fn init(format: LogFormat, filter: Option<String>) {
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A subscriber already set (a test harness, say) is fine.
    let _ = result;
}
