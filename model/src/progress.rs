//! A small progress reporter for loading weights: bytes done / total, tensors, MB/s, on stderr.
//!
//! On a terminal the line is redrawn in place (`\r`) at most every 100 ms; into a pipe or a log it prints
//! a full line at most every 2 s, so a 640 GB load leaves a few hundred lines, not millions.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const TERMINAL_EVERY: Duration = Duration::from_millis(100);
const LOG_EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    label: String,
    total_bytes: u64,
    total_tensors: usize,
    bytes: u64,
    tensors: usize,
    start: Instant,
    last_draw: Option<Instant>,
    /// `None`: quiet, nothing is printed.
    terminal: Option<bool>,
}

impl Progress {
    /// A reporter that prints to stderr.
    pub fn new(label: &str, total_bytes: u64, total_tensors: usize) -> Progress {
        Progress::with_output(label, total_bytes, total_tensors, Some(std::io::stderr().is_terminal()))
    }

    /// A reporter that prints nothing (tests, `--quiet`); it still counts.
    pub fn quiet(label: &str, total_bytes: u64, total_tensors: usize) -> Progress {
        Progress::with_output(label, total_bytes, total_tensors, None)
    }

    fn with_output(label: &str, total_bytes: u64, total_tensors: usize, terminal: Option<bool>) -> Progress {
        Progress {
            label: label.to_string(),
            total_bytes,
            total_tensors,
            bytes: 0,
            tensors: 0,
            start: Instant::now(),
            last_draw: None,
            terminal,
        }
    }

    pub fn advance(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.maybe_draw();
    }

    pub fn tensor_done(&mut self) {
        self.tensors += 1;
        self.maybe_draw();
    }

    /// Bytes and tensors counted so far.
    pub fn done(&self) -> (u64, usize) {
        (self.bytes, self.tensors)
    }

    /// Prints the final line (ending the in-place line on a terminal).
    pub fn finish(self) {
        if let Some(terminal) = self.terminal {
            let line = self.line(self.start.elapsed());
            let mut err = std::io::stderr().lock();
            // A failed write to stderr is not worth failing a load over.
            let _ = if terminal { writeln!(err, "\r{line}\x1b[K") } else { writeln!(err, "{line}") };
        }
    }

    fn maybe_draw(&mut self) {
        let Some(terminal) = self.terminal else { return };
        let now = Instant::now();
        let every = if terminal { TERMINAL_EVERY } else { LOG_EVERY };
        if self.last_draw.is_some_and(|t| now.duration_since(t) < every) {
            return;
        }
        // The first call only starts the clock for a log, so a fast load prints just the final line.
        if self.last_draw.is_none() && !terminal {
            self.last_draw = Some(now);
            return;
        }
        self.last_draw = Some(now);
        let line = self.line(now.duration_since(self.start));
        let mut err = std::io::stderr().lock();
        let _ = if terminal { write!(err, "\r{line}\x1b[K") } else { writeln!(err, "{line}") };
        let _ = err.flush();
    }

    /// `loading: 1.23/640.00 GB (0.2%), 12/91991 tensors, 1530 MB/s`
    pub fn line(&self, elapsed: Duration) -> String {
        let gb = |b: u64| b as f64 / 1e9;
        let percent =
            if self.total_bytes == 0 { 100.0 } else { 100.0 * self.bytes as f64 / self.total_bytes as f64 };
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { self.bytes as f64 / 1e6 / secs } else { 0.0 };
        format!(
            "{}: {:.2}/{:.2} GB ({percent:.1}%), {}/{} tensors, {rate:.0} MB/s",
            self.label,
            gb(self.bytes),
            gb(self.total_bytes),
            self.tensors,
            self.total_tensors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_formats() {
        let mut p = Progress::quiet("loading", 4_000_000_000, 3);
        p.advance(1_000_000_000);
        p.tensor_done();
        assert_eq!(p.done(), (1_000_000_000, 1));
        assert_eq!(p.line(Duration::from_secs(2)), "loading: 1.00/4.00 GB (25.0%), 1/3 tensors, 500 MB/s");
        // Nothing to load (an empty checkpoint) is complete, not a division by zero.
        assert_eq!(
            Progress::quiet("x", 0, 0).line(Duration::ZERO),
            "x: 0.00/0.00 GB (100.0%), 0/0 tensors, 0 MB/s"
        );
    }
}
