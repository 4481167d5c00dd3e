//! The source tree keeps its shape: each top-level module uses only the
//! modules below it (README's "Source layout"), and no two files import
//! each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules, lowest first: each may use only those before it.
const LAYERS: &[&str] = &[
    "private_file",
    "auth",
    "config",
    "jupyter",
    "front",
    "daemon",
    "cli",
];

/// Every `.rs` file under `src/` (but `bin/`) as (module path, text without
/// its `#[cfg(test)]` tail and without comments).
fn sources() -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "bin" {
                    let mut p = prefix.to_vec();
                    p.push(name);
                    walk(&path, &p, out);
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else {
                continue;
            };
            let mut module = prefix.to_vec();
            if stem != "mod" && stem != "lib" {
                module.push(stem.to_string());
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(module, code);
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

/// `a::{b, c::{d}}` → `a::b`, `a::c::d`.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let (prefix, inner) = (&tree[..open], &tree[open + 1..tree.len().saturating_sub(1)]);
    let (mut parts, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in inner.chars() {
        match c {
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            '{' | '}' => {
                depth += if c == '{' { 1 } else { -1 };
                current.push(c);
            }
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand_use_tree(&format!("{prefix}{p}")))
        .collect()
}

/// The modules a file refers to through `crate::` and `super::` paths and
/// its `use` items (also of its own child modules), resolved to the
/// longest known module path.
fn references(
    module: &[String],
    code: &str,
    known: &BTreeSet<Vec<String>>,
) -> BTreeSet<Vec<String>> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = BTreeSet::new();
    let mut resolve = |path: &str| {
        let mut segs = path
            .split("::")
            .map(|s| s.chars().take_while(|&c| is_ident(c)).collect::<String>());
        let mut base = match segs.next().as_deref() {
            Some("crate") => Vec::new(),
            Some("super") => module[..module.len().saturating_sub(1)].to_vec(),
            Some(first) => {
                let mut child = module.to_vec();
                child.push(first.to_string());
                if !known.contains(&child) {
                    return;
                }
                child
            }
            None => return,
        };
        base.extend(segs.take_while(|s| !s.is_empty() && s != "self"));
        while !base.is_empty() && !known.contains(&base) {
            base.pop();
        }
        if !base.is_empty() && base != module {
            out.insert(base);
        }
    };
    for (i, _) in code.match_indices("use ") {
        if i > 0 && code[..i].ends_with(is_ident) {
            continue;
        }
        let item = code[i + 4..].split(';').next().unwrap_or("");
        for path in expand_use_tree(item) {
            resolve(&path);
        }
    }
    for prefix in ["crate::", "super::"] {
        for (i, _) in code.match_indices(prefix) {
            if i > 0 && code[..i].ends_with(|c: char| is_ident(c) || c == '$' || c == ':') {
                continue;
            }
            resolve(&code[i..]);
        }
    }
    out
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let sources = sources();
    let known: BTreeSet<Vec<String>> = sources.keys().cloned().collect();
    let mut edges = BTreeSet::new();
    let mut wrong = Vec::new();
    for (module, code) in &sources {
        for target in references(module, code, &known) {
            edges.insert((module.clone(), target.clone()));
            let (Some(from), Some(to)) = (module.first(), target.first()) else {
                continue;
            };
            if from == to {
                continue;
            }
            let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
            match (rank(from), rank(to)) {
                (Some(a), Some(b)) if b < a => {}
                _ => wrong.push(format!("{} uses {}", module.join("::"), target.join("::"))),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "modules must use only the layers below them ({LAYERS:?}, lowest first):\n{}",
        wrong.join("\n")
    );
    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
        panic!("files that import each other: {}", names.join(" -> "));
    }
    // The check sees the edges it guards (a parser that finds nothing passes anything).
    let has = |a: &str, b: &str| {
        edges.contains(&(
            a.split("::").map(String::from).collect(),
            b.split("::").map(String::from).collect(),
        ))
    };
    assert!(has("front::route", "front::login"), "{edges:?}");
    assert!(has("daemon::control", "front"), "{edges:?}");
    assert!(has("config", "auth::password"), "{edges:?}");
}

/// A cycle among the file-level edges, if any (depth-first search).
fn find_cycle(edges: &BTreeSet<(Vec<String>, Vec<String>)>) -> Option<Vec<Vec<String>>> {
    fn visit(
        node: &Vec<String>,
        next: &BTreeMap<&Vec<String>, Vec<&Vec<String>>>,
        done: &mut BTreeSet<Vec<String>>,
        path: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.clone());
        for n in next.get(node).into_iter().flatten() {
            if let Some(c) = visit(n, next, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.clone());
        None
    }
    let mut next: BTreeMap<&Vec<String>, Vec<&Vec<String>>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    let mut done = BTreeSet::new();
    for start in next.keys() {
        if let Some(c) = visit(start, &next, &mut done, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}
