//! A bounded buffer that keeps only the last bytes written to it: a child
//! may print gigabytes, the report carries the end, which is where errors
//! are.

use std::collections::VecDeque;

/// The last `capacity` bytes of a stream.
#[derive(Debug, Clone)]
pub struct OutputTail {
    /// Most bytes kept.
    capacity: usize,
    /// The kept bytes, oldest first.
    buf: VecDeque<u8>,
}

impl OutputTail {
    /// An empty tail that keeps at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        OutputTail {
            capacity,
            buf: VecDeque::with_capacity(capacity.min(64 * 1024)),
        }
    }

    /// Appends `bytes`, dropping the oldest ones beyond the capacity.
    pub fn push(&mut self, bytes: &[u8]) {
        let keep = &bytes[bytes.len().saturating_sub(self.capacity)..];
        let overflow = (self.buf.len() + keep.len()).saturating_sub(self.capacity);
        self.buf.drain(..overflow.min(self.buf.len()));
        self.buf.extend(keep);
    }

    /// The kept bytes as text. Invalid UTF-8 becomes U+FFFD, except a
    /// character cut in half by the bound at the start, which is dropped.
    pub fn to_string_lossy(&self) -> String {
        let bytes: Vec<u8> = self.buf.iter().copied().collect();
        let cut = bytes
            .iter()
            .take(3)
            .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
            .count();
        String::from_utf8_lossy(&bytes[cut..]).into_owned()
    }

    /// Number of bytes kept.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_the_last_bytes() {
        let mut t = OutputTail::new(5);
        t.push(b"abc");
        assert_eq!(t.to_string_lossy(), "abc");
        t.push(b"defg");
        assert_eq!(t.to_string_lossy(), "cdefg");
        t.push(b"0123456789");
        assert_eq!(t.to_string_lossy(), "56789");
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut t = OutputTail::new(0);
        t.push(b"abc");
        assert!(t.is_empty());
        assert_eq!(t.to_string_lossy(), "");
    }

    #[test]
    fn a_character_cut_at_the_start_is_dropped() {
        let mut t = OutputTail::new(4);
        t.push("xé€".as_bytes()); // 1 + 2 + 3 bytes: the tail starts inside é
        assert_eq!(t.to_string_lossy(), "€");
        let mut bad = OutputTail::new(8);
        bad.push(&[b'a', 0xff, b'b']);
        assert_eq!(bad.to_string_lossy(), "a\u{fffd}b");
    }

    proptest! {
        #[test]
        fn equals_the_suffix_of_everything_written(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
            cap in 0usize..64,
        ) {
            let mut t = OutputTail::new(cap);
            let mut all = Vec::new();
            for c in &chunks {
                t.push(c);
                all.extend_from_slice(c);
            }
            let expected = &all[all.len().saturating_sub(cap)..];
            prop_assert_eq!(t.buf.iter().copied().collect::<Vec<u8>>(), expected.to_vec());
        }
    }
}
