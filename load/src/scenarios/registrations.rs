//! `registrations`: `--count` concurrent `register` calls, each a deliberately slow
//! password hash. What they cost the server's memory: RSS before, at the peak, right
//! after, and after idling (memory the hashes took and the allocator kept).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::{begin_phases, run_prefix, Common, Tally};
use crate::client::Api;
use crate::report::{Figures, Report};
use crate::stats::{self, Recorder};

/// The timeline's span; registrations still running past it count only in the
/// percentiles.
const TIMELINE_SECONDS: u64 = 600;

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Registrations, all started at once.
    #[arg(long, default_value_t = 40)]
    pub count: usize,
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    let api = Arc::new(Api::new(&args.common.url)?);
    let mut phases = begin_phases(args.common.rss_monitor()?)?;
    let prefix = run_prefix();
    let start = Instant::now();
    let recorder = Arc::new(Mutex::new(Recorder::new(start, TIMELINE_SECONDS)));
    let errors = Arc::new(Tally::default());
    eprintln!("registering {} users at once…", args.count);
    let calls: Vec<_> = (0..args.count)
        .map(|i| {
            let (api, recorder, errors) = (api.clone(), recorder.clone(), errors.clone());
            let username = format!("{prefix}r{i}");
            tokio::spawn(async move {
                let began = Instant::now();
                match api.register(&username).await {
                    Ok(_) => {
                        let done = Instant::now();
                        if let Ok(mut recorder) = recorder.lock() {
                            recorder.record(done, done - began);
                        }
                    }
                    Err(error) => {
                        errors.add(match error.downcast_ref::<crate::client::CallError>() {
                            Some(call) => call.kind(),
                            None => error.to_string(),
                        })
                    }
                }
            })
        })
        .collect();
    for call in calls {
        call.await?;
    }
    let elapsed = start.elapsed();
    if let Some(phases) = &mut phases {
        phases.end()?;
    }
    let recorder = stats::take(&recorder)?;
    let mut timeline = recorder.timeline();
    timeline.truncate(usize::try_from(elapsed.as_secs() + 1).unwrap_or(usize::MAX));

    let mut figures = Figures::default();
    let registered = recorder.overall().len();
    figures.add("registrations", registered as f64, "count");
    figures.add("errors", errors.total() as f64, "count");
    figures.add("elapsed", elapsed.as_secs_f64(), "s");
    figures.add(
        "registrations_per_s",
        registered as f64 / elapsed.as_secs_f64(),
        "1/s",
    );
    figures.add_percentiles("register", recorder.overall(), None);
    let rss = match phases {
        Some(phases) => phases.finish(args.common.idle(), &mut figures).await?,
        None => Vec::new(),
    };
    Ok(Report {
        scenario: "registrations",
        description: format!("{} concurrent registrations", args.count),
        config: serde_json::to_value(&args)?,
        figures,
        errors: errors.take(),
        rss,
        timeline,
    })
}
