//! `parley-load`: load for a running Parley server, from real clients only: GraphQL over
//! HTTP and graphql-transport-ws sockets, as an app would. It never touches the
//! server's database, except `send --ceiling-db`, which measures the raw write ceiling
//! in a throwaway table (PostgreSQL) or file (SQLite) of its own.
//!
//! Start the server without rate limits and with room for many sockets per user, and
//! with tokens that outlive the run (sockets close when their token expires), e.g.
//!
//! ```text
//! parley serve --listen 127.0.0.1:8080 --data-dir /tmp/parley \
//!     --database-url 'sqlite:///tmp/parley/parley.db?mode=rwc' \
//!     --jwt-secret bench-secret-0123456789abcdef-0123456789abcdef \
//!     --rate-limits off --max-connections-per-user 5000 --access-token-ttl 86400 --log warn
//! ```
//!
//! then, for example, `parley-load send --server-pid <its pid> --json send.json`. Each
//! scenario prints a summary; `--json FILE` writes the full report and `--plot FILE.svg`
//! a latency-per-second chart. `load/README.md` has a command for each scenario.

mod ceiling;
mod client;
mod report;
mod rss;
mod scenarios;
mod stats;

use anyhow::Context as _;
use clap::Parser as _;

use scenarios::{deliveries, fanout, registrations, rows, send, Common};

#[derive(clap::Parser)]
#[command(version, about = "Load for a running Parley server, from real clients")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Subcommand)]
enum Scenario {
    /// Users each posting into their own group: write throughput and latency, optionally
    /// against the database's raw INSERT ceiling.
    Send(send::Args),
    /// One channel with many subscribed sockets: delivery latency and memory per socket.
    Fanout(fanout::Args),
    /// Concurrent registrations: their latency and what they do to the server's memory.
    Registrations(registrations::Args),
    /// Many channels with many sockets and closed-loop senders: deliveries per second.
    Deliveries(deliveries::Args),
    /// The database's bulk-write ceiling (multi-row INSERTs), for projection rebuilds.
    Rows(rows::Args),
}

impl Scenario {
    fn common(&self) -> &Common {
        match self {
            Self::Send(args) => &args.common,
            Self::Fanout(args) => &args.common,
            Self::Registrations(args) => &args.common,
            Self::Deliveries(args) => &args.common,
            Self::Rows(args) => &args.common,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cfg!(debug_assertions) {
        // Measured: a debug build commits less than half as many ceiling rows per second.
        eprintln!(
            "note: a debug build of parley-load; its own overhead shows in the figures \
             (the ceiling most): build with --release"
        );
    }
    // A thousand sockets need more descriptors than the usual soft limit of 1,024.
    rlimit::increase_nofile_limit(u64::MAX).context("raise the open-files limit")?;
    let common = cli.scenario.common().clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = runtime.block_on(async move {
        match cli.scenario {
            Scenario::Send(args) => send::run(args).await,
            Scenario::Fanout(args) => fanout::run(args).await,
            Scenario::Registrations(args) => registrations::run(args).await,
            Scenario::Deliveries(args) => deliveries::run(args).await,
            Scenario::Rows(args) => rows::run(args).await,
        }
    })?;
    report.print();
    if let Some(path) = &common.json {
        report.write_json(path)?;
    }
    if let Some(path) = &common.plot {
        report.plot(path)?;
    }
    Ok(())
}
