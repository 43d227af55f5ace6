//! The floor plan holds (docs/design.md): no source file imports one that imports it back,
//! directly or round a longer loop, and each edge imports only what it may. Read from the
//! source files' `use crate::…` / `use super::…` lines and their inline `crate::` paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rooms that do the bridge's work; the root files (error, signal, state files, TLS),
/// `settings/` and `time/` serve them all.
const ROOMS: &[&str] = &[
    "envoy",
    "readings",
    "mqtt",
    "topics",
    "ledger",
    "homeassistant",
    "run",
];

/// Rooms and the rooms they must not import (docs/design.md, "One-way edges").
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "envoy",
        &[
            "mqtt",
            "topics",
            "ledger",
            "homeassistant",
            "run",
            "readings",
        ],
    ),
    (
        "readings",
        &["mqtt", "topics", "ledger", "homeassistant", "run"],
    ),
    (
        "mqtt",
        &[
            "ledger",
            "homeassistant",
            "topics",
            "readings",
            "envoy",
            "run",
        ],
    ),
    ("topics", &["ledger", "homeassistant", "envoy", "run"]),
    ("ledger", &["homeassistant", "envoy", "run"]),
    ("homeassistant", &["ledger", "envoy", "run"]),
    ("settings", ROOMS),
    ("time", ROOMS),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every file of the library (the binary's `main.rs` and `allocator.rs` aside).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_name().unwrap();
            if dir != src() || (name != "main.rs" && name != "allocator.rs") {
                out.push(path);
            }
        }
    }
}

/// The code of a file without its comments (`//` to the end of the line).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap().trim();
        let path = path.strip_suffix("::self").unwrap_or(path);
        if !path.is_empty() {
            out.push(format!("{prefix}{path}"));
        }
        return;
    };
    let head = format!("{prefix}{}", &tree[..open]);
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&inner[start..i], &head, out);
                start = i + 1;
            }
            _ => {}
        }
    }
    expand(&inner[start..], &head, out);
}

/// The module path of each file, `#[path]` modules included.
fn modules(all: &[PathBuf]) -> BTreeMap<PathBuf, Vec<String>> {
    let mut map = BTreeMap::new();
    for f in all {
        let rel = f.strip_prefix(src()).unwrap().with_extension("");
        let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into()).collect();
        if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
            parts.pop();
        }
        map.insert(f.clone(), parts);
    }
    for f in all {
        let text = std::fs::read_to_string(f).unwrap();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if let Some(name) = line.trim().strip_prefix("#[path = \"") {
                let name = name.trim_end_matches("\"]");
                let decl = lines.next().unwrap().trim();
                let module = decl.trim_start_matches("mod ").trim_end_matches(';');
                let mut path = map[f].clone();
                path.push(module.to_string());
                map.insert(f.parent().unwrap().join(name), path);
            }
        }
    }
    map
}

/// The paths a file names, absolute from the crate root.
fn imports(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let code = code(text);
    let mut paths = Vec::new();
    for stmt in code.split(';') {
        // Attributes before a `use` (`#[cfg(test)]`) are not part of its path.
        let lines: Vec<&str> = stmt.trim().lines().collect();
        let start = lines
            .iter()
            .position(|l| !l.trim().starts_with("#["))
            .unwrap_or(0);
        let stmt = lines[start..].join("\n");
        let stmt = stmt.trim();
        let Some(tree) = stmt
            .strip_prefix("pub use ")
            .or_else(|| stmt.strip_prefix("pub(crate) use "))
            .or_else(|| stmt.strip_prefix("use "))
        else {
            continue;
        };
        expand(tree, "", &mut paths);
    }
    for (i, _) in code.match_indices("crate::") {
        let rest: String = code[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(rest.trim_end_matches(':').to_string());
    }
    paths
        .into_iter()
        .filter_map(|p| {
            let parts: Vec<&str> = p.split("::").collect();
            match parts[0] {
                "crate" => Some(parts[1..].iter().map(|s| s.to_string()).collect()),
                "super" | "self" => {
                    // A `mod.rs` is its folder's module: `super` is the folder's parent.
                    let mut at = if parts[0] == "self" {
                        module.to_vec()
                    } else {
                        module[..module.len().saturating_sub(1)].to_vec()
                    };
                    let mut rest = &parts[1..];
                    while rest.first() == Some(&"super") {
                        at.pop();
                        rest = &rest[1..];
                    }
                    at.extend(rest.iter().map(|s| s.to_string()));
                    Some(at)
                }
                _ => None,
            }
        })
        .collect()
}

/// The file a path lands in: the deepest module it names.
fn resolve(path: &[String], by_module: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    (0..=path.len())
        .rev()
        .find_map(|k| by_module.get(&path[..k].to_vec()).cloned())
}

#[test]
fn no_file_imports_one_that_imports_it_back_and_edges_go_one_way() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    assert!(all.len() > 40, "{} files", all.len());
    let modules = modules(&all);
    let by_module: BTreeMap<Vec<String>, PathBuf> = modules
        .iter()
        .map(|(f, m)| (m.clone(), f.clone()))
        .collect();
    let mut graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut broken = Vec::new();
    for (file, module) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        for path in imports(&text, module) {
            let room = module.first().map(String::as_str).unwrap_or("");
            if let (Some((_, banned)), Some(target)) =
                (FORBIDDEN.iter().find(|(r, _)| *r == room), path.first())
            {
                if banned.contains(&target.as_str()) {
                    broken.push(format!("{} imports {}", file.display(), path.join("::")));
                }
            }
            // A parent's `mod.rs` re-exports its children: naming it is not an edge back.
            let Some(to) = resolve(&path, &by_module).filter(|t| t != file) else {
                continue;
            };
            let is_parent = to.ends_with("mod.rs") && file.starts_with(to.parent().unwrap());
            if !is_parent && !to.ends_with("lib.rs") {
                graph.entry(file.clone()).or_default().insert(to);
            }
        }
    }
    assert!(
        broken.is_empty(),
        "one-way edges broken:\n{}",
        broken.join("\n")
    );
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    assert!(edges > 100, "{edges} imports read: the reader missed them");
    // Any loop in the graph, by depth-first search.
    fn visit(
        f: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, bool>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        match state.get(f) {
            Some(true) => return None,
            Some(false) => {
                let at = stack.iter().position(|s| s == f).unwrap();
                return Some(stack[at..].to_vec());
            }
            None => {}
        }
        state.insert(f.clone(), false);
        stack.push(f.clone());
        for to in graph.get(f).into_iter().flatten() {
            if let Some(cycle) = visit(to, graph, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(f.clone(), true);
        None
    }
    let mut state = BTreeMap::new();
    for f in graph.keys() {
        let cycle = visit(f, &graph, &mut state, &mut Vec::new());
        let names: Vec<String> = cycle
            .unwrap_or_default()
            .iter()
            .map(|p| p.strip_prefix(src()).unwrap().display().to_string())
            .collect();
        assert!(
            names.is_empty(),
            "files import each other: {}",
            names.join(" → ")
        );
    }
}

#[test]
fn no_file_over_600_lines_outside_tests() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let long: Vec<String> = all
        .iter()
        .filter(|f| !f.to_string_lossy().contains("tests"))
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 600).then(|| format!("{}: {n}", f.display()))
        })
        .collect();
    assert!(!all.is_empty() && long.is_empty(), "{long:?}");
}
