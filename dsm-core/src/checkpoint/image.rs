//! The bytes of one node's checkpoint image: what the node homes at one epoch (the pages written
//! since the previous epoch of its chain, or every one for a full image), the allocation state,
//! and a trailing checksum. Pure encoding and decoding: a file read back from disk may be
//! truncated or corrupt, so [`Image::decode`] checks every length and the checksum, and never
//! panics.
//!
//! Layout (little-endian), in order: the magic `DSMCKPT1`; `rank`, `nodes` (u32 each); `epoch`,
//! `chain_start` (u64: the full epoch this image's chain starts at, equal to `epoch` for a full
//! image); the collective allocations (a count, then five u64 each); the first-touch pages homed
//! here (a count, then u64 pages); the `malloc` blocks of this node's arena (a count, then offset
//! and length); every page homed here (a count, then u64 pages, ascending); the pages whose
//! content this image carries (a count, their page numbers, then their bytes, [`PAGE`] each, in
//! the same order); and the [`hash64`] of everything before it (the image's checksum, which the
//! manifest names too: [`sealed_checksum`]).

use crate::space::PAGE;

const MAGIC: &[u8; 8] = b"DSMCKPT1";

/// A collective allocation live at the checkpoint, in the order the program made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allocation {
    /// Its first page.
    pub(crate) start: u64,
    /// Its pages.
    pub(crate) pages: u64,
    /// The bytes the program asked for.
    pub(crate) bytes: u64,
    /// The placement's kind (0 blocked, 1 first-touch, 2 cyclic, 3 on a node).
    pub(crate) kind: u64,
    /// The placement's argument.
    pub(crate) argument: u64,
}

/// One node's state at one epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Image {
    /// The node.
    pub(crate) rank: u32,
    /// The job's size.
    pub(crate) nodes: u32,
    /// The epoch.
    pub(crate) epoch: u64,
    /// The full epoch the chain of this image starts at (`epoch` itself when full).
    pub(crate) chain_start: u64,
    /// The live collective allocations, oldest first.
    pub(crate) allocations: Vec<Allocation>,
    /// First-touch pages this node became the home of.
    pub(crate) first_touch: Vec<u64>,
    /// The live blocks of this node's `malloc` arena (offset in the global range, length).
    pub(crate) blocks: Vec<(u64, u64)>,
    /// Every page this node homes (ascending).
    pub(crate) homed: Vec<u64>,
    /// The pages whose content this image carries.
    pub(crate) pages: Vec<u64>,
    /// Their bytes, [`PAGE`] each, in the order of `pages`.
    pub(crate) data: Vec<u8>,
}

/// The checksum a sealed image (or any bytes followed by their [`hash64`]) ends with, if its
/// bytes match it; `None` when they do not.
pub(crate) fn sealed_checksum(bytes: &[u8]) -> Option<u64> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    let sum = u64::from_le_bytes(sum.try_into().ok()?);
    (hash64(body) == sum).then_some(sum)
}

/// The checksum a sealed image ends with, read without checking it (the writer just
/// computed it).
pub(crate) fn trailer(bytes: &[u8]) -> u64 {
    bytes.len().checked_sub(8).map_or(0, |at| {
        u64::from_le_bytes(bytes[at..].try_into().expect("8"))
    })
}

/// A 64-bit checksum of `bytes`: four multiply-rotate lanes over 8-byte words (about 10 GB/s),
/// folded together with the length. A change of any one word always changes it (each step is a
/// bijection of the lane given the word); it detects corruption, not an adversary.
pub(crate) fn hash64(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lanes = [
        0x243f_6a88_85a3_08d3u64,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    ];
    let mut chunks = bytes.chunks_exact(32);
    for c in &mut chunks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            *lane = (lane.rotate_left(23) ^ w).wrapping_mul(K);
        }
    }
    let mut h = bytes.len() as u64;
    for lane in lanes {
        h = (h.rotate_left(29) ^ lane).wrapping_mul(K);
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        h = (h.rotate_left(13) ^ (u64::from(b) << (i % 8 * 8))).wrapping_mul(K);
    }
    h ^ (h >> 31)
}

/// Why an image could not be read.
pub(crate) type DecodeError = String;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// A count of items of `each` bytes that must fit in what is left.
    fn count(&mut self, each: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.checked_mul(each as u64).is_none_or(|b| b > left) {
            return Err(format!(
                "a count of {n} at byte {} overruns the file",
                self.at - 8
            ));
        }
        Ok(n as usize)
    }
}

impl Image {
    /// The image's bytes, checksum last.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            128 + self.homed.len() * 8
                + self.pages.len() * 8
                + self.data.len()
                + self.blocks.len() * 16,
        );
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.rank.to_le_bytes());
        b.extend_from_slice(&self.nodes.to_le_bytes());
        let put = |b: &mut Vec<u8>, v: u64| b.extend_from_slice(&v.to_le_bytes());
        put(&mut b, self.epoch);
        put(&mut b, self.chain_start);
        put(&mut b, self.allocations.len() as u64);
        for a in &self.allocations {
            for v in [a.start, a.pages, a.bytes, a.kind, a.argument] {
                put(&mut b, v);
            }
        }
        put(&mut b, self.first_touch.len() as u64);
        for &p in &self.first_touch {
            put(&mut b, p);
        }
        put(&mut b, self.blocks.len() as u64);
        for &(off, len) in &self.blocks {
            put(&mut b, off);
            put(&mut b, len);
        }
        put(&mut b, self.homed.len() as u64);
        for &p in &self.homed {
            put(&mut b, p);
        }
        debug_assert_eq!(self.data.len(), self.pages.len() * PAGE);
        put(&mut b, self.pages.len() as u64);
        for &p in &self.pages {
            put(&mut b, p);
        }
        b.extend_from_slice(&self.data);
        let h = hash64(&b);
        put(&mut b, h);
        b
    }

    /// Reads an image back.
    ///
    /// # Errors
    /// A sentence saying what is wrong: not an image, truncated, a count that overruns the
    /// file, or a checksum that does not match.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Image, DecodeError> {
        if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not a checkpoint image (no DSMCKPT1 header)".into());
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let sum = u64::from_le_bytes(sum.try_into().expect("8"));
        if hash64(body) != sum {
            return Err("its checksum does not match its content".into());
        }
        let mut r = Reader {
            bytes: body,
            at: MAGIC.len(),
        };
        let mut image = Image {
            rank: r.u32()?,
            nodes: r.u32()?,
            epoch: r.u64()?,
            chain_start: r.u64()?,
            ..Image::default()
        };
        for _ in 0..r.count(40)? {
            image.allocations.push(Allocation {
                start: r.u64()?,
                pages: r.u64()?,
                bytes: r.u64()?,
                kind: r.u64()?,
                argument: r.u64()?,
            });
        }
        for _ in 0..r.count(8)? {
            image.first_touch.push(r.u64()?);
        }
        for _ in 0..r.count(16)? {
            image.blocks.push((r.u64()?, r.u64()?));
        }
        for _ in 0..r.count(8)? {
            image.homed.push(r.u64()?);
        }
        let n = r.count(8 + PAGE)?;
        for _ in 0..n {
            image.pages.push(r.u64()?);
        }
        image.data = r.take(n * PAGE)?.to_vec();
        if r.at != body.len() {
            return Err(format!("{} bytes after the last page", body.len() - r.at));
        }
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Image {
        Image {
            rank: 1,
            nodes: 4,
            epoch: 7,
            chain_start: 5,
            allocations: vec![Allocation {
                start: 0,
                pages: 3,
                bytes: 9000,
                kind: 1,
                argument: 0,
            }],
            first_touch: vec![2],
            blocks: vec![(1 << 30, 64)],
            homed: vec![1, 2, 70],
            pages: vec![2, 70],
            data: [vec![0xab; PAGE], vec![3; PAGE]].concat(),
        }
    }

    #[test]
    fn an_image_reads_back_as_written() {
        let i = sample();
        assert_eq!(Image::decode(&i.encode()).unwrap(), i);
        let empty = Image::default();
        assert_eq!(Image::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn the_checksum_sees_any_flipped_byte() {
        let bytes = sample().encode();
        assert_eq!(sealed_checksum(&bytes), Some(trailer(&bytes)));
        assert_eq!(sealed_checksum(&bytes[..bytes.len() - 1]), None);
        assert_eq!(sealed_checksum(&[1, 2]), None);
        for at in (0..bytes.len()).step_by(97) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(Image::decode(&bad).is_err(), "a flip at {at} passed");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_are_an_error_not_a_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let _ = Image::decode(&bytes);
            // A valid header with a good checksum over garbage: every count is checked.
            let mut framed = MAGIC.to_vec();
            framed.append(&mut bytes);
            let h = hash64(&framed);
            framed.extend_from_slice(&h.to_le_bytes());
            let _ = Image::decode(&framed);
            let enc = sample().encode();
            let _ = Image::decode(&enc[..cut.min(enc.len())]);
        }
    }
}
