//! Block-wise transfer (RFC 7959): the Block1/Block2 option value ([`BlockOption`]: block
//! number, more flag, size exponent), serving a large representation as Block2 responses
//! ([`block2_slice`]), and reassembling a request body sent as Block1 blocks
//! ([`Block1Assembler`]) within a size limit. What to answer on each error is in
//! [`BlockError::response_code`].

use bytes::{Bytes, BytesMut};

use crate::code::Code;

/// A Block1 or Block2 value: block `num` of size 2^(szx+4) bytes, `more` blocks follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOption {
    /// Block number, below 2^20.
    pub num: u32,
    pub more: bool,
    /// Size exponent 0–6 (16 to 1024 bytes); 7 is BERT (RFC 8323), not supported.
    pub szx: u8,
}

/// The largest block number (20 bits).
pub const MAX_BLOCK_NUM: u32 = (1 << 20) - 1;

impl BlockOption {
    /// A block of `size` bytes (16, 32, …, 1024; other sizes round down, at least 16).
    pub fn new(num: u32, more: bool, size: usize) -> BlockOption {
        BlockOption {
            num,
            more,
            szx: szx_for(size),
        }
    }
    /// The block size in bytes.
    pub const fn size(self) -> usize {
        1 << (self.szx + 4)
    }
    /// Where the block starts in the whole body.
    pub const fn offset(self) -> usize {
        self.num as usize * self.size()
    }
    /// The option's `uint` value. Block numbers above 20 bits are masked.
    pub const fn to_uint(self) -> u32 {
        ((self.num & MAX_BLOCK_NUM) << 4) | ((self.more as u32) << 3) | (self.szx as u32 & 7)
    }
    /// Reads a value (at most 3 bytes, so the number fits 20 bits); `None` for SZX 7.
    pub const fn from_uint(value: u32) -> Option<BlockOption> {
        let szx = (value & 7) as u8;
        if szx == 7 || value > 0x00ff_ffff {
            return None;
        }
        Some(BlockOption {
            num: value >> 4,
            more: value & 8 != 0,
            szx,
        })
    }
}

/// The size exponent of the largest block size not above `size` (clamped to 16–1024).
pub fn szx_for(size: usize) -> u8 {
    let size = size.clamp(16, 1024);
    (usize::BITS - 1 - size.leading_zeros()) as u8 - 4
}

/// Why a block cannot be served or taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Block2: the requested block starts past the end of the representation.
    #[error("block {num} starts past the end of the {len}-byte body")]
    OutOfRange { num: u32, len: usize },
    /// Block1: the body would be above the limit.
    #[error("body of at least {size} bytes is above the limit of {max}")]
    TooLarge { size: usize, max: usize },
    /// Block1: a block that does not continue where the body so far ends.
    #[error("block at offset {offset} does not follow the {received} bytes received")]
    OutOfOrder { offset: usize, received: usize },
    /// Block1: a block with more to come whose payload is not exactly its size.
    #[error("block of size {size} carries {len} bytes")]
    WrongSize { size: usize, len: usize },
}

impl BlockError {
    /// The response code RFC 7959 gives each case.
    pub fn response_code(&self) -> Code {
        match self {
            BlockError::OutOfRange { .. } | BlockError::WrongSize { .. } => Code::BAD_OPTION,
            BlockError::TooLarge { .. } => Code::REQUEST_ENTITY_TOO_LARGE,
            BlockError::OutOfOrder { .. } => Code::REQUEST_ENTITY_INCOMPLETE,
        }
    }
}

/// The Block2 response for `requested` (the request's Block2, `None` for the first block) of
/// `body`, with blocks at most `max_size` bytes (the server's preference; a smaller size the
/// client asks for wins): the slice to send and the Block2 option to send with it. A body
/// that fits one block is returned whole with `None` (no Block2 needed) when the client did
/// not ask for blocks.
pub fn block2_slice(
    body: &Bytes,
    requested: Option<BlockOption>,
    max_size: usize,
) -> Result<(Bytes, Option<BlockOption>), BlockError> {
    let server_szx = szx_for(max_size);
    let (num, szx) = match requested {
        None if body.len() <= 1 << (server_szx + 4) => return Ok((body.clone(), None)),
        None => (0, server_szx),
        Some(b) if b.szx <= server_szx => (b.num, b.szx),
        // The client asked for larger blocks than the server sends: renumber (RFC 7959 §2.4).
        Some(b) => {
            let offset = b.offset();
            ((offset >> (server_szx + 4)) as u32, server_szx)
        }
    };
    let block = BlockOption {
        num,
        more: false,
        szx,
    };
    let start = block.offset();
    if start >= body.len() && !(start == 0 && body.is_empty()) {
        return Err(BlockError::OutOfRange {
            num,
            len: body.len(),
        });
    }
    let end = (start + block.size()).min(body.len());
    Ok((
        body.slice(start..end),
        Some(BlockOption {
            more: end < body.len(),
            ..block
        }),
    ))
}

/// What a Block1 block leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block1Progress {
    /// More blocks are expected: answer 2.31 Continue with this Block1 option.
    Continue(BlockOption),
    /// The last block arrived: the whole body, and the Block1 option to answer it with.
    Complete(Bytes, BlockOption),
}

/// Reassembles one request body sent in Block1 blocks, in order, up to `max_size` bytes. The
/// client may switch to smaller blocks mid-way (RFC 7959 §2.5): blocks are placed by offset.
/// Keep one per (peer, request) with an expiry; an assembler that failed should be dropped.
#[derive(Debug, Clone)]
pub struct Block1Assembler {
    max_size: usize,
    body: BytesMut,
}

impl Block1Assembler {
    pub fn new(max_size: usize) -> Block1Assembler {
        Block1Assembler {
            max_size,
            body: BytesMut::new(),
        }
    }
    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.body.len()
    }
    /// Takes the next block with its Block1 option and, when the client sent one, its Size1
    /// (the announced total, refused early if above the limit).
    pub fn push(
        &mut self,
        block: BlockOption,
        size1: Option<u32>,
        payload: &[u8],
    ) -> Result<Block1Progress, BlockError> {
        if let Some(total) = size1 {
            let total = total as usize;
            if total > self.max_size {
                return Err(BlockError::TooLarge {
                    size: total,
                    max: self.max_size,
                });
            }
        }
        let offset = block.offset();
        if offset != self.body.len() {
            return Err(BlockError::OutOfOrder {
                offset,
                received: self.body.len(),
            });
        }
        if (block.more && payload.len() != block.size()) || payload.len() > block.size() {
            return Err(BlockError::WrongSize {
                size: block.size(),
                len: payload.len(),
            });
        }
        let size = offset + payload.len();
        if size > self.max_size {
            return Err(BlockError::TooLarge {
                size,
                max: self.max_size,
            });
        }
        self.body.extend_from_slice(payload);
        if block.more {
            Ok(Block1Progress::Continue(block))
        } else {
            let body = std::mem::take(&mut self.body).freeze();
            Ok(Block1Progress::Complete(body, block))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn block_values() {
        // RFC 7959 §2.2: NUM=1, M=1, SZX=6 is 0x1e.
        let b = BlockOption::from_uint(0x1e).unwrap();
        assert_eq!((b.num, b.more, b.szx, b.size()), (1, true, 6, 1024));
        assert_eq!(b.to_uint(), 0x1e);
        assert_eq!(BlockOption::from_uint(0x0f), None);
        assert_eq!(BlockOption::new(3, false, 100).szx, 2);
        assert_eq!(szx_for(1024), 6);
        assert_eq!(szx_for(4096), 6);
        assert_eq!(szx_for(1), 0);
        assert_eq!(
            BlockOption::from_uint(0x00ff_fff6).unwrap().num,
            MAX_BLOCK_NUM
        );
    }

    #[test]
    fn block2_serves_a_body_in_blocks() {
        let body = Bytes::from((0..100u8).collect::<Vec<_>>());
        // Fits: whole body, no option.
        assert_eq!(
            block2_slice(&body, None, 128).unwrap(),
            (body.clone(), None)
        );
        let (first, b) = block2_slice(&body, None, 32).unwrap();
        assert_eq!(
            (&first[..], b),
            (&body[..32], Some(BlockOption::new(0, true, 32)))
        );
        let (last, b) = block2_slice(&body, Some(BlockOption::new(3, false, 32)), 32).unwrap();
        assert_eq!(
            (&last[..], b),
            (&body[96..], Some(BlockOption::new(3, false, 32)))
        );
        // The client asks for 64-byte block 1; the server's blocks are 32: offset 64 is block 2.
        let (part, b) = block2_slice(&body, Some(BlockOption::new(1, false, 64)), 32).unwrap();
        assert_eq!(
            (&part[..], b),
            (&body[64..96], Some(BlockOption::new(2, true, 32)))
        );
        // The client asks for smaller blocks than the server's: the client's size wins.
        let (part, b) = block2_slice(&body, Some(BlockOption::new(1, false, 16)), 1024).unwrap();
        assert_eq!(
            (&part[..], b),
            (&body[16..32], Some(BlockOption::new(1, true, 16)))
        );
        assert_eq!(
            block2_slice(&body, Some(BlockOption::new(4, false, 32)), 32),
            Err(BlockError::OutOfRange { num: 4, len: 100 })
        );
        // An empty body is one empty block.
        let (empty, b) =
            block2_slice(&Bytes::new(), Some(BlockOption::new(0, false, 16)), 64).unwrap();
        assert!(empty.is_empty());
        assert_eq!(b, Some(BlockOption::new(0, false, 16)));
    }

    #[test]
    fn block1_reassembles_in_order_within_the_limit() {
        let mut a = Block1Assembler::new(100);
        let progress = a
            .push(BlockOption::new(0, true, 32), Some(70), &[1; 32])
            .unwrap();
        assert_eq!(
            progress,
            Block1Progress::Continue(BlockOption::new(0, true, 32))
        );
        // Switch to 16-byte blocks: offset 32 is block 2.
        assert_eq!(
            a.push(BlockOption::new(1, true, 16), None, &[2; 16]),
            Err(BlockError::OutOfOrder {
                offset: 16,
                received: 32
            })
        );
        a.push(BlockOption::new(2, true, 16), None, &[2; 16])
            .unwrap();
        let Block1Progress::Complete(body, _) = a
            .push(BlockOption::new(3, false, 16), None, &[3; 6])
            .unwrap()
        else {
            panic!("not complete");
        };
        assert_eq!(body.len(), 54);
        assert_eq!(&body[48..], &[3; 6]);

        let mut a = Block1Assembler::new(100);
        assert_eq!(
            a.push(BlockOption::new(0, true, 32), Some(101), &[0; 32]),
            Err(BlockError::TooLarge {
                size: 101,
                max: 100
            })
        );
        assert_eq!(
            a.push(BlockOption::new(0, true, 32), None, &[0; 31]),
            Err(BlockError::WrongSize { size: 32, len: 31 })
        );
        for n in 0..3 {
            a.push(BlockOption::new(n, true, 32), None, &[0; 32])
                .unwrap();
        }
        let err = a
            .push(BlockOption::new(3, true, 32), None, &[0; 32])
            .unwrap_err();
        assert_eq!(
            err,
            BlockError::TooLarge {
                size: 128,
                max: 100
            }
        );
        assert_eq!(err.response_code(), Code::REQUEST_ENTITY_TOO_LARGE);
    }
}
