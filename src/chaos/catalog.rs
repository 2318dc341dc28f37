//! The scenario catalog: `SCENARIOS_DIR/*.rhai`, read at startup and re-read when files are
//! added, changed or removed (polled once a second: it works the same on every filesystem,
//! container volumes included, and costs a `readdir` plus a `stat` per file).
//!
//! A scenario's header declares its description and parameters:
//! ```text
//! //! description: Block Redis, reset connections, measure detection and recovery.
//! //! param outage_s = 10   // seconds the block is held
//! //! guard: #{error_rate_pct: 5.0, window_s: 10}
//! ```
//! A `guard:` line holds a guard as a Rhai map, the same one `guard()` takes in the script; every
//! run of the scenario is held to it.
//! A file that does not compile (or whose header is malformed) is listed with its error and
//! cannot run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::guard::Guard;
use super::report::ScriptError;
use super::sandbox;

/// How often the folder is re-read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One declared parameter.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParamDecl {
    pub name: String,
    pub default: Value,
    pub description: Option<String>,
}

/// One scenario file.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Scenario {
    pub name: String,
    pub file: String,
    pub description: Option<String>,
    pub params: Vec<ParamDecl>,
    /// Guards every run of it is held to (`//! guard:` lines).
    pub guards: Vec<Guard>,
    /// Whether it can run.
    pub valid: bool,
    pub error: Option<ScriptError>,
    #[serde(skip)]
    pub source: String,
    #[serde(skip)]
    stamp: (SystemTime, u64),
}

/// The live catalog.
pub struct Catalog {
    dir: PathBuf,
    entries: RwLock<BTreeMap<String, Scenario>>,
}

impl Catalog {
    /// Reads `dir` now (a missing folder is an empty catalog, not an error).
    pub fn load(dir: PathBuf) -> Arc<Self> {
        let c = Arc::new(Self { dir, entries: RwLock::new(BTreeMap::new()) });
        c.rescan();
        c
    }

    /// Re-reads the folder on a timer until the catalog is dropped.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { break };
                // Reading files is blocking I/O; it is a handful of small files.
                let _ = tokio::task::spawn_blocking(move || c.rescan()).await;
            }
        });
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn list(&self) -> Vec<Scenario> {
        self.entries.read().unwrap().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Scenario> {
        self.entries.read().unwrap().get(name).cloned()
    }

    /// Brings the catalog in line with the folder; returns whether anything changed.
    pub fn rescan(&self) -> bool {
        let mut seen = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("rhai") {
                    continue;
                }
                let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
                let Ok(meta) = entry.metadata() else { continue };
                seen.insert(name, (path, (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len())));
            }
        }
        let mut entries = self.entries.write().unwrap();
        let before = entries.len();
        entries.retain(|name, _| seen.contains_key(name));
        let mut changed = entries.len() != before;
        for (name, (path, stamp)) in seen {
            if entries.get(&name).is_some_and(|s| s.stamp == stamp) {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("// unreadable: {e}"));
            let scenario = parse(&name, &path, source, stamp);
            match &scenario.error {
                Some(e) => {
                    tracing::warn!(scenario = %name, error = %e.message, line = ?e.line, "scenario does not compile")
                }
                None => tracing::info!(scenario = %name, "scenario loaded"),
            }
            entries.insert(name, scenario);
            changed = true;
        }
        changed
    }
}

/// Builds the catalog entry for one file: header, then a compile.
pub fn parse(name: &str, path: &Path, source: String, stamp: (SystemTime, u64)) -> Scenario {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let mut s = Scenario {
        name: name.to_string(),
        file,
        description: None,
        params: Vec::new(),
        guards: Vec::new(),
        valid: false,
        error: None,
        source: String::new(),
        stamp,
    };
    let header = parse_header(&source);
    match header {
        Ok(h) => {
            s.description = h.description;
            s.params = h.params;
            s.guards = h.guards;
            s.error = sandbox::compile(&source).err();
        }
        Err(e) => s.error = Some(e),
    }
    if !valid_name(name) && s.error.is_none() {
        s.error = Some(ScriptError {
            message: format!("scenario names use a-z, 0-9, '-' and '_' only; rename {name}.rhai"),
            line: None,
            column: None,
        });
    }
    s.valid = s.error.is_none();
    s.source = source;
    s
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// What a scenario's header declares.
#[derive(Debug, Default)]
pub struct Header {
    pub description: Option<String>,
    pub params: Vec<ParamDecl>,
    pub guards: Vec<Guard>,
}

/// Reads the leading `//!` lines: `description: …`, `param NAME = LITERAL // help` and
/// `guard: #{…}`.
pub fn parse_header(source: &str) -> Result<Header, ScriptError> {
    let mut description: Option<String> = None;
    let mut params: Vec<ParamDecl> = Vec::new();
    let mut guards: Vec<Guard> = Vec::new();
    for (i, raw) in source.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let Some(body) = trimmed.strip_prefix("//!") else { break };
        let body = body.trim();
        let err = |message: String| ScriptError { message, line: Some(line_no), column: Some(1) };
        if let Some(d) = body.strip_prefix("description:") {
            if description.is_some() {
                return Err(err("header declares 'description:' twice".into()));
            }
            description = Some(d.trim().to_string());
        } else if let Some(g) = body.strip_prefix("guard:") {
            let source = format!("scenario header line {line_no}");
            let map = sandbox::sandbox()
                .eval_expression::<rhai::Map>(g.trim())
                .map_err(|e| err(format!("a guard line holds a map like #{{error_rate_pct: 5.0}}: {e}")))?;
            let v: Value = rhai::serde::from_dynamic(&rhai::Dynamic::from_map(map)).map_err(|e| err(e.to_string()))?;
            guards.push(Guard::from_json(&v, &source).map_err(|e| err(format!("guard: {e}")))?);
        } else if let Some(p) = body.strip_prefix("param ") {
            let (decl, help) = match p.split_once("//") {
                Some((d, h)) => (d.trim(), Some(h.trim().to_string()).filter(|h| !h.is_empty())),
                None => (p.trim(), None),
            };
            let (name, literal) = decl
                .split_once('=')
                .ok_or_else(|| err(format!("expected 'param NAME = DEFAULT', got '//! {body}'")))?;
            let name = name.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err(format!("'{name}' is not a valid parameter name")));
            }
            let default = parse_literal(literal.trim()).ok_or_else(|| {
                err(format!(
                    "default of parameter '{name}' must be an int, float, true/false or a \"string\", got '{}'",
                    literal.trim()
                ))
            })?;
            if params.iter().any(|x| x.name == name) {
                return Err(err(format!("parameter '{name}' is declared twice")));
            }
            params.push(ParamDecl { name: name.to_string(), default, description: help });
        } else if !body.is_empty() {
            // Free text: more description.
            let d = description.get_or_insert_with(String::new);
            if !d.is_empty() {
                d.push(' ');
            }
            d.push_str(body);
        }
    }
    Ok(Header { description, params, guards })
}

fn parse_literal(s: &str) -> Option<Value> {
    match s {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    if s.starts_with('"') {
        return serde_json::from_str::<String>(s).ok().map(Value::String);
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_declares_description_and_params() {
        let src = "//! description: Break it.\n//! More words.\n//! param outage_s = 10 // hold\n//! param level = \"high\"\n//! param ratio = 0.5\n//! param go = true\nlog(\"x\");\n//! param ignored = 1\n";
        let Header { description: d, params: p, guards } = parse_header(src).unwrap();
        assert!(guards.is_empty());
        assert_eq!(d.as_deref(), Some("Break it. More words."));
        let names: Vec<_> = p.iter().map(|x| (x.name.as_str(), x.default.clone())).collect();
        assert_eq!(
            names,
            vec![
                ("outage_s", Value::from(10)),
                ("level", Value::from("high")),
                ("ratio", Value::from(0.5)),
                ("go", Value::from(true))
            ]
        );
        assert_eq!(p[0].description.as_deref(), Some("hold"));
    }

    #[test]
    fn header_errors_have_a_line() {
        let e = parse_header("//! description: x\n//! param n = five\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("parameter 'n'"), "{}", e.message);
    }

    #[test]
    fn header_guards_are_rhai_maps_checked_like_guard() {
        let h = parse_header("//! description: x\n//! guard: #{error_rate_pct: 5.0, window_s: 5}\n").unwrap();
        assert_eq!(h.guards.len(), 1);
        assert_eq!((h.guards[0].error_rate_pct, h.guards[0].window_s), (Some(5.0), 5));
        assert_eq!(h.guards[0].source, "scenario header line 2");
        let e = parse_header("//! guard: #{error_rate: 5}\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("unknown guard option 'error_rate'"), "{}", e.message);
        let e = parse_header("//! guard: 5\n").unwrap_err();
        assert!(e.message.contains("a guard line holds a map"), "{}", e.message);
    }
}
