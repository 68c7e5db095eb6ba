//! Builds the application from its configuration and runs it until stopped. The only
//! place pools, projectors and the schema are put together.

use axum::serve::ListenerExt as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context as _;
use parley_aggregates::conversation::ConversationServices;
use parley_projections::{Projections, Projector};
use parley_store::Db;
use secrecy::ExposeSecret as _;
use time::Duration;
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::auth::{Accounts, Argon2Hasher, Revocations, TokenKeys};
use crate::chat::Chat;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::graphql::build_schema;

/// Every projector this node runs.
pub fn projectors() -> Vec<Arc<dyn Projector>> {
    use parley_projections::{
        attachments, chain, conversations, messages, moderation, notifications, sessions, unread,
        users,
    };
    vec![
        Arc::new(users::UsersProjector),
        Arc::new(sessions::SessionsProjector),
        Arc::new(conversations::ConversationsProjector),
        Arc::new(messages::MessagesProjector),
        Arc::new(unread::UnreadProjector),
        Arc::new(notifications::NotificationsProjector),
        Arc::new(moderation::ModerationProjector),
        Arc::new(chain::AuditChainProjector),
        Arc::new(attachments::AttachmentsProjector),
    ]
}

/// The conversation rules' settings, as configured.
pub fn conversation_services(config: &Config, db: &Db) -> ConversationServices {
    ConversationServices {
        max_body_chars: config.max_message_length as usize,
        max_members: config.max_members as usize,
        max_group_invites: config.max_group_invites as usize,
        posted: Arc::new(parley_store::log::PostsInLog(db.clone())),
    }
}

/// The configured blob store: S3 when a bucket is named, else the embedded one, with
/// the embedded store itself for the HTTP routes that serve it.
async fn blob_store(
    config: &Config,
    jwt_secret: &secrecy::SecretString,
    base_url: String,
) -> anyhow::Result<(
    Arc<dyn crate::blob::BlobStore>,
    Option<Arc<crate::blob::EmbeddedBlobs>>,
)> {
    if let Some(bucket) = &config.s3_bucket {
        let settings = crate::blob::S3Settings {
            bucket: bucket.clone(),
            endpoint: config.s3_endpoint.clone(),
            region: config.s3_region.clone(),
            force_path_style: config.s3_force_path_style,
        };
        let store = crate::blob::S3Blobs::connect(&settings)
            .await
            .map_err(|error| {
                anyhow::anyhow!("PARLEY_S3_BUCKET: bucket {bucket:?} is not reachable: {error}")
            })?;
        return Ok((Arc::new(store), None));
    }
    config.ensure_data_dir()?;
    let root = config.data_dir.join("blobs");
    let signer = crate::blob::Signer::derive(jwt_secret.expose_secret().as_bytes());
    let embedded = Arc::new(
        crate::blob::EmbeddedBlobs::open(root.clone(), base_url, signer)
            .with_context(|| format!("PARLEY_DATA_DIR: cannot create {}", root.display()))?,
    );
    Ok((embedded.clone(), Some(embedded)))
}

/// The attachment limits, as configured.
pub fn upload_limits(config: &Config) -> crate::uploads::UploadLimits {
    crate::uploads::UploadLimits {
        max_bytes: config.max_upload_bytes,
        max_open: u64::from(config.max_pending_uploads),
        url_ttl: Duration::minutes(10),
        // Short, because S3 serves a presigned URL until it expires even after its message
        // is deleted: Parley can stop issuing URLs, not recall them.
        download_ttl: Duration::minutes(5),
        deleted_grace: Duration::seconds(i64::from(config.attachment_grace_secs)),
    }
}

/// The erasure service over the configured blob store, for the CLI (the server builds
/// its own beside the other services).
pub async fn privacy_service(config: &Config, db: &Db) -> anyhow::Result<crate::privacy::Privacy> {
    let base_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let (blobs, _) = blob_store(config, &config.jwt_secret()?, base_url).await?;
    let uploads = Arc::new(crate::uploads::Uploads::new(
        db,
        conversation_services(config, db),
        blobs,
        upload_limits(config),
    ));
    Ok(crate::privacy::Privacy::new(
        db,
        parley_aggregates::user::UserServices::new(Arc::new(Argon2Hasher::new()?)),
        uploads,
    ))
}

/// Opens and migrates the configured database.
pub async fn open_database(config: &Config) -> anyhow::Result<Db> {
    if config.database_url.is_none() {
        config.ensure_data_dir()?;
    }
    let mut db = Db::connect(
        config.database_url().expose_secret(),
        config.db_max_connections,
    )
    .await
    .context("PARLEY_DATABASE_URL: cannot connect to the database")?;
    db.migrate().await.context("cannot apply migrations")?;
    db.use_master_key(&config.master_key()?)
        .await
        .context("PARLEY_MASTER_KEY")?;
    if config.database_url.is_none() {
        // The embedded database and its journal hold everyone's messages.
        let file = config.embedded_database();
        for suffix in ["", "-wal", "-shm"] {
            let path = std::path::PathBuf::from(format!("{}{suffix}", file.display()));
            if path.exists() {
                crate::config::restrict(&path, 0o600)?;
            }
        }
    }
    Ok(db)
}

pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Server {
    /// Connects, migrates, starts the projectors and binds the listener.
    pub async fn build(config: Config, hasher: Argon2Hasher) -> anyhow::Result<Self> {
        Self::build_with_clock(config, hasher, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        config: Config,
        hasher: Argon2Hasher,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        // Installed before anything counts, so no early event goes unrecorded.
        crate::metrics::handle();
        let db = open_database(&config).await?;
        if config.jwt_secret.is_none() {
            config.ensure_data_dir()?;
        }
        let jwt_secret = config.jwt_secret()?;
        let keys = TokenKeys::new(
            &jwt_secret,
            Duration::seconds(i64::from(config.access_token_ttl)),
            Duration::seconds(i64::from(config.refresh_token_ttl)),
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("PARLEY_LISTEN: cannot listen on {}", config.listen))?;
        let projections = Arc::new(Projections::start(db.clone(), projectors()));
        let live = crate::live::LiveTail::start(
            db.clone(),
            projections.clone(),
            config.subscriber_buffer as usize,
        )
        .await
        .context("cannot start the live tail")?;
        let revocations = Revocations::start(
            db.clone(),
            live.subscribe(),
            &projections,
            clock.clone(),
            std::time::Duration::from_secs(config.access_token_ttl.into()),
        )
        .await
        .context("cannot load ended sessions")?;
        let base_url = match &config.public_url {
            Some(url) => url.clone(),
            None => format!("http://{}", listener.local_addr()?),
        };
        let (blobs, embedded) = blob_store(&config, &jwt_secret, base_url).await?;
        let uploads = Arc::new(crate::uploads::Uploads::new(
            &db,
            conversation_services(&config, &db),
            blobs,
            upload_limits(&config),
        ));
        let privacy = Arc::new(crate::privacy::Privacy::new(
            &db,
            parley_aggregates::user::UserServices::new(Arc::new(hasher.clone())),
            uploads.clone(),
        ));
        // Before serving: a database restored from before an erasure must not serve the
        // erased content for a moment (see `privacy`).
        let (erasures, recorded) = privacy
            .reapply(clock.now())
            .await
            .context("cannot re-apply recorded erasures")?;
        let signals = crate::live::Signals::start(&db);
        let presence = crate::live::Presence::start(db.clone(), clock.clone(), signals.clone());
        let state = Arc::new(AppState {
            signals,
            presence,
            accounts: Accounts::new(&db, hasher, keys, revocations),
            rate: crate::rate::RateLimits::start(config.rate_limits == crate::config::Switch::On),
            chat: Chat::new(&db, conversation_services(&config, &db)),
            uploads,
            privacy: privacy.clone(),
            embedded_blobs: embedded,
            live,
            stopping: tokio::sync::watch::channel(false).0,
            subscription_starts: tokio::sync::Semaphore::new(
                config.db_max_connections.max(1) as usize
            ),
            config,
            db,
            projections,
            clock,
            consistency_timeouts: AtomicU64::new(0),
        });
        {
            // The rest of each erasure (snapshots, files, ledger) reads the read
            // models, which must first include the erasures recorded again just now;
            // then whatever passed its retention window while the server was down.
            let state = state.clone();
            tokio::spawn(async move {
                state.settle(recorded).await;
                for erasure in &erasures {
                    if let Err(error) = state.privacy.shred(erasure, state.clock.now()).await {
                        tracing::error!(user_id = %erasure.user_id, %error, "cannot re-apply an erasure");
                    }
                }
                if let Err(error) = state
                    .privacy
                    .expire(state.clock.now(), state.config.retention_days)
                    .await
                {
                    tracing::warn!(%error, "retention sweep failed");
                }
            });
        }
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then drains requests and stops projectors.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let schema = build_schema(self.state.clone());
        let router = crate::http::router(self.state.clone(), schema);
        tracing::info!(address = %self.listener.local_addr()?, "parley serving");
        let stopping = self.state.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            // Open WebSockets would keep a graceful shutdown waiting forever.
            stopping.send_replace(true);
        };
        tokio::spawn(sweep_attachments(self.state.clone()));
        let send_buffer = self.state.config.send_buffer_bytes as usize;
        let listener = self.listener.tap_io(move |tcp| {
            if let Err(error) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer) {
                tracing::warn!(%error, "cannot size a connection's send buffer");
            }
        });
        // Rate limits count clients by their address.
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await
            .context("server error")?;
        self.state.presence.release().await;
        self.state.projections.stop();
        self.state.db.close().await;
        Ok(())
    }
}

/// Every few minutes until the server stops: removes abandoned uploads and the files
/// of deleted messages, and expires messages past their retention window.
async fn sweep_attachments(state: Arc<AppState>) {
    let mut stopping = state.stopping.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
            _ = stopping.changed() => return,
        }
        if let Err(error) = state.uploads.sweep(state.clock.now()).await {
            tracing::warn!(?error, "attachment sweep failed");
        }
        if let Err(error) = state
            .privacy
            .expire(state.clock.now(), state.config.retention_days)
            .await
        {
            tracing::warn!(%error, "retention sweep failed");
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives while the server is still
/// starting is not lost to the default action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            let (Ok(mut terminate), Ok(mut interrupt)) = (terminate, interrupt) else {
                tracing::warn!("cannot install signal handlers; stop with a kill signal");
                return std::future::pending::<()>().await;
            };
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
            tracing::info!("shutting down");
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}
