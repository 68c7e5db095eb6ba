//! Latency samples: one histogram over the whole measurement for percentiles, and one
//! per second for the timeline, so a stall shows where it happened.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Samples are microseconds; anything past ten minutes is recorded as ten minutes.
const HIGHEST_US: u64 = 600_000_000;

/// One second of the measurement.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the measurement started (the bucket's start).
    pub second: u64,
    /// Completions in that second: requests, or deliveries.
    pub per_s: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn histogram(significant_figures: u8) -> Histogram<u64> {
    // The bounds are constants within hdrhistogram's limits, and callers pass 2 or 3.
    Histogram::new_with_bounds(1, HIGHEST_US, significant_figures).expect("valid histogram bounds")
}

pub fn ms(microseconds: u64) -> f64 {
    microseconds as f64 / 1e3
}

/// Records latencies against the moment each completed.
pub struct Recorder {
    start: Instant,
    seconds: u64,
    overall: Histogram<u64>,
    /// Grown as seconds pass; two significant figures are plenty for a plot.
    per_second: Vec<Histogram<u64>>,
}

impl Recorder {
    /// A measurement that starts at `start` and lasts `seconds`.
    pub fn new(start: Instant, seconds: u64) -> Self {
        Self {
            start,
            seconds,
            overall: histogram(3),
            per_second: Vec::new(),
        }
    }

    /// Every sample counts towards the percentiles; only those completed within the
    /// measurement's seconds count towards the timeline and [`Self::in_window`].
    pub fn record(&mut self, completed: Instant, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.overall.saturating_record(us.max(1));
        let Some(offset) = completed.checked_duration_since(self.start) else {
            return;
        };
        let second = offset.as_secs();
        if second >= self.seconds {
            return;
        }
        let index = usize::try_from(second).unwrap_or(usize::MAX);
        while self.per_second.len() <= index {
            self.per_second.push(histogram(2));
        }
        self.per_second[index].saturating_record(us.max(1));
    }

    pub fn overall(&self) -> &Histogram<u64> {
        &self.overall
    }

    /// Samples completed within the measurement's seconds.
    pub fn in_window(&self) -> u64 {
        self.per_second.iter().map(Histogram::len).sum()
    }

    pub fn timeline(&self) -> Vec<TimelinePoint> {
        (0..self.seconds)
            .map(|second| {
                let index = usize::try_from(second).unwrap_or(usize::MAX);
                match self.per_second.get(index).filter(|h| !h.is_empty()) {
                    Some(h) => TimelinePoint {
                        second,
                        per_s: h.len(),
                        p50_ms: ms(h.value_at_quantile(0.5)),
                        p99_ms: ms(h.value_at_quantile(0.99)),
                        max_ms: ms(h.max()),
                    },
                    None => TimelinePoint {
                        second,
                        per_s: 0,
                        p50_ms: 0.0,
                        p99_ms: 0.0,
                        max_ms: 0.0,
                    },
                }
            })
            .collect()
    }
}

/// The samples of a shared recorder, leaving an empty one behind.
pub fn take(shared: &Mutex<Recorder>) -> anyhow::Result<Recorder> {
    let mut recorder = shared
        .lock()
        .map_err(|_| anyhow::anyhow!("a task panicked while recording"))?;
    let start = recorder.start;
    Ok(std::mem::replace(&mut *recorder, Recorder::new(start, 0)))
}
