//! The `parley` command line: `serve` (default), `migrate`, `projections status` and
//! `rebuild`, `audit`, `users erase`, `export events`, `seed`.

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
    /// Manage accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Export the event log for analysis.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Write a realistic chat history through the domain (direct conversations, groups
    /// and channels; replies, mentions, reactions, edits, deletions, read markers), then
    /// bring the read models up to date. Seeded users sign in with the password
    /// `parley-seed`; their usernames end in `_s` and the seed in base 36.
    Seed {
        /// Users to register (at least 2 for one conversation, 3 for more).
        #[arg(long)]
        users: u32,
        /// Conversations to create: the first are a direct one, a group and a channel,
        /// the rest a mix of the three.
        #[arg(long)]
        conversations: u32,
        /// Messages to post, spread unevenly over the conversations.
        #[arg(long)]
        messages: u64,
        /// What to write: the same seed and counts write the same history. Default: a
        /// random one, printed in the summary. A seed's users exist once per database.
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Erase an account, as a legal request asks: its sessions end; its display name,
    /// messages (left in place as erased tombstones), edit history and files become
    /// unreadable everywhere, the event log included, by destroying its keys. The
    /// erasure is recorded (who, when, why); moderation history keeps the user's id.
    Erase {
        /// The user's id.
        user_id: uuid::Uuid,
        /// Why, for the record (for example the request's reference).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Stream events, oldest first, in today's shapes, as rows with the documented
    /// columns (README, "For analysts").
    Events {
        #[arg(long, value_enum)]
        format: crate::export::Format,
        /// File to write, or `-` for standard output. A file appears only once the
        /// export is complete.
        #[arg(long)]
        output: String,
        /// Only events after this cursor (the `cursor` column of an earlier export).
        #[arg(long)]
        after: Option<String>,
        /// Only events that occurred at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        from: Option<time::OffsetDateTime>,
        /// Only events that occurred at or before this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        until: Option<time::OffsetDateTime>,
        /// Only events of this type (repeatable), such as `MessagePosted`.
        #[arg(long = "type", value_name = "EVENT_TYPE")]
        types: Vec<String>,
        /// Only events of this conversation.
        #[arg(long)]
        conversation: Option<uuid::Uuid>,
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
    /// Rebuild read models from the log beside the live ones and switch them in once
    /// caught up, while servers keep serving from the live ones. An interrupted rebuild
    /// resumes when run again. With --until and --into, build the read models as they
    /// stood at a moment into a separate SQLite file instead.
    Rebuild {
        /// Projectors to rebuild, by name (as `parley projections status` lists them).
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        /// Every projector.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Drop an interrupted rebuild's shadow tables instead of resuming it.
        #[arg(long, conflicts_with_all = ["until", "into"])]
        discard: bool,
        /// RFC 3339 time: build the read models as they stood then (needs --into).
        #[arg(long, value_parser = parse_time, requires = "into")]
        until: Option<time::OffsetDateTime>,
        /// SQLite file to build into (needs --until; every projector unless named).
        #[arg(long, value_name = "FILE.sqlite", requires = "until")]
        into: Option<std::path::PathBuf>,
    },
    /// Each projector's checkpoint against the head of the log.
    Status {
        /// `json`: a list of objects with `name`, `version`, `state`, `position`,
        /// `head`, `lag`, `error` and `failed_at`.
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
    },
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
        Command::Users {
            command: UsersCommand::Erase { user_id, reason },
        } => erase_user(&cli.config, user_id, &reason).await,
        Command::Export {
            command:
                ExportCommand::Events {
                    format,
                    output,
                    after,
                    from,
                    until,
                    types,
                    conversation,
                },
        } => {
            let after = match after {
                Some(cursor) => parley_store::LogPosition::from_cursor(&cursor)
                    .map_err(|_| anyhow::anyhow!("--after {cursor:?} is not a cursor of this log (expected TX.POSITION, as in the cursor column)"))?,
                None => parley_store::LogPosition::START,
            };
            let filter = crate::export::Filter {
                after,
                from,
                until,
                types,
                conversation,
            };
            filter.check()?;
            let db = open_database(&cli.config).await?;
            let result = async {
                if output != "-" {
                    refuse_parleys_own(&cli.config, &db, std::path::Path::new(&output)).await?;
                }
                export_events(&db, &filter, format, &output).await
            }
            .await;
            db.close().await;
            result
        }
        Command::Seed {
            users,
            conversations,
            messages,
            seed,
        } => {
            let seed = seed.unwrap_or_else(|| rand::random_range(0..36_u64.pow(5)));
            // Checked before the database is opened: bad input changes nothing.
            let plan = crate::seed::Plan::new(crate::seed::Options {
                users,
                conversations,
                messages,
                seed,
            })?;
            let db = open_database(&cli.config).await?;
            let services = crate::startup::conversation_services(&cli.config, &db);
            let summary = crate::seed::seed(&db, services, plan).await;
            db.close().await;
            let summary = summary?;
            let written = summary.written_in.as_secs_f64().max(1e-9);
            println!(
                "seed {seed}: {}, {} ({} direct, {}, {}), {}, {} events in {:.1}s ({:.0} events/s, {:.0} messages/s); read models caught up in {:.1}s",
                counted(summary.users, "user"),
                counted(
                    summary.direct + summary.groups + summary.channels,
                    "conversation"
                ),
                summary.direct,
                counted(summary.groups, "group"),
                counted(summary.channels, "channel"),
                counted(summary.messages, "message"),
                summary.events,
                summary.written_in.as_secs_f64(),
                summary.events as f64 / written,
                summary.messages as f64 / written,
                summary.projected_in.as_secs_f64(),
            );
            eprintln!(
                "seed: users sign in with the password {:?}, e.g. as {}",
                crate::seed::PASSWORD,
                crate::seed::username(seed, 0)
            );
            Ok(())
        }
        Command::Projections {
            command:
                ProjectionsCommand::Rebuild {
                    names,
                    all,
                    discard,
                    until,
                    into,
                },
        } => {
            let chosen = choose_projectors(&names, all || into.is_some())?;
            let db = open_database(&cli.config).await?;
            let result = match (until, into) {
                (Some(until), Some(into)) => {
                    async {
                        refuse_parleys_own(&cli.config, &db, &into).await?;
                        build_as_of(&db, &chosen, until, &into).await
                    }
                    .await
                }
                _ if discard => discard_rebuilds(&db, &chosen).await,
                _ => rebuild_projections(&db, &chosen).await,
            };
            db.close().await;
            result
        }
        Command::Projections {
            command: ProjectionsCommand::Status { format },
        } => {
            let db = open_database(&cli.config).await?;
            let report = parley_projections::runner::status(&db, &projectors()).await;
            db.close().await;
            let report = report?;
            match format {
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                ReportFormat::Text => {
                    if let Some(first) = report.first() {
                        println!("head {}", first.head);
                    }
                    for status in &report {
                        let state = status.state.to_uppercase();
                        println!(
                            "{:<24} v{} {:<10} at {} ({} behind)",
                            status.name, status.version, state, status.position, status.lag
                        );
                        if let (Some(error), Some(at)) = (&status.error, &status.failed_at) {
                            println!(
                                "{:<24} since {at} on the event after {}: {error}",
                                "", status.position
                            );
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

/// The projectors named, or all of them when `all` (or none named and `default_all`).
fn choose_projectors(
    names: &[String],
    all: bool,
) -> anyhow::Result<Vec<std::sync::Arc<dyn parley_projections::Projector>>> {
    let every = projectors();
    if all && names.is_empty() {
        return Ok(every);
    }
    if names.is_empty() {
        anyhow::bail!("name the projectors to rebuild, or pass --all");
    }
    let known: Vec<&str> = every.iter().map(|projector| projector.name()).collect();
    if let Some(unknown) = names.iter().find(|name| !known.contains(&name.as_str())) {
        anyhow::bail!(
            "no projector is called {unknown:?} (there are: {})",
            known.join(", ")
        );
    }
    Ok(every
        .into_iter()
        .filter(|projector| names.iter().any(|name| name == projector.name()))
        .collect())
}

/// Rebuilds the projectors beside their live tables in one pass over the log, with
/// progress on stderr, then says what each did.
async fn rebuild_projections(
    db: &parley_store::Db,
    chosen: &[std::sync::Arc<dyn parley_projections::Projector>],
) -> anyhow::Result<()> {
    let names: Vec<&str> = chosen.iter().map(|projector| projector.name()).collect();
    let started = std::time::Instant::now();
    let total = parley_store::log::count_after(db, parley_store::LogPosition::START).await?;
    let mut meter =
        crate::progress::Meter::new(format!("rebuild {}", names.join(",")), "events", total);
    let rebuilt = parley_projections::rebuild::rebuild_together(
        db,
        chosen,
        parley_projections::rebuild::BATCH,
        &mut |p| meter.set(p.applied, String::new),
    )
    .await;
    meter.finish();
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    for (name, rebuilt) in names.iter().zip(rebuilt?) {
        eprintln!(
            "rebuild {name}: {} events{}, switched in at {}",
            rebuilt.applied,
            if rebuilt.resumed { ", resumed" } else { "" },
            rebuilt.position.to_cursor()
        );
    }
    eprintln!("rebuilt {} read models in {seconds:.1} s", names.len(),);
    Ok(())
}

async fn discard_rebuilds(
    db: &parley_store::Db,
    chosen: &[std::sync::Arc<dyn parley_projections::Projector>],
) -> anyhow::Result<()> {
    for projector in chosen {
        let name = projector.name();
        if parley_projections::rebuild::discard(db, projector.as_ref()).await? {
            eprintln!("rebuild {name}: discarded");
        } else {
            eprintln!("rebuild {name}: nothing to discard");
        }
    }
    Ok(())
}

/// Refuses a file an analyst asked for when it would land on Parley's own: the live
/// SQLite database wherever it is, the files SQLite keeps beside it and a rebuild's
/// shadows (`FILE.rebuild-NAME`), or the keys and blobs in the data directory. A file is
/// written beside its path and renamed over it, so a symbolic or hard link to one of
/// those is replaced, not written through; only the name itself needs checking.
async fn refuse_parleys_own(
    config: &Config,
    db: &parley_store::Db,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let Some(resolved) = resolved(path) else {
        // Its directory does not exist: creating it fails and says so.
        return Ok(());
    };
    let beside = |dir: &std::path::Path, name: &std::ffi::OsStr| {
        resolved.parent() == Some(dir)
            && resolved
                .file_name()
                .is_some_and(|own| own.as_encoded_bytes().starts_with(name.as_encoded_bytes()))
    };
    let mut own = false;
    if let Ok(data_dir) = config.data_dir.canonicalize() {
        let first = resolved
            .strip_prefix(&data_dir)
            .ok()
            .and_then(|inside| inside.components().next());
        own |= first.is_some_and(|first| {
            let first = first.as_os_str();
            first == "master-key" || first == "jwt-secret" || first == "blobs"
        });
        own |= beside(
            &data_dir,
            config.embedded_database().file_name().unwrap_or_default(),
        );
    }
    if db.backend == parley_store::Backend::Sqlite {
        let live: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&db.read)
                .await?;
        if let Some((dir, name)) = resolved_file(std::path::Path::new(&live)) {
            own |= beside(&dir, &name);
        }
    }
    if own {
        anyhow::bail!(
            "{} is one of Parley's own files (the live database, a file kept beside it, its keys or blobs): write it elsewhere",
            path.display()
        );
    }
    Ok(())
}

/// `path` with its directory resolved (links followed, made absolute) and its own name
/// kept as given; `None` when the directory does not exist.
fn resolved(path: &std::path::Path) -> Option<std::path::PathBuf> {
    resolved_file(path).map(|(dir, name)| dir.join(name))
}

fn resolved_file(path: &std::path::Path) -> Option<(std::path::PathBuf, std::ffi::OsString)> {
    let name = path.file_name()?.to_owned();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    Some((dir.canonicalize().ok()?, name))
}

/// Builds the read models as of `until` into `into`, a new file: written beside it and
/// linked into place when complete, never over a file that is there.
async fn build_as_of(
    db: &parley_store::Db,
    chosen: &[std::sync::Arc<dyn parley_projections::Projector>],
    until: time::OffsetDateTime,
    into: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let exists = |into: &std::path::Path| {
        anyhow::anyhow!(
            "{} exists: --into makes a new file (remove it, or choose another name)",
            into.display()
        )
    };
    if into.symlink_metadata().is_ok() {
        return Err(exists(into));
    }
    let partial = partial_path(into);
    // Left by an earlier attempt that was killed.
    let _ = std::fs::remove_file(&partial);
    let started = std::time::Instant::now();
    let mut meter = crate::progress::Meter::new("rebuild --until", "events read", 0);
    let built = parley_projections::time_travel::build(db, chosen, until, &partial, &mut |p| {
        meter.set(p.applied, String::new)
    })
    .await;
    meter.finish();
    let built = match built {
        Ok(built) => built,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(
                anyhow::Error::new(error).context(format!("cannot build {}", into.display()))
            );
        }
    };
    // A link, unlike a rename, fails on a file made meanwhile instead of replacing it.
    let placed = match std::fs::hard_link(&partial, into) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Err(exists(into)),
        // A file system without links: the check before the build stands alone.
        Err(_) => std::fs::rename(&partial, into)
            .with_context(|| format!("cannot create {}", into.display())),
    };
    let _ = std::fs::remove_file(&partial);
    placed?;
    eprintln!(
        "rebuild --until {}: {} events applied to {} projectors in {:.1} s, last cursor {}, into {}",
        parley_store::format_time(until),
        built.applied,
        chosen.len(),
        started.elapsed().as_secs_f64(),
        built.position.to_cursor(),
        into.display()
    );
    Ok(())
}

/// Where a file being written waits until complete: beside it, hidden.
fn partial_path(path: &std::path::Path) -> std::path::PathBuf {
    path.with_file_name(format!(
        ".{}.partial",
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    ))
}

/// "1 user", "2 users".
fn counted(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// Runs an export to `output` (a file, written beside it and renamed into place when
/// complete, or `-` for standard output), with progress on standard error.
async fn export_events(
    db: &parley_store::Db,
    filter: &crate::export::Filter,
    format: crate::export::Format,
    output: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::BufWriter;

    let total = parley_store::log::count_after(db, filter.after).await?;
    let started = std::time::Instant::now();
    let mut meter = crate::progress::Meter::new("export", "events read", total);
    let progress = |tally: crate::export::Progress| {
        meter.set(tally.read, || format!("{} written", tally.written));
    };
    let summary = if output == "-" {
        let out = BufWriter::new(std::io::stdout());
        crate::export::export(db, filter, format, out, progress).await?
    } else {
        let path = std::path::Path::new(output);
        // Found now rather than by the rename once the whole log has been written.
        if path.is_dir() {
            anyhow::bail!("cannot create {output}: it is a directory (name a file in it)");
        }
        let partial = partial_path(path);
        let file =
            std::fs::File::create(&partial).with_context(|| format!("cannot create {output}"))?;
        let exported =
            crate::export::export(db, filter, format, BufWriter::new(file), progress).await;
        let placed = match exported {
            Ok(summary) => std::fs::rename(&partial, path)
                .map(|()| summary)
                .with_context(|| format!("cannot create {output}")),
            Err(error) => Err(error.into()),
        };
        if placed.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        placed?
    };
    meter.finish();
    for missing in &summary.unmatched_types {
        eprintln!(
            "export: warning: no event of type {missing:?} was exported (type names are exact, such as MessagePosted)"
        );
    }
    let tally = summary.tally;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "export: {} of {} events written ({:.0} events/s), last cursor {}",
        tally.written,
        tally.read,
        tally.read as f64 / seconds,
        tally.position.to_cursor()
    );
    Ok(())
}

/// `parley users erase`: records the erasure, brings the read models up to date with
/// it (so they hold none of the user's content), then shreds what is left.
async fn erase_user(config: &Config, user_id: uuid::Uuid, reason: &str) -> anyhow::Result<()> {
    let db = open_database(config).await?;
    let result = async {
        let privacy = crate::startup::privacy_service(config, &db).await?;
        let meta = parley_store::CommandMeta::new(None, time::OffsetDateTime::now_utc());
        let (erasure, _) = privacy
            .erase(user_id, None, Some(reason), &meta)
            .await
            .map_err(|error| match error {
                crate::privacy::PrivacyError::Auth(crate::auth::AuthError::User(
                    parley_aggregates::user::UserError::NotRegistered,
                )) => anyhow::anyhow!("no account {user_id} (or it is erased already)"),
                error => anyhow::anyhow!("{error}"),
            })?;
        for projector in projectors() {
            parley_projections::runner::catch_up(&db, projector.as_ref()).await?;
        }
        privacy
            .shred(&erasure, time::OffsetDateTime::now_utc())
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        println!(
            "erased {user_id} at {}",
            parley_store::format_time(erasure.erased_at)
        );
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    result
}
