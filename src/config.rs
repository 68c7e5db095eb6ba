//! The one configuration struct, read from `PARLEY_*` environment variables and flags.
//!
//! Each argument's value name is its environment variable, so a bad value fails at
//! start with a message naming the variable to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use parley_store::MasterKey;
use secrecy::SecretString;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve HTTP and WebSocket on.
    #[arg(
        long,
        env = "PARLEY_LISTEN",
        value_name = "PARLEY_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Directory for the embedded database, blobs and the generated development secret.
    #[arg(
        long,
        env = "PARLEY_DATA_DIR",
        value_name = "PARLEY_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// `postgres://…` for PostgreSQL; default: SQLite at `$PARLEY_DATA_DIR/parley.db`.
    /// A secret: it may hold a password.
    #[arg(long, env = "PARLEY_DATABASE_URL", value_name = "PARLEY_DATABASE_URL", hide_env_values = true, value_parser = parse_database_url, global = true)]
    pub database_url: Option<SecretString>,

    /// HS256 signing secret for access tokens, at least 32 bytes. Generated into the
    /// data directory when unset.
    #[arg(long, env = "PARLEY_JWT_SECRET", value_name = "PARLEY_JWT_SECRET", hide_env_values = true, value_parser = parse_jwt_secret, global = true)]
    pub jwt_secret: Option<SecretString>,

    /// Master key wrapping the data keys that seal personal content (base64 of 32
    /// bytes; `openssl rand -base64 32`). The same on every node; losing it loses every
    /// sealed message. Generated into the data directory when unset.
    #[arg(long, env = "PARLEY_MASTER_KEY", value_name = "PARLEY_MASTER_KEY", hide_env_values = true, value_parser = parse_master_key, global = true)]
    pub master_key: Option<MasterKey>,

    /// Days messages are kept in conversations without a window of their own
    /// (`setRetention`); unset keeps them forever.
    #[arg(long, env = "PARLEY_RETENTION_DAYS", value_name = "PARLEY_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500), global = true)]
    pub retention_days: Option<u32>,

    /// Log filter, in tracing's `EnvFilter` syntax.
    #[arg(
        long,
        env = "PARLEY_LOG",
        value_name = "PARLEY_LOG",
        default_value = "info",
        global = true
    )]
    pub log: String,

    /// Log format.
    #[arg(
        long,
        env = "PARLEY_LOG_FORMAT",
        value_name = "PARLEY_LOG_FORMAT",
        value_enum,
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,

    /// Access-token lifetime in seconds.
    #[arg(long, env = "PARLEY_ACCESS_TOKEN_TTL", value_name = "PARLEY_ACCESS_TOKEN_TTL", default_value_t = 900, value_parser = clap::value_parser!(u32).range(10..=86_400), global = true)]
    pub access_token_ttl: u32,

    /// Refresh-token lifetime in seconds.
    #[arg(long, env = "PARLEY_REFRESH_TOKEN_TTL", value_name = "PARLEY_REFRESH_TOKEN_TTL", default_value_t = 30 * 86_400, value_parser = clap::value_parser!(u32).range(60..), global = true)]
    pub refresh_token_ttl: u32,

    /// Maximum database connections per pool.
    #[arg(long, env = "PARLEY_DB_MAX_CONNECTIONS", value_name = "PARLEY_DB_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub db_max_connections: u32,

    /// Longest message body accepted, in Unicode scalar values.
    #[arg(long, env = "PARLEY_MAX_MESSAGE_LENGTH", value_name = "PARLEY_MAX_MESSAGE_LENGTH", default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..=100_000), global = true)]
    pub max_message_length: u32,

    /// Longest a mutation waits for read models to include its effect, in milliseconds.
    #[arg(
        long,
        env = "PARLEY_CONSISTENCY_WAIT_MS",
        value_name = "PARLEY_CONSISTENCY_WAIT_MS",
        default_value_t = 2000,
        global = true
    )]
    pub consistency_wait_ms: u64,

    /// Events a subscriber may fall behind by before it is ended with
    /// `RESUME_REQUIRED` (it resumes from its cursor); bounds memory per subscriber.
    #[arg(
        long,
        env = "PARLEY_SUBSCRIBER_BUFFER",
        value_name = "PARLEY_SUBSCRIBER_BUFFER",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000),
        global = true
    )]
    pub subscriber_buffer: u32,

    /// Kernel send buffer per client connection, in bytes. It bounds what a client that
    /// stops reading holds in the kernel (by default Linux grows it to megabytes), so
    /// such a subscriber falls behind and is cut off instead.
    #[arg(
        long,
        env = "PARLEY_SEND_BUFFER_BYTES",
        value_name = "PARLEY_SEND_BUFFER_BYTES",
        default_value_t = 262_144,
        value_parser = clap::value_parser!(u32).range(4_096..=67_108_864),
        global = true
    )]
    pub send_buffer_bytes: u32,

    /// Seconds between the server's keep-alive pings on WebSockets; a
    /// graphql-transport-ws client that answers none of three is disconnected.
    #[arg(
        long,
        env = "PARLEY_WS_KEEPALIVE_SECS",
        value_name = "PARLEY_WS_KEEPALIVE_SECS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u16).range(1..=3600),
        global = true
    )]
    pub ws_keepalive_secs: u16,

    /// Seconds a new WebSocket may take to send `connection_init`; closed with 4408
    /// after that.
    #[arg(
        long,
        env = "PARLEY_WS_INIT_TIMEOUT_SECS",
        value_name = "PARLEY_WS_INIT_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u16).range(1..=600),
        global = true
    )]
    pub ws_init_timeout_secs: u16,

    /// Live subscriptions one WebSocket may hold at once.
    #[arg(
        long,
        env = "PARLEY_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        value_name = "PARLEY_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=10_000),
        global = true
    )]
    pub max_subscriptions_per_connection: u32,

    /// WebSockets one user may hold open on one node.
    #[arg(
        long,
        env = "PARLEY_MAX_CONNECTIONS_PER_USER",
        value_name = "PARLEY_MAX_CONNECTIONS_PER_USER",
        default_value_t = 32,
        value_parser = clap::value_parser!(u32).range(1..=10_000),
        global = true
    )]
    pub max_connections_per_user: u32,

    /// Largest HTTP request body accepted, in bytes; larger ones get 413.
    #[arg(
        long,
        env = "PARLEY_MAX_REQUEST_BYTES",
        value_name = "PARLEY_MAX_REQUEST_BYTES",
        default_value_t = 1_048_576,
        value_parser = clap::value_parser!(u32).range(1_024..=1_073_741_824),
        global = true
    )]
    pub max_request_bytes: u32,

    /// Most a single GraphQL operation may cost: every selected field counts, and a
    /// list field multiplies what is selected under it by its page size.
    #[arg(
        long,
        env = "PARLEY_MAX_QUERY_COST",
        value_name = "PARLEY_MAX_QUERY_COST",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(100..=100_000_000),
        global = true
    )]
    pub max_query_cost: u32,

    /// Users one `createGroup` may name.
    #[arg(
        long,
        env = "PARLEY_MAX_GROUP_INVITES",
        value_name = "PARLEY_MAX_GROUP_INVITES",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..=100_000),
        global = true
    )]
    pub max_group_invites: u32,

    /// Members plus pending invitations one conversation may hold.
    #[arg(
        long,
        env = "PARLEY_MAX_MEMBERS",
        value_name = "PARLEY_MAX_MEMBERS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(2..=1_000_000),
        global = true
    )]
    pub max_members: u32,

    /// `off` turns every rate limit off (load tests, or deployments behind a limiter of
    /// their own).
    #[arg(
        long,
        env = "PARLEY_RATE_LIMITS",
        value_name = "PARLEY_RATE_LIMITS",
        value_enum,
        default_value = "on",
        global = true
    )]
    pub rate_limits: Switch,

    /// Addresses (or CIDR ranges) of reverse proxies whose `X-Forwarded-For` is
    /// trusted for the client's address; comma-separated. Default: none, the socket
    /// peer is the client.
    #[arg(
        long,
        env = "PARLEY_TRUSTED_PROXIES",
        value_name = "PARLEY_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_proxy,
        global = true
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Largest attachment accepted, in bytes (25 MiB by default).
    #[arg(
        long,
        env = "PARLEY_MAX_UPLOAD_BYTES",
        value_name = "PARLEY_MAX_UPLOAD_BYTES",
        default_value_t = 26_214_400,
        value_parser = clap::value_parser!(u64).range(1..=2_147_483_647),
        global = true
    )]
    pub max_upload_bytes: u64,

    /// Uploads one user may have open at once: created and not yet sent in a message.
    #[arg(
        long,
        env = "PARLEY_MAX_PENDING_UPLOADS",
        value_name = "PARLEY_MAX_PENDING_UPLOADS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..=10_000),
        global = true
    )]
    pub max_pending_uploads: u32,

    /// How clients reach this server (`https://chat.example.com`), for the upload and
    /// download URLs of the embedded blob store. Default: `http://` and the address
    /// listened on.
    #[arg(
        long,
        env = "PARLEY_PUBLIC_URL",
        value_name = "PARLEY_PUBLIC_URL",
        value_parser = parse_public_url,
        global = true
    )]
    pub public_url: Option<String>,

    /// Seconds the files of a deleted message's attachments are kept before removal
    /// (they stop being served at once).
    #[arg(
        long,
        env = "PARLEY_ATTACHMENT_GRACE_SECS",
        value_name = "PARLEY_ATTACHMENT_GRACE_SECS",
        default_value_t = 3_600,
        value_parser = clap::value_parser!(u32).range(0..=31_536_000),
        global = true
    )]
    pub attachment_grace_secs: u32,

    /// Keeps attachments in this S3 bucket (which must exist) instead of the data
    /// directory. Credentials come from the standard AWS chain.
    #[arg(
        long,
        env = "PARLEY_S3_BUCKET",
        value_name = "PARLEY_S3_BUCKET",
        global = true
    )]
    pub s3_bucket: Option<String>,

    /// URL of an S3-compatible server; default: AWS.
    #[arg(
        long,
        env = "PARLEY_S3_ENDPOINT",
        value_name = "PARLEY_S3_ENDPOINT",
        value_parser = parse_public_url,
        global = true
    )]
    pub s3_endpoint: Option<String>,

    /// The bucket's region.
    #[arg(
        long,
        env = "PARLEY_S3_REGION",
        value_name = "PARLEY_S3_REGION",
        default_value = "us-east-1",
        global = true
    )]
    pub s3_region: String,

    /// `true` addresses the bucket in the path (`host/bucket/key`), as most
    /// S3-compatible servers need.
    #[arg(
        long,
        env = "PARLEY_S3_FORCE_PATH_STYLE",
        value_name = "PARLEY_S3_FORCE_PATH_STYLE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub s3_force_path_style: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

fn parse_public_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim().trim_end_matches('/');
    if (raw.starts_with("http://") || raw.starts_with("https://")) && !raw.contains(['?', '#']) {
        Ok(raw.to_owned())
    } else {
        Err("must be an http:// or https:// URL without query".to_owned())
    }
}

fn parse_database_url(raw: &str) -> Result<SecretString, String> {
    let ok = ["postgres://", "postgresql://", "sqlite://", "sqlite:"]
        .iter()
        .any(|scheme| raw.starts_with(scheme));
    if ok {
        Ok(SecretString::from(raw.to_owned()))
    } else {
        Err("must start with postgres:// or sqlite://".to_owned())
    }
}

/// An address (`10.0.0.7`) or a range (`10.0.0.0/8`).
fn parse_proxy(raw: &str) -> Result<ipnet::IpNet, String> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{raw:?} is not an IP address or CIDR range"))
}

fn parse_master_key(raw: &str) -> Result<MasterKey, String> {
    MasterKey::from_base64(raw)
}

fn parse_jwt_secret(raw: &str) -> Result<SecretString, String> {
    if raw.len() < 32 {
        Err("must be at least 32 bytes long".to_owned())
    } else {
        Ok(SecretString::from(raw.to_owned()))
    }
}

impl Config {
    /// The database URL in force: the configured one, else the embedded file.
    pub fn database_url(&self) -> SecretString {
        match &self.database_url {
            Some(url) => url.clone(),
            None => SecretString::from(format!(
                "sqlite://{}?mode=rwc",
                self.embedded_database().display()
            )),
        }
    }

    /// The embedded database file (used when no `PARLEY_DATABASE_URL` is set).
    pub fn embedded_database(&self) -> PathBuf {
        self.data_dir.join("parley.db")
    }

    /// Creates the data directory, readable by this user alone (also when it existed).
    pub fn ensure_data_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir).with_context(|| {
            format!("PARLEY_DATA_DIR: cannot create {}", self.data_dir.display())
        })?;
        restrict(&self.data_dir, 0o700)
    }

    /// The configured secret, or one generated once into the data directory.
    pub fn jwt_secret(&self) -> anyhow::Result<SecretString> {
        if let Some(secret) = &self.jwt_secret {
            return Ok(secret.clone());
        }
        let path = self.data_dir.join("jwt-secret");
        if let Ok(secret) = std::fs::read_to_string(&path) {
            let secret = secret.trim().to_owned();
            if secret.len() >= 32 {
                restrict(&path, 0o600)?;
                return Ok(SecretString::from(secret));
            }
        }
        tracing::warn!(
            path = %path.display(),
            "PARLEY_JWT_SECRET is not set; using a generated development secret. \
             Set PARLEY_JWT_SECRET in production and on every node."
        );
        let bytes: [u8; 32] = rand::random();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, &secret)?;
        Ok(SecretString::from(secret))
    }

    /// The configured master key, or one generated once into the data directory.
    pub fn master_key(&self) -> anyhow::Result<MasterKey> {
        if let Some(key) = &self.master_key {
            return Ok(key.clone());
        }
        self.ensure_data_dir()?;
        let path = self.data_dir.join("master-key");
        if let Ok(text) = std::fs::read_to_string(&path) {
            restrict(&path, 0o600)?;
            return MasterKey::from_base64(&text)
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()));
        }
        tracing::warn!(
            path = %path.display(),
            "PARLEY_MASTER_KEY is not set; using a generated master key. Set PARLEY_MASTER_KEY \
             in production, the same on every node, and keep a copy: without it no sealed \
             message can be read."
        );
        let key = MasterKey::new(rand::random());
        write_private(&path, &key.to_base64())?;
        Ok(key)
    }
}

/// Sets `path`'s permission bits (a file or directory that holds secrets or data).
pub fn restrict(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restrict the permissions of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // `mode` applies only to a file created now; an older one is narrowed too.
    restrict(path, 0o600)
}
