//! Running jq programs on an event, inside a jq worker process: programs compiled once per
//! worker and kept, the body parsed once per event straight into jaq values (only the fields
//! the programs read, when that is known), and a transform's output written as JSON.
//! Nothing here watches the clock or the memory: the worker runs under a memory budget and
//! the pool kills it at the deadline (see `pool.rs`).

use super::job::{Input, Plans, RunError, Verdict};
use super::project::Keys;
use super::{compile, Filter};
use bytes::Bytes;
use jaq_core::{Ctx, RcIter};
use jaq_json::Val;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;
use std::sync::Arc;

/// A compiled program and the key paths it reads (`None`: maybe all of the document).
#[derive(Clone)]
struct Program {
    filter: Rc<Filter>,
    keys: Option<Rc<Keys>>,
}

/// What one set of plans needs, worked out once per worker: each plan's compiled programs,
/// and what they read of the document together.
pub(crate) struct Prepared {
    source: Plans,
    plans: Vec<(Option<Compiled>, Option<Compiled>)>,
    reads: Reads,
}

/// A program ready to run, or why it is not (it changed under us after its check).
type Compiled = Result<Rc<Filter>, RunError>;

/// What some programs read of the document (`None`: maybe all of it).
type Reads = Option<Rc<Keys>>;

thread_local! {
    static PROGRAMS: RefCell<HashMap<Arc<str>, Program>> = RefCell::new(HashMap::new());
}

/// Entries a per-thread cache holds before it starts over (configs change rarely).
const CACHED: usize = 512;

fn program(code: &Arc<str>) -> Result<Program, RunError> {
    PROGRAMS.with(|cell| {
        let mut cache = cell.borrow_mut();
        if let Some(p) = cache.get(code) {
            return Ok(p.clone());
        }
        // Checked when the config loaded; a failure here means a program changed under us.
        let p = Program {
            filter: Rc::new(compile(code).map_err(|e| RunError::Jq(e.message))?),
            keys: super::project::keys(code).map(Rc::new),
        };
        if cache.len() > CACHED {
            cache.clear();
        }
        cache.insert(code.clone(), p.clone());
        Ok(p)
    })
}

pub(crate) fn prepare(plans: &Plans) -> Prepared {
    let mut all = Keys::default();
    let mut known = true;
    let codes = plans.list.iter().flat_map(|p| [&p.filter, &p.transform]);
    for code in codes.flatten() {
        match program(code).ok().and_then(|p| p.keys) {
            Some(k) => all.merge(&k),
            None => known = false,
        }
    }
    let compiled = |c: &Option<Arc<str>>| c.as_ref().map(|c| program(c).map(|p| p.filter));
    Prepared {
        plans: plans
            .list
            .iter()
            .map(|p| (compiled(&p.filter), compiled(&p.transform)))
            .collect(),
        reads: known.then(|| Rc::new(all)),
        source: plans.clone(),
    }
}

/// `.` for a run: only the fields its programs read, when that is known and the body is a
/// JSON object; else the whole body.
fn input_value(input: &Input, reads: &Reads) -> Val {
    if let Some(keys) = reads {
        if let Some(v) = super::project::parse(&input.body, keys) {
            return v;
        }
    }
    body_value(input.content_type(), &input.body)
}

/// `.`: the body as JSON, or a form post as an object of its fields (a repeated field keeps
/// its last value), or the body as a string.
pub fn body_value(content_type: Option<&str>, body: &[u8]) -> Val {
    if let Some(v) = super::project::parse_all(body) {
        return v;
    }
    let form = content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form || (content_type.is_none() && std::str::from_utf8(body).is_ok_and(|s| s.contains('=')))
    {
        return fields(form_urlencoded::parse(body).into_owned());
    }
    Val::from(String::from_utf8_lossy(body).into_owned())
}

fn fields(pairs: impl Iterator<Item = (String, String)>) -> Val {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    Val::from(serde_json::Value::Object(map))
}

/// jq's truthiness: everything but `false` and `null`.
fn truthy(v: &Val) -> bool {
    !matches!(v, Val::Null | Val::Bool(false))
}

struct Vars([Val; 3]);

impl Vars {
    /// Each variable is built only when one of the programs names it.
    fn of(input: &Input, p: &Plans) -> Self {
        let headers = if p.headers {
            fields(input.headers.iter().cloned())
        } else {
            Val::Null
        };
        let query = if p.query {
            fields(
                form_urlencoded::parse(input.query.as_deref().unwrap_or("").as_bytes())
                    .into_owned(),
            )
        } else {
            Val::Null
        };
        let route = if p.route {
            Val::from(input.route.to_string())
        } else {
            Val::Null
        };
        Vars([headers, route, query])
    }
}

fn run_filter(f: &Compiled, body: &Val, vars: &Vars) -> Result<bool, RunError> {
    let f = f.as_ref().map_err(Clone::clone)?;
    let inputs = RcIter::new(core::iter::empty());
    let mut out = f.run((Ctx::new(vars.0.clone(), &inputs), body.clone()));
    match out.next() {
        None => Ok(false),
        Some(Ok(v)) => {
            let yes = truthy(&v);
            drop_deep(v);
            Ok(yes)
        }
        // An error before any output declines, as jq's `select` would.
        Some(Err(e)) => Err(RunError::Jq(e.to_string())),
    }
}

/// Writes `v` as compact JSON to `out`, as jq prints it (a float that is not finite as
/// `null`, a big number as written), failing once `out` grows past `cap`. Strings go through
/// serde_json's escaping, which copies runs of plain text at once; jaq's `Display` works
/// through the formatter one piece at a time, at three times the cost on a typical output.
fn write_json(v: &Val, out: &mut Vec<u8>, cap: usize, depth: usize) -> Result<(), RunError> {
    if depth > MAX_OUTPUT_DEPTH {
        return Err(RunError::TooDeep(MAX_OUTPUT_DEPTH));
    }
    match v {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Float(x) if x.is_finite() => {
            let _ = write!(out, "{x:?}");
        }
        Val::Float(_) => out.extend_from_slice(b"null"),
        Val::Num(n) => out.extend_from_slice(n.as_bytes()),
        Val::Str(s) => string(out, s)?,
        Val::Arr(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(x, out, cap, depth + 1)?;
            }
            out.push(b']');
        }
        Val::Obj(o) => {
            out.push(b'{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, k)?;
                out.push(b':');
                write_json(x, out, cap, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    if out.len() > cap {
        return Err(RunError::TooLarge(cap));
    }
    Ok(())
}

fn string(out: &mut Vec<u8>, s: &str) -> Result<(), RunError> {
    serde_json::to_writer(&mut *out, s).map_err(|e| RunError::Jq(e.to_string()))
}

/// How deeply a program's output may nest. jq sets no limit, but a program can build values
/// nested far deeper than a thread's stack allows to print or drop recursively
/// (`reduce range(1e5) as $i (null; [.])`), and most JSON parsers refuse such a body anyway.
pub(crate) const MAX_OUTPUT_DEPTH: usize = 1000;

/// Drops `v` without recursion, so an output nested arbitrarily deep cannot overflow the
/// stack of the jq thread (and abort the gateway) as it goes.
fn drop_deep(v: Val) {
    if !matches!(v, Val::Arr(_) | Val::Obj(_)) {
        return;
    }
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Val::Arr(a) => {
                if let Ok(items) = Rc::try_unwrap(a) {
                    stack.extend(items);
                }
            }
            Val::Obj(o) => {
                if let Ok(map) = Rc::try_unwrap(o) {
                    stack.extend(map.into_iter().map(|(_, v)| v));
                }
            }
            _ => {}
        }
    }
}

/// Stack for a jq thread: generous (reserved, not used, until a program nests deeply), so
/// that jaq's own recursion over a deep value, such as dropping one inside a program,
/// reaches far beyond what a program builds within its deadline.
pub(crate) const JQ_STACK: usize = 256 << 20;

fn run_transform(
    f: &Compiled,
    body: &Val,
    vars: &Vars,
    max_output: usize,
) -> Result<Bytes, RunError> {
    let f = f.as_ref().map_err(Clone::clone)?;
    let inputs = RcIter::new(core::iter::empty());
    let mut out = f.run((Ctx::new(vars.0.clone(), &inputs), body.clone()));
    let first = match out.next() {
        None => return Err(RunError::Outputs(0)),
        Some(v) => v.map_err(|e| RunError::Jq(e.to_string()))?,
    };
    let mut buf = Vec::with_capacity(256);
    let written = write_json(&first, &mut buf, max_output, 0);
    drop_deep(first);
    written?;
    // A second output, or an error after the first, fails the transform; counting the rest
    // could run forever, so stop at two.
    match out.next() {
        None => {}
        Some(Ok(v)) => {
            drop_deep(v);
            return Err(RunError::Outputs(2));
        }
        Some(Err(e)) => return Err(RunError::Jq(e.to_string())),
    }
    Ok(Bytes::from(buf))
}

/// Runs every plan of `prep` on one event: the body parsed once, each filter to its first
/// output, each admitted transform to its single output, written as JSON.
pub(crate) fn run(input: &Input, prep: &Prepared, max_output: usize) -> Vec<Verdict> {
    let body = input_value(input, &prep.reads);
    let vars = Vars::of(input, &prep.source);
    prep.source
        .list
        .iter()
        .zip(&prep.plans)
        .map(|(_, (filter, transform))| {
            let filter = filter.as_ref().map(|f| run_filter(f, &body, &vars));
            let admitted = matches!(filter, None | Some(Ok(true)));
            let transform = transform
                .as_ref()
                .and_then(|t| admitted.then(|| run_transform(t, &body, &vars, max_output)));
            Verdict { filter, transform }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_printed_as_jq_prints_it() {
        let programs = [
            r#"{a: 1, b: -2.5, c: 1e400, d: 123456789012345678901234567890, e: null}"#,
            r#"{s: "quote \" back \\ tab \t nl \n cr \r nul \u0000 é ☃ 😀", t: true, f: false}"#,
            r#"[[], {}, [1, [2, {"x y": [3]}]], "", 0, 1.0, 100000000000000000000]"#,
            r#"{"k\"ey": {"\u0001": [nan, infinite, -infinite]}}"#,
            ".",
        ];
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/github-push.json"
        ))
        .unwrap();
        for code in programs {
            let f = compile(code).unwrap();
            let inputs = RcIter::new(core::iter::empty());
            let vars = vec![Val::Null, Val::Null, Val::Null];
            let input = body_value(None, &body);
            for v in f.run((Ctx::new(vars, &inputs), input)) {
                let v = v.unwrap();
                let mut out = Vec::new();
                write_json(&v, &mut out, usize::MAX, 0).unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), v.to_string(), "{code}");
            }
        }
        // The cap holds at every step, not only at the end.
        let v = Val::from(serde_json::json!({"a": "x".repeat(100), "b": [1, 2, 3]}));
        let mut out = Vec::new();
        assert!(write_json(&v, &mut out, 50, 0).is_err());
        assert!(out.len() <= 120, "{}", out.len());
        let mut out = Vec::new();
        assert!(write_json(&v, &mut out, 200, 0).is_ok());
    }

    /// A reloaded config brings new plans with the same code: each is prepared on its own,
    /// and a plan's programs never answer for another's.
    #[test]
    fn bodies() {
        assert_eq!(
            body_value(None, br#" {"b":1, "a":[1.50, "x"]} "#).to_string(),
            r#"{"b":1,"a":[1.5,"x"]}"#
        );
        let form = body_value(
            Some("application/x-www-form-urlencoded"),
            b"command=%2Fdeploy&text=prod",
        );
        assert_eq!(form.to_string(), r#"{"command":"/deploy","text":"prod"}"#);
        assert_eq!(
            body_value(Some("text/plain"), b"hello").to_string(),
            r#""hello""#
        );
        assert_eq!(
            body_value(None, b"{\"a\":\"\\u00e9\\n\"}").to_string(),
            "{\"a\":\"\u{e9}\\n\"}"
        );
    }
}
