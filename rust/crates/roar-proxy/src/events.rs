//! S3 lineage events, written through to `<events-dir>/proxy-<pid>-<t0_ns>.s3.jsonl`.
//!
//! A sibling of the tracers' binary `.ev` files (rust/EVENTS.md documents both): one JSON
//! object per line, appended with a single `write` per event before the client gets its
//! response, so stopping the proxy right after a request loses nothing. Lines carry object
//! names and digests only: never credentials, headers or bodies.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

/// One lineage-relevant S3 operation that succeeded.
#[derive(Debug, Default)]
pub struct S3Event {
    /// `get`, `put`, `complete`, `copy` or `delete`.
    pub op: &'static str,
    /// `in` (read), `out` (written) or `del` (deleted).
    pub dir: &'static str,
    /// Bucket name.
    pub bucket: String,
    /// Object key (decoded; invalid UTF-8 replaced).
    pub key: String,
    /// `x-amz-version-id` of the version read or written, if the bucket is versioned.
    pub version_id: Option<String>,
    /// Object bytes (for a Range GET: the bytes of the range).
    pub size: Option<u64>,
    /// ETag as S3 returned it (quotes stripped).
    pub etag: Option<String>,
    /// blake3 hex of the whole object's bytes (None for a Range GET).
    pub blake3: Option<String>,
    /// The `Range` header of a partial GET.
    pub range: Option<String>,
}

/// CLOCK_MONOTONIC in ns: the clock the tracers stamp their events with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl S3Event {
    /// The event as one JSON line (with its trailing newline).
    pub fn to_json_line(&self, t_ns: u64) -> String {
        let mut o = String::with_capacity(256);
        o.push_str(&format!(
            "{{\"v\":1,\"t_ns\":{t_ns},\"op\":\"{}\",\"dir\":\"{}\",\"bucket\":",
            self.op, self.dir
        ));
        json_str(&mut o, &self.bucket);
        o.push_str(",\"key\":");
        json_str(&mut o, &self.key);
        for (name, v) in [
            ("version_id", &self.version_id),
            ("etag", &self.etag),
            ("blake3", &self.blake3),
            ("range", &self.range),
        ] {
            o.push_str(&format!(",\"{name}\":"));
            match v {
                Some(s) => json_str(&mut o, s),
                None => o.push_str("null"),
            }
        }
        match self.size {
            Some(n) => o.push_str(&format!(",\"size\":{n}")),
            None => o.push_str(",\"size\":null"),
        }
        o.push_str("}\n");
        o
    }
}

/// The proxy's event file (or nowhere, when no directory was given).
pub struct EventLog {
    file: Option<Mutex<File>>,
}

impl EventLog {
    /// Opens (creates, mode 0600, append) the event file in `dir`; None logs nothing.
    pub fn open(dir: Option<&str>) -> std::io::Result<Self> {
        let Some(dir) = dir else {
            return Ok(EventLog { file: None });
        };
        let path = format!(
            "{dir}/proxy-{}-{}.s3.jsonl",
            std::process::id(),
            monotonic_ns()
        );
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(EventLog {
            file: Some(Mutex::new(f)),
        })
    }

    /// Appends one event in a single write. A failed write is reported on stderr: the
    /// Python side then sees fewer events, and says so via the proxy's exit status.
    pub fn write(&self, ev: &S3Event) {
        let Some(f) = &self.file else { return };
        let line = ev.to_json_line(monotonic_ns());
        let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            crate::events::stderr_line(&format!("roar-proxy: cannot write an event: {e}"));
            LOST.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Writes one line on stderr, ignoring errors (a closed stderr must not make the proxy panic,
/// as `eprintln!` would).
pub fn stderr_line(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Set when an event could not be written (the proxy then exits with status 3).
pub static LOST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_escapes_names() {
        let ev = S3Event {
            op: "put",
            dir: "out",
            bucket: "b".into(),
            key: "a \"q\"\\\n\u{e9}".into(),
            size: Some(3),
            ..Default::default()
        };
        let line = ev.to_json_line(7);
        assert_eq!(
            line,
            "{\"v\":1,\"t_ns\":7,\"op\":\"put\",\"dir\":\"out\",\"bucket\":\"b\",\"key\":\"a \\\"q\\\"\\\\\\u000a\u{e9}\",\"version_id\":null,\"etag\":null,\"blake3\":null,\"range\":null,\"size\":3}\n"
        );
    }
}
