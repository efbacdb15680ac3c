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

mod blocks;

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
/// JSON object or not valid JSON (the caller then parses it in full, which decides what it
/// is). Skipped fields are still checked as JSON, by [`Scan`], without building anything.
pub fn parse(body: &[u8], keys: &Keys) -> Option<Val> {
    // Checked once for the whole body, so the scan and the kept parts need not again.
    let text = std::str::from_utf8(body).ok()?;
    let mut scan = Scan {
        text,
        b: text.as_bytes(),
        i: 0,
    };
    scan.ws();
    let v = scan.object(keys, 0)?;
    scan.ws();
    (scan.i == scan.b.len()).then_some(v)
}

/// serde_json's nesting limit (127 arrays and objects inside each other): a deeper document
/// is not JSON to the full parse either. `depth` counts from 0 for the body's own object.
const MAX_DEPTH: usize = 127;

/// A validating scan of JSON text (RFC 8259, as strict as serde_json): the objects on the
/// kept paths are walked key by key, a kept value is handed to the full parser as its own
/// slice, and everything else is only checked: a string or a scalar here, eight bytes at a
/// time; an array or an object 64 bytes at a time by [`blocks`], where a 16 KiB push spends
/// most of its check (its unread `commits`).
struct Scan<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// An object at the cursor, keeping the paths of `keys`.
    fn object(&mut self, keys: &Keys, depth: usize) -> Option<Val> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        let mut obj = empty_object();
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(obj);
        }
        loop {
            self.ws();
            let key = self.key()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            match keys.0.get(key.as_ref()) {
                Some(Some(sub)) if self.peek() == Some(b'{') => {
                    let v = self.object(sub, depth + 1)?;
                    insert(&mut obj, key.into_owned(), v);
                }
                // Read in full; a value on a path that is not an object is kept whole.
                Some(_) => {
                    let start = self.i;
                    self.value(depth + 1)?;
                    let v = parse_all(&self.b[start..self.i])?;
                    insert(&mut obj, key.into_owned(), v);
                }
                None => self.value(depth + 1)?,
            }
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(obj);
                }
                _ => return None,
            }
        }
    }

    /// An object key: borrowed from the text, or decoded when it holds an escape.
    fn key(&mut self) -> Option<std::borrow::Cow<'a, str>> {
        let start = self.i;
        let escaped = self.string()?;
        let raw = &self.text[start..self.i];
        Some(if escaped {
            std::borrow::Cow::Owned(serde_json::from_str::<String>(raw).ok()?)
        } else {
            std::borrow::Cow::Borrowed(&raw[1..raw.len() - 1])
        })
    }

    /// Checks one value of any kind and moves past it.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => blocks::container(self, depth),
            _ => self.scalar(),
        }
    }

    /// A number, `true`, `false` or `null` at the cursor.
    fn scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        // Beyond 64-bit integers serde_json reads a float, and refuses one out of range.
        let n = &self.text[start..self.i];
        if n.len() > 18 || n.contains(['.', 'e', 'E']) {
            n.parse::<f64>().ok().filter(|f| f.is_finite())?;
        }
        Some(())
    }

    /// A string at the cursor; `true` when it holds an escape.
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            let end = plain_run(self.b, self.i);
            let c = *self.b.get(end)?;
            self.i = end + 1;
            match c {
                b'"' => return Some(escaped),
                b'\\' => escaped = true,
                // A control character: not allowed in a JSON string.
                _ => return None,
            }
            self.escape()?;
        }
    }

    /// The rest of an escape, after its backslash: `\n`, `\u00e9`, or a surrogate pair.
    fn escape(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
            b'u' => {
                self.i += 1;
                let c = self.hex4()?;
                if (0xDC00..0xE000).contains(&c) {
                    return None;
                }
                // A leading surrogate must be followed by a trailing one.
                if (0xD800..0xDC00).contains(&c) {
                    self.eat(b'\\')?;
                    self.eat(b'u')?;
                    if !(0xDC00..0xE000).contains(&self.hex4()?) {
                        return None;
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        let mut v = 0;
        for &c in h {
            v = v * 16 + (c as char).to_digit(16)?;
        }
        self.i += 4;
        Some(v)
    }
}

/// Where the plain text of a string ends, from `i`: the first `"`, `\` or control character
/// (or the end of `b`). Eight bytes at a time, as serde_json does (the lowest flagged byte of
/// a word is always a real match), then byte by byte.
fn plain_run(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let rest = b.get(i..).unwrap_or_default();
    for chunk in rest.chunks_exact(8) {
        let x = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
        let ctrl = x.wrapping_sub(ONES * 0x20) & !x;
        let q = x ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let s = x ^ (ONES * u64::from(b'\\'));
        let slash = s.wrapping_sub(ONES) & !s;
        let hit = (ctrl | quote | slash) & HIGH;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
        i += 1;
    }
    i
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

/// A JSON value as a jq value.
#[derive(Clone, Copy)]
struct ValSeed;

impl<'de> serde::de::DeserializeSeed<'de> for ValSeed {
    type Value = Val;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
        d.deserialize_any(self)
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

    /// The shipped JSON sample payloads, with their paths.
    fn fixtures() -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect()
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
        let mut checked = 0;
        for (path, body) in fixtures() {
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

    /// The projected parse says "JSON object" exactly when the full parse does, and then
    /// gives the same answers. `m`: a candidate body.
    fn agrees(keys: &Keys, probe: &crate::rules::Filter, m: &[u8]) {
        use jaq_core::{Ctx, RcIter};
        let full = parse_all(m).filter(|v| matches!(v, Val::Obj(_)));
        let part = parse(m, keys);
        let shown = || String::from_utf8_lossy(m).into_owned();
        assert_eq!(part.is_some(), full.is_some(), "{}", shown());
        if let (Some(part), Some(full)) = (part, full) {
            let run = |input: Val| -> Vec<String> {
                let inputs = RcIter::new(core::iter::empty());
                let vars = vec![Val::Null, Val::Null, Val::Null];
                probe
                    .run((Ctx::new(vars, &inputs), input))
                    .map(|r| format!("{r:?}"))
                    .collect()
            };
            assert_eq!(run(part), run(full), "{}", shown());
        }
    }

    #[test]
    fn scan_is_as_strict_as_the_full_parse() {
        let code = "[.a, .b.c, .s, .ref, .repository.full_name, .data.object.amount]";
        let keys = keys(code).unwrap();
        let probe = crate::rules::compile(code).unwrap();
        let deep = |n: usize| format!(r#"{{"x": {}1{}, "a": 1}}"#, "[".repeat(n), "]".repeat(n));
        let mut cases: Vec<String> = [
            "{}",
            " { } ",
            r#"{"a": 1, "a": 2}"#,
            r#"{"a" : 1 , "b" : { "c" : [ true , false , null ] } }"#,
            "{\"a\":\t1,\r\n\"b\":2}",
            r#"{"a": 1,}"#,
            r#"{"a": 1 "b": 2}"#,
            r#"{"a" 1}"#,
            r#"{a: 1}"#,
            r#"{"a": 1}}"#,
            r#"{"a": 1} x"#,
            r#"[{"a": 1}]"#,
            r#""a""#,
            "",
            "{",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        for n in [
            "0",
            "-0",
            "1",
            "-1",
            "10",
            "01",
            "-",
            "1.",
            ".5",
            "1.5",
            "1e5",
            "1E+5",
            "1e-5",
            "1e",
            "1e+",
            "0.0e-0",
            "-01",
            "1.2.3",
            "2e308",
            "-1e309",
            "1e-400",
            "123456789012345678901234567890",
            &"9".repeat(400),
            "tru",
            "true",
            "nul",
            "null",
            "falsey",
            "false",
        ] {
            cases.push(format!(r#"{{"x": {n}, "a": 1}}"#));
            cases.push(format!(r#"{{"a": {n}}}"#));
            cases.push(format!(r#"{{"x": [{n}], "a": 1}}"#));
        }
        for st in [
            r#""plain""#,
            r#""é ☃ 😀""#,
            r#""\u00e9""#,
            r#""\uD83D\uDE00""#,
            r#""\uD83D""#,
            r#""\uDE00""#,
            r#""\uD83Dx""#,
            r#""\uD83D\u0041""#,
            r#""\u12""#,
            r#""\u12G4""#,
            r#""\x""#,
            r#""\"\\\/\b\f\n\r\t""#,
            "\"tab\there\"",
            "\"nul\u{0}\"",
            "\"del\u{7f}\"",
            r#""unterminated"#,
            r#""ends with \""#,
        ] {
            cases.push(format!(r#"{{"x": {st}, "a": 1}}"#));
            cases.push(format!(r#"{{"s": {st}}}"#));
            cases.push(format!(r#"{{{st}: 1, "a": 1}}"#));
        }
        for n in [125, 126, 127, 128, 129] {
            cases.push(deep(n));
            cases.push(format!(r#"{{"a": {}1{}}}"#, "[".repeat(n), "]".repeat(n)));
            cases.push(format!(
                r#"{{"b": {}"c": 1{}}}"#,
                "{\"c\": ".repeat(n),
                "}".repeat(n)
            ));
        }
        for c in &cases {
            agrees(&keys, &probe, c.as_bytes());
        }
        // Not UTF-8, in a skipped string and in a kept one.
        agrees(&keys, &probe, b"{\"x\": \"\xff\", \"a\": 1}");
        agrees(&keys, &probe, b"{\"s\": \"\xc3\"}");

        // The shipped payloads, each broken many ways: one to three bytes dropped, added or
        // replaced by ones that matter to JSON.
        let alphabet = b"{}[]:,\"\\/ \t\n0123456789-+.eEtrufalsnu\x01\x1fDdCc\xc3\xa9";
        let mut rng = fastrand::Rng::with_seed(7);
        let mut bodies = 0;
        for (_, body) in fixtures() {
            agrees(&keys, &probe, &body);
            for _ in 0..3000 {
                let mut m = body.clone();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(..m.len());
                    let b = alphabet[rng.usize(..alphabet.len())];
                    match rng.u8(..3) {
                        0 => {
                            m.remove(at);
                        }
                        1 => m.insert(at, b),
                        _ => m[at] = b,
                    }
                }
                agrees(&keys, &probe, &m);
            }
            bodies += 1;
        }
        assert!(bodies >= 3);
    }

    fn gen(rng: &mut fastrand::Rng, depth: usize, out: &mut Vec<u8>) {
        let atoms: [&[u8]; 24] = [
            b"0",
            b"-0",
            b"12",
            b"1.5e3",
            b"-2E-2",
            b"1e400",
            b"01",
            b"1.",
            b"true",
            b"false",
            b"null",
            b"tru",
            b"\"a\"",
            b"\"\\u00e9\"",
            b"\"\\uD83D\\uDE00\"",
            b"\"\\uD83D\"",
            b"\"\\q\"",
            b"\"x\ty\"",
            b"\"\xc3\xa9\"",
            b"\"\xff\"",
            b"\"",
            b"[",
            b"}",
            b"",
        ];
        let ws: [&[u8]; 4] = [b"", b" ", b"\n", b"\t "];
        // Now and then a long run, so that structure lands anywhere in a 64-byte block.
        let space = |rng: &mut fastrand::Rng, out: &mut Vec<u8>| match rng.u8(..8) {
            0 => out.resize(out.len() + rng.usize(..70), b' '),
            n => out.extend_from_slice(ws[usize::from(n) % 4]),
        };
        space(rng, out);
        match (depth, rng.u8(..7)) {
            (d, 0 | 1) if d < 6 => {
                out.push(b'{');
                for k in 0..rng.usize(..4) {
                    if k > 0 {
                        out.extend_from_slice(if rng.u8(..40) == 0 { b"" } else { b"," });
                    }
                    let key: &[u8] = [
                        b"\"a\"" as &[u8],
                        b"\"b\"",
                        b"\"s\"",
                        b"\"c\"",
                        b"\"ref\"",
                        b"\"\\u0061\"",
                        b"a",
                    ][rng.usize(..7)];
                    out.extend_from_slice(key);
                    out.extend_from_slice(if rng.u8(..40) == 0 { b"" } else { b":" });
                    gen(rng, d + 1, out);
                }
                out.extend_from_slice(if rng.u8(..40) == 0 { b"]" } else { b"}" });
            }
            (d, 2) if d < 6 => {
                out.push(b'[');
                for k in 0..rng.usize(..4) {
                    if k > 0 {
                        out.push(b',');
                    }
                    gen(rng, d + 1, out);
                }
                out.push(b']');
            }
            // A long string of plain text and escapes (runs of backslashes included), with
            // now and then a mistake: a raw control character, a bad escape, no end.
            (_, 3) => {
                let parts: [&[u8]; 12] = [
                    b"abcdefgh",
                    b"x",
                    b"\\\\",
                    b"\\\"",
                    b"\\\\\\\"",
                    b"\\n",
                    b"\\u00e9",
                    b"\\uD83D\\uDE00",
                    b"\xc3\xa9",
                    b"\\",
                    b"\n",
                    b"\\q",
                ];
                out.push(b'"');
                for _ in 0..rng.usize(..40) {
                    // The last three are mistakes (a lone backslash may also pair up with
                    // what follows).
                    let n = if rng.u8(..30) == 0 { 12 } else { 9 };
                    out.extend_from_slice(parts[rng.usize(..n)]);
                }
                if rng.u8(..30) != 0 {
                    out.push(b'"');
                }
            }
            _ => out.extend_from_slice(atoms[rng.usize(..atoms.len())]),
        }
        space(rng, out);
    }

    /// Random documents from a small grammar with mistakes mixed in (bad numbers, literals,
    /// escapes, surrogates and UTF-8, missing commas and colons, mismatched brackets), with
    /// long strings and runs of whitespace so that every token lands at every place of a
    /// 64-byte block (see `blocks`): the two parses agree on every one. `HG_GEN=1000000` runs
    /// more (a million agreed, locally; 50,000 with each of the SSE2 and byte-loop classifiers).
    #[test]
    fn generated_documents_agree() {
        let code = "[.a, .b.c, .s, .ref, .c.a.b]";
        let keys = keys(code).unwrap();
        let probe = crate::rules::compile(code).unwrap();
        let mut rng = fastrand::Rng::with_seed(11);
        let n: usize = std::env::var("HG_GEN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        let (mut objects, mut valid) = (0, 0);
        for _ in 0..n {
            let mut m = Vec::new();
            gen(&mut rng, 0, &mut m);
            if m.trim_ascii_start().first() == Some(&b'{') {
                objects += 1;
            }
            if parse(&m, &keys).is_some() {
                valid += 1;
            }
            agrees(&keys, &probe, &m);
        }
        assert!(objects > n / 4, "{objects}");
        // Enough of them are JSON for the answers to be compared too.
        assert!(valid > n / 20, "{valid} of {n}");
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
        // A key with an escape is matched by its value.
        let escaped = super::keys(".xA, .b").unwrap();
        let v = parse(br#"{"x\u0041": 1, "b\n": 2, "b": 3}"#, &escaped).unwrap();
        assert_eq!(v.to_string(), r#"{"xA":1,"b":3}"#);
        assert!(parse(b"[1,2]", &keys).is_none());
        assert!(parse(br#"{"a": 1, "b": [}"#, &keys).is_none());
        assert!(parse(b"{\"a\": 1, \"b\": \"\xff\"}", &keys).is_none());
    }
}
