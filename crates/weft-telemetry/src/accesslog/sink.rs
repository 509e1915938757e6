//! A non-blocking access-log writer: lines go through a bounded channel to a background
//! thread, and are dropped (and counted) when the channel is full.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::Duration;

/// How often the writer thread takes the queued lines (Envoy flushes its file logs every second).
const WRITER_POLL: Duration = Duration::from_millis(20);
use std::thread::JoinHandle;

use crate::error::TelemetryError;

#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
}

/// Writes access-log lines from a background thread; [`AccessLogSink::log`] never blocks.
///
/// Dropping the sink flushes the queued lines and joins the writer thread.
#[derive(Debug)]
pub struct AccessLogSink {
    tx: Option<SyncSender<String>>,
    counters: Arc<Counters>,
    worker: Option<JoinHandle<()>>,
}

impl AccessLogSink {
    /// Default number of lines that may be queued before new lines are dropped.
    pub const DEFAULT_CAPACITY: usize = 8192;

    /// Opens `path` for appending (created if missing); `/dev/stdout` and `/dev/stderr`
    /// write to the process's standard streams.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TelemetryError> {
        Self::open_with_capacity(path, Self::DEFAULT_CAPACITY)
    }

    /// Like [`AccessLogSink::open`] with an explicit queue capacity (at least 1).
    pub fn open_with_capacity(
        path: impl AsRef<Path>,
        capacity: usize,
    ) -> Result<Self, TelemetryError> {
        let path = path.as_ref();
        let writer: Box<dyn Write + Send> = if path == Path::new("/dev/stdout") {
            Box::new(io::stdout())
        } else if path == Path::new("/dev/stderr") {
            Box::new(io::stderr())
        } else {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| TelemetryError::AccessLogOpen {
                    path: PathBuf::from(path),
                    source,
                })?;
            Box::new(file)
        };
        Self::from_writer(writer, capacity)
    }

    /// Runs the background writer over any writer (capacity is at least 1).
    pub fn from_writer(
        writer: Box<dyn Write + Send>,
        capacity: usize,
    ) -> Result<Self, TelemetryError> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let worker_counters = Arc::clone(&counters);
        let worker = std::thread::Builder::new()
            .name("weft-accesslog".into())
            .spawn(move || run_writer(rx, writer, &worker_counters))
            .map_err(TelemetryError::AccessLogThread)?;
        Ok(AccessLogSink {
            tx: Some(tx),
            counters,
            worker: Some(worker),
        })
    }

    /// Queues one line (it should end with `\n`). Drops it and counts the drop if the queue
    /// is full; never blocks.
    pub fn log(&self, line: String) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the queue was full (or the writer had stopped).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Lines handed to the writer successfully.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Lines whose write failed.
    pub fn write_errors(&self) -> u64 {
        self.counters.write_errors.load(Ordering::Relaxed)
    }
}

impl Drop for AccessLogSink {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain, flush and exit.
        self.tx.take();
        if let Some(worker) = self.worker.take()
            && worker.join().is_err()
        {
            tracing::warn!("access log writer thread panicked");
        }
    }
}

fn run_writer(rx: Receiver<String>, writer: Box<dyn Write + Send>, counters: &Counters) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    let write_line = |out: &mut BufWriter<Box<dyn Write + Send>>, line: String| match out
        .write_all(line.as_bytes())
    {
        Ok(()) => {
            counters.written.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            if counters.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(error = %e, "writing the access log failed; further errors are only counted");
            }
        }
    };
    // Poll rather than block: a writer that sleeps on the channel would have every request's
    // `try_send` wake it (a futex call and a context switch per line); polling every
    // `WRITER_POLL` lets the requests only push, and writes a tick's lines with one flush.
    loop {
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    write_line(&mut out, line);
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote
            && let Err(e) = out.flush()
            && counters.write_errors.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::warn!(error = %e, "flushing the access log failed");
        }
        std::thread::sleep(WRITER_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    #[test]
    fn writes_lines_to_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        {
            let sink = AccessLogSink::open(&path).unwrap();
            sink.log("first\n".into());
            sink.log("second\n".into());
            sink.log("third\n".into());
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "first\nsecond\nthird\n"
        );
        // Appends on reopen.
        {
            let sink = AccessLogSink::open(&path).unwrap();
            sink.log("fourth\n".into());
            drop(sink);
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "first\nsecond\nthird\nfourth\n"
        );
    }

    #[test]
    fn open_error_names_the_path() {
        let err = AccessLogSink::open("/nonexistent-dir-weft/x/access.log").err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("/nonexistent-dir-weft/x/access.log"), "{msg}");
    }

    /// A writer that blocks until released, to fill the queue deterministically.
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        data: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cvar) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cvar.wait(open).unwrap();
            }
            self.data.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn drops_when_full_without_blocking() {
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let data = Arc::new(Mutex::new(Vec::new()));
        let gate = Gate {
            open: Arc::clone(&open),
            data: Arc::clone(&data),
        };
        // A writer whose buffer is smaller than a line forces a write per line.
        let sink = AccessLogSink::from_writer(Box::new(gate), 2).unwrap();
        let line = "x".repeat(70 * 1024) + "\n";
        for _ in 0..10 {
            sink.log(line.clone());
        }
        // At most 2 queued + 1 in the writer's hands can be accepted.
        assert!(sink.dropped() >= 7, "dropped {}", sink.dropped());
        let accepted = 10 - sink.dropped();
        {
            let (lock, cvar) = &*open;
            *lock.lock().unwrap() = true;
            cvar.notify_all();
        }
        drop(sink);
        let written = data.lock().unwrap().len();
        assert_eq!(written as u64, accepted * line.len() as u64);
    }
}
