//! Parsing only what the programs read. Most rules look at a few top-level fields of a large
//! payload (`.ref`, `.repository.full_name`, `.action`); building jq values for the rest is
//! most of a rule's cost. When every program of a run provably reads the input document only
//! through constant top-level keys (`.a`, `.a.b[0]`, `."a b"`), the body is parsed with the
//! other top-level fields skipped (still checked as JSON, never materialized), and the programs
//! cannot tell the difference.
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
use std::collections::BTreeSet;

/// The top-level keys a program reads, or `None` when it may read the whole document.
pub fn keys(code: &str) -> Option<BTreeSet<String>> {
    let term: Term<&str> = jaq_core::load::parse(code, |p| p.term())?;
    let mut acc = BTreeSet::new();
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

/// Whether `t` reads its input only through constant top-level keys when that input is the
/// document (`root`); keys found go to `acc`. `false`: it may read the whole document.
fn walk(t: &Term<&str>, root: bool, acc: &mut BTreeSet<String>) -> bool {
    let w = |t: &Term<&str>, root: bool, acc: &mut BTreeSet<String>| walk(t, root, acc);
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
                        acc.insert(key);
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
            let mut parts = path.0.iter();
            if matches!(**head, Term::Id) && root {
                match parts.next() {
                    Some((Part::Index(k), _)) => match constant(k) {
                        Some(key) => {
                            acc.insert(key);
                        }
                        None => return false,
                    },
                    _ => return false,
                }
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

fn pattern(p: &Pattern<&str>, root: bool, acc: &mut BTreeSet<String>) -> bool {
    match p {
        Pattern::Var(_) => true,
        Pattern::Arr(ps) => ps.iter().all(|p| pattern(p, root, acc)),
        Pattern::Obj(entries) => entries
            .iter()
            .all(|(k, p)| walk(k, root, acc) && pattern(p, root, acc)),
    }
}

/// The body as jq sees it with only `keys` kept at its top level, or `None` when it is not a
/// JSON object (the caller then parses it in full). Skipped fields are still checked as JSON.
pub fn parse(body: &[u8], keys: &BTreeSet<String>) -> Option<Val> {
    // Skipped strings are not checked for UTF-8 by the parser: check the whole body once.
    std::str::from_utf8(body).ok()?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = serde::Deserializer::deserialize_map(&mut de, Projected(keys)).ok()?;
    de.end().ok()?;
    Some(v)
}

/// The whole body as jq values, built straight from the JSON (no intermediate tree).
pub fn parse_all(body: &[u8]) -> Option<Val> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = serde::de::DeserializeSeed::deserialize(ValSeed, &mut de).ok()?;
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

struct Projected<'k>(&'k BTreeSet<String>);

impl<'de> serde::de::Visitor<'de> for Projected<'_> {
    type Value = Val;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
        let mut obj = empty_object();
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.0.contains(&*k) {
                let v = map.next_value_seed(ValSeed)?;
                insert(&mut obj, k.into_owned(), v);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(obj)
    }
}

struct ValSeed;

impl<'de> serde::de::DeserializeSeed<'de> for ValSeed {
    type Value = Val;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
        d.deserialize_any(ValSeed)
    }
}

impl<'de> serde::de::Visitor<'de> for ValSeed {
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
        while let Some(v) = seq.next_element_seed(ValSeed)? {
            items.push(v);
        }
        Ok(items.into_iter().collect())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
        let mut obj = empty_object();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(ValSeed)?;
            insert(&mut obj, k, v);
        }
        Ok(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: &str) -> Option<Vec<String>> {
        keys(code).map(|s| s.into_iter().collect())
    }

    #[test]
    fn which_programs_project() {
        let v = |xs: &[&str]| Some(xs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(k(r#".ref == "refs/heads/main""#), v(&["ref"]));
        assert_eq!(
            k("{repo: .repository.full_name, sha: .after, ref}"),
            v(&["after", "ref", "repository"])
        );
        assert_eq!(k(r#".a.b[0] // ."x y" | ascii_downcase"#), v(&["a", "x y"]));
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
        let keys: BTreeSet<String> = ["a", "c"].iter().map(|s| s.to_string()).collect();
        let v = parse(
            br#" {"a": {"x": [1, 2]}, "b": [{"deep": "skip\"me"}], "c": 1.50, "a": 3} "#,
            &keys,
        )
        .unwrap();
        assert_eq!(v.to_string(), r#"{"a":3,"c":1.5}"#);
        assert!(parse(b"[1,2]", &keys).is_none());
        assert!(parse(br#"{"a": 1, "b": [}"#, &keys).is_none());
        assert!(parse(b"{\"a\": 1, \"b\": \"\xff\"}", &keys).is_none());
    }
}
