//! Parsing only what the programs read. Most rules look at a few top-level fields of a large
//! payload (`.ref`, `.repository.full_name`, `.action`); building jq values for the rest is
//! most of a rule's cost. When every program of a run provably reads the input document only
//! through constant key paths (`.a`, `.a.b[0]`, `."a b".c`), the body is parsed with every
//! other field skipped (still checked as JSON, never materialized), and the programs cannot
//! tell the difference: `.repository.full_name` keeps one string of GitHub's 90-field
//! `repository` object. A value on a path that is not an object (an array, a string) is kept
//! whole, so indexing it fails or succeeds exactly as on the full document.
//!
//! The analysis is conservative: anything that could see the document as a whole — `.` on
//! its own, `..`, `.[]`, a computed key, an assignment, a function call on the document
//! (`keys`, `has`, `select`, `tojson`...), `.` bound to a variable — makes the program
//! "needs everything", and the body is parsed in full. Below a pipe (`.a | keys`) the input
//! is no longer the document, so anything goes there.

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{BinaryOp, Pattern, Term};
use jaq_core::path::Part;
use jaq_json::Val;
use std::collections::BTreeMap;

/// The parts of a JSON object that programs read: per key, the whole value (`None`) or only
/// some of its keys when it is an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys(BTreeMap<String, Option<Keys>>);

impl Keys {
    /// Adds the path `keys` (read in full at its end).
    fn add(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        match self.0.get_mut(first) {
            Some(None) => {}
            Some(Some(sub)) if !rest.is_empty() => sub.add(rest),
            _ if rest.is_empty() => {
                self.0.insert(first.clone(), None);
            }
            _ => {
                let mut sub = Keys::default();
                sub.add(rest);
                self.0.insert(first.clone(), Some(sub));
            }
        }
    }

    /// Everything `other` reads too.
    pub fn merge(&mut self, other: &Keys) {
        for (k, v) in &other.0 {
            match (self.0.get_mut(k), v) {
                (Some(None), _) => {}
                (Some(slot), None) => *slot = None,
                (Some(Some(mine)), Some(theirs)) => mine.merge(theirs),
                (None, v) => {
                    self.0.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// The paths, for tests and docs: `a`, `a.b`.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            match v {
                None => out.push(k.clone()),
                Some(sub) => out.extend(sub.paths().into_iter().map(|p| format!("{k}.{p}"))),
            }
        }
        out
    }
}

/// The key paths a program reads, or `None` when it may read the whole document.
pub fn keys(code: &str) -> Option<Keys> {
    let term: Term<&str> = jaq_core::load::parse(code, |p| p.term())?;
    let mut acc = Keys::default();
    walk(&term, true, &mut acc).then_some(acc)
}

/// A string term without interpolation, as its value.
fn constant(t: &Term<&str>) -> Option<String> {
    let Term::Str(None, parts) = t else {
        return None;
    };
    let mut s = String::new();
    for p in parts {
        match p {
            StrPart::Str(x) => s.push_str(x),
            StrPart::Char(c) => s.push(*c),
            StrPart::Term(_) => return None,
        }
    }
    Some(s)
}

/// Calls that ignore their input.
fn constant_call(name: &str, args: usize) -> bool {
    args == 0 && matches!(name, "true" | "false" | "null" | "empty")
}

/// Whether `t` reads its input only through constant key paths when that input is the
/// document (`root`); paths found go to `acc`. `false`: it may read the whole document.
fn walk(t: &Term<&str>, root: bool, acc: &mut Keys) -> bool {
    let w = |t: &Term<&str>, root: bool, acc: &mut Keys| walk(t, root, acc);
    match t {
        Term::Id | Term::Recurse => !root,
        Term::Num(_) | Term::Var(_) | Term::Break(_) => true,
        Term::Str(_, parts) => parts.iter().all(|p| match p {
            StrPart::Term(t) => w(t, root, acc),
            _ => true,
        }),
        Term::Arr(None) => true,
        Term::Arr(Some(t)) | Term::Neg(t) | Term::Label(_, t) => w(t, root, acc),
        Term::Obj(entries) => entries.iter().all(|(k, v)| match v {
            Some(v) => w(k, root, acc) && w(v, root, acc),
            // `{a}` is `{a: .a}`; `{$x}` is `{x: $x}`.
            None => match (k, constant(k)) {
                (Term::Var(_), _) => true,
                (_, Some(key)) => {
                    if root {
                        acc.add(&[key]);
                    }
                    true
                }
                _ => !root,
            },
        }),
        // `l | r`: r's input is l's output. `l as $x | r`: r's input is l's input.
        Term::Pipe(l, None, r) => w(l, root, acc) && w(r, false, acc),
        Term::Pipe(l, Some(p), r) => w(l, root, acc) && pattern(p, root, acc) && w(r, root, acc),
        Term::BinOp(l, op, r) => match op {
            BinaryOp::Assign | BinaryOp::Update | BinaryOp::UpdateMath(_) | BinaryOp::UpdateAlt => {
                !root
            }
            _ => w(l, root, acc) && w(r, root, acc),
        },
        // `reduce xs as $x (init; update)`: update's input is the accumulator.
        Term::Fold(_, xs, p, args) => {
            w(xs, root, acc)
                && pattern(p, root, acc)
                && args
                    .iter()
                    .enumerate()
                    .all(|(i, a)| w(a, root && i == 0, acc))
        }
        // The handler's input is the error.
        Term::TryCatch(t, c) => w(t, root, acc) && c.as_ref().is_none_or(|c| w(c, false, acc)),
        Term::IfThenElse(branches, els) => {
            branches
                .iter()
                .all(|(c, t)| w(c, root, acc) && w(t, root, acc))
                && els.as_ref().is_none_or(|e| w(e, root, acc))
        }
        // A definition's body runs with its caller's input, and calls on the document are
        // refused below, so only the program's own body matters here.
        Term::Def(_, body) => w(body, root, acc),
        Term::Call(name, args) => {
            if root && !constant_call(name, args.len()) {
                return false;
            }
            // Arguments run on the callee's inputs: not the document.
            args.iter().all(|a| w(a, false, acc))
        }
        Term::Path(head, path) => {
            let mut parts = path.0.iter().peekable();
            if matches!(**head, Term::Id) && root {
                // The longest run of constant keys from the document: `.a.b` reads `a.b`,
                // `.a[0]` and `.a[]` read all of `a`.
                let mut keys = Vec::new();
                while let Some((Part::Index(k), _)) = parts.peek() {
                    let Some(key) = constant(k) else { break };
                    keys.push(key);
                    parts.next();
                }
                if keys.is_empty() {
                    return false;
                }
                acc.add(&keys);
            } else if !w(head, root, acc) {
                return false;
            }
            // Index terms inside a path run on the path's own input.
            parts.all(|(p, _)| match p {
                Part::Index(i) => w(i, root, acc),
                Part::Range(a, b) => {
                    a.as_ref().is_none_or(|a| w(a, root, acc))
                        && b.as_ref().is_none_or(|b| w(b, root, acc))
                }
            })
        }
    }
}

fn pattern(p: &Pattern<&str>, root: bool, acc: &mut Keys) -> bool {
    match p {
        Pattern::Var(_) => true,
        Pattern::Arr(ps) => ps.iter().all(|p| pattern(p, root, acc)),
        Pattern::Obj(entries) => entries
            .iter()
            .all(|(k, p)| walk(k, root, acc) && pattern(p, root, acc)),
    }
}

/// The body as jq sees it with only the paths of `keys` kept, or `None` when it is not a
/// JSON object (the caller then parses it in full). Skipped fields are still checked as JSON.
pub fn parse(body: &[u8], keys: &Keys) -> Option<Val> {
    // Skipped strings are not checked for UTF-8 by the parser: check the whole body once.
    std::str::from_utf8(body).ok()?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = serde::Deserializer::deserialize_map(&mut de, ValSeed(Some(keys))).ok()?;
    de.end().ok()?;
    Some(v)
}

/// The whole body as jq values, built straight from the JSON (no intermediate tree).
pub fn parse_all(body: &[u8]) -> Option<Val> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = serde::de::DeserializeSeed::deserialize(ValSeed(None), &mut de).ok()?;
    de.end().ok()?;
    Some(v)
}

fn empty_object() -> Val {
    Val::from(serde_json::Value::Object(serde_json::Map::new()))
}

fn insert(obj: &mut Val, k: String, v: Val) {
    if let Val::Obj(o) = obj {
        std::rc::Rc::make_mut(o).insert(std::rc::Rc::new(k), v);
    }
}

/// A JSON value as a jq value; an object keeps only the given keys (`None`: all of them).
#[derive(Clone, Copy)]
struct ValSeed<'k>(Option<&'k Keys>);

impl<'de> serde::de::DeserializeSeed<'de> for ValSeed<'_> {
    type Value = Val;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ValSeed<'_> {
    type Value = Val;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<Val, E> {
        Ok(Val::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Val, E> {
        Ok(Val::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Val, E> {
        Ok(isize::try_from(i)
            .map(Val::Int)
            .unwrap_or_else(|_| Val::Num(std::rc::Rc::new(i.to_string()))))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Val, E> {
        Ok(isize::try_from(u)
            .map(Val::Int)
            .unwrap_or_else(|_| Val::Num(std::rc::Rc::new(u.to_string()))))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Val, E> {
        Ok(Val::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Val, E> {
        Ok(Val::from(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Val, E> {
        Ok(Val::from(s))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Val, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(ValSeed(None))? {
            items.push(v);
        }
        Ok(items.into_iter().collect())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
        let mut obj = empty_object();
        match self.0 {
            None => {
                while let Some(k) = map.next_key::<String>()? {
                    let v = map.next_value_seed(ValSeed(None))?;
                    insert(&mut obj, k, v);
                }
            }
            Some(keys) => {
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match keys.0.get(&*k) {
                        Some(sub) => {
                            let v = map.next_value_seed(ValSeed(sub.as_ref()))?;
                            insert(&mut obj, k.into_owned(), v);
                        }
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
            }
        }
        Ok(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: &str) -> Option<Vec<String>> {
        keys(code).map(|k| k.paths())
    }

    #[test]
    fn which_programs_project() {
        let v = |xs: &[&str]| Some(xs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(k(r#".ref == "refs/heads/main""#), v(&["ref"]));
        assert_eq!(
            k("{repo: .repository.full_name, sha: .after, ref}"),
            v(&["after", "ref", "repository.full_name"])
        );
        assert_eq!(
            k(r#".a.b[0] // ."x y" | ascii_downcase"#),
            v(&["a.b", "x y"])
        );
        // A whole value read anywhere wins over its parts.
        assert_eq!(k(".a.b.c, .a.d, .e.f"), v(&["a.b.c", "a.d", "e.f"]));
        assert_eq!(k(".a.b.c, .a, .a.d"), v(&["a"]));
        assert_eq!(k(".a.b, {a}"), v(&["a"]));
        assert_eq!(k(".a | .b"), v(&["a"]));
        assert_eq!(k(".a[0].b, .c[]"), v(&["a", "c"]));
        assert_eq!(k(r#".a["b"].c?"#), v(&["a.b.c"]));
        assert_eq!(k(".a[.k]"), v(&["a", "k"]));
        assert_eq!(
            k(r#"$headers["x-github-event"] == "push" and .action == "opened""#),
            v(&["action"])
        );
        assert_eq!(k(".commits | map(.id) | length"), v(&["commits"]));
        assert_eq!(k(".a as $x | {x: $x, b: .b}"), v(&["a", "b"]));
        assert_eq!(k("if .a then .b else .c end"), v(&["a", "b", "c"]));
        assert_eq!(k("reduce .items[] as $i (0; . + $i.n)"), v(&["items"]));
        assert_eq!(k("try .a catch ."), v(&["a"]));
        assert_eq!(k(r#""\(.a)-\(.b)""#), v(&["a", "b"]));
        assert_eq!(k("true"), v(&[]));
        assert_eq!(k("{(.k): 1}"), v(&["k"]));
        // Whole-document readers.
        for code in [
            ".",
            "..",
            ".[]",
            "keys",
            "has(\"a\")",
            "select(.a)",
            "tojson",
            ".a = 1",
            ".a |= 1",
            ". as $d | $d.a",
            ".[.k]",
            "def f: .a; f",
            "@json",
            "length",
            "to_entries",
            "del(.a)",
            ".a + .",
            "[.[] | .x]",
        ] {
            assert_eq!(k(code), None, "{code}");
        }
    }

    /// Every program that projects gives the same outputs on the projected and the full
    /// document, on the shipped sample payloads.
    #[test]
    fn projection_changes_no_answer() {
        use jaq_core::{Ctx, RcIter};
        let programs = [
            r#".ref == "refs/heads/main""#,
            "{repo: .repository.full_name, sha: .after, ref}",
            ".commits | map(.id) | length",
            "[.head_commit.message, .pusher.name, .nope]",
            ".pull_request.title // .action",
            ".data.object.amount > 1000 and .type == \"payment_intent.succeeded\"",
            "reduce (.commits // [])[] as $c (0; . + 1)",
            "if .deleted then \"gone\" else .after end",
            "try .repository.owner.login catch \"none\"",
            "{type, id, n: (.data.object.amount // 0)}",
            "\"\\(.action // \"none\"): \\(.number // 0)\"",
            // Nested paths, including ones through arrays, strings and missing keys.
            ".repository.owner.login, .repository.full_name",
            ".commits[0].author.name, .head_commit.author.email",
            ".ref.x?, .after.y?",
            ".repository.nope.deeper, .data.object.metadata",
            "try .ref.x catch \"not an object\"",
            "[.pull_request.user.login, .pull_request.head.ref, .sender.id]",
        ];
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            let full = super::super::pool::body_value(None, &body);
            for code in programs {
                let keys = keys(code).unwrap_or_else(|| panic!("{code} should project"));
                let part = parse(&body, &keys).unwrap();
                let f = crate::rules::compile(code).unwrap();
                let run = |input: Val| -> Vec<String> {
                    let inputs = RcIter::new(core::iter::empty());
                    let vars = [Val::Null, Val::Null, Val::Null].to_vec();
                    f.run((Ctx::new(vars, &inputs), input))
                        .map(|r| match r {
                            Ok(v) => v.to_string(),
                            Err(e) => format!("error: {e}"),
                        })
                        .collect()
                };
                assert_eq!(run(part), run(full.clone()), "{code} on {}", path.display());
                checked += 1;
            }
        }
        assert!(checked >= 3 * programs.len(), "{checked}");
    }

    #[test]
    fn projected_parse_keeps_only_the_keys() {
        let keys = super::keys(".a, .c").unwrap();
        let v = parse(
            br#" {"a": {"x": [1, 2]}, "b": [{"deep": "skip\"me"}], "c": 1.50, "a": 3} "#,
            &keys,
        )
        .unwrap();
        assert_eq!(v.to_string(), r#"{"a":3,"c":1.5}"#);
        let nested = super::keys(".a.x, .b.y.z").unwrap();
        let v = parse(
            br#"{"a": {"x": [1], "w": 2}, "b": {"y": {"z": 1, "q": 2}, "p": 3}, "c": 4}"#,
            &nested,
        )
        .unwrap();
        assert_eq!(v.to_string(), r#"{"a":{"x":[1]},"b":{"y":{"z":1}}}"#);
        // Not an object on the path: kept whole.
        let v = parse(br#"{"a": [{"x": 1, "w": 2}], "b": "s"}"#, &nested).unwrap();
        assert_eq!(v.to_string(), r#"{"a":[{"x":1,"w":2}],"b":"s"}"#);
        assert!(parse(b"[1,2]", &keys).is_none());
        assert!(parse(br#"{"a": 1, "b": [}"#, &keys).is_none());
        assert!(parse(b"{\"a\": 1, \"b\": \"\xff\"}", &keys).is_none());
    }
}
