//! Finding where intact records resume after damage in a segment.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::READ_CHUNK;
use crate::embedded::codec::{self, HEADER_LEN, MAX_BODY};
use crate::Offset;

/// How much of a frame [`resync`] looks at before it reads all of it: header, format, offset.
const PEEK: usize = HEADER_LEN + 1 + 8;

/// Where intact records resume after damage at byte `from` of a segment whose first `bound`
/// bytes are durable, if they do: the first position after `from` where a frame starts that
///
/// - has a plausible length and ends by `bound`,
/// - is of the known format,
/// - carries an offset the skipped stretch can account for: at least `expected` (the offset
///   that was due at `from`) and at most one more per [`codec::MIN_FRAME`] bytes skipped,
/// - and whose CRC-32 matches.
///
/// The end of the damaged frame by its own length is tried first (a flipped bit in a body
/// leaves the length intact), then every position after `from`. The frame format has no sync
/// marker; the offset window and the CRC make a false match on arbitrary bytes improbable
/// (about 2^-32 for the CRC times well under 2^-40 for the offset, per position); only a
/// payload that itself holds a well-formed frame with a fitting offset could pass. Returns the
/// position and the record's offset.
pub(crate) fn resync(
    path: &Path,
    from: u64,
    bound: u64,
    expected: Offset,
) -> io::Result<Option<(u64, Offset)>> {
    let mut file = File::open(path)?;
    let mut frame = Vec::new();
    let mut head = [0; PEEK];
    if read_at(&mut file, from, &mut head[..HEADER_LEN])? {
        let (len, _) = codec::header(&head[..HEADER_LEN].try_into().unwrap_or_default());
        let at = from.saturating_add((HEADER_LEN + len) as u64);
        if len <= MAX_BODY && at < bound && read_at(&mut file, at, &mut head)? {
            if let Some(offset) = verify(&mut file, &mut frame, &head, at, from, bound, expected)? {
                return Ok(Some((at, offset)));
            }
        }
    }
    let mut window = vec![0; READ_CHUNK];
    let mut at = from + 1;
    while at + codec::MIN_FRAME as u64 <= bound {
        let n = usize::try_from(bound - at).map_or(READ_CHUNK, |left| left.min(READ_CHUNK));
        if !read_at(&mut file, at, &mut window[..n])? {
            return Ok(None); // the file is shorter than `bound`
        }
        let positions = n.saturating_sub(PEEK - 1).max(1);
        for i in 0..positions {
            let Some(h) = window.get(i..i + PEEK) else {
                break;
            };
            let p = at + i as u64;
            if candidate(h, p, from, bound, expected).is_some() {
                let head: &[u8; PEEK] = h.try_into().unwrap_or(&[0; PEEK]);
                if let Some(offset) = verify(&mut file, &mut frame, head, p, from, bound, expected)?
                {
                    return Ok(Some((p, offset)));
                }
            }
        }
        at += positions as u64;
    }
    Ok(None)
}

/// The cheap part of [`resync`]'s test on the first [`PEEK`] bytes of a frame at `p`: body
/// length and offset, if plausible.
fn candidate(
    head: &[u8],
    p: u64,
    from: u64,
    bound: u64,
    expected: Offset,
) -> Option<(usize, Offset)> {
    let (len, _) = codec::header(head.get(..HEADER_LEN)?.try_into().ok()?);
    if !(codec::MIN_FRAME - HEADER_LEN..=MAX_BODY).contains(&len)
        || p + (HEADER_LEN + len) as u64 > bound
        || head[HEADER_LEN] != codec::FORMAT
    {
        return None;
    }
    let offset = Offset::from_le_bytes(head.get(HEADER_LEN + 1..PEEK)?.try_into().ok()?);
    let lost = offset.checked_sub(expected)?;
    (lost.checked_mul(codec::MIN_FRAME as u64)? <= p - from).then_some((len, offset))
}

/// [`candidate`], then the CRC over the whole frame at `p`.
fn verify(
    file: &mut File,
    frame: &mut Vec<u8>,
    head: &[u8; PEEK],
    p: u64,
    from: u64,
    bound: u64,
    expected: Offset,
) -> io::Result<Option<Offset>> {
    let Some((len, offset)) = candidate(head, p, from, bound, expected) else {
        return Ok(None);
    };
    let (_, crc) = codec::header(&head[..HEADER_LEN].try_into().unwrap_or_default());
    frame.resize(len, 0);
    if !read_at(file, p + HEADER_LEN as u64, frame)? {
        return Ok(None);
    }
    Ok((crc32fast::hash(frame) == crc).then_some(offset))
}

/// Fills `buf` from byte `at` of the file; false if the file ends before.
fn read_at(file: &mut File, at: u64, buf: &mut [u8]) -> io::Result<bool> {
    file.seek(SeekFrom::Start(at))?;
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::segment::path;

    #[test]
    fn arbitrary_bytes_never_resynchronise() {
        // Pseudo-random garbage: no position passes the offset window and the CRC.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let garbage: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = path(dir.path(), 1);
        std::fs::write(&p, &garbage).expect("write");
        assert_eq!(
            resync(&p, 0, garbage.len() as u64, 1).expect("resync"),
            None
        );
    }
}
