//! Streaming the 下载账单 body to disk while checking its SHA-1.
//!
//! `hash_value` from 申请交易账单 is the SHA-1 of the *uncompressed* bill,
//! so the body is gunzipped (when `tar_type=GZIP`) as it arrives, hashed,
//! and written to a temporary file beside the destination. Only a file
//! whose hash matches is fsynced and renamed into place; on any failure the
//! temporary file is removed and the destination is left untouched. The
//! functions take a plain byte stream or `AsyncRead`, not an HTTP type, so
//! any client (or a test) can feed them.

use super::{BillError, HashingWriter};
use flate2::write::MultiGzDecoder;
use futures_util::{Stream, StreamExt};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use wxpay_combine_core::atomicfile::{self, Access};

/// Default cap on the decompressed size of one bill (guards against a
/// gzip bomb filling the disk). A day's bill of a large merchant is tens of
/// megabytes.
pub const DEFAULT_MAX_BILL_BYTES: u64 = 4 << 30;

/// Compressed input is fed to the decoder in slices this big, and the
/// decoded output drained to disk after each, so memory stays bounded
/// whatever the compression ratio.
const GZIP_SLICE: usize = 8 * 1024;

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
    // A handle on `tmp` for async writes. Declared first: closed before
    // `tmp` removes the file, which it does when dropped uncommitted (also
    // when the future is dropped half-way: a cancelled download).
    file: tokio::fs::File,
    tmp: atomicfile::NamedTempFile,
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
        // `.NAME.RANDOM.part` beside the destination, so the final rename is
        // atomic. Bills carry openids: readable by the owner only.
        let pattern = out_path.with_file_name(format!(".{}.*.part", name.to_string_lossy()));
        let target = out_path.to_path_buf();
        let tmp =
            tokio::task::spawn_blocking(move || atomicfile::temp_beside(&target, Access::Private))
                .await
                .map_err(|e| io_error("create", &pattern, std::io::Error::other(e)))?
                .map_err(|e| io_error("create", &pattern, e))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map(tokio::fs::File::from_std)
            .map_err(|e| io_error("create", tmp.path(), e))?;
        let sink = HashingWriter::new(Vec::new());
        Ok(VerifyingSink {
            decoder: if gzip {
                Decoder::Gzip(Box::new(MultiGzDecoder::new(sink)))
            } else {
                Decoder::Plain(sink)
            },
            file,
            tmp,
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
                .map_err(|e| io_error("write", self.tmp.path(), e))?;
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
        let VerifyingSink {
            mut file,
            tmp,
            out_path,
            ..
        } = self;
        file.flush()
            .await
            .map_err(|e| io_error("flush", tmp.path(), e))?;
        drop(file);
        // fsync (here, to name the step that failed; persist's own fsync is
        // then a no-op), rename into place and fsync the directory: blocking
        // calls, off the async workers.
        let dest = out_path.clone();
        tokio::task::spawn_blocking(move || {
            let tmp_path = tmp.path().to_path_buf();
            tmp.as_file()
                .sync_all()
                .map_err(|e| io_error("fsync", &tmp_path, e))?;
            atomicfile::persist(tmp, &dest).map_err(|e| io_error("rename into place", &dest, e))
        })
        .await
        .map_err(|e| io_error("rename into place", &out_path, std::io::Error::other(e)))??;
        Ok(VerifiedFile {
            path: out_path,
            sha1_hex: actual,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bill::{parse_file, sha1_hex};

    /// The SDK sample ALL bill (the core crate's test data).
    const SAMPLE: &[u8] =
        include_bytes!("../../../core/src/bill/testdata/sample-trade-bill-ALL.csv");
    use bytes::Bytes;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let p = std::env::temp_dir().join(format!("wxpay-bill-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir(&p).unwrap();
            TempDir(p)
        }

        fn entries(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// `data` as a body stream cut into `size`-byte chunks.
    fn chunks(
        data: &[u8],
        size: usize,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        let parts: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(parts)
    }

    fn sample_sha1() -> String {
        sha1_hex(SAMPLE)
    }

    #[test]
    fn sha1_matches_a_known_value() {
        // `printf abc | sha1sum`
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"a").unwrap();
        w.write_all(b"bc").unwrap();
        assert_eq!(w.sha1_hex(), sha1_hex(b"abc"));
        assert_eq!(w.bytes(), 3);
        assert_eq!(w.into_inner(), b"abc");
    }

    #[tokio::test]
    async fn a_matching_plain_body_lands_at_the_output_path() {
        let dir = TempDir::new();
        let out = dir.0.join("2024-05-01-ALL.csv");
        let v = download_to(chunks(SAMPLE, 1000), false, &out, &sample_sha1())
            .await
            .unwrap();
        assert_eq!(v.path, out);
        assert_eq!(v.bytes, SAMPLE.len() as u64);
        assert_eq!(v.sha1_hex, sample_sha1());
        assert_eq!(std::fs::read(&out).unwrap(), SAMPLE);
        assert_eq!(dir.entries(), vec!["2024-05-01-ALL.csv"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn the_expected_hash_is_compared_case_insensitively() {
        let dir = TempDir::new();
        let out = dir.0.join("bill.csv");
        let upper = format!("  {}\n", sample_sha1().to_uppercase());
        let v = download_to(chunks(SAMPLE, 4096), false, &out, &upper)
            .await
            .unwrap();
        assert_eq!(v.sha1_hex, sample_sha1());
        assert_eq!(parse_file(&out).unwrap().details.len(), 45);
    }

    #[tokio::test]
    async fn a_gzip_body_is_verified_on_its_decompressed_bytes() {
        let dir = TempDir::new();
        let compressed = gzip(SAMPLE);
        // Odd chunk sizes split the gzip header and trailer.
        for size in [1, 7, 4096, compressed.len()] {
            let out = dir.0.join(format!("bill-{size}.csv"));
            let v = download_to(chunks(&compressed, size), true, &out, &sample_sha1())
                .await
                .unwrap();
            assert_eq!(v.bytes, SAMPLE.len() as u64);
            assert_eq!(std::fs::read(&out).unwrap(), SAMPLE);
        }
        // The hash of the *compressed* bytes is not what hash_value means.
        let out = dir.0.join("wrong.csv");
        let err = download_to(chunks(&compressed, 512), true, &out, &sha1_hex(&compressed))
            .await
            .unwrap_err();
        assert!(matches!(err, BillError::HashMismatch { .. }));
        // Two concatenated members decode as one file (as gzip(1) does).
        let (a, b) = SAMPLE.split_at(5000);
        let mut two = gzip(a);
        two.extend(gzip(b));
        let out = dir.0.join("two.csv");
        download_to(chunks(&two, 333), true, &out, &sample_sha1())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), SAMPLE);
    }

    fn assert_only(dir: &TempDir, names: &[&str]) {
        assert_eq!(
            dir.entries(),
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_mismatch_deletes_the_temporary_file_and_writes_nothing() {
        let dir = TempDir::new();
        let out = dir.0.join("bill.csv");
        let wrong = "0000000000000000000000000000000000000000";
        let err = download_to(chunks(SAMPLE, 100), false, &out, wrong)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            BillError::HashMismatch {
                expected: wrong.into(),
                actual: sample_sha1()
            }
        );
        let msg = err.to_string();
        assert!(msg.contains(wrong) && msg.contains(&sample_sha1()), "{msg}");
        assert_only(&dir, &[]);

        // An existing file at the output path is left as it was.
        std::fs::write(&out, b"previous").unwrap();
        let err = download_to(chunks(b"tampered", 3), false, &out, &sample_sha1())
            .await
            .unwrap_err();
        assert!(matches!(err, BillError::HashMismatch { .. }));
        assert_eq!(std::fs::read(&out).unwrap(), b"previous");
        assert_only(&dir, &["bill.csv"]);

        // A verified download replaces it.
        download_to(chunks(SAMPLE, 100), false, &out, &sample_sha1())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), SAMPLE);
        assert_only(&dir, &["bill.csv"]);
    }

    #[tokio::test]
    async fn broken_bodies_leave_nothing_behind() {
        let dir = TempDir::new();
        let out = dir.0.join("bill.csv");
        let compressed = gzip(SAMPLE);

        // Truncated gzip (trailer missing).
        let cut = &compressed[..compressed.len() - 4];
        let err = download_to(chunks(cut, 64), true, &out, &sample_sha1())
            .await
            .unwrap_err();
        assert!(matches!(err, BillError::Gzip(_)), "{err:?}");
        // Garbage after the gzip member.
        let mut trailing = compressed.clone();
        trailing.extend_from_slice(b"garbage!");
        let err = download_to(chunks(&trailing, 64), true, &out, &sample_sha1())
            .await
            .unwrap_err();
        assert!(matches!(err, BillError::Gzip(_)), "{err:?}");
        // Not gzip at all.
        let err = download_to(chunks(SAMPLE, 64), true, &out, &sample_sha1())
            .await
            .unwrap_err();
        assert!(matches!(err, BillError::Gzip(_)), "{err:?}");
        // The body stream fails half-way.
        let failing = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let err = download_to(failing, false, &out, &sample_sha1())
            .await
            .unwrap_err();
        assert_eq!(err, BillError::Body("connection reset".into()));
        // Bigger than the cap (a gzip bomb would be stopped the same way).
        let err =
            download_to_with_limit(chunks(&compressed, 1000), true, &out, &sample_sha1(), 1000)
                .await
                .unwrap_err();
        assert_eq!(err, BillError::TooLarge { limit: 1000 });
        assert_only(&dir, &[]);
    }

    #[tokio::test]
    async fn a_bad_expected_hash_is_refused_before_any_io() {
        let dir = TempDir::new();
        let out = dir.0.join("bill.csv");
        for bad in [
            "",
            "abc",
            "zz9993e364706816aba3e25717850c26c9cd0d89d",
            &"a".repeat(41),
        ] {
            let err = download_to(chunks(b"x", 1), false, &out, bad)
                .await
                .unwrap_err();
            assert!(matches!(err, BillError::InvalidExpectedHash(_)), "{bad}");
        }
        assert_only(&dir, &[]);
        // A missing directory is an I/O error naming the temporary file.
        let err = download_to(
            chunks(b"x", 1),
            false,
            &dir.0.join("no/such/bill.csv"),
            &sha1_hex(b"x"),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, BillError::Io { op: "create", .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_cancelled_download_removes_its_temporary_file() {
        let dir = TempDir::new();
        let out = dir.0.join("bill.csv");
        // A body that yields one chunk and then never ends.
        let pending = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
            Bytes::from_static(b"partial"),
        )])
        .chain(futures_util::stream::pending());
        let expected = sha1_hex(b"x");
        let fut = download_to(pending, false, &out, &expected);
        let r = tokio::time::timeout(std::time::Duration::from_millis(100), fut).await;
        assert!(r.is_err(), "the download cannot finish");
        assert_only(&dir, &[]);
    }

    #[tokio::test]
    async fn async_readers_are_accepted_too() {
        let dir = TempDir::new();
        let out = dir.0.join("bill.csv");
        let compressed = gzip(SAMPLE);
        let v = download_reader_to(&compressed[..], true, &out, &sample_sha1())
            .await
            .unwrap();
        assert_eq!(v.bytes, SAMPLE.len() as u64);
        let err = download_reader_to(&b"nope"[..], false, &dir.0.join("x.csv"), &sample_sha1())
            .await
            .unwrap_err();
        assert!(matches!(err, BillError::HashMismatch { .. }));
        assert_only(&dir, &["bill.csv"]);
    }
}
