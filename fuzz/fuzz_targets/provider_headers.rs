//! Arbitrary header values and bodies against every verifier (see
//! `hookgate::fuzzing::provider_headers`).
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run provider_headers -- -max_total_time=60
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookgate::fuzzing::provider_headers(data));
