//! Log output: readable lines on stderr, and under systemd lines that the
//! journal files with their priority.
//!
//! `journalctl` shows only a line's message, so every field (the subject,
//! the domain, the error) is written into the line itself rather than kept
//! in structured journal fields that the default output hides.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Starts logging, filtered by `RUST_LOG` (default `info`). When stderr is
/// the journal stream systemd connected (`JOURNAL_STREAM`), each line
/// carries its syslog priority prefix and no timestamp of its own.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let layer = if stderr_is_journal() {
        layer.with_ansi(false).event_format(JournalLine).boxed()
    } else {
        layer
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// True when stderr is the stream `JOURNAL_STREAM` names (`DEVICE:INODE`),
/// not merely inherited from a process that had it.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
    else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// `<priority>message field=value …`: the prefix journald reads from a
/// stream (sd-daemon(3)), then the message with all its fields.
struct JournalLine;

impl<S, N> FormatEvent<S, N> for JournalLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// At most `per_minute` lines of one kind a minute, so that a caller that
/// fails on purpose cannot flood the journal; the lines held back are
/// counted and reported with the next line let through.
#[derive(Debug)]
pub struct Throttle {
    per_minute: u32,
    state: std::sync::Mutex<ThrottleState>,
}

#[derive(Debug)]
struct ThrottleState {
    window: Option<std::time::Instant>,
    admitted: u32,
    held_back: u64,
}

impl Throttle {
    /// A throttle letting `per_minute` lines through each minute.
    pub const fn new(per_minute: u32) -> Throttle {
        Throttle {
            per_minute,
            state: std::sync::Mutex::new(ThrottleState {
                window: None,
                admitted: 0,
                held_back: 0,
            }),
        }
    }

    /// `Some(lines held back since the last one let through)` when a line
    /// may be logged now, `None` when it is to be held back.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(std::time::Instant::now())
    }

    fn admit_at(&self, now: std::time::Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let expired = s
            .window
            .is_none_or(|start| now.duration_since(start) >= std::time::Duration::from_secs(60));
        if expired {
            s.window = Some(now);
            s.admitted = 0;
        }
        if s.admitted >= self.per_minute {
            s.held_back += 1;
            return None;
        }
        s.admitted += 1;
        Some(std::mem::take(&mut s.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn throttle_lets_a_few_lines_through_a_minute_and_counts_the_rest() {
        let t = Throttle::new(2);
        let start = Instant::now();
        assert_eq!(t.admit_at(start), Some(0));
        assert_eq!(t.admit_at(start + Duration::from_secs(1)), Some(0));
        for i in 0..5 {
            assert_eq!(t.admit_at(start + Duration::from_secs(2 + i)), None);
        }
        assert_eq!(t.admit_at(start + Duration::from_secs(61)), Some(5));
        assert_eq!(t.admit_at(start + Duration::from_secs(62)), Some(0));
        assert_eq!(t.admit_at(start + Duration::from_secs(63)), None);
    }
}
