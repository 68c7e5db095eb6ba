//! `@mention` parsing: `@` then `[A-Za-z0-9_.]+`, at the start or after a non-word
//! character, case-insensitive; a trailing `.` ends the sentence, not the name.

use std::collections::BTreeSet;

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
