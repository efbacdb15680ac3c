//! Arbitrary bytes as routes.yaml (see `hookgate::fuzzing::config`).
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run config -- -max_total_time=60
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookgate::fuzzing::config(data));
