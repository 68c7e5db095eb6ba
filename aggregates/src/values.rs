//! Validated input newtypes shared by the aggregates.
//!
//! Each type has a `parse` constructor that is the single place its rule lives; the
//! API layer never re-checks these rules, it only maps [`InputError`] to `BAD_USER_INPUT`.

use serde::{Deserialize, Serialize};

/// A rejected input value, naming the API field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    pub field: &'static str,
    pub message: String,
}

impl InputError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A username: trimmed and lowercased, then 3–32 characters of `[a-z0-9_.]`.
///
/// Lowercasing happens before the check, so `Alice` and `alice` are the same name and
/// collide as a conflict rather than failing validation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub const MIN: usize = 3;
    pub const MAX: usize = 32;

    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InputError> {
        let name = raw.trim().to_lowercase();
        let len = name.chars().count();
        if !(Self::MIN..=Self::MAX).contains(&len) {
            return Err(InputError::new(
                field,
                format!("must be {} to {} characters long", Self::MIN, Self::MAX),
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        {
            return Err(InputError::new(
                field,
                "may contain only letters a-z, digits, '_' and '.'",
            ));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 1–64 Unicode scalar values after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX: usize = 64;

    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InputError> {
        let name = raw.trim();
        let len = name.chars().count();
        if len == 0 {
            return Err(InputError::new(field, "must not be empty"));
        }
        if len > Self::MAX {
            return Err(InputError::new(
                field,
                format!("must be at most {} characters long", Self::MAX),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(InputError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as typed: 10–1,024 bytes. Never stored or logged; only its hash is.
pub struct Password<'a>(&'a str);

impl<'a> Password<'a> {
    pub const MIN_BYTES: usize = 10;
    pub const MAX_BYTES: usize = 1024;

    pub fn parse(raw: &'a str, field: &'static str) -> Result<Self, InputError> {
        let len = raw.len();
        if len < Self::MIN_BYTES {
            return Err(InputError::new(
                field,
                format!("must be at least {} bytes long", Self::MIN_BYTES),
            ));
        }
        if len > Self::MAX_BYTES {
            return Err(InputError::new(
                field,
                format!("must be at most {} bytes long", Self::MAX_BYTES),
            ));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &'a str {
        self.0
    }
}

impl std::fmt::Debug for Password<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_trimmed_and_lowercased_before_the_rules_apply() {
        assert_eq!(
            Username::parse("  Alice.B_1 ", "username").map(|u| u.0),
            Ok("alice.b_1".to_owned())
        );
    }

    #[test]
    fn usernames_outside_the_rules_are_rejected_naming_the_field() {
        for bad in [
            "ab",
            "",
            "   ",
            "a-b-c",
            "ünïcode",
            &"x".repeat(33),
            "with space",
        ] {
            let err = Username::parse(bad, "username").expect_err(bad);
            assert_eq!(err.field, "username");
        }
        assert!(Username::parse(&"x".repeat(32), "username").is_ok());
        assert!(Username::parse("abc", "username").is_ok());
    }

    #[test]
    fn display_names_count_unicode_scalar_values_after_trimming() {
        assert!(DisplayName::parse(&"é".repeat(64), "displayName").is_ok());
        assert!(DisplayName::parse(&"é".repeat(65), "displayName").is_err());
        assert!(DisplayName::parse("   ", "displayName").is_err());
        assert_eq!(
            DisplayName::parse("  Bob  ", "displayName").map(|d| d.0),
            Ok("Bob".to_owned())
        );
    }

    #[test]
    fn passwords_are_between_10_and_1024_bytes() {
        assert!(Password::parse("123456789", "password").is_err());
        assert!(Password::parse("1234567890", "password").is_ok());
        assert!(Password::parse(&"p".repeat(1024), "password").is_ok());
        assert!(Password::parse(&"p".repeat(1025), "password").is_err());
    }
}
