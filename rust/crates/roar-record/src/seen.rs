//! The per-process dedupe set: which (op, path) pairs were already recorded.
//!
//! Every open that gets past the path filters asks this set whether its
//! (op, path) is new, so it sits on the per-file hot path. A
//! `HashSet<Box<[u8]>>` of `op ++ path` keys cost a key copy and a malloc per
//! new key, two entries (and two cache misses) for a file that is written
//! then read, and every lookup or rehash dereferenced a separate heap block
//! per entry. Here there is one entry per *path*, with a bit per op, and all
//! paths sit back to back in one byte arena; the slots (full 64-bit hash,
//! arena offset, length + op bits) form one flat array with linear probing.
//! A lookup reads one slot and compares bytes only on a full-hash match;
//! growing re-slots by the stored hashes without touching the paths; removal
//! (after unlink/rename, which forget every op of a path at once) shifts
//! later entries back (no tombstones), and the arena is compacted once
//! removed paths dominate it.
//!
//! Self-contained (std only): it must never call our hooked libc functions.

/// Slots in the first table (grown x2 whenever it is 3/4 full: with 16-byte
/// slots a probe sequence stays within a cache line or two, and a smaller
/// table means fewer pages to fault in and to re-slot).
const MIN_SLOTS: usize = 256;

/// Bytes reserved for the arena at the first insert. A reservation this
/// large is served by mmap and costs address space only until paths fill it
/// page by page; growing from a small buffer instead re-copied (and faulted
/// in) every path at each doubling.
const MIN_ARENA: usize = 1024 * 1024;

/// Low bits of `Slot::meta`: the path length; high bits: the op bits.
const LEN_BITS: u32 = 25;
const LEN_MASK: u32 = (1 << LEN_BITS) - 1;

/// Number of distinct op bits (`bit` arguments are `0..OPS`).
pub const OPS: u32 = 32 - LEN_BITS;

/// One slot: `meta == 0` marks an empty slot (an entry always has an op bit).
#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    off: u32,
    meta: u32,
}

impl Slot {
    #[inline]
    fn len(self) -> usize {
        (self.meta & LEN_MASK) as usize
    }
}

const EMPTY: Slot = Slot {
    hash: 0,
    off: 0,
    meta: 0,
};

/// A set of (op bit, path) pairs, stored per path.
#[derive(Default)]
pub struct SeenSet {
    /// Power-of-two length (or 0 before the first insert).
    slots: Vec<Slot>,
    /// Paths, back to back; addressed by (u32 offset, length).
    arena: Vec<u8>,
    /// Number of paths in the set.
    live: usize,
    /// Bytes of `arena` that belong to removed paths.
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
fn hash_path(path: &[u8]) -> u64 {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    #[inline(always)]
    fn add(h: u64, w: u64) -> u64 {
        (h.rotate_left(5) ^ w).wrapping_mul(SEED)
    }
    let mut h = 0;
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

    /// Number of paths with at least one op bit.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Remove everything, keeping the allocations.
    pub fn clear(&mut self) {
        if self.live != 0 || self.garbage != 0 {
            self.slots.fill(EMPTY);
        }
        self.arena.clear();
        self.live = 0;
        self.garbage = 0;
    }

    /// Index of the slot holding `path`, or of the empty slot where the
    /// probe for it ended (`Err`). The table must not be empty.
    #[inline]
    fn find(&self, h: u64, path: &[u8]) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            if s.meta == 0 {
                return Err(i);
            }
            if s.hash == h && s.len() == path.len() {
                let off = s.off as usize;
                if self.arena[off..off + path.len()] == *path {
                    return Ok(i);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Re-slot every entry into a table of `cap` slots; with `compact`, also
    /// copy the live paths into a fresh arena (dropping removed ones' bytes).
    fn rebuild(&mut self, cap: usize, compact: bool) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; cap]);
        let old_arena = if compact {
            let live_bytes = self.arena.len() - self.garbage;
            let fresh = Vec::with_capacity(live_bytes.max(MIN_ARENA));
            Some(std::mem::replace(&mut self.arena, fresh))
        } else {
            None
        };
        let mask = cap - 1;
        for mut s in old.into_iter().filter(|s| s.meta != 0) {
            if let Some(a) = &old_arena {
                let off = s.off as usize;
                s.off = self.arena.len() as u32;
                self.arena.extend_from_slice(&a[off..off + s.len()]);
            }
            let mut i = s.hash as usize & mask;
            while self.slots[i].meta != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
        if compact {
            self.garbage = 0;
        }
    }

    /// Set op `bit` (`0..OPS`) for `path`; true if it was not set yet.
    pub fn insert(&mut self, bit: u32, path: &[u8]) -> bool {
        debug_assert!(bit < OPS);
        let flag = 1u32 << (LEN_BITS + bit);
        if path.len() > LEN_MASK as usize {
            return true; // cannot be stored (and cannot be a real path)
        }
        let h = hash_path(path);
        let mut at = None;
        if !self.slots.is_empty() {
            match self.find(h, path) {
                Ok(i) => {
                    let s = &mut self.slots[i];
                    let new = s.meta & flag == 0;
                    s.meta |= flag;
                    return new;
                }
                Err(i) => at = Some(i),
            }
        }
        if (self.live + 1) * 4 > self.slots.len() * 3 {
            let cap = (self.slots.len() * 2).max(MIN_SLOTS);
            self.rebuild(cap, false);
            at = None;
        }
        if self.arena.len() + path.len() > u32::MAX as usize {
            // 4 GiB of distinct paths in one process: drop the removed paths'
            // bytes, and if that is not enough, start over (a later open of
            // an old path is recorded once more; nothing is lost).
            if self.garbage > 0 {
                let cap = self.slots.len();
                self.rebuild(cap, true);
            }
            if self.arena.len() + path.len() > u32::MAX as usize {
                self.clear();
            }
            at = None;
        }
        let i = match at {
            Some(i) => i,
            // Not there (checked above): only the empty slot is wanted.
            None => self.find(h, path).unwrap_or_else(|e| e),
        };
        if self.arena.capacity() == 0 {
            self.arena.reserve(MIN_ARENA);
        }
        let off = self.arena.len() as u32;
        self.arena.extend_from_slice(path);
        self.slots[i] = Slot {
            hash: h,
            off,
            meta: path.len() as u32 | flag,
        };
        self.live += 1;
        true
    }

    /// Whether op `bit` is set for `path`.
    pub fn contains(&self, bit: u32, path: &[u8]) -> bool {
        let flag = 1u32 << (LEN_BITS + bit);
        !self.slots.is_empty()
            && self
                .find(hash_path(path), path)
                .is_ok_and(|i| self.slots[i].meta & flag != 0)
    }

    /// Forget every op of `path` (backward-shift deletion).
    pub fn remove(&mut self, path: &[u8]) {
        if self.live == 0 {
            return;
        }
        let Ok(mut i) = self.find(hash_path(path), path) else {
            return;
        };
        self.garbage += self.slots[i].len();
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
                if s.meta == 0 {
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
