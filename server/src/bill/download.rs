//! Streaming the 下载账单 body to disk while checking its SHA-1.
//!
//! `hash_value` from 申请交易账单 is the SHA-1 of the *uncompressed* bill,
//! so the body is gunzipped (when `tar_type=GZIP`) as it arrives, hashed,
//! and written to a temporary file beside the destination. Only a file
//! whose hash matches is fsynced and renamed into place; on any failure the
//! temporary file is removed and the destination is left untouched. The
//! functions take a plain byte stream or `AsyncRead`, not an HTTP type, so
//! any client (or a test) can feed them.

use super::error::BillError;
use flate2::write::MultiGzDecoder;
use futures_util::{Stream, StreamExt};
use sha1::{Digest, Sha1};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Default cap on the decompressed size of one bill (guards against a
/// gzip bomb filling the disk). A day's bill of a large merchant is tens of
/// megabytes.
pub const DEFAULT_MAX_BILL_BYTES: u64 = 4 << 30;

/// Compressed input is fed to the decoder in slices this big, and the
/// decoded output drained to disk after each, so memory stays bounded
/// whatever the compression ratio.
const GZIP_SLICE: usize = 8 * 1024;

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

/// A bill that was received whole, matched `hash_value` and is in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedFile {
    /// Where it now is (the requested output path).
    pub path: PathBuf,
    /// Its SHA-1, lower-case hex (equal to `hash_value`).
    pub sha1_hex: String,
    /// Its size, uncompressed.
    pub bytes: u64,
}

/// Streams `body` (gzip-compressed when `gzip`) to `out_path`, verifying
/// that the uncompressed bytes have SHA-1 `expected_sha1_hex` (any case).
///
/// Writes to a temporary file in `out_path`'s directory, so the final
/// rename is atomic; an existing file at `out_path` is replaced only by a
/// verified one. On a mismatch, a body error, corrupt gzip or the size cap
/// ([`DEFAULT_MAX_BILL_BYTES`]) nothing is left behind.
pub async fn download_to<S, B, E>(
    body: S,
    gzip: bool,
    out_path: &Path,
    expected_sha1_hex: &str,
) -> Result<VerifiedFile, BillError>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    download_to_with_limit(
        body,
        gzip,
        out_path,
        expected_sha1_hex,
        DEFAULT_MAX_BILL_BYTES,
    )
    .await
}

/// [`download_to`] with an explicit cap on the uncompressed size.
pub async fn download_to_with_limit<S, B, E>(
    body: S,
    gzip: bool,
    out_path: &Path,
    expected_sha1_hex: &str,
    max_bytes: u64,
) -> Result<VerifiedFile, BillError>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let expected = normalize_sha1(expected_sha1_hex)?;
    let mut sink = VerifyingSink::create(gzip, out_path, max_bytes).await?;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BillError::Body(e.to_string()))?;
        sink.feed(chunk.as_ref()).await?;
    }
    sink.commit(&expected).await
}

/// [`download_to`] reading from an `AsyncRead` instead of a byte stream.
pub async fn download_reader_to<R: AsyncRead>(
    reader: R,
    gzip: bool,
    out_path: &Path,
    expected_sha1_hex: &str,
) -> Result<VerifiedFile, BillError> {
    let expected = normalize_sha1(expected_sha1_hex)?;
    let mut sink = VerifyingSink::create(gzip, out_path, DEFAULT_MAX_BILL_BYTES).await?;
    let mut reader = std::pin::pin!(reader);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| BillError::Body(e.to_string()))?;
        if n == 0 {
            break;
        }
        sink.feed(&buf[..n]).await?;
    }
    sink.commit(&expected).await
}

/// `hash_value` as 40 lower-case hex digits, or an error before any I/O.
fn normalize_sha1(text: &str) -> Result<String, BillError> {
    let t = text.trim();
    if t.len() == 40 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t.to_ascii_lowercase())
    } else {
        Err(BillError::InvalidExpectedHash(
            text.chars().take(64).collect(),
        ))
    }
}

fn io_error(op: &'static str, path: &Path, e: std::io::Error) -> BillError {
    BillError::Io {
        op,
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Removes the temporary file unless the download was committed — also
/// when the future is dropped half-way (cancelled download).
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

enum Decoder {
    Plain(HashingWriter<Vec<u8>>),
    // Boxed: the decoder's state is large next to the plain variant.
    Gzip(Box<MultiGzDecoder<HashingWriter<Vec<u8>>>>),
}

impl Decoder {
    fn sink(&mut self) -> &mut HashingWriter<Vec<u8>> {
        match self {
            Decoder::Plain(h) => h,
            Decoder::Gzip(d) => d.get_mut(),
        }
    }
}

struct VerifyingSink {
    decoder: Decoder,
    // Declared before the guard: the file is closed before it is removed.
    file: tokio::fs::File,
    guard: TempGuard,
    out_path: PathBuf,
    max_bytes: u64,
}

impl VerifyingSink {
    async fn create(gzip: bool, out_path: &Path, max_bytes: u64) -> Result<Self, BillError> {
        let name = out_path.file_name().ok_or_else(|| BillError::Io {
            op: "use",
            path: out_path.display().to_string(),
            detail: "not a file path".into(),
        })?;
        let dir = match out_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(
            ".{}.{}.part",
            name.to_string_lossy(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true);
        // Bills carry openids: readable by the owner only.
        #[cfg(unix)]
        options.mode(0o600);
        let file = options
            .open(&tmp)
            .await
            .map_err(|e| io_error("create", &tmp, e))?;
        let sink = HashingWriter::new(Vec::new());
        Ok(VerifyingSink {
            decoder: if gzip {
                Decoder::Gzip(Box::new(MultiGzDecoder::new(sink)))
            } else {
                Decoder::Plain(sink)
            },
            file,
            guard: TempGuard {
                path: tmp,
                armed: true,
            },
            out_path: out_path.to_path_buf(),
            max_bytes,
        })
    }

    async fn feed(&mut self, mut chunk: &[u8]) -> Result<(), BillError> {
        while !chunk.is_empty() {
            let n = match &mut self.decoder {
                Decoder::Plain(h) => {
                    // Writing into a Vec cannot fail.
                    let _ = h.write_all(chunk);
                    chunk.len()
                }
                Decoder::Gzip(d) => d
                    .write(&chunk[..chunk.len().min(GZIP_SLICE)])
                    .map_err(|e| BillError::Gzip(e.to_string()))?,
            };
            if n == 0 {
                return Err(BillError::Gzip("decoder accepted no input".into()));
            }
            chunk = &chunk[n..];
            self.drain().await?;
        }
        Ok(())
    }

    /// Moves decoded bytes from memory to the temporary file.
    async fn drain(&mut self) -> Result<(), BillError> {
        let sink = self.decoder.sink();
        if sink.bytes() > self.max_bytes {
            return Err(BillError::TooLarge {
                limit: self.max_bytes,
            });
        }
        let buf = std::mem::take(sink.get_mut());
        if !buf.is_empty() {
            self.file
                .write_all(&buf)
                .await
                .map_err(|e| io_error("write", &self.guard.path, e))?;
        }
        Ok(())
    }

    async fn commit(mut self, expected: &str) -> Result<VerifiedFile, BillError> {
        if let Decoder::Gzip(d) = &mut self.decoder {
            // Checks the gzip trailer (CRC and length): a truncated body fails.
            d.try_finish().map_err(|e| BillError::Gzip(e.to_string()))?;
        }
        self.drain().await?;
        let sink = self.decoder.sink();
        let actual = sink.sha1_hex();
        let bytes = sink.bytes();
        if actual != expected {
            return Err(BillError::HashMismatch {
                expected: expected.to_owned(),
                actual,
            });
        }
        let tmp = self.guard.path.clone();
        self.file
            .flush()
            .await
            .map_err(|e| io_error("flush", &tmp, e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| io_error("fsync", &tmp, e))?;
        tokio::fs::rename(&tmp, &self.out_path)
            .await
            .map_err(|e| io_error("rename into place", &self.out_path, e))?;
        self.guard.armed = false;
        // Make the rename itself durable. Best effort: the file is already
        // complete and in place, and some platforms cannot open directories.
        if let Some(dir) = self.out_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        Ok(VerifiedFile {
            path: self.out_path.clone(),
            sha1_hex: actual,
            bytes,
        })
    }
}
