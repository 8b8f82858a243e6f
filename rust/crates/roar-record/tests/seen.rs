//! The dedupe table (src/seen.rs) against `std::collections::HashSet` on a
//! long random sequence of inserts, lookups and removals: growth, backward
//! shift deletion, arena compaction and `clear` all happen along the way.

use std::collections::HashSet;

use roar_record::seen::{SeenSet, OPS};

/// xorshift64*: deterministic, so a failure is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Paths shaped like real ones: a shared prefix, digits that differ in the
/// middle (the case a weak hash puts in few buckets), some long enough that
/// removals build up more than 1 MiB of garbage and force a compaction.
fn path(i: u64) -> Vec<u8> {
    let mut p = format!("/work/project/data/shard-{:03}/f{:05}.dat", i % 7, i).into_bytes();
    if i.is_multiple_of(3) {
        p.extend(std::iter::repeat_n(b'x', 700 + (i % 50) as usize));
    }
    p
}

#[test]
fn behaves_like_a_hash_set_of_op_path_pairs() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut set = SeenSet::new();
    let mut model: HashSet<(u32, Vec<u8>)> = HashSet::new();
    let universe = 6000;
    for step in 0..200_000u64 {
        let p = path(rng.below(universe));
        let bit = rng.below(4) as u32;
        assert!(bit < OPS);
        match rng.below(10) {
            0..=5 => {
                let new = model.insert((bit, p.clone()));
                assert_eq!(set.insert(bit, &p), new, "insert at step {step}");
            }
            6..=7 => {
                assert_eq!(
                    set.contains(bit, &p),
                    model.contains(&(bit, p.clone())),
                    "contains at step {step}"
                );
            }
            _ => {
                set.remove(&p);
                for b in 0..4 {
                    model.remove(&(b, p.clone()));
                }
            }
        }
        if step == 120_000 {
            set.clear();
            model.clear();
            assert!(set.is_empty());
        }
        if step % 10_000 == 0 {
            let paths: HashSet<&Vec<u8>> = model.iter().map(|(_, p)| p).collect();
            assert_eq!(set.len(), paths.len(), "len at step {step}");
        }
    }
    for i in 0..universe {
        let p = path(i);
        for b in 0..4 {
            assert_eq!(set.contains(b, &p), model.contains(&(b, p.clone())));
        }
    }
}
