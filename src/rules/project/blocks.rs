//! Checking an unread array or object 64 bytes at a time, the way simdjson finds structure:
//! each block is classified into bit masks (quotes, backslashes, control characters,
//! whitespace, brackets and separators) with vector compares, the bytes inside strings are
//! found from the quote mask by a prefix XOR, and only the tokens outside strings are walked
//! one by one through the JSON grammar. A string costs nothing per byte beyond its block's
//! classification, and no branch depends on its length: on a GitHub push, whose unread
//! `commits` are hundreds of short strings, the byte-by-byte walk spent most of its time
//! finding where each string ends (about a hundred instructions a string).
//!
//! As strict as the rest of [`super::Scan`]: control characters in strings, every escape
//! (surrogate pairs included), numbers (serde_json's range), literals, commas, colons,
//! bracket pairs and the nesting limit are all checked; numbers, literals and escapes by the
//! same code as the byte-by-byte walk. The text is already known to be UTF-8.

use super::{Scan, MAX_DEPTH};

/// One block's bytes by class, bit `k` for byte `k`.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Masks {
    quote: u64,
    backslash: u64,
    /// Below 0x20; `\t`, `\n` and `\r` are whitespace too.
    control: u64,
    whitespace: u64,
    /// `{ } [ ] : ,`
    structural: u64,
}

/// What the grammar expects at the next token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Value,
    /// After `[`.
    ValueOrClose,
    /// After `{`.
    KeyOrClose,
    /// After `,` in an object.
    Key,
    Colon,
    /// After a value.
    CommaOrClose,
}

/// Checks the array or object that starts at `scan.i` (its `[` or `{`), nested `depth`
/// deep, and moves past it; `None` when it is not valid JSON.
pub(super) fn container(scan: &mut Scan, depth: usize) -> Option<()> {
    let b = scan.b;
    // Whether the containers open now are objects, innermost in bit 0, and how many.
    let (mut objects, mut open) = (0u128, 0usize);
    let mut expect = Expect::Value;
    // What carries from one block to the next: inside a string, a scalar running on, the
    // first byte escaped by a trailing backslash.
    let (mut in_string, mut in_scalar, mut escaped_next) = (0u64, 0u64, false);
    // Escapes already checked up to here (a surrogate pair is checked at its first half).
    let mut checked_to = 0;
    let mut base = scan.i;
    while base < b.len() {
        let m = match b.get(base..base + 64) {
            Some(block) => classify(block),
            None => {
                // The last partial block, padded with whitespace.
                let mut block = [b' '; 64];
                block[..b.len() - base].copy_from_slice(&b[base..]);
                classify(&block)
            }
        };

        // Characters escaped by a backslash: a backslash escapes the next byte unless it is
        // escaped itself. Backslashes are rare, so this goes one by one.
        let mut escaped = u64::from(escaped_next);
        let mut escapes = 0u64;
        escaped_next = false;
        let mut todo = m.backslash & !escaped;
        while todo != 0 {
            let k = todo.trailing_zeros();
            escapes |= 1 << k;
            if k == 63 {
                escaped_next = true;
                todo = 0;
            } else {
                escaped |= 1 << (k + 1);
                todo &= !(1 << k) & !(1 << (k + 1));
            }
        }
        let quotes = m.quote & !escaped;
        // Bytes from an opening quote up to (not including) its closing one.
        let inside = prefix_xor(quotes) ^ in_string;
        in_string = 0u64.wrapping_sub(inside >> 63);
        if m.control & inside != 0 {
            return None;
        }
        // Escapes inside strings are checked here; a backslash outside one is part of a
        // scalar, which the grammar refuses.
        let mut esc = escapes & inside;
        while esc != 0 {
            let at = base + esc.trailing_zeros() as usize;
            esc &= esc - 1;
            if at >= checked_to {
                let mut s = Scan { i: at + 1, ..*scan };
                s.escape()?;
                checked_to = s.i;
            }
        }
        let scalar = !(inside | quotes | m.whitespace | m.structural);
        let starts = scalar & !((scalar << 1) | in_scalar);
        in_scalar = scalar >> 63;
        let mut tokens = (m.structural & !inside) | (quotes & inside) | starts;

        while tokens != 0 {
            let at = base + tokens.trailing_zeros() as usize;
            tokens &= tokens - 1;
            let c = *b.get(at)?;
            let in_object = objects & 1 == 1;
            expect = match (expect, c) {
                (Expect::Value | Expect::ValueOrClose, b'{' | b'[') => {
                    if depth + open >= MAX_DEPTH {
                        return None;
                    }
                    objects = (objects << 1) | u128::from(c == b'{');
                    open += 1;
                    if c == b'{' {
                        Expect::KeyOrClose
                    } else {
                        Expect::ValueOrClose
                    }
                }
                (Expect::Value | Expect::ValueOrClose, b'"') => Expect::CommaOrClose,
                (Expect::ValueOrClose | Expect::CommaOrClose, b']') if !in_object => {
                    Expect::CommaOrClose
                }
                (Expect::KeyOrClose | Expect::CommaOrClose, b'}') if in_object => {
                    Expect::CommaOrClose
                }
                (Expect::KeyOrClose | Expect::Key, b'"') => Expect::Colon,
                (Expect::Colon, b':') => Expect::Value,
                (Expect::CommaOrClose, b',') if in_object => Expect::Key,
                (Expect::CommaOrClose, b',') => Expect::Value,
                (Expect::Value | Expect::ValueOrClose, _) => {
                    let mut s = Scan { i: at, ..*scan };
                    s.scalar()?;
                    // The whole run of scalar bytes must be the number or literal.
                    let after = b.get(s.i).copied().unwrap_or(b' ');
                    if !matches!(after, b' ' | b'\t' | b'\n' | b'\r' | b'"')
                        && !is_structural(after)
                    {
                        return None;
                    }
                    Expect::CommaOrClose
                }
                _ => return None,
            };
            if matches!(c, b']' | b'}') {
                objects >>= 1;
                open -= 1;
                if open == 0 {
                    scan.i = at + 1;
                    return Some(());
                }
            }
        }
        base += 64;
    }
    None
}

fn is_structural(c: u8) -> bool {
    matches!(c, b'{' | b'}' | b'[' | b']' | b':' | b',')
}

/// Bit `k` set when an odd number of bits at or below `k` are set in `x`.
fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
}

#[cfg(not(target_arch = "x86_64"))]
fn classify(block: &[u8]) -> Masks {
    classify_bytes(block)
}

/// The masks of a 64-byte block, one byte at a time (the portable form).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn classify_bytes(block: &[u8]) -> Masks {
    let mut m = Masks::default();
    for (k, &c) in block.iter().take(64).enumerate() {
        let bit = 1u64 << k;
        match c {
            b'"' => m.quote |= bit,
            b'\\' => m.backslash |= bit,
            b' ' => m.whitespace |= bit,
            b'\t' | b'\n' | b'\r' => {
                m.whitespace |= bit;
                m.control |= bit;
            }
            0..=0x1f => m.control |= bit,
            c if is_structural(c) => m.structural |= bit,
            _ => {}
        }
    }
    m
}

/// The masks of a 64-byte block: with AVX2 where the CPU has it (checked once, then a cached
/// flag), else with SSE2, which every x86-64 CPU has.
#[cfg(target_arch = "x86_64")]
fn classify(block: &[u8]) -> Masks {
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just seen to support AVX2.
        unsafe { classify_avx2(block) }
    } else {
        classify_sse2(block)
    }
}

/// One class's compares: the bytes of `x` equal to any of `cs`.
#[cfg(target_arch = "x86_64")]
macro_rules! any_of {
    ($cmpeq:ident, $or:ident, $splat:ident, $x:expr, $c:expr $(, $cs:expr)*) => {
        {
            let v = $cmpeq($x, $splat($c as i8));
            $( let v = $or(v, $cmpeq($x, $splat($cs as i8))); )*
            v
        }
    };
}

/// The body of [`classify`] for one width of vector (`$lane` bytes), with that width's
/// intrinsics. Unsafe to expand: it loads `$lane` bytes at a time from `$block`'s chunks.
#[cfg(target_arch = "x86_64")]
macro_rules! classify_lanes {
    ($block:expr, $lane:literal as $bits:ty,
     $load:ident, $cmpeq:ident, $or:ident, $min:ident, $movemask:ident, $splat:ident) => {{
        let mut m = Masks::default();
        for (k, chunk) in $block.chunks_exact($lane).take(64 / $lane).enumerate() {
            let x = $load(chunk.as_ptr().cast());
            let shift = $lane * k;
            let mask = |v| u64::from($movemask(v) as $bits) << shift;
            m.quote |= mask(any_of!($cmpeq, $or, $splat, x, b'"'));
            m.backslash |= mask(any_of!($cmpeq, $or, $splat, x, b'\\'));
            // A byte at most 0x1f is its own minimum with 0x1f: a control character.
            m.control |= mask($cmpeq($min(x, $splat(0x1f)), x));
            m.whitespace |= mask(any_of!($cmpeq, $or, $splat, x, b' ', b'\t', b'\n', b'\r'));
            // `{` and `[`, `}` and `]` differ only in bit 0x20.
            let folded = $or(x, $splat(0x20));
            let brackets = any_of!($cmpeq, $or, $splat, folded, b'{', b'}');
            m.structural |= mask($or(brackets, any_of!($cmpeq, $or, $splat, x, b':', b',')));
        }
        m
    }};
}

/// [`classify`] thirty-two bytes per compare.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn classify_avx2(block: &[u8]) -> Masks {
    use std::arch::x86_64::{
        _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_min_epu8, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8,
    };
    // SAFETY: the caller checked AVX2; each load reads one chunk of exactly 32 bytes, with no
    // alignment needed.
    unsafe {
        classify_lanes!(
            block,
            32 as u32,
            _mm256_loadu_si256,
            _mm256_cmpeq_epi8,
            _mm256_or_si256,
            _mm256_min_epu8,
            _mm256_movemask_epi8,
            _mm256_set1_epi8
        )
    }
}

/// [`classify`] sixteen bytes per compare (SSE2, on every x86-64 CPU).
#[cfg(target_arch = "x86_64")]
fn classify_sse2(block: &[u8]) -> Masks {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of every x86-64 CPU, so its instructions are always available;
    // each load reads one chunk of exactly 16 bytes, with no alignment needed.
    unsafe {
        classify_lanes!(
            block,
            16 as u16,
            _mm_loadu_si128,
            _mm_cmpeq_epi8,
            _mm_or_si128,
            _mm_min_epu8,
            _mm_movemask_epi8,
            _mm_set1_epi8
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_xor_marks_inside_quotes() {
        // Quotes at 1 and 4: bits 1..=3 inside.
        assert_eq!(prefix_xor(0b1_0010), 0b0_1110);
        assert_eq!(prefix_xor(1 << 63), 1 << 63);
        assert_eq!(prefix_xor(1), u64::MAX);
    }

    #[test]
    fn vector_and_byte_classification_agree() {
        let mut rng = fastrand::Rng::with_seed(3);
        let alphabet = b"{}[]:,\"\\ \t\n\r\x00\x1f\x20\x7f\x80\xff;=|]{[}azAZ09\x0b\x5b\x7b";
        for _ in 0..20_000 {
            let block: Vec<u8> = (0..64)
                .map(|_| {
                    if rng.bool() {
                        alphabet[rng.usize(..alphabet.len())]
                    } else {
                        rng.u8(..)
                    }
                })
                .collect();
            let bytes = classify_bytes(&block);
            assert_eq!(classify(&block), bytes, "{block:?}");
            #[cfg(target_arch = "x86_64")]
            assert_eq!(classify_sse2(&block), bytes, "{block:?}");
        }
    }
}
