//! Where a relayed byte stream stands relative to WebSocket frame boundaries (RFC 6455 §5.2).
//!
//! The relay moves bytes, not frames. To end a revoked session with a close frame the client can read,
//! scopegate must write it between two frames of the server's stream, never inside one; this tracker
//! follows the frame headers as bytes pass (skipping payloads without looking at them) so the relay
//! knows whether it is at a boundary.

/// Frame-boundary state of one direction of a relay.
#[derive(Debug, Default, Clone)]
pub struct FrameCursor {
    /// The current frame header's bytes seen so far (at most 14: 2 + 8 length + 4 mask).
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: u64,
}

/// The header's full length, once its first two bytes are known.
fn header_len(first_two: [u8; 2]) -> usize {
    let masked = if first_two[1] & 0x80 != 0 { 4 } else { 0 };
    let extended = match first_two[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + masked
}

/// The payload length a complete header declares.
fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    }
}

impl FrameCursor {
    /// Follows `bytes`, the next bytes of the stream.
    pub fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let k = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= k;
                bytes = &bytes[k as usize..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have >= 2 && self.have == header_len([self.header[0], self.header[1]]) {
                self.payload_left = payload_len(&self.header[..self.have]);
                self.have = 0;
            }
        }
    }

    /// True between two frames: a frame of scopegate's own may be written here.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload_len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x82];
        let m = if masked { 0x80 } else { 0 };
        match payload_len {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(0x7e, payload_len));
        f
    }

    #[test]
    fn boundaries_are_found_whatever_the_lengths_and_however_the_bytes_are_split() {
        let frames = [
            frame(0, false),
            frame(5, false),
            frame(300, true),
            frame(70_000, false),
        ];
        let stream: Vec<u8> = frames.concat();
        let ends: Vec<usize> = frames
            .iter()
            .scan(0, |at, f| {
                *at += f.len();
                Some(*at)
            })
            .collect();
        for chunk in [1, 2, 3, 7, 1000, stream.len()] {
            let mut c = FrameCursor::default();
            let mut at = 0;
            for piece in stream.chunks(chunk) {
                c.advance(piece);
                at += piece.len();
                assert_eq!(
                    c.at_boundary(),
                    ends.contains(&at),
                    "chunk {chunk}, at {at}"
                );
            }
        }
        // Inside a header or a payload is not a boundary.
        let mut c = FrameCursor::default();
        c.advance(&frame(300, false)[..3]);
        assert!(!c.at_boundary());
    }
}
