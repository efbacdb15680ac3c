//! Constructs with which a jq program can run for ever or build a huge value: `until`,
//! `while`, `repeat`, `recurse(f)`, and `range` with a bound that is not a small number
//! literal. They are legitimate, so `check` warns rather than refuses: at run time such a
//! program is stopped at its deadline or memory budget and its delivery becomes a dead letter.

/// Bounds up to which `range` with literal bounds is not worth a warning.
const SMALL_RANGE: f64 = 1e6;

/// Each construct found, as (byte offset in `code`, what to tell the operator).
pub fn warnings(code: &str) -> Vec<(usize, String)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => i = after_string(b, i),
            b'#' => {
                i = b[i..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(b.len(), |p| i + p)
            }
            c if is_ident(c)
                && (i == 0 || !matches!(b[i - 1], b'.' | b'$' | b'@') && !is_ident(b[i - 1])) =>
            {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let name = &code[start..i];
                let call = code[i..].trim_start().starts_with('(');
                match name {
                    "until" | "while" | "repeat" => out.push((start, endless(name))),
                    "recurse" if call => out.push((start, endless("recurse(f)"))),
                    "range" if call => {
                        if let Some(why) = large_range(code, i) {
                            out.push((start, why));
                        }
                    }
                    _ => {}
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn endless(what: &str) -> String {
    format!("jq `{what}` can run without end: a run is stopped at its deadline and its delivery becomes a dead letter")
}

/// Why `range(...)` at `open` (just before its parenthesis) may be large, if it may.
fn large_range(code: &str, open: usize) -> Option<String> {
    let start = open + code[open..].find('(')? + 1;
    let (mut depth, mut end) = (0i32, None);
    for (k, c) in code[start..].char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => {
                end = Some(start + k);
                break;
            }
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    let args = &code[start..end?];
    for bound in args.split(';') {
        match bound.trim().parse::<f64>() {
            Ok(n) if n.abs() <= SMALL_RANGE => {}
            Ok(n) => {
                return Some(format!(
                    "jq `range` up to {n}: a run that large is stopped at its deadline or memory budget and its delivery becomes a dead letter"
                ))
            }
            Err(_) => {
                return Some(format!(
                    "jq `range` bound `{}` is not a number literal: if it is large, the run is stopped at its deadline or memory budget and its delivery becomes a dead letter",
                    bound.trim()
                ))
            }
        }
    }
    None
}

fn after_string(b: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

#[cfg(test)]
mod tests {
    use super::warnings;

    fn found(code: &str) -> Vec<usize> {
        warnings(code).into_iter().map(|(at, _)| at).collect()
    }

    #[test]
    fn endless_constructs_are_found_where_they_are() {
        assert_eq!(found("last(range(1e12)) > 0"), vec![5]);
        assert_eq!(found("[range(.n)] | length"), vec![1]);
        assert_eq!(found(".a | until(. > 3; . + 1)"), vec![5]);
        assert_eq!(found("[limit(3; repeat(1))]"), vec![10]);
        assert_eq!(found("recurse(.children[])"), vec![0]);
        assert!(warnings("range(1e12)")[0].1.contains("1000000000000"));
    }

    #[test]
    fn bounded_programs_pass_quietly() {
        for code in [
            ".ref == \"refs/heads/main\"",
            "[range(10)] | length",
            "[range(0; 100; 2)]",
            "recurse | numbers",
            "\"until while repeat\" | length",
            ".while.repeat # until",
            "{range: .a}",
            "$__loc__ | .file",
        ] {
            assert!(warnings(code).is_empty(), "{code}: {:?}", warnings(code));
        }
    }
}
