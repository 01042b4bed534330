//! SHA-1 of a bill file: `hash_value` in 申请交易账单 is the SHA-1 (lower-case
//! hex) of the uncompressed bill, checked by the merchant's download and
//! produced by the simulator.

use sha1::{Digest, Sha1};
use std::io::Write;

/// A `Write` adapter that hashes (SHA-1) and counts what passes through.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha1,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha1::new(),
            bytes: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Lower-case hex SHA-1 of everything written so far.
    pub fn sha1_hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize().as_slice())
    }

    /// The wrapped writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Hash only what the inner writer accepted, so hash == content.
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Lower-case hex SHA-1 of `data` (what `hash_value` carries for an
/// uncompressed bill; the simulator uses it to announce its bills).
pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data).as_slice())
}
