//! The consumer's modules import each other in one direction only: no module both uses and is
//! used by another, directly or through others. Read from the sources, so a new cycle fails here.

use std::collections::{BTreeMap, BTreeSet};

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("consumer/src") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            modules.insert(name, std::fs::read_to_string(&path).expect("source"));
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .into_iter()
        .map(|(name, source)| {
            let uses = names
                .iter()
                .filter(|other| **other != name)
                .filter(|other| {
                    let path = format!("crate::{other}");
                    source.lines().filter(|l| !l.trim_start().starts_with("//")).any(|l| {
                        l.match_indices(&path).any(|(i, _)| {
                            let next = l[i + path.len()..].chars().next();
                            !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                        })
                    })
                })
                .cloned()
                .collect();
            (name, uses)
        })
        .collect()
}

#[test]
fn consumer_modules_import_each_other_in_one_direction_only() {
    let graph = graph();
    assert!(graph.contains_key("handler") && graph["handler"].contains("settle"), "the graph was read: {graph:?}");
    // Depth-first search for a back edge.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| *n == node) {
            panic!("import cycle: {} -> {node}", path[at..].join(" -> "));
        }
        path.push(node);
        for next in &graph[node] {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node);
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
    println!("consumer/src: {} modules, no import cycle: {graph:?}", graph.len());
}
