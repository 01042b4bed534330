//! Debugging tools: `sign paysign`, `sign request`, `verify`, `decrypt`.
//!
//! Thin front ends over [`wxpay_combine_core::apiv3`]: they parse and check arguments, call
//! the same functions the server uses, and explain failures. Exit codes: 0
//! success, 1 the check failed (`invalid`, decryption failed), 2 usage or
//! configuration error (unreadable file, wrong key length, malformed
//! argument). Secrets (private keys, the APIv3 key) are never printed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use thiserror::Error;
use wxpay_combine_core::apiv3::{
    aead, generate_nonce, response_message, AeadError, ApiV3Key, Certificate, Clock,
    JsapiPayParams, KeyError, PrivateKey, PublicKey, RequestSigner, SystemClock,
    MAX_CLOCK_SKEW_SECS,
};

/// The prefix of WeChat Pay's deliberate wrong-signature probes.
const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// Largest plausible Unix time in seconds; larger values are milliseconds.
const MAX_SECONDS: i64 = 9_999_999_999;

/// `wxpay-combine sign …`
#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// Print the signed getBrandWCPayRequest object (paySign) for a prepay_id.
    Paysign(PaySignArgs),
    /// Print the Authorization header value for a merchant API request.
    Request(RequestArgs),
}

/// `wxpay-combine sign paysign …`
#[derive(Debug, Args)]
pub struct PaySignArgs {
    /// Merchant API private key (PEM, PKCS#8 or PKCS#1).
    #[arg(long, value_name = "FILE")]
    private_key: PathBuf,
    /// The appid the order was placed with (combine_appid).
    #[arg(long, value_name = "ID")]
    app_id: String,
    /// The prepay_id returned by the order API.
    #[arg(long, value_name = "ID")]
    prepay_id: String,
    /// Unix seconds [default: now].
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    timestamp: Option<i64>,
    /// nonceStr, at most 32 characters [default: 32 random alphanumerics].
    #[arg(long, value_name = "N")]
    nonce: Option<String>,
    /// Also print the exact string that was signed (to stderr).
    #[arg(long)]
    show_message: bool,
}

/// `wxpay-combine sign request …`
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Merchant API private key (PEM, PKCS#8 or PKCS#1).
    #[arg(long, value_name = "FILE")]
    private_key: PathBuf,
    /// Merchant id (mchid).
    #[arg(long, value_name = "ID")]
    mchid: String,
    /// Serial number of the merchant API certificate.
    #[arg(long, value_name = "SERIAL")]
    serial: String,
    /// HTTP method (GET, POST, …).
    #[arg(long, value_name = "M")]
    method: String,
    /// Path and query exactly as sent, without scheme and host, e.g.
    /// `/v3/combine-transactions/out-trade-no/X?combine_mchid=1900007291`.
    #[arg(long, value_name = "PATH_AND_QUERY")]
    url: String,
    /// The exact request body bytes [default: empty, as for GET].
    #[arg(long, value_name = "F")]
    body_file: Option<PathBuf>,
    /// Unix seconds [default: now].
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    timestamp: Option<i64>,
    /// nonce_str [default: 32 random alphanumerics].
    #[arg(long, value_name = "N")]
    nonce: Option<String>,
    /// Also print the exact string that was signed (to stderr).
    #[arg(long)]
    show_message: bool,
}

/// `wxpay-combine verify …`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// WeChat Pay public key (SPKI PEM) or platform certificate (X.509 PEM).
    #[arg(long, value_name = "FILE")]
    public_key: PathBuf,
    /// Wechatpay-Timestamp.
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    timestamp: String,
    /// Wechatpay-Nonce.
    #[arg(long, value_name = "N")]
    nonce: String,
    /// Wechatpay-Signature (base64).
    #[arg(long, value_name = "B64")]
    signature: String,
    /// The raw body bytes exactly as received [default: empty].
    #[arg(long, value_name = "F")]
    body_file: Option<PathBuf>,
}

/// `wxpay-combine decrypt …`
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// File holding the 32-character APIv3 key.
    #[arg(long, value_name = "F")]
    apiv3_key_file: PathBuf,
    /// resource.nonce (12 characters).
    #[arg(long, value_name = "N")]
    nonce: String,
    /// resource.associated_data (may be empty: --associated-data '').
    #[arg(long, value_name = "A")]
    associated_data: String,
    /// resource.ciphertext (base64 of ciphertext and tag).
    #[arg(long, value_name = "B64")]
    ciphertext: String,
}

/// Why a tool stopped.
#[derive(Debug, Error)]
enum ToolError {
    /// Bad arguments or configuration: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Loading a key failed: exit 2. (Key errors never contain key bytes.)
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The operation itself failed: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    fn exit_code(&self) -> u8 {
        match self {
            ToolError::Usage(_) | ToolError::Key(_) => 2,
            ToolError::Failed(_) => 1,
        }
    }
}

fn finish(result: Result<(), ToolError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            note(&format!("error: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}

/// Writes to stdout without panicking (a closed pipe is not a crash).
fn out(bytes: &[u8]) -> Result<(), ToolError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| ToolError::Failed(format!("cannot write to stdout: {e}")))
}

/// An informational line on stderr; failures to write it are ignored.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Rejects values that would corrupt the signed lines or the header quoting.
fn check_field(what: &str, value: &str) -> Result<(), ToolError> {
    if value.is_empty() {
        return Err(ToolError::Usage(format!("{what} must not be empty")));
    }
    if value.chars().any(|c| c.is_control() || c == '"') {
        return Err(ToolError::Usage(format!(
            "{what} must not contain control characters (such as a newline) or '\"'"
        )));
    }
    Ok(())
}

fn check_timestamp(t: Option<i64>) -> Result<i64, ToolError> {
    match t {
        None => Ok(SystemClock.now()),
        Some(t) if t > MAX_SECONDS => Err(ToolError::Usage(format!(
            "--timestamp {t} looks like milliseconds; WeChat Pay uses Unix seconds (10 digits)"
        ))),
        Some(t) if t <= 0 => Err(ToolError::Usage(format!(
            "--timestamp must be positive Unix seconds, got {t}"
        ))),
        Some(t) => Ok(t),
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, ToolError> {
    std::fs::read(path)
        .map_err(|e| ToolError::Usage(format!("cannot read {}: {e}", path.display())))
}

/// Shows a signed or verified string with its line breaks visible.
fn show_message(message: &[u8]) {
    let text = String::from_utf8_lossy(message);
    note(&format!("string to sign: {}", text.escape_debug()));
}

fn warn_trailing_newline(body: &[u8]) {
    if body.ends_with(b"\n") {
        note("note: the body file ends with a newline; that newline is part of the body");
    }
}

/// Runs `sign`.
pub fn sign(command: SignCommand) -> ExitCode {
    finish(match command {
        SignCommand::Paysign(a) => sign_paysign(a),
        SignCommand::Request(a) => sign_request(a),
    })
}

fn sign_paysign(a: PaySignArgs) -> Result<(), ToolError> {
    check_field("--app-id", &a.app_id)?;
    // Accept the `package` form too, so `prepay_id=` is never doubled.
    let prepay_id = match a.prepay_id.strip_prefix("prepay_id=") {
        Some(id) => {
            note("note: --prepay-id given as `prepay_id=…`; using the id after `=`");
            id.to_string()
        }
        None => a.prepay_id,
    };
    check_field("--prepay-id", &prepay_id)?;
    let timestamp = check_timestamp(a.timestamp)?;
    let nonce = a.nonce.unwrap_or_else(generate_nonce);
    check_field("--nonce", &nonce)?;
    if nonce.chars().count() > 32 {
        return Err(ToolError::Usage(
            "--nonce: nonceStr is at most 32 characters".into(),
        ));
    }
    let key = PrivateKey::from_pem_file(&a.private_key)?;
    let params = JsapiPayParams::sign(&key, &a.app_id, &prepay_id, timestamp, &nonce)
        .map_err(|e| ToolError::Failed(e.to_string()))?;
    if a.show_message {
        show_message(
            JsapiPayParams::message(
                &params.app_id,
                &params.time_stamp,
                &params.nonce_str,
                &params.package,
            )
            .as_bytes(),
        );
    }
    let mut json = serde_json::to_string_pretty(&params)
        .map_err(|e| ToolError::Failed(format!("cannot encode JSON: {e}")))?;
    json.push('\n');
    out(json.as_bytes())
}

fn sign_request(a: RequestArgs) -> Result<(), ToolError> {
    check_field("--mchid", &a.mchid)?;
    check_field("--serial", &a.serial)?;
    if a.method.is_empty() || !a.method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ToolError::Usage(format!(
            "--method must be an HTTP method such as GET or POST, got {:?}",
            a.method
        )));
    }
    if !a.url.starts_with('/') {
        let hint = if a.url.contains("://") {
            " (drop the scheme and host: only the path and query are signed)"
        } else {
            ""
        };
        return Err(ToolError::Usage(format!(
            "--url must start with '/', e.g. /v3/combine-transactions/jsapi{hint}"
        )));
    }
    if a.url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ToolError::Usage(
            "--url must not contain whitespace; percent-encode it exactly as sent".into(),
        ));
    }
    let timestamp = check_timestamp(a.timestamp)?;
    let nonce = a.nonce.unwrap_or_else(generate_nonce);
    check_field("--nonce", &nonce)?;
    let body = match &a.body_file {
        Some(path) => read_bytes(path)?,
        None => Vec::new(),
    };
    warn_trailing_newline(&body);
    if !body.is_empty() && matches!(a.method.to_ascii_uppercase().as_str(), "GET" | "DELETE") {
        note("note: a body was given for a bodyless method; it is signed as given");
    }
    let key = PrivateKey::from_pem_file(&a.private_key)?;
    let signer = RequestSigner::new(a.mchid, a.serial, key);
    let header = signer
        .authorization_at(&a.method, &a.url, timestamp, &nonce, &body)
        .map_err(|e| ToolError::Failed(e.to_string()))?;
    if a.show_message {
        show_message(&wxpay_combine_core::apiv3::request_message(
            &a.method, &a.url, timestamp, &nonce, &body,
        ));
    }
    out(format!("{header}\n").as_bytes())
}

/// Runs `verify`.
pub fn verify(a: VerifyArgs) -> ExitCode {
    match run_verify(a) {
        Ok(Verdict::Valid) => match out(b"valid\n") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => finish(Err(e)),
        },
        Ok(Verdict::Invalid(reason)) => {
            let _ = out(format!("invalid: {reason}\n").as_bytes());
            ExitCode::FAILURE
        }
        Err(e) => finish(Err(e)),
    }
}

enum Verdict {
    Valid,
    Invalid(String),
}

/// Loads a certificate (reporting its serial) or a bare public key.
fn load_verifying_key(path: &Path) -> Result<PublicKey, ToolError> {
    match Certificate::from_pem_file(path) {
        Ok(cert) => {
            note(&format!(
                "certificate serial {} (valid {} to {})",
                cert.serial_no,
                format_time(cert.not_before),
                format_time(cert.not_after)
            ));
            if !cert.is_valid_at(SystemClock.now()) {
                note("note: this certificate is not valid now; the server's Verifier would refuse it");
            }
            Ok(cert.public_key)
        }
        Err(KeyError::NoPemBlock { .. }) => Ok(PublicKey::from_pem_file(path)?),
        Err(e) => Err(e.into()),
    }
}

fn format_time(unix: i64) -> String {
    wxpay_combine_core::timefmt::rfc3339_utc(unix).unwrap_or_else(|| unix.to_string())
}

fn report_skew(timestamp: &str) {
    let Ok(ts) = timestamp.parse::<i64>() else {
        note(&format!(
            "clock skew: unknown (timestamp {:?} is not an integer number of seconds; \
             the server would reject it)",
            timestamp.chars().take(32).collect::<String>()
        ));
        return;
    };
    let skew = SystemClock.now().saturating_sub(ts);
    let direction = if skew >= 0 {
        format!("{skew} s in the past")
    } else {
        format!("{} s in the future", skew.unsigned_abs())
    };
    let mut line = format!(
        "clock skew: {skew} s (timestamp is {direction}; WeChat Pay enforces {MAX_CLOCK_SKEW_SECS} s)"
    );
    if skew.saturating_abs() >= MAX_CLOCK_SKEW_SECS {
        line.push_str(
            " — outside the window: the server would reject this even if the signature is valid",
        );
    }
    if ts > MAX_SECONDS {
        line.push_str(" — the timestamp looks like milliseconds");
    }
    note(&line);
}

fn run_verify(a: VerifyArgs) -> Result<Verdict, ToolError> {
    let key = load_verifying_key(&a.public_key)?;
    let body = match &a.body_file {
        Some(path) => read_bytes(path)?,
        None => Vec::new(),
    };
    warn_trailing_newline(&body);
    report_skew(&a.timestamp);
    let signature = a.signature.trim();
    let message = response_message(&a.timestamp, &a.nonce, &body);
    // The verdict comes from the same call the server makes; what follows
    // only explains a failure.
    if key.verify_base64(&message, signature) {
        return Ok(Verdict::Valid);
    }
    Ok(Verdict::Invalid(explain_bad_signature(&key, signature)))
}

fn explain_bad_signature(key: &PublicKey, signature: &str) -> String {
    if signature.starts_with(SIGNTEST_PREFIX) {
        return format!(
            "{SIGNTEST_PREFIX} probe: WeChat Pay sends these wrong signatures on purpose to check \
             that merchants verify; answer with 4xx/5xx and it is resent correctly signed"
        );
    }
    let decoded = match STANDARD.decode(signature.as_bytes()) {
        Ok(d) => d,
        Err(_) => return "the signature is not standard base64".into(),
    };
    if let Some(expected) = modulus_len(key) {
        if decoded.len() != expected {
            return format!(
                "the signature is {} bytes; a signature by this {}-bit key is {expected} bytes",
                decoded.len(),
                expected * 8
            );
        }
    }
    "the signature does not match this public key and message (wrong key, or the body, \
     timestamp or nonce differ from what was signed)"
        .into()
}

fn modulus_len(key: &PublicKey) -> Option<usize> {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    rsa::PublicKey::from_public_key_der(key.spki_der())
        .ok()
        .map(|k| k.size())
}

/// Runs `decrypt`.
pub fn decrypt(a: DecryptArgs) -> ExitCode {
    finish(run_decrypt(a))
}

fn run_decrypt(a: DecryptArgs) -> Result<(), ToolError> {
    let key = ApiV3Key::from_file(&a.apiv3_key_file)?;
    let plaintext = aead::decrypt(&key, &a.nonce, &a.associated_data, a.ciphertext.trim())
        .map_err(|e| match e {
            AeadError::Authentication => ToolError::Failed(format!("decryption failed: {e}")),
            other => ToolError::Usage(other.to_string()),
        })?;
    out(&plaintext)?;
    // A terminal gets a final newline; a pipe gets the exact plaintext.
    if std::io::stdout().is_terminal() && !plaintext.ends_with(b"\n") {
        out(b"\n")?;
    }
    Ok(())
}
