//! The one rule for the `LD_PRELOAD` value that carries roar's library, shared by the
//! preload library (its own environment, and the envp of every exec it hooks) and
//! roar-ptrace's `--preload-only` launcher; `roar_nb/capture/preload.py` (`compose`)
//! states the same rule for `roar run` and the roar kernel.
//!
//! roar's library goes first; the program's own preloads (jemalloc, tcmalloc) follow in
//! their order; another copy of `libroar_preload.so` is dropped, so no process loads
//! two. ld.so separates entries with ':' or ' '.

/// The library's file name, by which another copy of it is recognised.
pub const LIB_BASENAME: &[u8] = b"libroar_preload.so";

fn entries(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b':' || b == b' ')
        .filter(|e| !e.is_empty())
}

fn is_roar(entry: &[u8], lib: &[u8]) -> bool {
    entry == lib || entry.rsplit(|&b| b == b'/').next() == Some(LIB_BASENAME)
}

/// Whether `value` already loads roar's library first and no other copy of it: then it
/// is left exactly as it is.
pub fn is_composed(value: &[u8], lib: &[u8]) -> bool {
    let mut it = entries(value);
    it.next() == Some(lib) && !it.any(|e| is_roar(e, lib))
}

/// The `LD_PRELOAD` value for `lib` given the `current` one (empty when unset).
pub fn compose(lib: &[u8], current: &[u8]) -> Vec<u8> {
    let mut v = lib.to_vec();
    for e in entries(current).filter(|e| !is_roar(e, lib)) {
        v.push(b':');
        v.extend_from_slice(e);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &[u8] = b"/opt/roar/libroar_preload.so";

    #[test]
    fn the_programs_own_preloads_follow_in_order() {
        assert_eq!(compose(LIB, b""), LIB);
        assert_eq!(
            compose(LIB, b"/usr/lib/libjemalloc.so.2"),
            b"/opt/roar/libroar_preload.so:/usr/lib/libjemalloc.so.2"
        );
        assert_eq!(
            compose(LIB, b"/a.so /b.so::/c.so"),
            b"/opt/roar/libroar_preload.so:/a.so:/b.so:/c.so"
        );
    }

    #[test]
    fn another_copy_is_replaced_and_a_composed_value_is_kept() {
        let old = b"/other/libroar_preload.so:/usr/lib/libtcmalloc.so";
        let v = compose(LIB, old);
        assert_eq!(v, b"/opt/roar/libroar_preload.so:/usr/lib/libtcmalloc.so");
        assert!(is_composed(&v, LIB));
        assert_eq!(compose(LIB, &v), v);
        assert!(!is_composed(old, LIB));
        assert!(!is_composed(
            b"/usr/lib/libtcmalloc.so:/opt/roar/libroar_preload.so",
            LIB
        ));
        assert!(!is_composed(b"", LIB));
    }
}
