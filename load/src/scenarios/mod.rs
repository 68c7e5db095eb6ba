//! The scenarios, and the arguments and bookkeeping they share.

pub mod deliveries;
pub mod fanout;
mod live;
pub mod registrations;
pub mod rows;
pub mod send;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::rss::{Phases, RssMonitor};

/// Arguments every scenario takes.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Common {
    /// The server's HTTP root; the WebSocket URL is derived from it.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's process id, to sample its RSS from /proc/PID/status every 100 ms.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// With --server-pid: how long the server idles after the load before the
    /// after-idle RSS reading.
    #[arg(long, default_value_t = 10)]
    pub idle_secs: u64,
    /// Also write the full report as JSON here.
    #[arg(long)]
    #[serde(skip)]
    pub json: Option<PathBuf>,
    /// Also draw latency per second as an SVG line chart here.
    #[arg(long)]
    #[serde(skip)]
    pub plot: Option<PathBuf>,
}

impl Common {
    pub fn rss_monitor(&self) -> anyhow::Result<Option<RssMonitor>> {
        self.server_pid.map(RssMonitor::start).transpose()
    }

    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }
}

/// How long a load runs.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Timing {
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of the same load before measuring, for warm caches and pools.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
}

impl Timing {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration.max(1))
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup)
    }
}

/// A prefix unique to this run, for usernames and channel slugs: runs against the
/// same server must not collide, and usernames allow only `[a-z0-9_.]`.
pub fn run_prefix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("ld{}", &id[..8])
}

/// Failures by kind, shared by the tasks of a run.
#[derive(Debug, Default)]
pub struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    pub fn add(&self, kind: String) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(kind).or_default() += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.lock().map_or(0, |counts| counts.values().sum())
    }

    pub fn take(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .map(|mut counts| std::mem::take(&mut *counts))
            .unwrap_or_default()
    }
}

/// RSS readings around the load, when a server pid was given.
pub fn begin_phases(monitor: Option<RssMonitor>) -> anyhow::Result<Option<Phases>> {
    monitor.map(Phases::begin).transpose()
}
