//! The `parley` server and CLI: configuration, event-store wiring, authentication,
//! the GraphQL API and the HTTP server.

pub mod app;
pub mod audit;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod graphql;
pub mod http;
pub mod live;
pub mod rate;
pub mod startup;
pub mod telemetry;

/// The modules of this crate depend on each other without a cycle. Read from the
/// sources: every `crate::module` a top-level module names is an edge
/// (`cargo test --lib layering` checks it).
#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir)
            .expect("readable source dir")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }

    /// The modules named after `crate::`, including `crate::{a, b::c}` groups.
    fn named(text: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let heads: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .collect(),
                None => vec![rest],
            };
            for head in heads {
                let name: String = head
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        }
        names
    }

    #[test]
    fn no_module_depends_on_itself_through_others() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let relative = file.strip_prefix(&src).expect("under src");
            let top = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default()
                .trim_end_matches(".rs")
                .to_owned();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("readable source");
            let edges = graph.entry(top.clone()).or_default();
            edges.extend(named(&text).into_iter().filter(|name| *name != top));
        }
        assert!(graph.len() > 5, "modules found: {graph:?}");
        // Depth-first search for a path back to where it started.
        fn reaches(
            graph: &BTreeMap<String, BTreeSet<String>>,
            from: &str,
            target: &str,
            seen: &mut BTreeSet<String>,
            path: &mut Vec<String>,
        ) -> bool {
            for next in graph.get(from).into_iter().flatten() {
                path.push(next.clone());
                if next == target
                    || (seen.insert(next.clone()) && reaches(graph, next, target, seen, path))
                {
                    return true;
                }
                path.pop();
            }
            false
        }
        for module in graph.keys() {
            let mut path = vec![module.clone()];
            let cycle = reaches(&graph, module, module, &mut BTreeSet::new(), &mut path);
            assert!(!cycle, "module cycle: {}", path.join(" -> "));
        }
    }
}
