//! Prefix-cache block hashes, shared by the scheduler's cache, the routers and the simulator.
//!
//! A request's KV blocks are named by a chain of hashes, one per **full** block, each covering
//! its block's content and its parent's hash, so equal hashes mean equal prefixes:
//!
//! ```text
//!   tokens   [ t0 .. t15 | t16 .. t31 | t32 .. t40 ]      block_size 16
//!   hashes   [ h0        | h1         ]                   h0 = H(ROOT, t0..t15), h1 = H(h0, t16..t31)
//!                                                         (the partial last block has none)
//! ```
//!
//! `H` is xxh3-128 (the `xxhash-rust` crate) over a domain tag, the parent and the content:
//! non-cryptographic and several GB/s, and 128 bits wide, so an accidental collision among
//! even 10^12 blocks has probability below 10^-14. (vLLM defaults to SHA-256 for resistance
//! to deliberate collisions; callers who need that hash their tokens themselves and pass the
//! results as `block_hashes`.)
//!
//! Three sources, kept apart by their domain tag:
//! - [`hash_token_blocks`]: from token ids (what vLLM does);
//! - [`expand_block_ids`]: from a trace's own block ids (Mooncake's `hash_ids`, each naming a
//!   512-token block of a unique prefix) split into blocks of the scheduler's size;
//! - [`own_block_hash`]: a block whose content only its request knows (its generated tokens,
//!   or a prompt given without ids): unique to that request, so it can hit only its own
//!   blocks again, after a preemption.

use xxhash_rust::xxh3::xxh3_128;

use crate::error::{Error, Result, Value};

pub type BlockHash = u128;

/// The parent of a request's first block.
pub const ROOT: BlockHash = 0;

const TAG_TOKENS: u8 = 1;
const TAG_TRACE_BLOCK: u8 = 2;
const TAG_OWN: u8 = 3;
const TAG_BYTES: u8 = 4;

fn digest(
    tag: u8,
    parent: BlockHash,
    words: impl Iterator<Item = u64>,
    buf: &mut Vec<u8>,
) -> BlockHash {
    buf.clear();
    buf.push(tag);
    buf.extend_from_slice(&parent.to_le_bytes());
    for w in words {
        buf.extend_from_slice(&w.to_le_bytes());
    }
    xxh3_128(buf)
}

/// [`digest`] of two words, on the stack (the per-block hashes the scheduler makes as it runs).
fn digest2(tag: u8, parent: BlockHash, a: u64, b: u64) -> BlockHash {
    let mut buf = [0u8; 33];
    buf[0] = tag;
    buf[1..17].copy_from_slice(&parent.to_le_bytes());
    buf[17..25].copy_from_slice(&a.to_le_bytes());
    buf[25..33].copy_from_slice(&b.to_le_bytes());
    xxh3_128(&buf)
}

/// The chained hashes of the full blocks of `tokens` (`tokens.len() / block_size` of them).
pub fn hash_token_blocks(tokens: &[u32], block_size: u64) -> Result<Vec<BlockHash>> {
    let bs = check_block_size(block_size)?;
    let mut out = Vec::with_capacity(tokens.len() / bs);
    let mut buf = Vec::with_capacity(17 + 8 * bs);
    let mut parent = ROOT;
    for block in tokens.chunks_exact(bs) {
        parent = digest(
            TAG_TOKENS,
            parent,
            block.iter().map(|&t| u64::from(t)),
            &mut buf,
        );
        out.push(parent);
    }
    Ok(out)
}

/// Hashes for the full `block_size` blocks of a `prompt_tokens`-token prompt described by a
/// trace's block ids, each id naming `id_block_tokens` tokens (Mooncake: 512) of a prefix.
/// `block_size` must divide `id_block_tokens`; blocks past the ids' reach get none.
pub fn expand_block_ids(
    ids: &[u64],
    id_block_tokens: u64,
    block_size: u64,
    prompt_tokens: u64,
) -> Result<Vec<BlockHash>> {
    let bs = check_block_size(block_size)? as u64;
    if id_block_tokens == 0 || id_block_tokens % bs != 0 {
        return Err(Error::InvalidArgument {
            field: "id_block_tokens",
            value: Some(Value::Int(i128::from(id_block_tokens))),
            index: None,
            message: format!(
                "a trace block of {id_block_tokens} tokens must be a positive multiple of block_size {bs}"
            ),
        });
    }
    let per_id = id_block_tokens / bs;
    let full = (prompt_tokens / bs).min(ids.len() as u64 * per_id);
    let mut buf = Vec::with_capacity(33);
    Ok((0..full)
        .map(|g| {
            let id = ids[(g / per_id) as usize];
            digest(
                TAG_TRACE_BLOCK,
                u128::from(id),
                [g % per_id].into_iter(),
                &mut buf,
            )
        })
        .collect())
}

/// The hash of block `index` of the request numbered `nonce`, whose content no other request
/// shares (child of `parent`).
pub fn own_block_hash(parent: BlockHash, nonce: u64, index: u64) -> BlockHash {
    digest2(TAG_OWN, parent, nonce, index)
}

/// A caller's opaque block hash given as bytes (vLLM's SHA-256 digests, say), as 128 bits.
pub fn bytes_block_hash(bytes: &[u8]) -> BlockHash {
    let mut buf = Vec::with_capacity(1 + bytes.len());
    buf.push(TAG_BYTES);
    buf.extend_from_slice(bytes);
    xxh3_128(&buf)
}

fn check_block_size(block_size: u64) -> Result<usize> {
    match usize::try_from(block_size) {
        Ok(bs) if bs > 0 && block_size <= crate::limits::MAX_COUNT => Ok(bs),
        _ => Err(Error::InvalidArgument {
            field: "block_size",
            value: Some(Value::Int(i128::from(block_size))),
            index: None,
            message: format!("block_size must be in [1, 2**40], got {block_size}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_cover_the_prefix() {
        let a: Vec<u32> = (0..40).collect();
        let mut b = a.clone();
        b[20] = 999; // differs in block 1 only
        let ha = hash_token_blocks(&a, 16).unwrap();
        let hb = hash_token_blocks(&b, 16).unwrap();
        assert_eq!(ha.len(), 2);
        assert_eq!(ha[0], hb[0]);
        assert_ne!(ha[1], hb[1]);
        // Same block content after a different parent: a different hash.
        let c: Vec<u32> = (16..32).chain(16..32).collect();
        let hc = hash_token_blocks(&c, 16).unwrap();
        assert_ne!(hc[0], hc[1]);
        assert!(hash_token_blocks(&a, 0).is_err());
    }

    #[test]
    fn trace_ids_expand_to_sub_blocks() {
        let h = expand_block_ids(&[7, 9], 512, 16, 600).unwrap();
        assert_eq!(h.len(), 37); // 600 / 16 full blocks, all within the two ids' reach
        let g = expand_block_ids(&[7, 8], 512, 16, 1024).unwrap();
        assert_eq!(h[..32], g[..32]);
        assert_ne!(h[32], g[32]);
        assert_eq!(expand_block_ids(&[7], 512, 16, 10_000).unwrap().len(), 32);
        assert!(expand_block_ids(&[7], 500, 16, 600).is_err());
    }

    #[test]
    fn own_blocks_are_unique_and_apart_from_token_hashes() {
        assert_ne!(own_block_hash(ROOT, 1, 0), own_block_hash(ROOT, 2, 0));
        assert_ne!(own_block_hash(ROOT, 1, 0), own_block_hash(ROOT, 1, 1));
        let t = hash_token_blocks(&[0; 16], 16).unwrap();
        assert_ne!(t[0], own_block_hash(ROOT, 0, 0));
    }
}
