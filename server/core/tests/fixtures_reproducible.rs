//! The committed known answers must be exactly what `tests/fixtures/generate.sh`
//! produces from the committed keys (OpenSSL CLI + Python `cryptography`), so
//! nobody can "fix" a failing known-answer test by editing kat.json.

use std::path::PathBuf;
use std::process::Command;

fn tool_available(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn committed_fixtures_match_the_generator() {
    let has_openssl = tool_available("openssl", &["version"]);
    let has_python = tool_available("python3", &["-c", "import cryptography"]);
    if !(has_openssl && has_python) {
        let why = format!(
            "needs openssl (found: {has_openssl}) and python3 with `cryptography` (found: {has_python})"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("cannot check the fixtures under CI: {why}");
        }
        eprintln!("SKIPPED committed_fixtures_match_the_generator: {why}");
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/generate.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tests/fixtures differ from generate.sh output:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
