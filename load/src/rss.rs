//! The server's resident memory, read from `/proc/PID/status` (`VmRSS`) every 100 ms
//! while a scenario runs, and the four readings every scenario reports: idle before
//! the load, peak during it, at its end, and after the server has idled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::report::Figures;

const EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssSample {
    /// Seconds since sampling started.
    pub t_s: f64,
    pub rss_mib: f64,
}

/// Reads `VmRSS` of a process, in KiB.
pub fn read_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let Some(line) = status.lines().find(|line| line.starts_with("VmRSS:")) else {
        bail!("no VmRSS in {path} (a kernel thread, or a process that is exiting?)");
    };
    line.trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("VmRSS in {path}: {line}"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One reading taken on purpose, not by the sampler.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub at: Instant,
    pub kib: u64,
}

/// Samples a process's RSS in the background until dropped.
pub struct RssMonitor {
    pid: u32,
    start: Instant,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssMonitor {
    /// Fails at once if the process cannot be read, rather than after the load.
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        read_kib(pid).context("--server-pid")?;
        let start = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tick.tick().await;
                // A server that died mid-run shows as the samples stopping.
                let Ok(kib) = read_kib(pid) else { return };
                if let Ok(mut samples) = sink.lock() {
                    samples.push((Instant::now(), kib));
                }
            }
        });
        Ok(Self {
            pid,
            start,
            samples,
            task,
        })
    }

    pub fn mark(&self) -> anyhow::Result<Mark> {
        Ok(Mark {
            at: Instant::now(),
            kib: read_kib(self.pid)?,
        })
    }

    /// The highest reading between two marks, the marks included.
    fn peak(&self, from: Mark, to: Mark) -> u64 {
        let sampled = self.samples.lock().map_or(0, |samples| {
            samples
                .iter()
                .filter(|(at, _)| (from.at..=to.at).contains(at))
                .map(|&(_, kib)| kib)
                .max()
                .unwrap_or(0)
        });
        sampled.max(from.kib).max(to.kib)
    }

    fn samples(&self) -> Vec<RssSample> {
        self.samples.lock().map_or_else(
            |_| Vec::new(),
            |samples| {
                samples
                    .iter()
                    .map(|&(at, kib)| RssSample {
                        t_s: at.duration_since(self.start).as_secs_f64(),
                        rss_mib: mib(kib),
                    })
                    .collect()
            },
        )
    }
}

impl Drop for RssMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The readings around one load: taken before it, at its end, and after an idle spell.
pub struct Phases {
    monitor: RssMonitor,
    before: Mark,
    end: Option<Mark>,
}

impl Phases {
    /// Starts the phases now, with the idle-before reading.
    pub fn begin(monitor: RssMonitor) -> anyhow::Result<Self> {
        let before = monitor.mark()?;
        Ok(Self {
            monitor,
            before,
            end: None,
        })
    }

    pub fn before(&self) -> Mark {
        self.before
    }

    pub fn mark(&self) -> anyhow::Result<Mark> {
        self.monitor.mark()
    }

    /// The load is over (but what it opened, sockets say, may still be open).
    pub fn end(&mut self) -> anyhow::Result<()> {
        self.end = Some(self.monitor.mark()?);
        Ok(())
    }

    /// Idles `idle`, then adds the four readings to `figures`; all samples.
    pub async fn finish(
        self,
        idle: Duration,
        figures: &mut Figures,
    ) -> anyhow::Result<Vec<RssSample>> {
        let end = match self.end {
            Some(end) => end,
            None => self.monitor.mark()?,
        };
        eprintln!("idling {} s for the after-idle RSS…", idle.as_secs());
        tokio::time::sleep(idle).await;
        let after = self.monitor.mark()?;
        figures.add("rss_idle_before", mib(self.before.kib), "MiB");
        figures.add("rss_peak", mib(self.monitor.peak(self.before, end)), "MiB");
        figures.add("rss_end", mib(end.kib), "MiB");
        figures.add("rss_after_idle", mib(after.kib), "MiB");
        Ok(self.monitor.samples())
    }
}
