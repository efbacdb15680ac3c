//! Arbitrary text as a jq program, compiled only (see `hookgate::fuzzing::jq_compile`).
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run jq_compile -- -max_total_time=60
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookgate::fuzzing::jq_compile(data));
