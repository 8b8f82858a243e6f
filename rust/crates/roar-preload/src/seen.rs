//! The per-process dedupe set of (op, path) keys.
//!
//! Every open that gets past the path filters asks this set whether its
//! (op, path) is new, so it sits on the per-file hot path. A
//! `HashSet<Box<[u8]>>` cost a key copy and a malloc per new key, and every
//! lookup or rehash dereferenced a separate heap block per entry; this table
//! keeps all keys in one byte arena and the slots (full 64-bit hash, arena
//! offset, length) in one flat array with linear probing. A lookup reads one
//! slot and compares bytes only on a full-hash match; growing re-slots by the
//! stored hashes without touching the keys; removal (after unlink/rename,
//! rare) shifts later entries back (no tombstones), and the arena is
//! compacted once removed keys dominate it.
//!
//! Self-contained (std only): it must never call our hooked libc functions.

/// Slots in the first table (grown x2 whenever it is half full).
const MIN_SLOTS: usize = 256;

/// One slot: `len == 0` marks an empty slot (a key is never empty: it holds
/// at least the op byte).
#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    off: u32,
    len: u32,
}

const EMPTY: Slot = Slot {
    hash: 0,
    off: 0,
    len: 0,
};

/// A set of byte keys `op ++ path`.
#[derive(Default)]
pub struct SeenSet {
    /// Power-of-two length (or 0 before the first insert).
    slots: Vec<Slot>,
    /// Key bytes, back to back; keys are addressed by (u32 offset, u32 len).
    arena: Vec<u8>,
    /// Number of keys in the set.
    live: usize,
    /// Bytes of `arena` that belong to removed keys.
    garbage: usize,
}

/// FxHash-style multiply-rotate over 8-byte words, then a final mix.
///
/// The multiply-rotate state carries its entropy in the high bits (a
/// product's low bits depend only on the operands' low bits) while the table
/// indexes by the low bits: without the final fold + multiply, paths that
/// differ in a few digits in the middle ("f00017.dat", "f00018.dat") all land
/// in a handful of buckets. Paths are not adversarial input here, and we want
/// the cheapest hash that spreads path bytes well.
#[inline]
fn hash_key(op: u8, path: &[u8]) -> u64 {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    #[inline(always)]
    fn add(h: u64, w: u64) -> u64 {
        (h.rotate_left(5) ^ w).wrapping_mul(SEED)
    }
    let mut h = add(0, op as u64);
    let mut chunks = path.chunks_exact(8);
    for c in &mut chunks {
        h = add(h, u64::from_le_bytes(c.try_into().unwrap()));
    }
    let rest = chunks.remainder();
    let mut w = [0u8; 8];
    w[..rest.len()].copy_from_slice(rest);
    h = add(h, u64::from_le_bytes(w) ^ ((path.len() as u64) << 56));
    h ^= h >> 32;
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

impl SeenSet {
    /// An empty set (allocates nothing until the first insert).
    pub const fn new() -> SeenSet {
        SeenSet {
            slots: Vec::new(),
            arena: Vec::new(),
            live: 0,
            garbage: 0,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Remove every key, keeping the allocations.
    pub fn clear(&mut self) {
        if self.live != 0 || self.garbage != 0 {
            self.slots.fill(EMPTY);
        }
        self.arena.clear();
        self.live = 0;
        self.garbage = 0;
    }

    #[inline]
    fn key_eq(&self, s: Slot, op: u8, path: &[u8]) -> bool {
        let off = s.off as usize;
        s.len as usize == path.len() + 1
            && self.arena[off] == op
            && self.arena[off + 1..off + s.len as usize] == *path
    }

    /// Index of the slot holding the key, or of the empty slot where the
    /// probe for it ended (`Err`). The table must not be empty.
    #[inline]
    fn find(&self, h: u64, op: u8, path: &[u8]) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            if s.len == 0 {
                return Err(i);
            }
            if s.hash == h && self.key_eq(s, op, path) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Re-slot every key into a table of `cap` slots; with `compact`, also
    /// copy the live keys into a fresh arena (dropping removed keys' bytes).
    fn rebuild(&mut self, cap: usize, compact: bool) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; cap]);
        let old_arena = if compact {
            let live_bytes = self.arena.len() - self.garbage;
            Some(std::mem::replace(
                &mut self.arena,
                Vec::with_capacity(live_bytes),
            ))
        } else {
            None
        };
        let mask = cap - 1;
        for mut s in old.into_iter().filter(|s| s.len != 0) {
            if let Some(a) = &old_arena {
                let off = s.off as usize;
                s.off = self.arena.len() as u32;
                self.arena.extend_from_slice(&a[off..off + s.len as usize]);
            }
            let mut i = s.hash as usize & mask;
            while self.slots[i].len != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
        if compact {
            self.garbage = 0;
        }
    }

    /// Add `op ++ path`; true if it was not in the set yet.
    pub fn insert(&mut self, op: u8, path: &[u8]) -> bool {
        let klen = path.len() + 1;
        if klen >= u32::MAX as usize {
            return true; // cannot be stored (and cannot be a real path)
        }
        let h = hash_key(op, path);
        let mut at = if self.slots.is_empty() {
            None
        } else {
            match self.find(h, op, path) {
                Ok(_) => return false,
                Err(i) => Some(i),
            }
        };
        if (self.live + 1) * 2 > self.slots.len() {
            let cap = (self.slots.len() * 2).max(MIN_SLOTS);
            self.rebuild(cap, false);
            at = None;
        }
        if self.arena.len() + klen > u32::MAX as usize {
            // 4 GiB of distinct paths in one process: drop the removed keys'
            // bytes, and if that is not enough, start over (a later open of
            // an old path is recorded once more; nothing is lost).
            if self.garbage > 0 {
                let cap = self.slots.len();
                self.rebuild(cap, true);
            }
            if self.arena.len() + klen > u32::MAX as usize {
                self.clear();
            }
            at = None;
        }
        let i = match at {
            Some(i) => i,
            None => match self.find(h, op, path) {
                Ok(_) => return false, // unreachable: it was not there before
                Err(i) => i,
            },
        };
        if self.arena.capacity() == 0 {
            self.arena.reserve(16 * 1024);
        }
        let off = self.arena.len() as u32;
        self.arena.push(op);
        self.arena.extend_from_slice(path);
        self.slots[i] = Slot {
            hash: h,
            off,
            len: klen as u32,
        };
        self.live += 1;
        true
    }

    /// Whether `op ++ path` is in the set.
    pub fn contains(&self, op: u8, path: &[u8]) -> bool {
        !self.slots.is_empty() && self.find(hash_key(op, path), op, path).is_ok()
    }

    /// Remove `op ++ path` if present (backward-shift deletion).
    pub fn remove(&mut self, op: u8, path: &[u8]) {
        if self.live == 0 {
            return;
        }
        let Ok(mut i) = self.find(hash_key(op, path), op, path) else {
            return;
        };
        self.garbage += self.slots[i].len as usize;
        self.live -= 1;
        let mask = self.slots.len() - 1;
        let mut j = i;
        loop {
            self.slots[i] = EMPTY;
            // Find the next entry after the hole that may move into it: one
            // whose home slot is not cyclically in (i, j].
            loop {
                j = (j + 1) & mask;
                let s = self.slots[j];
                if s.len == 0 {
                    self.maybe_compact();
                    return;
                }
                let home = s.hash as usize & mask;
                let stays = if i <= j {
                    i < home && home <= j
                } else {
                    i < home || home <= j
                };
                if !stays {
                    break;
                }
            }
            self.slots[i] = self.slots[j];
            i = j;
        }
    }

    fn maybe_compact(&mut self) {
        if self.garbage > 1 << 20 && self.garbage > self.arena.len() - self.garbage {
            let cap = self.slots.len();
            self.rebuild(cap, true);
        }
    }
}
