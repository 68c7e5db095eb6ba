//! Access tokens (JWT, HS256 only) and refresh tokens.
//!
//! A refresh token is `prt_` + base64url(user id ‖ family id ‖ 32 random bytes). The
//! ids route it to the right aggregate and session family; only the SHA-256 of the
//! random part is stored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const ISSUER: &str = "parley";
const REFRESH_PREFIX: &str = "prt_";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: Uuid,
    /// The sign-in session (refresh-token family) the token belongs to: when it ends,
    /// the token stops working with it.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

/// What a valid access token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Signing keys and lifetimes.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &SecretString, access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        // Only HS256 is accepted: a token naming any other algorithm, `none` included,
        // fails validation before its signature is even considered.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    pub fn issue_access(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = AccessClaims {
            sub: user_id,
            sid: session_id,
            iat: now.unix_timestamp(),
            exp: (now + self.access_ttl).unix_timestamp(),
            iss: ISSUER.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// What a well-signed, unexpired access token grants; whether its session is still
    /// open is for [`super::Revocations`] to say.
    pub fn verify_access(&self, token: &str) -> Option<Grant> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| Grant {
                user_id: data.claims.sub,
                session_id: data.claims.sid,
                expires_at: data.claims.exp,
            })
    }
}

/// A parsed refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub user_id: Uuid,
    pub family_id: Uuid,
    secret: [u8; 32],
}

impl RefreshToken {
    pub fn generate(user_id: Uuid, family_id: Uuid) -> Self {
        Self {
            user_id,
            family_id,
            secret: rand::random(),
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.trim().strip_prefix(REFRESH_PREFIX)?)
            .ok()?;
        if bytes.len() != 64 {
            return None;
        }
        let (user, rest) = bytes.split_at(16);
        let (family, secret) = rest.split_at(16);
        Some(Self {
            user_id: Uuid::from_slice(user).ok()?,
            family_id: Uuid::from_slice(family).ok()?,
            secret: secret.try_into().ok()?,
        })
    }

    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(self.user_id.as_bytes());
        bytes.extend_from_slice(self.family_id.as_bytes());
        bytes.extend_from_slice(&self.secret);
        format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// What the store keeps: the hex SHA-256 of the secret.
    pub fn secret_hash(&self) -> String {
        Sha256::digest(self.secret)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(
            &SecretString::from(secret.to_owned()),
            Duration::minutes(15),
            Duration::days(30),
        )
    }

    #[test]
    fn an_issued_access_token_verifies_to_its_user_and_session() {
        let keys = keys("a-test-secret-of-enough-length!!");
        let user = Uuid::now_v7();
        let session = Uuid::now_v7();
        let token = keys
            .issue_access(user, session, OffsetDateTime::now_utc())
            .expect("signs");
        let grant = keys.verify_access(&token).expect("valid");
        assert_eq!((grant.user_id, grant.session_id), (user, session));
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_rejected() {
        let keys = keys("a-test-secret-of-enough-length!!");
        let user = Uuid::now_v7();
        let old = OffsetDateTime::now_utc() - Duration::hours(1);
        let expired = keys.issue_access(user, user, old).expect("signs");
        assert_eq!(keys.verify_access(&expired), None);

        let other = self::keys("another-secret-of-enough-length!")
            .issue_access(user, user, OffsetDateTime::now_utc())
            .expect("signs");
        assert_eq!(keys.verify_access(&other), None);
        assert_eq!(keys.verify_access("not.a.token"), None);
    }

    #[test]
    fn tokens_with_another_algorithm_or_none_are_rejected() {
        let keys = keys("a-test-secret-of-enough-length!!");
        let user = Uuid::now_v7();
        let now = OffsetDateTime::now_utc();
        let claims = AccessClaims {
            sub: user,
            sid: user,
            iat: now.unix_timestamp(),
            exp: (now + Duration::minutes(5)).unix_timestamp(),
            iss: ISSUER.to_owned(),
        };
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"a-test-secret-of-enough-length!!"),
        )
        .expect("signs");
        assert_eq!(keys.verify_access(&hs512), None);

        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"));
        assert_eq!(keys.verify_access(&format!("{header}.{body}.")), None);
    }

    #[test]
    fn refresh_tokens_round_trip_and_reject_garbage() {
        let token = RefreshToken::generate(Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(RefreshToken::parse(&token.encode()), Some(token.clone()));
        assert_eq!(token.secret_hash().len(), 64);
        for bad in ["", "prt_", "prt_!!!", "xyz", &token.encode()[..40]] {
            assert_eq!(RefreshToken::parse(bad), None, "{bad}");
        }
    }
}
