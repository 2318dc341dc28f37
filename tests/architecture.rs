//! Keeps the tree reading like the design (docs/architecture.md): no import cycle between the
//! crate's top-level modules, `config` a leaf, `http` building no Azure client (the composition
//! root `service` does), no source file over 600 lines before its tests, and integration tests
//! that start child processes only through `tests/common/proc.rs`. It reads the sources as text:
//! a `crate::x` path outside comments and `#[cfg(test)]` modules is an import of `x`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES_BEFORE_TESTS: usize = 600;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The code of a file without its `#[cfg(test)]` module and without `//` comments.
fn code(text: &str) -> String {
    let body = text.find("#[cfg(test)]").map_or(text, |i| &text[..i]);
    body.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// The top-level module a file of `src/` belongs to (`None` for the crate root and binaries).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (!matches!(name.as_str(), "lib" | "main" | "bin")).then_some(name)
}

/// The identifiers following each `crate::` in `code`, `crate::{a, b::c}` included.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        // `$crate::` in a macro, or a longer word ending in `crate`.
        if i > 0 && code[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.insert(name);
            }
        } else {
            out.insert(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out
}

/// Module → the other top-level modules it imports, and a file that does, per edge.
fn module_graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = root().join("src");
    let files = rust_files(&src);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = top_module(&src, file) else { continue };
        let code = code(&std::fs::read_to_string(file).unwrap());
        let edges = graph.entry(from.clone()).or_default();
        for to in crate_paths(&code) {
            if to != from && modules.contains(&to) {
                edges.entry(to).or_insert_with(|| file.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    graph
}

/// The cycles of `graph`: its strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        for to in w.graph.get(v).into_iter().flat_map(|e| e.keys()) {
            let to = to.as_str();
            if !w.index.contains_key(to) {
                visit(w, to);
                w.low.insert(v, w.low[v].min(w.low[to]));
            } else if w.stack.contains(&to) {
                w.low.insert(v, w.low[v].min(w.index[to]));
            }
        }
        if w.low[v] == w.index[v] {
            let at = w.stack.iter().position(|m| *m == v).unwrap();
            let component: Vec<String> = w.stack.drain(at..).map(str::to_string).collect();
            if component.len() > 1 {
                w.found.push(component);
            }
        }
    }
    let mut w = Walk { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in graph.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.found
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = module_graph();
    assert!(graph.contains_key("chaos") && graph["chaos"].contains_key("faults"), "the graph reads imports: {graph:?}");
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|(to, _)| c.contains(to))
                        .map(move |(to, file)| format!("{from} -> {to} ({file})"))
                })
                .collect();
            format!("{c:?}: {}", edges.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "import cycles between top-level modules:\n{}", described.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let edge = |to: &str| BTreeMap::from([(to.to_string(), "f.rs".to_string())]);
    let graph =
        BTreeMap::from([("a".to_string(), edge("b")), ("b".to_string(), edge("c")), ("c".to_string(), edge("a"))]);
    assert_eq!(cycles(&graph).len(), 1);
    let graph = BTreeMap::from([("a".to_string(), edge("b")), ("b".to_string(), edge("c"))]);
    assert!(cycles(&graph).is_empty());
    assert_eq!(
        crate_paths("use crate::{a::X, b};\nlet y = crate::c::f(); $crate::d; foocrate::e"),
        BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()])
    );
}

#[test]
fn config_imports_no_other_module() {
    let graph = module_graph();
    let imports = graph.get("config").cloned().unwrap_or_default();
    assert!(imports.is_empty(), "config must be a leaf (settings only), but imports {imports:?}");
}

#[test]
fn http_builds_no_azure_client() {
    let graph = module_graph();
    let azure = graph.get("http").and_then(|e| e.get("azure"));
    assert!(azure.is_none(), "http reaches azure in {azure:?}: the composition root (src/service.rs) builds clients");
    for file in rust_files(&root().join("src/http")) {
        let code = code(&std::fs::read_to_string(&file).unwrap());
        for construct in ["Arm::new", "AzureNsg::new", "LocalProxy::start", "Store::new", "Ledger::open", "credential("]
        {
            assert!(!code.contains(construct), "{} calls {construct}: build it in src/service.rs", file.display());
        }
    }
}

#[test]
fn no_source_file_is_over_600_lines_before_its_tests() {
    let mut long = Vec::new();
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let before = text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).count();
        if before > MAX_LINES_BEFORE_TESTS {
            long.push(format!("{}: {before} lines", file.strip_prefix(root()).unwrap().display()));
        }
    }
    assert!(long.is_empty(), "split these along their concepts:\n{}", long.join("\n"));
}

/// What starting, waiting for or signalling a child process looks like in Rust source.
const PROCESS_CALLS: &[&str] = &[
    ".spawn()",
    ".output()",
    ".status().unwrap()",
    ".status().expect(",
    "wait_with_output",
    "tokio::process",
    "kill_on_drop",
    "process_group(",
    "killpg(",
];

/// The process calls in `code` (comments excluded).
fn process_calls(code: &str) -> Vec<&'static str> {
    let code: String = code.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n");
    PROCESS_CALLS.iter().copied().filter(|call| code.contains(call)).collect()
}

#[test]
fn integration_tests_start_processes_only_through_common() {
    let mut found = Vec::new();
    for file in rust_files(&root().join("tests")) {
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        // The one helper, and this file, which names the calls it looks for.
        if rel == "tests/common/proc.rs" || rel == "tests/architecture.rs" {
            continue;
        }
        let calls = process_calls(&std::fs::read_to_string(&file).unwrap());
        if !calls.is_empty() {
            found.push(format!("{rel}: {}", calls.join(", ")));
        }
    }
    assert!(found.is_empty(), "start processes through tests/common/proc.rs (Proc, output):\n{}", found.join("\n"));
}

#[test]
fn the_process_check_finds_a_spawn() {
    let code = "let c = Command::new(\"redis-server\").spawn().unwrap(); // .output()\nlet s = r.status();";
    assert_eq!(process_calls(code), [".spawn()"]);
}
