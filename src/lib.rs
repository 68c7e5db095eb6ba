//! The `parley` server and CLI: configuration, event-store wiring, authentication,
//! the GraphQL API and the HTTP server.

pub mod app;
pub mod audit;
pub mod auth;
pub mod blob;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod export;
pub mod graphql;
pub mod http;
pub mod live;
pub mod metrics;
pub mod privacy;
pub mod progress;
pub mod rate;
pub mod seed;
pub mod startup;
pub mod telemetry;
pub mod uploads;

/// Within each crate of the workspace, modules depend on each other without a cycle
/// (between crates, Cargo already forbids one). Read from the sources: every
/// `crate::module` (or an item `lib.rs` re-exports from it) that a top-level module
/// names is an edge. `cargo test --lib layering` checks it.
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

    fn identifier(text: &str) -> String {
        text.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    }

    /// The names after `crate::`, including `crate::{a, b::c}` groups.
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
            names.extend(heads.into_iter().map(identifier).filter(|n| !n.is_empty()));
        }
        names
    }

    /// What `lib.rs` re-exports from its own modules: item → module.
    fn reexports(lib: &str) -> BTreeMap<String, String> {
        let mut aliases = BTreeMap::new();
        for line in lib.lines() {
            let Some(path) = line
                .trim()
                .strip_prefix("pub use ")
                .or_else(|| line.trim().strip_prefix("pub(crate) use "))
            else {
                continue;
            };
            let Some((module, items)) = path.trim_end_matches(';').split_once("::") else {
                continue;
            };
            let items = items.trim_start_matches('{').trim_end_matches('}');
            for item in items.split(',') {
                let item = identifier(item.rsplit("::").next().unwrap_or_default());
                if !item.is_empty() {
                    aliases.insert(item, module.to_owned());
                }
            }
        }
        aliases
    }

    fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
        let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
        let aliases = reexports(&lib);
        let mut files = Vec::new();
        sources(src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let relative = file.strip_prefix(src).expect("under src");
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
            for name in named(&text) {
                let module = aliases.get(&name).cloned().unwrap_or(name);
                if module != top {
                    edges.insert(module);
                }
            }
        }
        let modules: BTreeSet<String> = graph.keys().cloned().collect();
        for edges in graph.values_mut() {
            edges.retain(|module| modules.contains(module));
        }
        graph
    }

    /// A path from `from` back to `target`, if any.
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

    #[test]
    fn no_module_depends_on_itself_through_others() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for crate_src in ["src", "aggregates/src", "store/src", "projections/src"] {
            let graph = graph(&root.join(crate_src));
            assert!(graph.len() > 3, "{crate_src}: modules found: {graph:?}");
            for module in graph.keys() {
                let mut path = vec![module.clone()];
                let cycle = reaches(&graph, module, module, &mut BTreeSet::new(), &mut path);
                assert!(!cycle, "{crate_src}: module cycle {}", path.join(" -> "));
            }
        }
    }
}
