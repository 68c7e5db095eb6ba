//! `@mention` parsing: `@` then `[A-Za-z0-9_.]+`, at the start or after a non-word
//! character, case-insensitive; a trailing `.` ends the sentence, not the name.
//!
//! Names are resolved to accounts outside the aggregates: the command service looks the
//! mentioned names up in its directory and hands the answer in with the command
//! ([`Named`]). So no aggregate, event or snapshot keeps usernames, which are personal
//! data an erasure must be able to remove.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Accounts by (lowercase) username: what the command service's directory found for the
/// names a body mentions. Names nobody holds are absent.
pub type Named = BTreeMap<String, Uuid>;

/// A directory answering for `people`, as tests hand one to commands.
#[cfg(test)]
pub(crate) fn directory_of(people: &[(&str, Uuid)]) -> Named {
    people
        .iter()
        .map(|(name, id)| ((*name).to_owned(), *id))
        .collect()
}

/// Who `body` mentions: the accounts `named` under a name it mentions that are members,
/// never its author.
pub fn mentions_in(
    body: &str,
    named: &Named,
    is_member: impl Fn(&Uuid) -> bool,
    author_id: Uuid,
) -> BTreeSet<Uuid> {
    let names = mentioned_names(body);
    named
        .iter()
        .filter(|(name, user_id)| {
            **user_id != author_id && is_member(user_id) && names.contains(name.as_str())
        })
        .map(|(_, user_id)| *user_id)
        .collect()
}

/// The lowercased names mentioned in `body`, each once.
pub fn mentioned_names(body: &str) -> BTreeSet<String> {
    let chars: Vec<char> = body.chars().collect();
    let mut names = BTreeSet::new();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '@' && (i == 0 || !is_word(chars[i - 1])) {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && is_name(chars[end]) {
                end += 1;
            }
            let name: String = chars[start..end].iter().collect();
            let name = name.trim_end_matches('.');
            if !name.is_empty() {
                names.insert(name.to_ascii_lowercase());
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(body: &str) -> Vec<String> {
        mentioned_names(body).into_iter().collect()
    }

    #[test]
    fn mentions_follow_the_rules() {
        assert_eq!(names("@Bob hi"), vec!["bob"]);
        assert_eq!(names("hi @bob."), vec!["bob"]);
        assert_eq!(
            names("ask @bob.smith, @carol_1!"),
            vec!["bob.smith", "carol_1"]
        );
        assert_eq!(names("(@dave)"), vec!["dave"]);
        assert!(names("mail me: bob@example.com").is_empty());
        assert!(names("@ alone and @.").is_empty());
        assert_eq!(names("@bob @BOB"), vec!["bob"]);
    }
}
