//! Framing: one JSON object per frame, ended by `\n` or NUL, with a size limit.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The default frame limit, not counting the terminator.
pub const DEFAULT_MAX_FRAME: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame grew past the limit; the connection must be closed after errno 8.
    #[error("frame exceeds {limit} bytes")]
    TooLarge { limit: usize },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame ({pending} bytes pending)")]
    Truncated { pending: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into frames and writes frames with a `\n` terminator.
///
/// Frames that are empty or only whitespace (the `\r` of `\r\n`, a NUL after
/// a `\n`) are skipped here, so callers only ever see candidate requests.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
    /// How far the current buffer has already been searched for a terminator,
    /// so a frame arriving in many small reads is scanned once, not quadratically.
    scanned: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            scanned: 0,
        }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| b.is_ascii_whitespace() || *b == 0)
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        loop {
            let Some(offset) = memchr::memchr2(b'\n', 0, &buf[self.scanned..]) else {
                self.scanned = buf.len();
                // Every byte counts, blanks included: a peer that sends only
                // spaces must not grow the buffer (or be rescanned) forever.
                if buf.len() > self.max_frame {
                    return Err(FrameError::TooLarge {
                        limit: self.max_frame,
                    });
                }
                return Ok(None);
            };
            let end = self.scanned + offset;
            self.scanned = 0;
            if end > self.max_frame {
                return Err(FrameError::TooLarge {
                    limit: self.max_frame,
                });
            }
            let mut frame = buf.split_to(end + 1);
            frame.truncate(end);
            if is_blank(&frame) {
                continue;
            }
            return Ok(Some(frame.freeze()));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if is_blank(buf) => {
                buf.clear();
                Ok(None)
            }
            None => {
                let pending = buf.len();
                buf.clear();
                self.scanned = 0;
                Err(FrameError::Truncated { pending })
            }
        }
    }
}

/// Frames handed to the encoder are JSON text without a terminator.
impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.reserve(frame.len() + 1);
        dst.extend_from_slice(frame);
        dst.extend_from_slice(b"\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut FrameCodec, buf: &mut BytesMut) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(frame) = codec.decode(buf).unwrap() {
            out.push(frame);
        }
        out
    }

    #[test]
    fn splits_on_newline_and_nul_and_skips_blank_frames() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&b"{\"a\":1}\0\r\n\n{\"b\":2}\r\n  \0{\"c\""[..]);
        let frames = decode_all(&mut codec, &mut buf);
        assert_eq!(frames, vec![&b"{\"a\":1}"[..], &b"{\"b\":2}\r"[..]]);
        assert_eq!(&buf[..], b"{\"c\"");
    }

    #[test]
    fn frame_split_over_many_reads() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let whole = b"{\"msgid\":12}\n";
        for (i, byte) in whole.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let frame = codec.decode(&mut buf).unwrap();
            assert_eq!(frame.is_some(), i == whole.len() - 1);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn too_large_as_soon_as_the_limit_is_passed() {
        let mut codec = FrameCodec::new(8);
        let mut buf = BytesMut::from(&b"12345678"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"9");
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { limit: 8 })
        ));
        let mut codec = FrameCodec::new(8);
        let mut buf = BytesMut::from(&b"12345678\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"12345678"[..]);
    }

    #[test]
    fn blanks_count_towards_the_limit() {
        let mut codec = FrameCodec::new(8);
        let mut buf = BytesMut::from(&b"         "[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { limit: 8 })
        ));
        let mut codec = FrameCodec::new(8);
        let mut buf = BytesMut::from(&b"         \n{}\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { limit: 8 })
        ));
        // Short blank frames are still skipped.
        let mut codec = FrameCodec::new(8);
        let mut buf = BytesMut::from(&b"  \n\0\r\n{}\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"{}"[..]);
    }

    #[test]
    fn eof_mid_frame_is_reported() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&b"{\"msgid\""[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated { pending: 8 })
        ));
        let mut buf = BytesMut::from(&b"\r\n \0"[..]);
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn encoder_appends_newline() {
        let mut codec = FrameCodec::default();
        let mut dst = BytesMut::new();
        codec.encode(&b"{}"[..], &mut dst).unwrap();
        assert_eq!(&dst[..], b"{}\n");
    }
}
