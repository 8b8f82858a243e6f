//! Fault injection for tests: make a hook panic on purpose, to check that a
//! bug inside the library switches tracing off (the job becomes `partial`)
//! and leaves the traced program's results alone.
//!
//! `ROAR_TEST_PANIC_ON_OPEN=<substring>`: an open-like call whose resolved
//! path contains the substring panics inside the state lock, as a real bug
//! would. Read once at start-up; unset (always, outside the tests) costs one
//! relaxed load per recorded open. Nothing else here.

use std::sync::OnceLock;

static PANIC_ON: OnceLock<Vec<u8>> = OnceLock::new();

/// Read `ROAR_TEST_PANIC_ON_OPEN` (called once, by the library constructor).
pub fn init_from_env() {
    if let Some(v) = std::env::var_os("ROAR_TEST_PANIC_ON_OPEN") {
        let v = std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec();
        if !v.is_empty() {
            let _ = PANIC_ON.set(v);
        }
    }
}

/// Whether an open of `path` is to panic.
pub fn panics_on(path: &[u8]) -> bool {
    PANIC_ON
        .get()
        .is_some_and(|needle| path.windows(needle.len()).any(|w| w == needle.as_slice()))
}
