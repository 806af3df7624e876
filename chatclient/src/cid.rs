//! Client message ids (`cid`) for chat sends: the server stores a re-sent
//! `cid` only once, so a send whose ACK was lost can be sent again safely.
//!
//! A cid must be unique per sender for at least the server's 24 h window,
//! across runs of the client too (a repeated cid is answered with the
//! earlier message's `mid` and not stored): each run takes a random prefix.

use protocol::MAX_CID_BYTES;

/// Hands out `PREFIX-N`: a random 64-bit prefix per run, then a counter.
#[derive(Debug, Clone)]
pub struct CidSource {
    prefix: String,
    next: u64,
}

impl Default for CidSource {
    fn default() -> Self {
        Self::with_prefix(format!("{:016x}", rand::random::<u64>()))
    }
}

impl CidSource {
    pub fn with_prefix(prefix: String) -> Self {
        Self { prefix, next: 1 }
    }

    pub fn next_cid(&mut self) -> String {
        let cid = format!("{}-{}", self.prefix, self.next);
        self.next += 1;
        debug_assert!(cid.len() <= MAX_CID_BYTES);
        cid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cids_differ_within_and_across_runs() {
        let mut a = CidSource::default();
        let mut b = CidSource::default();
        let (a1, a2, b1) = (a.next_cid(), a.next_cid(), b.next_cid());
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
        assert!(a1.len() <= MAX_CID_BYTES && a1.ends_with("-1"));
    }
}
