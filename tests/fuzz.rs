//! The fuzz targets of `hookgate::fuzzing`, run on the stable toolchain: every input of the
//! committed corpus (`fuzz/corpus/TARGET/`), then mutations of it (bit flips, byte edits,
//! repeated and spliced ranges, tokens of the target's language). A fixed seed and a fixed
//! number of mutations keep CI's run the same every time; to search further, set
//! `HOOKGATE_FUZZ_SEED` and `HOOKGATE_FUZZ_RUNS`. An input that fails is written to
//! `target/fuzz-failures/` and its path printed: add it to the corpus, and it is a
//! regression test from then on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const TOKENS: &[&[u8]] = &[
    b"${",
    b"}",
    b":-",
    b": ",
    b"\n  ",
    b"\n- ",
    b"{",
    b"[",
    b"]",
    b"'",
    b"\"",
    b"&a ",
    b"*a",
    b"!!str ",
    b"|\n  ",
    b"null",
    b"true",
    b"1e999",
    b"-1",
    b"\\u0000",
    b"def f: ",
    b"reduce ",
    b" as $x (",
    b"range(",
    b"limit(",
    b"$__loc__",
    b"..",
    b"?//",
    b"|=",
    b"@base64d",
    b"#",
    b"sha256=",
    b"v1=",
    b"t=",
    b",",
    b";",
    b"=",
    b"\r\n",
    b"\0",
    b"\xff",
];

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no corpus for {target}");
    out
}

fn mutate(rng: &mut fastrand::Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(0..=v.len());
        match rng.u8(0..6) {
            0 if !v.is_empty() => {
                let i = rng.usize(0..v.len());
                v[i] ^= 1 << rng.u8(0..8);
            }
            1 if !v.is_empty() => {
                let i = rng.usize(0..v.len());
                v[i] = rng.u8(..);
            }
            2 => {
                let t = TOKENS[rng.usize(0..TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            3 if at < v.len() => {
                let end = rng.usize(at..=v.len().min(at + 64));
                v.drain(at..end);
            }
            4 if at < v.len() => {
                let end = rng.usize(at..=v.len().min(at + 32));
                let piece = v[at..end].to_vec();
                for _ in 0..rng.usize(1..4) {
                    v.splice(at..at, piece.iter().copied());
                }
            }
            _ if !other.is_empty() => {
                let from = rng.usize(0..other.len());
                let end = rng.usize(from..=other.len().min(from + 128));
                v.splice(at..at, other[from..end].iter().copied());
            }
            _ => {}
        }
    }
    v.truncate(1 << 16);
    v
}

fn failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{target}-{:016x}", fastrand::u64(..)));
    std::fs::write(&path, input).unwrap();
    path
}

fn run(target: &str, f: fn(&[u8])) {
    let seed: u64 = std::env::var("HOOKGATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b67_6174_6531);
    let runs: usize = std::env::var("HOOKGATE_FUZZ_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let seeds = corpus(target);
    for (path, data) in &seeds {
        if catch_unwind(AssertUnwindSafe(|| f(data))).is_err() {
            panic!("{target}: corpus input {} fails", path.display());
        }
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut pool: Vec<Vec<u8>> = seeds.into_iter().map(|(_, d)| d).collect();
    for _ in 0..runs {
        let a = &pool[rng.usize(0..pool.len())];
        let b = &pool[rng.usize(0..pool.len())];
        let input = mutate(&mut rng, a, b);
        if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
            let saved = failure(target, &input);
            panic!("{target}: input {} fails (seed {seed})", saved.display());
        }
        // Keep some mutants as parents, so edits compound.
        if pool.len() < 256 && rng.u8(0..8) == 0 {
            pool.push(input);
        }
    }
    println!(
        "{target}: {} corpus inputs and {runs} mutations (seed {seed}) passed",
        pool.len()
    );
}

/// Each target on a thread with a large stack: deep nesting must fail as an error, and a
/// parser's own recursion has room to get there.
fn on_big_stack(target: &'static str) {
    let (_, f) = hookgate::fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .copied()
        .unwrap();
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || run(target, f))
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn fuzz_config() {
    on_big_stack("config");
}

#[test]
fn fuzz_provider_headers() {
    on_big_stack("provider_headers");
}

#[test]
fn fuzz_interpolation() {
    on_big_stack("interpolation");
}

#[test]
fn fuzz_jq_compile() {
    on_big_stack("jq_compile");
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = hookgate::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["config", "provider_headers", "interpolation", "jq_compile"]
    );
}
