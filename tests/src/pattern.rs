//! Test payloads that a dropped, duplicated or reordered chunk would change, and their digests.

/// A deterministic byte stream (xorshift), produced chunk by chunk.
#[derive(Clone, Debug)]
pub struct Pattern {
    state: u64,
}

impl Default for Pattern {
    fn default() -> Self {
        Pattern {
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl Pattern {
    /// The next `len` bytes of the stream.
    pub fn next_chunk(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                (self.state >> 24) as u8
            })
            .collect()
    }
}

/// The first `len` bytes of the pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    Pattern::default().next_chunk(len)
}

/// SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
