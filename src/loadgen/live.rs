//! The live line: while a profile runs, one line per interval on stderr with how the run is going
//! (elapsed / planned length, users, requests/s, p95, errors so far):
//!
//! ```text
//! [12s/1m00s] users 25 | 83.0 rps | p95 4.2 ms | errors 0 (0.00%)
//! ```
//!
//! On a terminal the line is rewritten in place; elsewhere it is off unless `--live` asks for it,
//! then it is one plain line per interval (a CI log). `--quiet` turns it off. It never goes to
//! stdout, which carries the `--progress-json` lines the service reads and the summary.

use std::io::Write as _;
use std::sync::atomic::Ordering;

use super::LIVE;
use super::histogram::Histogram;
use super::report::Second;

pub(crate) struct LiveLine {
    /// Rewrite one line in place (stderr is a terminal) rather than print a line each time.
    in_place: bool,
    /// Whole seconds per line (at least 1).
    every: u64,
    /// The run's planned length in seconds, when loadgen knows it (the profile's plan or the
    /// open model's stages; not when `-u`/`-t`/`--test-plan` size the run).
    total_s: Option<f64>,
    /// The open model: its users are the stage's slots, so the line also shows how many
    /// requests are in flight.
    open: bool,
    /// What finished since the last line.
    histogram: Histogram,
    /// Seconds gathered since the last line.
    seconds: u64,
    /// `t` of the second the last line ended on (0 before the first).
    last_t: f64,
    /// Whether a line rewritten in place is on the screen without its newline.
    unterminated: bool,
}

impl LiveLine {
    pub fn new(in_place: bool, every: u64, total_s: Option<f64>, open: bool) -> Self {
        LiveLine {
            in_place,
            every: every.max(1),
            total_s,
            open,
            histogram: Histogram::default(),
            seconds: 0,
            last_t: 0.0,
            unterminated: false,
        }
    }

    /// Takes one closed second of the series; prints a line once `every` seconds have gathered.
    pub fn second(&mut self, s: &Second) {
        if let Some(h) = &s.histogram {
            self.histogram.merge(h);
        }
        self.seconds += 1;
        if self.seconds < self.every {
            return;
        }
        let length = s.t - self.last_t;
        let in_flight = self.open.then(|| LIVE.in_flight.load(Ordering::Relaxed));
        let line = format_line(
            s.t,
            self.total_s,
            s.users,
            in_flight,
            &self.histogram,
            length,
            LIVE.requests.load(Ordering::Relaxed),
            LIVE.failures.load(Ordering::Relaxed),
        );
        self.last_t = s.t;
        self.seconds = 0;
        self.histogram = Histogram::default();
        let mut err = std::io::stderr().lock();
        if self.in_place {
            // Back to the start of the line and clear it: a shorter line leaves nothing behind.
            let _ = write!(err, "\r\x1b[2K{line}");
            self.unterminated = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the line rewritten in place, so what is printed next starts on a line of its own.
    pub fn finish(&mut self) {
        if self.unterminated {
            self.unterminated = false;
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err);
            let _ = err.flush();
        }
    }
}

/// One live line: `elapsed_s` and `total_s` of the run, users at the end of the interval (and
/// the open model's requests in flight), the interval's requests/s and p95 (from `histogram`,
/// what finished in the `length_s` seconds of the interval), and the failures of all requests
/// so far.
#[allow(clippy::too_many_arguments)]
fn format_line(
    elapsed_s: f64,
    total_s: Option<f64>,
    users: u64,
    in_flight: Option<u64>,
    histogram: &Histogram,
    length_s: f64,
    requests: u64,
    failures: u64,
) -> String {
    let clock = match total_s {
        Some(total) => format!("{}/{}", clock(elapsed_s), clock(total)),
        None => clock(elapsed_s),
    };
    let users = match in_flight {
        Some(n) => format!("users {users} ({n} in flight)"),
        None => format!("users {users}"),
    };
    let rps = if length_s > 0.0 { histogram.count as f64 / length_s } else { 0.0 };
    let p95 = if histogram.count > 0 { format!("{:.1} ms", histogram.percentile_ms(0.95)) } else { "-".to_string() };
    let pct = if requests > 0 { failures as f64 * 100.0 / requests as f64 } else { 0.0 };
    format!("[{clock}] {users} | {rps:.1} rps | p95 {p95} | errors {failures} ({pct:.2}%)")
}

/// Seconds as a short clock: `45s`, `1m05s`, `1h02m03s`.
fn clock(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 { seconds.round() as u64 } else { 0 };
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, sec) => format!("{h}h{min:02}m{sec:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_are_short() {
        assert_eq!(clock(0.0), "0s");
        assert_eq!(clock(45.2), "45s");
        assert_eq!(clock(65.0), "1m05s");
        assert_eq!(clock(3723.0), "1h02m03s");
    }

    #[test]
    fn a_line_has_the_interval_rate_and_p95_and_the_errors_so_far() {
        let mut h = Histogram::default();
        for us in [1_000, 2_000, 3_000, 4_000] {
            h.record(us);
        }
        let line = format_line(12.0, Some(60.0), 25, None, &h, 2.0, 812, 8);
        assert!(line.starts_with("[12s/1m00s] users 25 | 2.0 rps | p95 "), "{line}");
        assert!(line.ends_with(" ms | errors 8 (0.99%)"), "{line}");
        let open = format_line(3.0, None, 50, Some(4), &Histogram::default(), 1.0, 0, 0);
        assert_eq!(open, "[3s] users 50 (4 in flight) | 0.0 rps | p95 - | errors 0 (0.00%)");
    }
}
