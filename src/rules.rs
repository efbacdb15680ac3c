//! Rules: jq `filter` and `transform` per target (jaq), between verification and delivery.
//!
//! Programs are compiled when the config loads, so a syntax error is a `check` error
//! pointing inside the YAML string; a `def` that calls itself is refused there too, since jq
//! cannot be interrupted. At run time programs run on a small dedicated thread pool (never on
//! the async workers), each run with a deadline and an output cap; a run over either fails
//! (a filter then declines the event, a transform fails that delivery) and is counted.
//!
//! What a program sees: the body parsed as JSON — or, for a form post (Slack, Twilio), an
//! object of its fields — and `$headers` (lower-case names), `$route`, `$query`.

pub mod budget;
mod eval;
pub mod job;
pub mod pool;
pub mod project;
pub mod sample;
pub mod transform;
pub mod unbounded;
mod wire;
pub mod worker;

use jaq_core::load::{Arena, File, Loader};

/// Where a problem sits in the program text (byte offset) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramError {
    pub offset: usize,
    pub message: String,
}

pub const GLOBALS: [&str; 3] = ["$headers", "$route", "$query"];

fn offset_in(code: &str, part: &str) -> usize {
    let (c, p) = (code.as_ptr() as usize, part.as_ptr() as usize);
    if p >= c && p <= c + code.len() {
        p - c
    } else {
        0
    }
}

/// Compiles `code` as the gateway will run it, or says what is wrong and where.
pub fn check(code: &str) -> Result<(), ProgramError> {
    if let Some(e) = recursive_def(code) {
        return Err(e);
    }
    compile(code).map(|_| ())
}

pub type Filter = jaq_core::Filter<jaq_core::Native<jaq_json::Val>>;

pub fn compile(code: &str) -> Result<Filter, ProgramError> {
    let arena = Arena::default();
    let loader = Loader::new(jaq_std::defs().chain(jaq_json::defs()));
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errs| {
            let (_, e) = errs
                .into_iter()
                .next()
                .unwrap_or_else(|| (File { code, path: () }, jaq_core::load::Error::Io(vec![])));
            let syntax = |first: Option<(&str, &str)>| match first {
                Some((expect, at)) => ProgramError {
                    offset: offset_in(code, at),
                    message: format!("jq syntax error: expected {expect}"),
                },
                None => ProgramError {
                    offset: 0,
                    message: "jq syntax error".into(),
                },
            };
            match e {
                jaq_core::load::Error::Lex(v) => {
                    syntax(v.into_iter().next().map(|(x, at)| (x.as_str(), at)))
                }
                jaq_core::load::Error::Parse(v) => {
                    syntax(v.into_iter().next().map(|(x, at)| (x.as_str(), at)))
                }
                jaq_core::load::Error::Io(_) => ProgramError {
                    offset: 0,
                    message: "jq modules cannot be imported here".into(),
                },
            }
        })?;
    jaq_core::Compiler::default()
        .with_funs(jaq_std::funs().chain(jaq_json::funs()))
        .with_global_vars(GLOBALS)
        .compile(modules)
        .map_err(|errs| {
            let first = errs
                .into_iter()
                .next()
                .and_then(|(_, v)| v.into_iter().next());
            match first {
                Some((name, undef)) => ProgramError {
                    offset: offset_in(code, name),
                    message: format!("jq: undefined {} `{name}`", undef.as_str()),
                },
                None => ProgramError {
                    offset: 0,
                    message: "jq compile error".into(),
                },
            }
        })
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A `def NAME...: BODY;` whose BODY mentions NAME: refused, because a jq run cannot be
/// interrupted and recursion is the way to make one endless.
pub fn recursive_def(code: &str) -> Option<ProgramError> {
    let b = code.as_bytes();
    let mut i = 0;
    while let Some(pos) = code[i..].find("def") {
        let start = i + pos;
        i = start + 3;
        let before_ok = start == 0 || !is_ident(b[start - 1]);
        let after_ok = b.get(start + 3).is_some_and(|c| c.is_ascii_whitespace());
        if !before_ok || !after_ok {
            continue;
        }
        let mut j = start + 3;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        let name_start = j;
        while j < b.len() && is_ident(b[j]) {
            j += 1;
        }
        let name = &code[name_start..j];
        if name.is_empty() {
            continue;
        }
        // The body runs from the `:` to the `;` that closes this definition.
        let Some(colon) = code[j..].find(':').map(|c| j + c) else {
            continue;
        };
        let (mut depth, mut inner_defs, mut k) = (0i32, 0i32, colon + 1);
        while k < b.len() {
            match b[k] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'd' if code[k..].starts_with("def") && (k == 0 || !is_ident(b[k - 1])) => {
                    inner_defs += 1
                }
                b';' if depth <= 0 => {
                    if inner_defs == 0 {
                        break;
                    }
                    inner_defs -= 1;
                }
                _ => {}
            }
            k += 1;
        }
        let body = &code[colon + 1..k.min(b.len())];
        let mut s = 0;
        while let Some(p) = body[s..].find(name) {
            let at = s + p;
            let bb = body.as_bytes();
            let l = at == 0 || !is_ident(bb[at - 1]);
            let r = bb.get(at + name.len()).is_none_or(|c| !is_ident(*c));
            if l && r {
                return Some(ProgramError {
                    offset: name_start,
                    message: format!(
                        "jq: `def {name}` calls itself; recursive definitions are not allowed"
                    ),
                });
            }
            s = at + name.len();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_locates_errors() {
        assert!(check(r#".ref == "refs/heads/main""#).is_ok());
        assert!(check("{repo: .repository.full_name, sha: .after}").is_ok());
        assert!(check("$headers[\"x-github-event\"] == \"push\" and $route == \"gh\"").is_ok());
        let e = check(".a | nosuchfn").unwrap_err();
        assert_eq!(e.offset, 5);
        assert!(e.message.contains("nosuchfn"), "{e:?}");
        let e = check(".a | ]").unwrap_err();
        assert!(e.message.starts_with("jq syntax error"), "{e:?}");
        assert_eq!(check("$nope").unwrap_err().offset, 0);
    }

    #[test]
    fn recursion_is_refused() {
        assert!(recursive_def("def f: f; f").is_some());
        assert!(recursive_def("def f(x): x | f(x); 1").is_some());
        assert!(recursive_def("def f: .a; def g: f; g").is_none());
        assert!(recursive_def("def f: def h: 1; h; f").is_none());
        assert!(recursive_def(".undefined | .default").is_none());
        assert_eq!(recursive_def("  def loop: loop; 1").unwrap().offset, 6);
    }
}
