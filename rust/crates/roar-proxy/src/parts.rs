//! Multipart blake3 without re-reading the object: each part is hashed as it streams, as
//! BLAKE3 subtrees at the offset the part will have in the finished object, and at
//! CompleteMultipartUpload the subtrees are merged into the whole object's root hash
//! (`blake3::hazmat`). Equal to the blake3 of the same bytes in one PUT.
//!
//! Offsets are known only at Complete, so UploadPart assumes the usual shape: every part but
//! the last has the size of part 1 (or, while part 1 is unseen, of this part), so part `n`
//! starts at `(n-1) × size`. Complete then checks what it can: the listed parts are exactly
//! the hashed ones (number and ETag), each starts where the previous ended, every part but the
//! last is a whole number of subtrees. Anything else (and aws-chunked or signed-chunk part
//! bodies, not hashed here) answers `None` and the caller reads the object back. Owns only this
//! bookkeeping; must not decide what is recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

const CHUNK: u64 = 1024;
/// Largest subtree hashed in one piece, as log2 of its chunks (64 chunks, 64 KiB): big enough
/// for blake3's SIMD paths, small enough that a part of any whole number of KiB divides into
/// pieces of one size.
const MAX_PIECE_CHUNKS: u32 = 6;
/// Uploads remembered at once (an abandoned upload's parts are dropped oldest first).
const MAX_UPLOADS: usize = 1024;

/// The piece size for parts of `size` bytes: the largest power-of-two number of chunks
/// (≤ 64) dividing it. None when `size` is not a whole number of chunks.
pub fn piece_len(size: u64) -> Option<u64> {
    if size == 0 || !size.is_multiple_of(CHUNK) {
        return None;
    }
    Some(CHUNK << (size / CHUNK).trailing_zeros().min(MAX_PIECE_CHUNKS))
}

/// Hashes one part's bytes as pieces of `piece` bytes starting at `offset` (a multiple of
/// `piece`).
pub struct PartHasher {
    offset: u64,
    piece: u64,
    cur: blake3::Hasher,
    cur_len: u64,
    done: Vec<ChainingValue>,
}

impl PartHasher {
    /// A hasher for a part at `offset` cut into pieces of `piece` bytes.
    pub fn new(offset: u64, piece: u64) -> Self {
        let mut cur = blake3::Hasher::new();
        cur.set_input_offset(offset);
        PartHasher {
            offset,
            piece,
            cur,
            cur_len: 0,
            done: Vec::new(),
        }
    }

    /// Feeds the next bytes of the part.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.cur_len == self.piece {
                self.done.push(self.cur.finalize_non_root());
                let start = self.offset + self.done.len() as u64 * self.piece;
                self.cur = blake3::Hasher::new();
                self.cur.set_input_offset(start);
                self.cur_len = 0;
            }
            let n = ((self.piece - self.cur_len) as usize).min(data.len());
            self.cur.update(&data[..n]);
            self.cur_len += n as u64;
            data = &data[n..];
        }
    }

    /// The part's pieces: (chaining values in order, the last one possibly short), and its length.
    fn finish(mut self) -> (Vec<ChainingValue>, u64) {
        let len = self.done.len() as u64 * self.piece + self.cur_len;
        if self.cur_len > 0 {
            self.done.push(self.cur.finalize_non_root());
        }
        (self.done, len)
    }
}

struct Part {
    offset: u64,
    len: u64,
    piece: u64,
    etag: String,
    cvs: Vec<ChainingValue>,
}

#[derive(Default)]
struct Upload {
    /// Size of the parts but the last: part 1's, else the largest seen so far.
    part_size: Option<u64>,
    /// True once part 1 was seen (its size is then the size).
    parts_sized_by_first: bool,
    parts: BTreeMap<u32, Part>,
    seq: u64,
}

/// Per upload id: the part size and the hashed parts.
#[derive(Default)]
pub struct Uploads {
    inner: Mutex<(HashMap<String, Upload>, u64)>,
}

impl Uploads {
    /// Where part `n` of `len` bytes is assumed to start, and its hasher; None when the part
    /// cannot be placed (not whole chunks, or part number 0).
    pub fn begin(&self, upload: &str, n: u32, len: u64) -> Option<PartHasher> {
        let n = u64::from(n.checked_sub(1)?);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, seq) = &mut *g;
        if !map.contains_key(upload) && map.len() >= MAX_UPLOADS {
            if let Some(old) = map
                .iter()
                .min_by_key(|(_, u)| u.seq)
                .map(|(k, _)| k.clone())
            {
                map.remove(&old);
            }
        }
        *seq += 1;
        let u = map.entry(upload.to_owned()).or_default();
        u.seq = *seq;
        // Every part but the last has the same size, the largest: part 1's once seen, else the
        // largest seen so far (the last part, when it arrives before all others, is misplaced
        // and the merge refuses it).
        u.part_size = Some(if n == 0 {
            len
        } else if u.parts_sized_by_first {
            u.part_size.unwrap_or(len)
        } else {
            u.part_size.map_or(len, |s| s.max(len))
        });
        u.parts_sized_by_first |= n == 0;
        // Pieces follow the size of the other parts: the last part (any length) keeps theirs.
        let size = u.part_size.unwrap_or(len);
        Some(PartHasher::new(n.checked_mul(size)?, piece_len(size)?))
    }

    /// Whether part 1 of `upload` has begun (its size places the others).
    pub fn has_first(&self, upload: &str) -> bool {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(upload).is_some_and(|u| u.parts_sized_by_first)
    }

    /// Records a part the upstream accepted (answered 200 with `etag`).
    pub fn finish(&self, upload: &str, n: u32, etag: &str, h: PartHasher) {
        let (offset, piece) = (h.offset, h.piece);
        let (cvs, len) = h.finish();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = g.0.get_mut(upload) {
            u.parts.insert(
                n,
                Part {
                    offset,
                    len,
                    piece,
                    etag: etag.trim_matches('"').to_owned(),
                    cvs,
                },
            );
        }
    }

    /// Forgets an upload (completed or aborted).
    pub fn forget(&self, upload: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .remove(upload);
    }

    /// The finished object's (blake3 hex, size) from the parts listed in the Complete request
    /// (`(part number, etag)` in order), or None when they cannot be merged (see module docs).
    pub fn merge(&self, upload: &str, listed: &[(u32, String)]) -> Option<(String, u64)> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let u = g.0.get(upload)?;
        let mut pieces: BTreeMap<u64, (u64, ChainingValue)> = BTreeMap::new();
        let mut at = 0u64;
        let piece = u.parts.get(&listed.first()?.0)?.piece;
        for (i, (n, etag)) in listed.iter().enumerate() {
            let p = u.parts.get(n)?;
            let last = i + 1 == listed.len();
            if p.etag != etag.trim_matches('"') || p.offset != at || p.piece != piece || p.len == 0
            {
                return None;
            }
            if !last && p.len % piece != 0 {
                return None;
            }
            for (k, cv) in p.cvs.iter().enumerate() {
                let start = at + k as u64 * piece;
                pieces.insert(start, ((p.len - k as u64 * piece).min(piece), *cv));
            }
            at += p.len;
        }
        if at <= CHUNK {
            return None; // one chunk has no parent node: nothing to merge
        }
        let left = left_subtree_len(at);
        let l = node(&pieces, 0, left)?;
        let r = node(&pieces, left, at - left)?;
        Some((
            merge_subtrees_root(&l, &r, Mode::Hash).to_hex().to_string(),
            at,
        ))
    }
}

/// The chaining value of the subtree [start, start+len), from the pieces or their merges.
fn node(
    pieces: &BTreeMap<u64, (u64, ChainingValue)>,
    start: u64,
    len: u64,
) -> Option<ChainingValue> {
    if let Some((plen, cv)) = pieces.get(&start) {
        if *plen == len {
            return Some(*cv);
        }
        if *plen > len {
            return None;
        }
    }
    if len <= CHUNK {
        return None;
    }
    let left = left_subtree_len(len);
    let l = node(pieces, start, left)?;
    let r = node(pieces, start + left, len - left)?;
    Some(merge_subtrees_non_root(&l, &r, Mode::Hash))
}

/// The `(PartNumber, ETag)` list of a CompleteMultipartUpload request body, in order.
pub fn listed_parts(xml: &str) -> Option<Vec<(u32, String)>> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<Part>") {
        let end = rest[i..].find("</Part>")? + i;
        let part = &rest[i..end];
        let num = between(part, "PartNumber")?.trim().parse().ok()?;
        let etag = between(part, "ETag")?
            .replace("&quot;", "\"")
            .replace("&#34;", "\"");
        out.push((num, etag.trim().to_owned()));
        rest = &rest[end..];
    }
    (!out.is_empty()).then_some(out)
}

fn between<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = s.find(&open)? + open.len();
    let end = s[start..].find(&format!("</{tag}>"))? + start;
    Some(&s[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(data: &[u8], part: usize, order: &[usize]) -> Option<(String, u64)> {
        let ups = Uploads::default();
        let parts: Vec<&[u8]> = data.chunks(part).collect();
        for &i in order {
            let n = i as u32 + 1;
            let mut h = ups.begin("u", n, parts[i].len() as u64)?;
            // Fed in uneven slices, as frames arrive.
            for s in parts[i].chunks(7919) {
                h.update(s);
            }
            ups.finish("u", n, &format!("\"e{n}\""), h);
        }
        let listed: Vec<(u32, String)> = (1..=parts.len() as u32)
            .map(|n| (n, format!("\"e{n}\"")))
            .collect();
        ups.merge("u", &listed)
    }

    #[test]
    fn merged_parts_equal_the_single_hash() {
        let data: Vec<u8> = (0..(21u64 << 20) + 12345)
            .map(|i| ((i * 2654435761) >> 13) as u8)
            .collect();
        let want = blake3::hash(&data).to_hex().to_string();
        for mib in [5usize, 8] {
            let order: Vec<usize> = (0..data.len().div_ceil(mib << 20)).collect();
            assert_eq!(
                upload(&data, mib << 20, &order),
                Some((want.clone(), data.len() as u64)),
                "{mib} MiB"
            );
        }
        // Odd part sizes that are whole KiB: merged too.
        let small = &data[..300 * 1024 + 5];
        let order: Vec<usize> = (0..small.len().div_ceil(3 * 1024)).collect();
        assert_eq!(
            upload(small, 3 * 1024, &order),
            Some((blake3::hash(small).to_hex().to_string(), small.len() as u64))
        );
    }

    #[test]
    fn unplaceable_parts_fall_back() {
        // Parts not a whole number of KiB: not hashed at all.
        assert_eq!(
            upload(&vec![5u8; (11 << 20) + 3], (5 << 20) + 1, &[0, 1, 2]),
            None
        );
        // The short last part seen before part 1: placed at the wrong offset, refused at merge.
        let data = vec![5u8; 11 << 20];
        assert_eq!(upload(&data, 5 << 20, &[2, 0, 1]), None);
        assert!(upload(&data, 5 << 20, &[0, 2, 1]).is_some());
    }

    #[test]
    fn complete_body_parts_are_parsed() {
        let xml = "<CompleteMultipartUpload><Part><ETag>&quot;a1&quot;</ETag><PartNumber>1</PartNumber></Part>\
                   <Part><PartNumber>2</PartNumber><ETag>\"b2\"</ETag></Part></CompleteMultipartUpload>";
        assert_eq!(
            listed_parts(xml),
            Some(vec![(1, "\"a1\"".into()), (2, "\"b2\"".into())])
        );
        assert_eq!(listed_parts("<x/>"), None);
    }
}
