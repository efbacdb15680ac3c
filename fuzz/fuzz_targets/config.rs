//! Arbitrary bytes as routes.yaml: the loader reports problems, never panics.
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run config -- -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let env = |_: &str| None;
    let _ = hookgate::config::load_bytes(std::path::Path::new("fuzz.yaml"), data, &env);
});
