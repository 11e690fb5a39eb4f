//! Access logs: one JSON object per line for each request and each TCP connection, written to a
//! file or standard output by a task of its own, so that a slow disk never holds up a request.
//! Lines that find the queue full are dropped and counted
//! (`meshfed_access_log_lines_dropped_total`).
//!
//! The fields are documented in `docs/observability.md`; a field that does not apply is left
//! out rather than written empty.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config;

/// Lines waiting for the writer.
const QUEUE: usize = 16_384;

/// The sending end of the access log.
#[derive(Debug)]
pub(crate) struct AccessLog {
    lines: mpsc::Sender<String>,
    /// Lines dropped because the writer fell behind.
    pub(crate) dropped: Arc<AtomicU64>,
}

/// One request, as logged.
#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    /// When the request arrived (RFC 3339, UTC).
    pub(crate) start_time: Timestamp,
    /// `outbound` (from a local client) or `inbound` (from a peer gateway).
    pub(crate) direction: &'static str,
    pub(crate) protocol: &'static str,
    pub(crate) method: &'a str,
    pub(crate) authority: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    /// The `x-meshfed-error` reason when the gateway answered for itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) service: Option<String>,
    pub(crate) source_cluster: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) destination_cluster: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) route: Option<&'a str>,
    /// The local client's address (outbound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client: Option<String>,
    /// The verified source identity (inbound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<String>,
    /// Tries it took, when more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) attempts: Option<&'a str>,
    /// `delay` or `abort`, when a fault was injected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fault: Option<&'a str>,
    /// Until the response head was sent.
    pub(crate) duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) span_id: Option<String>,
    /// Whether the request's spans are exported (false: the IDs are carried on, for
    /// correlation, but no trace holds them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sampled: Option<bool>,
}

/// One TCP connection (or tunnel), as logged when it ends.
#[derive(Debug, Serialize)]
pub(crate) struct Connection<'a> {
    pub(crate) start_time: Timestamp,
    pub(crate) direction: &'static str,
    pub(crate) protocol: &'static str,
    pub(crate) service: String,
    pub(crate) source_cluster: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) destination_cluster: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client: Option<String>,
    /// Bytes from the client towards the service.
    pub(crate) bytes_sent: u64,
    /// Bytes from the service back to the client.
    pub(crate) bytes_received: u64,
    /// Why the connection failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<&'a str>,
    pub(crate) duration_ms: f64,
}

/// A wall-clock time, written as RFC 3339 in UTC with milliseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timestamp(pub(crate) SystemTime);

impl AccessLog {
    /// Opens the log `to` and starts its writer on the current runtime.
    pub(crate) fn open(to: &config::AccessLog) -> std::io::Result<AccessLog> {
        let writer: Box<dyn Write + Send> = match to {
            config::AccessLog::Stdout => Box::new(std::io::stdout()),
            config::AccessLog::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (lines, queued) = mpsc::channel(QUEUE);
        // Blocking writes belong on a blocking thread, not on the runtime's workers.
        tokio::task::spawn_blocking(move || write_lines(queued, writer));
        Ok(AccessLog {
            lines,
            dropped: Arc::default(),
        })
    }

    /// Logs one request.
    pub(crate) fn request(&self, entry: &Request<'_>) {
        self.line(entry);
    }

    /// Logs one TCP connection.
    pub(crate) fn connection(&self, entry: &Connection<'_>) {
        self.line(entry);
    }

    fn line(&self, entry: &impl Serialize) {
        let Ok(line) = serde_json::to_string(entry) else {
            return;
        };
        if self.lines.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes lines as they come, flushing whenever the queue is drained.
fn write_lines(mut queued: mpsc::Receiver<String>, writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(writer);
    while let Some(line) = queued.blocking_recv() {
        let mut result = writeln!(out, "{line}");
        while let Ok(line) = queued.try_recv() {
            result = result.and_then(|()| writeln!(out, "{line}"));
        }
        if let Err(error) = result.and_then(|()| out.flush()) {
            tracing::warn!(%error, "access log: write failed");
        }
    }
}

/// Milliseconds, with microseconds as the fraction.
pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}", rfc3339(self.0)))
    }
}

/// `2026-11-23T05:32:37.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let t = time::OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn formats_times_as_rfc3339() {
        for (secs, millis, want) in [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.005Z"),
            (1_795_411_957, 123, "2026-11-23T05:32:37.123Z"),
            (4_107_542_399, 999, "2100-02-28T23:59:59.999Z"),
        ] {
            let time = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
            assert_eq!(rfc3339(time), want);
        }
    }
}
