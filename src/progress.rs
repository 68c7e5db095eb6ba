//! Progress of long commands on standard error: a bar with rate and ETA on a terminal,
//! otherwise a plain line every few seconds, which is what a script's log wants.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Meter {
    bar: Option<indicatif::ProgressBar>,
    /// Starts each plain line, such as `export`.
    label: String,
    /// What is counted, such as `events read`.
    unit: &'static str,
    total: u64,
    last_line: Instant,
}

impl Meter {
    pub fn new(label: impl Into<String>, unit: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{prefix}} {{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}}"
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let label = label.into();
        if let Some(bar) = &bar {
            bar.set_prefix(label.clone());
        }
        Self {
            bar,
            label,
            unit,
            total,
            last_line: Instant::now(),
        }
    }

    /// `done` of the total so far; `extra` is appended to plain lines.
    pub fn set(&mut self, done: u64, extra: impl FnOnce() -> String) {
        if done > self.total {
            self.total = done;
            if let Some(bar) = &self.bar {
                bar.set_length(done);
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            let extra = extra();
            let sep = if extra.is_empty() { "" } else { ", " };
            eprintln!(
                "{}: {done}/{} {}{sep}{extra}",
                self.label, self.total, self.unit
            );
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
