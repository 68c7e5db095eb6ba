//! The `parley` command line: `serve` (default), `migrate`, `projections status`.

use clap::{Parser, Subcommand};

use crate::auth::Argon2Hasher;
use crate::config::Config;
use crate::startup::{open_database, projectors, shutdown_signal, Server};

#[derive(Debug, Parser)]
#[command(
    name = "parley",
    version,
    about = "Event-sourced chat backend with a GraphQL API"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Inspect projections.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Audit moderation history from the event log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Rebuild a conversation's members, roles, bans, mutes and moderation actions as of
    /// a moment, from the event log alone.
    Replay {
        /// The conversation's id.
        #[arg(long)]
        conversation: uuid::Uuid,
        /// RFC 3339 time to replay up to (inclusive); default: now.
        #[arg(long, value_parser = parse_time)]
        until: Option<time::OffsetDateTime>,
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
    },
    /// Check every event against its stream hash and the global chain; print the head
    /// hash to keep outside the database. Exits non-zero at the first problem.
    Verify {
        /// A head hash printed by an earlier verify: the log must still extend it.
        #[arg(long)]
        anchor: Option<String>,
    },
}

fn parse_time(raw: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projector's checkpoint against the head of the log.
    Status,
}

/// Parses arguments; a bad value exits with one line naming the variable.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                error.exit();
            }
            let rendered = error.to_string();
            let line = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("parley: {}", line.trim_start_matches("error: "));
            std::process::exit(2);
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::telemetry::init(&cli.config.log, cli.config.log_format)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let stop = shutdown_signal();
            let server = Server::build(cli.config, Argon2Hasher::new()?).await?;
            server.run_until(stop).await
        }
        Command::Migrate => {
            let db = open_database(&cli.config).await?;
            db.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::Replay {
                    conversation,
                    until,
                    format,
                },
        } => {
            let db = open_database(&cli.config).await?;
            let as_of = until.unwrap_or_else(time::OffsetDateTime::now_utc);
            let report = crate::audit::replay(&db, conversation, as_of).await?;
            match format {
                ReportFormat::Text => print!("{}", crate::audit::render_text(&report)),
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            db.close().await;
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { anchor },
        } => {
            let db = open_database(&cli.config).await?;
            let outcome = parley_projections::chain::verify(&db, anchor.as_deref()).await?;
            db.close().await;
            match outcome {
                Ok(verified) => {
                    println!("ok: {} events verified", verified.events);
                    println!(
                        "head {} at {}",
                        verified.head,
                        verified.head_position.to_cursor()
                    );
                    Ok(())
                }
                Err(tamper) => {
                    println!("FAILED: {tamper}");
                    std::process::exit(3);
                }
            }
        }
        Command::Projections {
            command: ProjectionsCommand::Status,
        } => {
            let db = open_database(&cli.config).await?;
            let head = parley_store::log::head(&db).await?;
            println!("head {}", head.to_cursor());
            for projector in projectors() {
                let name = projector.name();
                let checkpoint = parley_projections::runner::load_checkpoint(&db, name).await?;
                let failure = parley_projections::runner::load_failure(&db, name).await?;
                match checkpoint {
                    Some(checkpoint) => println!(
                        "{:<24} v{} at {}{}",
                        name,
                        checkpoint.version,
                        checkpoint.position.to_cursor(),
                        if checkpoint.position >= head {
                            ""
                        } else {
                            " (behind)"
                        }
                    ),
                    None => println!("{name:<24} not started"),
                }
                // Marked by the node running it; cleared as soon as it gets past.
                if let Some(failure) = failure.filter(|f| {
                    checkpoint.is_none_or(|checkpoint| f.position >= checkpoint.position)
                }) {
                    println!(
                        "{:<24} FAILED since {} on the event after {}: {}",
                        "",
                        failure.failed_at,
                        failure.position.to_cursor(),
                        failure.error
                    );
                }
            }
            db.close().await;
            Ok(())
        }
    }
}
