//! `${VAR}` resolution of arbitrary text (see `hookgate::fuzzing::interpolation`).
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run interpolation -- -max_total_time=60
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookgate::fuzzing::interpolation(data));
