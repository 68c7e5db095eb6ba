//! Crypto-shredding: the data keys personal content in events is encrypted with, kept
//! outside the hash-chained log so that destroying a key erases what it sealed while
//! every stored event (and so `parley audit verify`) stays exactly as it was.
//!
//! Envelope encryption: each data key is a random AES-256-GCM key, stored in
//! `data_keys` wrapped (AES-256-GCM) by the master key, which never touches the database.
//!
//! Key granularity: one key per user for account data (display name, password hash),
//! and one per (conversation, author, UTC day) for content (message bodies and their
//! edits, attachment filenames and metadata). Erasing a user destroys every key they own;
//! expiring a conversation's old messages destroys its keys of whole days past the
//! window. A key per message would make expiry exact to the second, but cost a key row
//! in every append transaction and a key lookup per message on every read; a day key is
//! created at most once per author, conversation and day and stays cached, so sealing
//! costs an AEAD pass and nothing more. The price is that sealed text may outlive the
//! retention window in the log by up to a day (read models drop it on time).
//!
//! A sealed event says so in its metadata: `key_id` names the key and `sealed` lists its
//! fields with their JSON kind (`body:s,metadata:o`). Each such field holds the base64
//! of `nonce ‖ AES-GCM(JSON text of the value)`, with the key id and field name as
//! associated data. Events without `key_id` (written before sealing existed, or by a
//! store without a master key) are plaintext and read as they are. When a key is gone a
//! sealed field reads as empty (`""`, `{}`), never as an error: that is erasure working
//! (so does a field sealed by an earlier key of the same id, destroyed and made again).
//! A key that exists but cannot be unwrapped is an error (a wrong `PARLEY_MASTER_KEY`),
//! so a misconfigured node stops rather than taking content for erased.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cqrs_es::persist::SerializedEvent;
use hmac::{Hmac, Mac};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row as _};

use crate::StoreError;

const NONCE: usize = 12;
/// Data keys kept unwrapped in memory, most recently used first.
const CACHED_KEYS: usize = 4096;
/// The row that proves the master key is the one this database was sealed with.
const CHECK_KEY: &str = "check";
const CHECK_PLAINTEXT: &[u8] = b"parley master key check";
/// What the key of name digests is derived from, with the master key.
const NAMES_KEY_CONTEXT: &[u8] = b"parley name digests v1";

/// The master key (`PARLEY_MASTER_KEY`): 32 bytes.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|_| "must be base64".to_owned())?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "must be the base64 of exactly 32 bytes".to_owned())?;
        Ok(Self(bytes))
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

/// What a content key covers, for choosing and later destroying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    pub key_id: String,
    pub owner_id: String,
    pub conversation_id: Option<String>,
    /// `YYYY-MM-DD` (UTC) for content keys.
    pub day: Option<String>,
}

impl KeyScope {
    pub fn user(user_id: &str) -> Self {
        Self {
            key_id: format!("u:{user_id}"),
            owner_id: user_id.to_owned(),
            conversation_id: None,
            day: None,
        }
    }

    pub fn content(conversation_id: &str, author_id: &str, day: &str) -> Self {
        Self {
            key_id: format!("c:{conversation_id}:{author_id}:{day}"),
            owner_id: author_id.to_owned(),
            conversation_id: Some(conversation_id.to_owned()),
            day: Some(day.to_owned()),
        }
    }
}

/// Which fields of which events are personal, and whose key seals them. The one place
/// that decides what crypto-shredding covers.
fn scope_of(
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    fields: &serde_json::Map<String, Value>,
    occurred_day: Option<&str>,
) -> Option<(KeyScope, &'static [&'static str])> {
    let text = |name: &str| fields.get(name).and_then(Value::as_str);
    let day_of = |name: &str| text(name).and_then(|at| at.get(..10));
    match (aggregate_type, event_type) {
        ("User", "UserRegistered") => Some((
            KeyScope::user(aggregate_id),
            &["username", "display_name", "password_hash"],
        )),
        ("User", "PasswordChanged") => Some((KeyScope::user(aggregate_id), &["password_hash"])),
        ("Conversation", "MessagePosted") => Some((
            KeyScope::content(
                text("conversation_id")?,
                text("author_id")?,
                day_of("posted_at")?,
            ),
            &["body"],
        )),
        // An edit is sealed with its message's key (the day it was posted), so expiring
        // the message shreds every version of it.
        ("Message", "MessageEdited") => Some((
            KeyScope::content(
                text("conversation_id")?,
                text("author_id")?,
                day_of("posted_at").or(occurred_day)?,
            ),
            &["body", "previous_body"],
        )),
        ("Upload", "UploadCreated") => Some((
            KeyScope::content(
                text("conversation_id")?,
                text("owner_id")?,
                day_of("created_at")?,
            ),
            &["filename"],
        )),
        ("Upload", "UploadCompleted") => Some((
            KeyScope::content(
                text("conversation_id")?,
                text("owner_id")?,
                day_of("completed_at")?,
            ),
            &["filename", "metadata"],
        )),
        _ => None,
    }
}

/// The data keys: sealing events at append and opening them when read.
pub struct Keyring {
    /// The master key's cipher; `None` stores plaintext (tests of the bare store).
    master: Option<Aes256Gcm>,
    /// The key names are digested with (see [`Keyring::name_digest`]), derived from the
    /// master key.
    names: Option<[u8; 32]>,
    /// Unwrapped keys and when they were read: a key another node destroyed is
    /// forgotten here when this node reads the event that destroyed it, and at the
    /// latest after [`CACHE_FOR`].
    cache: Mutex<lru::LruCache<String, (Instant, Arc<Aes256Gcm>)>>,
}

/// How long an unwrapped key is used without reading it again.
const CACHE_FOR: Duration = Duration::from_secs(60);

impl Default for Keyring {
    fn default() -> Self {
        Self::disabled()
    }
}

impl Keyring {
    /// A keyring that seals nothing; sealed events read as erased.
    pub fn disabled() -> Self {
        Self {
            master: None,
            names: None,
            cache: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(CACHED_KEYS).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
        }
    }

    pub fn new(master: &MasterKey) -> Self {
        let names = Sha256::new()
            .chain_update(NAMES_KEY_CONTEXT)
            .chain_update(master.0)
            .finalize()
            .into();
        Self {
            master: Some(Aes256Gcm::new(&master.0.into())),
            names: Some(names),
            ..Self::disabled()
        }
    }

    /// The keyed digest (HMAC-SHA256, hex) of a unique name such as a username: what
    /// its claim in the log is keyed by, so the log never holds the name itself, and
    /// without the master key a digest cannot be tested against guessed names. `None`
    /// without a master key, where claims keep the name as it is.
    pub fn name_digest(&self, name: &str) -> Option<String> {
        let key = self.names.as_ref()?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
        mac.update(name.as_bytes());
        Some(crate::hash::to_hex(&mac.finalize().into_bytes().into()))
    }

    pub fn enabled(&self) -> bool {
        self.master.is_some()
    }

    /// Fails unless the master key opens this database's keys; records the check on the
    /// first start.
    pub async fn check(&self, pool: &AnyPool) -> Result<(), StoreError> {
        let Some(master) = &self.master else {
            return Ok(());
        };
        let stored: Option<String> =
            sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE key_id = $1")
                .bind(CHECK_KEY)
                .fetch_optional(pool)
                .await?;
        match stored {
            Some(wrapped) => match unwrap(master, CHECK_KEY, &wrapped) {
                Ok(plain) if plain == CHECK_PLAINTEXT => Ok(()),
                _ => Err(StoreError::WrongMasterKey),
            },
            None => {
                let wrapped = wrap(master, CHECK_KEY, CHECK_PLAINTEXT)?;
                sqlx::query(
                    "INSERT INTO data_keys (key_id, owner_id, wrapped, created_at) \
                     VALUES ($1, '', $2, $3) ON CONFLICT (key_id) DO NOTHING",
                )
                .bind(CHECK_KEY)
                .bind(wrapped)
                .bind(crate::format_time(time::OffsetDateTime::now_utc()))
                .execute(pool)
                .await?;
                Ok(())
            }
        }
    }

    /// Encrypts the personal fields of `events` in place, creating keys as needed
    /// (through `pool`, before the events are appended: a key written for an append
    /// that then fails seals nothing and costs nothing).
    pub async fn seal(
        &self,
        pool: &AnyPool,
        events: &mut [SerializedEvent],
    ) -> Result<(), StoreError> {
        if self.master.is_none() {
            return Ok(());
        }
        for event in events.iter_mut() {
            let occurred_day = event
                .metadata
                .get("occurred_at")
                .and_then(Value::as_str)
                .and_then(|at| at.get(..10))
                .map(str::to_owned);
            let Some(fields) = inner_mut(&mut event.payload) else {
                continue;
            };
            let Some((scope, names)) = scope_of(
                &event.aggregate_type,
                &event.aggregate_id,
                &event.event_type,
                fields,
                occurred_day.as_deref(),
            ) else {
                continue;
            };
            let cipher = self.key_for(pool, &scope).await?;
            let mut sealed = Vec::new();
            for name in names {
                let Some(value) = fields.get_mut(*name) else {
                    continue;
                };
                let kind = if value.is_string() { "s" } else { "o" };
                let plain = serde_json::to_vec(value).map_err(StoreError::crypto)?;
                *value = Value::String(encrypt(&cipher, &scope.key_id, name, &plain)?);
                sealed.push(format!("{name}:{kind}"));
            }
            if let Some(metadata) = event.metadata.as_object_mut() {
                metadata.insert("key_id".to_owned(), Value::String(scope.key_id));
                metadata.insert("sealed".to_owned(), Value::String(sealed.join(",")));
            }
        }
        Ok(())
    }

    /// Decrypts sealed events read by the command bus.
    pub async fn open_serialized(
        &self,
        pool: &AnyPool,
        events: &mut [SerializedEvent],
    ) -> Result<(), StoreError> {
        let mut sealed: Vec<Sealed<'_>> = events
            .iter_mut()
            .filter_map(|event| {
                let key_id = event.metadata.get("key_id")?.as_str()?;
                let fields = event.metadata.get("sealed")?.as_str()?;
                Some(Sealed {
                    payload: &mut event.payload,
                    key_id,
                    fields,
                })
            })
            .collect();
        self.open(pool, &mut sealed).await
    }

    /// Decrypts sealed payloads in place; fields whose key was destroyed read as empty.
    /// The payload texts of sealed events with their sealed fields opened (or emptied,
    /// where the key is gone), in the order given. The rest of each text is kept as it
    /// is, so readers decode events straight from text rather than through a
    /// `serde_json::Value`.
    pub async fn open_texts(
        &self,
        pool: &AnyPool,
        sealed: &[SealedText<'_>],
    ) -> Result<Vec<String>, StoreError> {
        if sealed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: HashSet<String> = sealed.iter().map(|s| s.key_id.to_owned()).collect();
        let keys = self.keys(pool, ids).await?;
        sealed
            .iter()
            .map(|item| open_text(item.text, item.key_id, item.fields, keys.get(item.key_id)))
            .collect()
    }

    pub async fn open(&self, pool: &AnyPool, sealed: &mut [Sealed<'_>]) -> Result<(), StoreError> {
        if sealed.is_empty() {
            return Ok(());
        }
        let ids: HashSet<String> = sealed.iter().map(|s| s.key_id.to_owned()).collect();
        let keys = self.keys(pool, ids).await?;
        for item in sealed.iter_mut() {
            open(
                item.payload,
                item.key_id,
                item.fields,
                keys.get(item.key_id),
            )?;
        }
        Ok(())
    }

    /// Destroys every key `owner_id` owns; returns how many.
    pub async fn destroy_owned_by(
        &self,
        pool: &AnyPool,
        owner_id: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM data_keys WHERE owner_id = $1 AND key_id <> $2")
            .bind(owner_id)
            .bind(CHECK_KEY)
            .execute(pool)
            .await?;
        self.forget();
        Ok(done.rows_affected())
    }

    /// Destroys `conversation_id`'s content keys of days before `day` (`YYYY-MM-DD`).
    pub async fn destroy_days_before(
        &self,
        pool: &AnyPool,
        conversation_id: &str,
        day: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM data_keys WHERE conversation_id = $1 AND day < $2")
            .bind(conversation_id)
            .bind(day)
            .execute(pool)
            .await?;
        self.forget();
        Ok(done.rows_affected())
    }

    /// Drops every unwrapped key from memory.
    pub fn forget(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    fn cached(&self, key_id: &str) -> Option<Arc<Aes256Gcm>> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(key_id) {
            Some((read, cipher)) if read.elapsed() < CACHE_FOR => Some(cipher.clone()),
            Some(_) => {
                cache.pop(key_id);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key_id: &str, cipher: Arc<Aes256Gcm>) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(key_id.to_owned(), (Instant::now(), cipher));
        }
    }

    /// The key of `scope`, created if it does not exist yet.
    async fn key_for(
        &self,
        pool: &AnyPool,
        scope: &KeyScope,
    ) -> Result<Arc<Aes256Gcm>, StoreError> {
        if let Some(cipher) = self.cached(&scope.key_id) {
            return Ok(cipher);
        }
        let master = self.master.as_ref().ok_or(StoreError::WrongMasterKey)?;
        let fresh: [u8; 32] = rand::random();
        // Another node may create the same key at the same moment: the first insert wins
        // and both read back the one stored.
        sqlx::query(
            "INSERT INTO data_keys (key_id, owner_id, conversation_id, day, wrapped, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(&scope.key_id)
        .bind(&scope.owner_id)
        .bind(scope.conversation_id.as_deref())
        .bind(scope.day.as_deref())
        .bind(wrap(master, &scope.key_id, &fresh)?)
        .bind(crate::format_time(time::OffsetDateTime::now_utc()))
        .execute(pool)
        .await?;
        let wrapped: String = sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE key_id = $1")
            .bind(&scope.key_id)
            .fetch_one(pool)
            .await?;
        let cipher = Arc::new(data_cipher(master, &scope.key_id, &wrapped)?);
        self.remember(&scope.key_id, cipher.clone());
        Ok(cipher)
    }

    /// The existing keys among `ids`; absent ones were destroyed.
    async fn keys(
        &self,
        pool: &AnyPool,
        ids: HashSet<String>,
    ) -> Result<HashMap<String, Arc<Aes256Gcm>>, StoreError> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for id in ids {
            match self.cached(&id) {
                Some(cipher) => {
                    found.insert(id, cipher);
                }
                None => missing.push(id),
            }
        }
        let Some(master) = &self.master else {
            return Ok(found);
        };
        for chunk in missing.chunks(500) {
            let sql = format!(
                "SELECT key_id, wrapped FROM data_keys WHERE key_id IN ({})",
                crate::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(pool).await? {
                let key_id: String = row.try_get(0)?;
                let wrapped: String = row.try_get(1)?;
                let cipher = Arc::new(data_cipher(master, &key_id, &wrapped)?);
                self.remember(&key_id, cipher.clone());
                found.insert(key_id, cipher);
            }
        }
        Ok(found)
    }
}

/// A sealed payload to open: its key and the `sealed` list from its metadata.
pub struct Sealed<'a> {
    pub payload: &'a mut Value,
    pub key_id: &'a str,
    pub fields: &'a str,
}

/// A sealed event's payload as stored, to open as text ([`Keyring::open_texts`]).
pub struct SealedText<'a> {
    pub text: &'a str,
    pub key_id: &'a str,
    pub fields: &'a str,
}

/// Event types whose appending destroys keys somewhere.
pub const SHREDDING_EVENTS: [&str; 2] = ["AccountErased", "MessagesExpired"];

/// The fields object inside an externally tagged payload (`{"MessagePosted": {…}}`).
fn inner_mut(payload: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    payload
        .as_object_mut()?
        .values_mut()
        .next()?
        .as_object_mut()
}

fn open(
    payload: &mut Value,
    key_id: &str,
    sealed: &str,
    cipher: Option<&Arc<Aes256Gcm>>,
) -> Result<(), StoreError> {
    let Some(fields) = inner_mut(payload) else {
        return Ok(());
    };
    for entry in sealed.split(',').filter(|entry| !entry.is_empty()) {
        let (name, kind) = entry.split_once(':').unwrap_or((entry, "s"));
        let Some(value) = fields.get_mut(name) else {
            continue;
        };
        let opened = match (cipher, value.as_str()) {
            (Some(cipher), Some(text)) => decrypt(cipher, key_id, name, text)
                .ok()
                .and_then(|plain| serde_json::from_slice(&plain).ok()),
            _ => None,
        };
        *value = match opened {
            Some(plain) => plain,
            // The key was destroyed, or destroyed and made again under the same id
            // (a later message of a day that had expired): either way what it sealed
            // is erased. A wrong master key fails earlier, when the key is unwrapped;
            // an altered event fails `parley audit verify`.
            None if kind == "o" => Value::Object(serde_json::Map::new()),
            None => Value::String(String::new()),
        };
    }
    Ok(())
}

/// [`open`] on a payload's text: each sealed field's value is replaced by the JSON text
/// it opens to (checked to be JSON), everything else is kept byte for byte. A payload
/// whose field names cannot be borrowed from its text (escaped) goes through
/// [`open`] on a parsed value instead.
fn open_text(
    text: &str,
    key_id: &str,
    sealed: &str,
    cipher: Option<&Arc<Aes256Gcm>>,
) -> Result<String, StoreError> {
    let Some(fields) = inner_fields(text) else {
        let mut payload: Value = serde_json::from_str(text).map_err(|error| {
            StoreError::crypto(format!("a sealed payload is not JSON: {error}"))
        })?;
        open(&mut payload, key_id, sealed, cipher)?;
        return Ok(payload.to_string());
    };
    let mut splices: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for entry in sealed.split(',').filter(|entry| !entry.is_empty()) {
        let (name, kind) = entry.split_once(':').unwrap_or((entry, "s"));
        let Some(raw) = fields.get(name) else {
            continue;
        };
        let Some(range) = range_within(text, raw.get()) else {
            continue;
        };
        let opened = match (cipher, serde_json::from_str::<String>(raw.get())) {
            (Some(cipher), Ok(sealed)) => decrypt(cipher, key_id, name, &sealed)
                .ok()
                .and_then(|plain| String::from_utf8(plain).ok())
                .filter(|plain| serde_json::from_str::<&RawValue>(plain).is_ok()),
            _ => None,
        };
        // Erased, as in `open`.
        let opened = opened.unwrap_or_else(|| if kind == "o" { "{}" } else { "\"\"" }.to_owned());
        splices.push((range, opened));
    }
    splices.sort_by_key(|(range, _)| range.start);
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for (range, opened) in splices {
        if range.start < at {
            continue;
        }
        out.push_str(text.get(at..range.start).unwrap_or_default());
        out.push_str(&opened);
        at = range.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    Ok(out)
}

/// The fields of an externally tagged payload (`{"MessagePosted": {…}}`) as slices of
/// its text; `None` when the text is not of that shape or a name is escaped.
fn inner_fields(text: &str) -> Option<BTreeMap<&str, &RawValue>> {
    let outer: BTreeMap<&str, BTreeMap<&str, &RawValue>> = serde_json::from_str(text).ok()?;
    let mut variants = outer.into_values();
    let inner = variants.next()?;
    variants.next().is_none().then_some(inner)
}

/// Where `part`, a slice of `whole`, lies in it.
pub(crate) fn range_within(whole: &str, part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

fn aad(key_id: &str, field: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(key_id.len() + field.len() + 1);
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad
}

fn encrypt(
    cipher: &Aes256Gcm,
    key_id: &str,
    field: &str,
    plain: &[u8],
) -> Result<String, StoreError> {
    let nonce: [u8; NONCE] = rand::random();
    let aad = aad(key_id, field);
    let sealed = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        .map_err(|_| StoreError::crypto("encryption failed"))?;
    let mut out = Vec::with_capacity(NONCE + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(B64.encode(out))
}

fn decrypt(
    cipher: &Aes256Gcm,
    key_id: &str,
    field: &str,
    text: &str,
) -> Result<Vec<u8>, StoreError> {
    let bytes = B64.decode(text).map_err(StoreError::crypto)?;
    if bytes.len() < NONCE {
        return Err(StoreError::crypto("sealed field too short"));
    }
    let (nonce, sealed) = bytes.split_at(NONCE);
    let nonce: [u8; NONCE] = nonce
        .try_into()
        .map_err(|_| StoreError::crypto("sealed field too short"))?;
    let aad = aad(key_id, field);
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        )
        .map_err(|_| {
            StoreError::crypto(format!(
                "sealed field {field} does not open with key {key_id}"
            ))
        })
}

fn wrap(master: &Aes256Gcm, key_id: &str, key: &[u8]) -> Result<String, StoreError> {
    encrypt(master, key_id, "data key", key)
}

fn unwrap(master: &Aes256Gcm, key_id: &str, wrapped: &str) -> Result<Vec<u8>, StoreError> {
    decrypt(master, key_id, "data key", wrapped).map_err(|_| StoreError::WrongMasterKey)
}

fn data_cipher(master: &Aes256Gcm, key_id: &str, wrapped: &str) -> Result<Aes256Gcm, StoreError> {
    let key = unwrap(master, key_id, wrapped)?;
    Aes256Gcm::new_from_slice(&key).map_err(|_| StoreError::WrongMasterKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Aes256Gcm {
        Aes256Gcm::new(&[7u8; 32].into())
    }

    #[test]
    fn sealed_text_opens_to_what_the_sealed_value_opens_to() {
        let cipher = Arc::new(cipher());
        let mut payload = serde_json::json!({ "MessagePosted": {
            "body": "tab\there \"quoted\" \\ \u{e9}", "seq": 1,
            "metadata": { "width": 4, "name": "a.png" }, "zz": [1, 2]
        } });
        let fields = inner_mut(&mut payload).expect("fields");
        for name in ["body", "metadata"] {
            let plain = serde_json::to_vec(&fields[name]).expect("json");
            fields[name] = Value::String(encrypt(&cipher, "k", name, &plain).expect("seal"));
        }
        // PostgreSQL renders `jsonb` with spaces after separators; SQLite keeps
        // serde_json's compact text. Both open alike.
        let texts = [
            payload.to_string(),
            serde_json::to_string_pretty(&payload).expect("json"),
        ];
        for text in &texts {
            for (key, cipher) in [("k", Some(&cipher)), ("k", None), ("other", Some(&cipher))] {
                let mut expected = payload.clone();
                open(&mut expected, key, "body:s,metadata:o", cipher).expect("open");
                let opened = open_text(text, key, "body:s,metadata:o", cipher).expect("open");
                let opened: Value = serde_json::from_str(&opened).expect("opened text is JSON");
                assert_eq!(opened, expected, "{key} {}", cipher.is_some());
            }
        }
        let opened = open_text(&texts[0], "k", "body:s,metadata:o", Some(&cipher)).expect("open");
        assert!(
            opened.contains("a.png") && opened.contains("quoted"),
            "{opened}"
        );
        // A payload not of the tagged shape goes through the parsed value; one that is
        // not JSON at all is an error.
        assert_eq!(
            open_text("\"Unit\"", "k", "body:s", Some(&cipher)).expect("open"),
            "\"Unit\""
        );
        assert!(open_text("{", "k", "body:s", Some(&cipher)).is_err());
        // A field the list names but the payload lacks, or an empty list, changes nothing.
        assert_eq!(
            open_text(&texts[0], "k", "nothing:s,", Some(&cipher)).expect("open"),
            texts[0]
        );
    }

    #[test]
    fn sealed_fields_open_with_their_key_and_read_as_erased_without_it() {
        let cipher = Arc::new(cipher());
        let mut payload = serde_json::json!({ "MessagePosted": { "body": "hello", "seq": 1 } });
        let fields = inner_mut(&mut payload).expect("fields");
        let plain = serde_json::to_vec(&fields["body"]).expect("json");
        fields["body"] = Value::String(encrypt(&cipher, "k", "body", &plain).expect("seal"));
        assert!(!payload.to_string().contains("hello"));

        let mut opened = payload.clone();
        open(&mut opened, "k", "body:s", Some(&cipher)).expect("open");
        assert_eq!(opened["MessagePosted"]["body"], "hello");

        let mut erased = payload.clone();
        open(&mut erased, "k", "body:s", None).expect("erased");
        assert_eq!(erased["MessagePosted"]["body"], "");
        assert_eq!(erased["MessagePosted"]["seq"], 1);

        // The associated data binds a field to its key: under another key id, or with
        // another key of the same id (one made again after the first was destroyed),
        // it reads as erased.
        let mut moved = payload.clone();
        open(&mut moved, "other", "body:s", Some(&cipher)).expect("erased");
        assert_eq!(moved["MessagePosted"]["body"], "");
        let again = Arc::new(Aes256Gcm::new(&[9u8; 32].into()));
        let mut remade = payload.clone();
        open(&mut remade, "k", "body:s", Some(&again)).expect("erased");
        assert_eq!(remade["MessagePosted"]["body"], "");
    }

    #[test]
    fn a_wrapped_key_opens_only_with_its_master_key() {
        let master = cipher();
        let wrapped = wrap(&master, "k", &[1u8; 32]).expect("wrap");
        assert!(data_cipher(&master, "k", &wrapped).is_ok());
        let other = Aes256Gcm::new(&[8u8; 32].into());
        assert!(matches!(
            data_cipher(&other, "k", &wrapped),
            Err(StoreError::WrongMasterKey)
        ));
    }

    #[test]
    fn master_keys_parse_from_base64_of_32_bytes() {
        let key = MasterKey::new([3u8; 32]);
        assert_eq!(
            MasterKey::from_base64(&key.to_base64()).map(|k| k.0),
            Ok([3u8; 32])
        );
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn only_personal_fields_are_in_scope() {
        let fields = serde_json::json!({
            "conversation_id": "c", "author_id": "a", "posted_at": "2026-12-03T10:00:00Z"
        });
        let fields = fields.as_object().expect("object");
        let (scope, names) =
            scope_of("Conversation", "c", "MessagePosted", fields, None).expect("sealed");
        assert_eq!(scope, KeyScope::content("c", "a", "2026-12-03"));
        assert_eq!(names, ["body"]);
        assert!(scope_of("Conversation", "c", "MemberJoined", fields, None).is_none());
        let (scope, names) = scope_of("User", "u", "UserRegistered", fields, None).expect("sealed");
        assert_eq!(scope, KeyScope::user("u"));
        assert!(names.contains(&"username"), "{names:?}");
    }

    #[test]
    fn name_digests_are_keyed_by_the_master_key_and_absent_without_one() {
        let ring = Keyring::new(&MasterKey::new([3u8; 32]));
        let digest = ring.name_digest("alice").expect("a digest");
        assert_eq!(digest.len(), 64);
        assert!(!digest.contains("alice"));
        assert_eq!(ring.name_digest("alice"), Some(digest.clone()));
        assert_ne!(ring.name_digest("alicf"), Some(digest.clone()));
        let other = Keyring::new(&MasterKey::new([4u8; 32]));
        assert_ne!(other.name_digest("alice"), Some(digest));
        assert_eq!(Keyring::disabled().name_digest("alice"), None);
    }
}
