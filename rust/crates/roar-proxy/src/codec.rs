//! Undoing what the writer did to an object's bytes: gzip/zlib decompression, then the
//! filters in reverse order (the byte shuffle of HDF5/numcodecs/blosc).
//!
//! Owns only byte transformations. Every byte it allocates is first asked of the caller's
//! `grow` (the active-storage memory budget), so a small compressed object cannot expand
//! beyond the budget. Must not do I/O or reduce.

use std::io::Read;

use crate::active::{bad, ApiError, Compression, Filter};

/// Growth step of a decompression buffer (asked of the budget before it is used).
const STEP: usize = 1 << 20;

/// Decompresses and unfilters `data`; None when nothing had to be done (use `data` itself).
pub fn decode(
    data: &[u8],
    compression: Option<Compression>,
    filters: &[Filter],
    grow: &mut dyn FnMut(usize) -> Result<(), ApiError>,
) -> Result<Option<Vec<u8>>, ApiError> {
    let mut cur: Option<Vec<u8>> = match compression {
        None => None,
        Some(Compression::Gzip) => Some(inflate(flate2::read::GzDecoder::new(data), grow)?),
        Some(Compression::Zlib) => Some(inflate(flate2::read::ZlibDecoder::new(data), grow)?),
    };
    for f in filters.iter().rev() {
        let Filter::Shuffle { element_size } = *f;
        let src: &[u8] = cur.as_deref().unwrap_or(data);
        grow(src.len())?;
        let out = unshuffle(src, element_size as usize);
        cur = Some(out);
    }
    Ok(cur)
}

fn inflate(
    mut r: impl Read,
    grow: &mut dyn FnMut(usize) -> Result<(), ApiError>,
) -> Result<Vec<u8>, ApiError> {
    let mut out: Vec<u8> = Vec::new();
    loop {
        grow(STEP)?;
        let n = (&mut r)
            .take(STEP as u64)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("compression: the data cannot be decompressed: {e}")))?;
        if n < STEP {
            return Ok(out);
        }
    }
}

/// Inverse of the byte shuffle with `es`-byte elements: byte j of element i was stored at
/// `j * n + i` (n whole elements); trailing bytes that do not fill an element stay as they are.
pub fn unshuffle(src: &[u8], es: usize) -> Vec<u8> {
    if es <= 1 || src.len() < es {
        return src.to_vec();
    }
    let n = src.len() / es;
    let mut out = vec![0u8; src.len()];
    for j in 0..es {
        let plane = &src[j * n..(j + 1) * n];
        for (i, b) in plane.iter().enumerate() {
            out[i * es + j] = *b;
        }
    }
    out[n * es..].copy_from_slice(&src[n * es..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shuffle(src: &[u8], es: usize) -> Vec<u8> {
        let n = src.len() / es;
        let mut out = src.to_vec();
        for i in 0..n {
            for j in 0..es {
                out[j * n + i] = src[i * es + j];
            }
        }
        out
    }

    #[test]
    fn unshuffle_inverts_shuffle_with_a_tail() {
        let v: Vec<u8> = (0..103u8).collect();
        for es in [1, 2, 4, 8, 3] {
            assert_eq!(unshuffle(&shuffle(&v, es), es), v);
        }
    }

    #[test]
    fn decompression_is_bounded_by_the_budget() {
        use std::io::Write;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&vec![0u8; 5 * STEP]).unwrap();
        let z = e.finish().unwrap();
        let mut budget = 2 * STEP;
        let mut grow = |n: usize| {
            if n > budget {
                Err(crate::active::err(413, "over"))
            } else {
                budget -= n;
                Ok(())
            }
        };
        assert!(decode(&z, Some(Compression::Zlib), &[], &mut grow).is_err());
        let mut ok = |_: usize| Ok(());
        let out = decode(&z, Some(Compression::Zlib), &[], &mut ok)
            .unwrap()
            .unwrap();
        assert_eq!(out.len(), 5 * STEP);
    }
}
