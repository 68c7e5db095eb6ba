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
        single_line(raw, field, Self::MAX).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Trimmed text that may span lines: Windows line ends become `\n`, and control
/// characters other than newline and tab (NUL, the rest of C0, DEL, C1) are refused,
/// since they corrupt what clients display and what other systems store.
fn multi_line(raw: &str, field: &'static str) -> Result<String, InputError> {
    let text = raw.trim().replace("\r\n", "\n");
    only_newline_and_tab_controls(&text, field)?;
    Ok(text)
}

/// Refuses control characters other than newline and tab.
fn only_newline_and_tab_controls(text: &str, field: &'static str) -> Result<(), InputError> {
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(InputError::new(
            field,
            "must not contain control characters other than newline and tab",
        ));
    }
    Ok(())
}

/// Trimmed text of 1 to `max` Unicode scalar values without control characters.
fn single_line(raw: &str, field: &'static str, max: usize) -> Result<String, InputError> {
    let text = raw.trim();
    let len = text.chars().count();
    if len == 0 {
        return Err(InputError::new(field, "must not be empty"));
    }
    if len > max {
        return Err(InputError::new(
            field,
            format!("must be at most {max} characters long"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(InputError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(text.to_owned())
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

/// A message body: 1 to `max_chars` Unicode scalar values after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageBody(String);

impl MessageBody {
    pub const DEFAULT_MAX: usize = 4_000;

    pub fn parse(raw: &str, field: &'static str, max_chars: usize) -> Result<Self, InputError> {
        let body = multi_line(raw, field)?;
        let len = body.chars().count();
        if len == 0 {
            return Err(InputError::new(field, "must not be empty"));
        }
        if len > max_chars {
            return Err(InputError::new(
                field,
                format!("must be at most {max_chars} characters long"),
            ));
        }
        Ok(Self(body))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A group title or channel name: 1–100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Title(String);

impl Title {
    pub const MAX: usize = 100;

    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InputError> {
        single_line(raw, field, Self::MAX).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A conversation description: at most 1,000 characters after trimming.
pub fn parse_description(raw: &str, field: &'static str) -> Result<String, InputError> {
    let description = multi_line(raw, field)?;
    if description.chars().count() > 1_000 {
        return Err(InputError::new(
            field,
            "must be at most 1000 characters long",
        ));
    }
    Ok(description)
}

/// A channel slug: 2–64 characters of `[a-z0-9-]`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    pub const MIN: usize = 2;
    pub const MAX: usize = 64;

    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InputError> {
        let slug = raw.trim().to_lowercase();
        let len = slug.chars().count();
        if !(Self::MIN..=Self::MAX).contains(&len) {
            return Err(InputError::new(
                field,
                format!("must be {} to {} characters long", Self::MIN, Self::MAX),
            ));
        }
        if !slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            || slug.starts_with('-')
            || slug.ends_with('-')
        {
            return Err(InputError::new(
                field,
                "may contain only a-z, digits and inner '-'",
            ));
        }
        Ok(Self(slug))
    }

    /// Derives a slug from a channel name: ASCII letters and digits kept, runs of
    /// anything else become one `-`.
    pub fn derive(name: &str, field: &'static str) -> Result<Self, InputError> {
        let mut slug = String::new();
        for c in name.trim().to_lowercase().chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.ends_with('-') && !slug.is_empty() {
                slug.push('-');
            }
        }
        let slug: String = slug.trim_end_matches('-').chars().take(Self::MAX).collect();
        Self::parse(slug.trim_end_matches('-'), field).map_err(|_| {
            InputError::new(
                field,
                "cannot derive a slug from this name; give one explicitly",
            )
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A reaction: one emoji (including skin-tone and ZWJ sequences) or a `:shortcode:` of
/// at most 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Emoji(String);

impl Emoji {
    pub const MAX_SHORTCODE: usize = 32;

    pub fn parse(raw: &str, field: &'static str) -> Result<Self, InputError> {
        let emoji = raw.trim();
        if let Some(inner) = emoji
            .strip_prefix(':')
            .and_then(|rest| rest.strip_suffix(':'))
        {
            let valid = !inner.is_empty()
                && emoji.chars().count() <= Self::MAX_SHORTCODE
                && inner
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'));
            return if valid {
                Ok(Self(emoji.to_lowercase()))
            } else {
                Err(InputError::new(
                    field,
                    "a shortcode is :name: with letters, digits, '_', '+' or '-', at most 32 characters",
                ))
            };
        }
        let without_selector: String = emoji.chars().filter(|&c| c != '\u{fe0f}').collect();
        if emojis::get(emoji).is_some() || emojis::get(&without_selector).is_some() {
            Ok(Self(emoji.to_owned()))
        } else {
            Err(InputError::new(
                field,
                "must be a single emoji or a :shortcode:",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A moderation reason: at most 500 characters after trimming; `required` for kicks,
/// bans, mutes and deleting others' messages. Blank counts as absent.
pub fn parse_reason(raw: Option<&str>, required: bool) -> Result<Option<String>, InputError> {
    let reason = raw
        .map(|r| multi_line(r, "reason"))
        .transpose()?
        .filter(|r| !r.is_empty());
    match reason {
        None if required => Err(InputError::new("reason", "is required for this action")),
        None => Ok(None),
        Some(reason) if reason.chars().count() > 500 => Err(InputError::new(
            "reason",
            "must be at most 500 characters long",
        )),
        Some(reason) => Ok(Some(reason)),
    }
}

/// A list of ids from a client: each well-formed, duplicates dropped (the first place
/// kept), at most `max` of them. The bound is checked before anything is parsed, so an
/// oversized list costs nothing further.
pub fn parse_id_list<S: AsRef<str>>(
    raw: &[S],
    field: &'static str,
    max: usize,
) -> Result<Vec<uuid::Uuid>, InputError> {
    if raw.len() > max {
        return Err(InputError::new(
            field,
            format!("may list at most {max} ids"),
        ));
    }
    let mut ids = Vec::with_capacity(raw.len());
    for id in raw {
        let id = uuid::Uuid::parse_str(id.as_ref().trim())
            .map_err(|_| InputError::new(field, format!("{:?} is not an id", id.as_ref())))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// What a search looks for: any text without control characters other than newline
/// and tab, which no name or message holds (and a NUL no database takes in a query).
pub fn parse_search_query<'a>(raw: &'a str, field: &'static str) -> Result<&'a str, InputError> {
    only_newline_and_tab_controls(raw, field)?;
    Ok(raw)
}

/// A client-chosen idempotency key for `sendMessage`: 1–64 characters.
pub fn parse_client_message_id(raw: &str, field: &'static str) -> Result<String, InputError> {
    let len = raw.chars().count();
    if len == 0 || len > 64 {
        return Err(InputError::new(field, "must be 1 to 64 characters long"));
    }
    if raw.chars().any(char::is_control) {
        return Err(InputError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod conversation_value_tests {
    use super::*;

    #[test]
    fn search_queries_refuse_control_characters_but_not_newlines_or_tabs() {
        assert_eq!(parse_search_query("a\tb\nc", "query"), Ok("a\tb\nc"));
        assert_eq!(parse_search_query("\"NEAR(*", "query"), Ok("\"NEAR(*"));
        for bad in ["a\u{0}", "\u{1b}[31m", "x\u{7f}"] {
            assert_eq!(
                parse_search_query(bad, "query").map_err(|e| e.field),
                Err("query"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn message_bodies_are_trimmed_and_bounded_in_scalar_values() {
        assert_eq!(
            MessageBody::parse("  hi  ", "body", 10).map(MessageBody::into_string),
            Ok("hi".to_owned())
        );
        assert!(MessageBody::parse("   ", "body", 10).is_err());
        assert!(MessageBody::parse(&"é".repeat(10), "body", 10).is_ok());
        assert!(MessageBody::parse(&"é".repeat(11), "body", 10).is_err());
    }

    #[test]
    fn text_refuses_control_characters_other_than_newline_and_tab() {
        for bad in [
            "a\0b",
            "bell\u{7}!",
            "del\u{7f}!",
            "c1\u{85}!",
            "esc\u{1b}[31m",
            "cr\ronly",
        ] {
            let err = MessageBody::parse(bad, "body", 100).expect_err(bad);
            assert_eq!(err.field, "body");
            assert!(parse_description(bad, "description").is_err(), "{bad:?}");
            assert!(parse_reason(Some(bad), false).is_err(), "{bad:?}");
            assert!(Title::parse(bad, "title").is_err(), "{bad:?}");
            assert!(DisplayName::parse(bad, "displayName").is_err(), "{bad:?}");
            assert!(
                parse_client_message_id(bad, "clientMessageId").is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            MessageBody::parse("line one\r\n\tline two", "body", 100).map(MessageBody::into_string),
            Ok("line one\n\tline two".to_owned())
        );
        assert!(Title::parse("two\nlines", "title").is_err());
    }

    #[test]
    fn slugs_are_derived_from_names_or_validated() {
        assert_eq!(
            Slug::derive("  Rust & Friends!! ", "name").map(|s| s.0),
            Ok("rust-friends".to_owned())
        );
        assert!(Slug::derive("!!!", "name").is_err());
        assert!(Slug::parse("general", "slug").is_ok());
        for bad in ["a", "-x", "x-", "has space", "ünï", &"x".repeat(65)] {
            assert!(Slug::parse(bad, "slug").is_err(), "{bad}");
        }
    }

    #[test]
    fn reactions_are_single_emoji_or_shortcodes() {
        for ok in [
            "👍",
            "👍🏽",
            "❤️",
            "👩‍👩‍👧",
            ":thumbsup:",
            ":+1:",
            ":party-parrot:",
        ] {
            assert!(Emoji::parse(ok, "emoji").is_ok(), "{ok}");
        }
        for bad in [
            "",
            "lol",
            "👍👍",
            "a👍",
            "::",
            ":has space:",
            &format!(":{}:", "x".repeat(31)),
        ] {
            assert!(Emoji::parse(bad, "emoji").is_err(), "{bad}");
        }
    }

    #[test]
    fn id_lists_are_well_formed_deduplicated_and_bounded() {
        let a = uuid::Uuid::from_u128(1).to_string();
        let b = uuid::Uuid::from_u128(2).to_string();
        assert_eq!(
            parse_id_list(&[&a, &b, &a], "ids", 3),
            Ok(vec![uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2)])
        );
        let err = parse_id_list(&[&a, "junk"], "ids", 3).expect_err("junk");
        assert_eq!(err.field, "ids");
        let err = parse_id_list(&[&a, &a, &a, &a], "memberIds", 3).expect_err("too many");
        assert_eq!(err.field, "memberIds");
        assert_eq!(parse_id_list::<&str>(&[], "ids", 3), Ok(vec![]));
    }

    #[test]
    fn client_message_ids_are_at_most_64_characters() {
        assert!(parse_client_message_id(&"x".repeat(64), "clientMessageId").is_ok());
        assert!(parse_client_message_id(&"x".repeat(65), "clientMessageId").is_err());
        assert!(parse_client_message_id("", "clientMessageId").is_err());
    }
}
