//! Configuration: `routes.yaml` → raw serde structs (unknown keys collected, not stopped at) →
//! validation that collects every problem with its `FILE:LINE:COL` → the runtime model. First stage of the
//! data path: nothing runs on a config that did not pass all three.

pub mod interp;
pub mod model;
pub mod raw;
pub mod reload;
pub mod secret;
pub mod units;
pub mod validate;

pub use model::*;
pub use secret::Secret;

use serde_saphyr::Location;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One problem in the config file, with its position (line 0 = the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl Diagnostic {
    pub fn at(loc: &Location, message: impl Into<String>) -> Self {
        Diagnostic {
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

/// Why a config could not be loaded: every problem, each printable as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub errors: Vec<Diagnostic>,
}

impl ConfigError {
    /// One `FILE:LINE:COL: message` line per problem.
    pub fn lines(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|d| format_diag(&self.file, d))
            .collect()
    }
}

pub fn format_diag(file: &Path, d: &Diagnostic) -> String {
    let line = d.line.max(1);
    let col = d.column.max(1);
    format!("{}:{line}:{col}: {}", file.display(), d.message)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

/// A loaded config and the warnings met on the way (e.g. an unauthenticated route).
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Loads and validates `path`, resolving `${VAR}` from the process environment.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let env = |name: &str| std::env::var(name).ok();
    match std::fs::read(path) {
        Ok(bytes) => load_bytes(path, &bytes, &env),
        Err(e) => Err(ConfigError {
            file: path.to_owned(),
            errors: vec![Diagnostic {
                line: 0,
                column: 0,
                message: format!("cannot read config file: {e}"),
            }],
        }),
    }
}

pub fn load_bytes(
    path: &Path,
    bytes: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let fail = |errors| ConfigError {
        file: path.to_owned(),
        errors,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        fail(vec![Diagnostic {
            line: 0,
            column: 0,
            message: format!("config file is not UTF-8: {e}"),
        }])
    })?;
    let options = serde_saphyr::Options {
        with_snippet: false,
        ..Default::default()
    };
    let mut unknown = Vec::new();
    let raw: raw::RawConfig = if text.trim().is_empty() {
        raw::RawConfig::default()
    } else {
        serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            serde_ignored::deserialize(de, |path| unknown.push(key_path(&path)))
        })
        .map_err(|e| fail(vec![yaml_error(&e, text)]))?
    };
    let unknown = unknown_keys(text, &unknown);
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut ctx = validate::Ctx {
        base_dir,
        env,
        diags: Diagnostics::default(),
        source: text,
    };
    let built = validate::build(&raw, &mut ctx);
    match built {
        Some((server, admin, storage, routes)) if unknown.is_empty() => Ok(Loaded {
            config: Config {
                path: path.to_owned(),
                hash: hex::encode(Sha256::digest(bytes)),
                loaded_at: SystemTime::now(),
                server,
                admin,
                storage,
                routes,
            },
            warnings: ctx.diags.warnings,
        }),
        _ => {
            let mut errors = ctx.diags.errors;
            errors.extend(unknown);
            errors.sort_by_key(|d| (d.line, d.column));
            Err(fail(errors))
        }
    }
}

fn yaml_error(e: &serde_saphyr::Error, text: &str) -> Diagnostic {
    let loc = e.location().unwrap_or(Location::UNKNOWN);
    let mut msg = e.to_string();
    // The library appends " at line N, column M"; we print the position in front instead.
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    let mut d = Diagnostic::at(&loc, msg);
    // An unknown key is reported at the start of its mapping; point at the key itself.
    if let Some(name) = d
        .message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        if let Some((line, col)) = find_key(text, name, d.line) {
            d.line = line;
            d.column = col;
        }
    }
    d
}

/// The keys and indexes leading to an ignored (unknown) key, the key last: `value` levels
/// are the position-keeping wrappers of the raw structs, not keys of the file.
fn key_path(path: &serde_ignored::Path) -> Vec<String> {
    use serde_ignored::Path;
    let mut out = Vec::new();
    let mut at = path;
    loop {
        at = match at {
            Path::Root => break,
            Path::Seq { parent, index } => {
                out.push(index.to_string());
                parent
            }
            Path::Map { parent, key } => {
                // The ignored key itself is always kept, whatever its name.
                if key != "value" || out.is_empty() {
                    out.push(key.clone());
                }
                parent
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => parent,
        };
    }
    out.reverse();
    out
}

/// One error per unknown key, at the key: the keys come in the file's order, so each is
/// looked for after the one before.
fn unknown_keys(text: &str, paths: &[Vec<String>]) -> Vec<Diagnostic> {
    let mut from = 1;
    paths
        .iter()
        .filter_map(|path| {
            let (name, parents) = path.split_last()?;
            let (line, column) = find_key(text, name, from).unwrap_or((0, 0));
            from = line.max(from);
            let within = if parents.is_empty() {
                String::new()
            } else {
                format!(" in `{}`", parents.join("."))
            };
            Some(Diagnostic {
                line,
                column,
                message: format!("unknown field `{name}`{within}"),
            })
        })
        .collect()
}

/// The first `name:` key at or after line `from` (1-based), as (line, column).
fn find_key(text: &str, name: &str, from: u64) -> Option<(u64, u64)> {
    let skip = usize::try_from(from.saturating_sub(1)).ok()?;
    for (i, line) in text.lines().enumerate().skip(skip) {
        let mut search = 0;
        while let Some(pos) = line[search..].find(name) {
            let at = search + pos;
            let before = line[..at].chars().last();
            let after = line[at + name.len()..].trim_start().starts_with(':');
            if after && matches!(before, None | Some(' ' | '{' | ',' | '-' | '\t')) {
                return Some((i as u64 + 1, line[..at].chars().count() as u64 + 1));
            }
            search = at + name.len();
        }
    }
    None
}
