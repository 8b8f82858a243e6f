//! Handing a static executable to the ptrace tracer (the start-up dance is
//! `roar_events::attach`, shared with roar-ptrace's `--preload-only`
//! launcher): this library finds the tracer binary and asks, right before
//! the real exec of a static program (exec.rs).

use std::ffi::{CStr, CString};

/// The tracer binary: `$ROAR_PTRACE_BIN` (set by `roar run`; empty: never
/// attach), else `roar-ptrace` next to this library (roar_nb/_native/, or
/// a Cargo target dir).
fn tracer_binary() -> Option<CString> {
    // SAFETY: getenv on a literal key.
    let v = unsafe { libc::getenv(c"ROAR_PTRACE_BIN".as_ptr()) };
    let path = if v.is_null() {
        let lib = crate::library_path()?;
        let dir = &lib[..lib.iter().rposition(|&b| b == b'/')?];
        let mut p = dir.to_vec();
        p.extend_from_slice(b"/roar-ptrace");
        p
    } else {
        // SAFETY: getenv returns a NUL-terminated string.
        unsafe { CStr::from_ptr(v) }.to_bytes().to_vec()
    };
    let c = CString::new(path).ok()?;
    // SAFETY: NUL-terminated path.
    (!c.as_bytes().is_empty() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0).then_some(c)
}

/// Have `roar-ptrace --attach` trace this process (recording into `dir`)
/// from its next exec on. True when it has seized us; false when it could
/// not (no tracer binary, ptrace refused: the exec then runs untraced).
pub fn attach_tracer(dir: &[u8]) -> bool {
    tracer_binary().is_some_and(|bin| roar_events::attach::attach_tracer(&bin, dir))
}
