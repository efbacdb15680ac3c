//! HMAC over several byte slices with constant-time comparison (`verify_slice`), shared by
//! every HMAC-based provider.

use crate::config::HmacAlgorithm;
use hmac::{Hmac, Mac};

fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> M {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <M as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        m.update(p);
    }
    m
}

/// True when `expected` is the HMAC of the concatenated `parts` under `key`; constant-time.
pub fn verify(alg: HmacAlgorithm, key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    match alg {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts)
            .verify_slice(expected)
            .is_ok(),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts)
            .verify_slice(expected)
            .is_ok(),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts)
            .verify_slice(expected)
            .is_ok(),
    }
}

/// The HMAC itself, for `hookgate sign` and tests.
pub fn compute(alg: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match alg {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts)
            .finalize()
            .into_bytes()
            .to_vec(),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts)
            .finalize()
            .into_bytes()
            .to_vec(),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}
