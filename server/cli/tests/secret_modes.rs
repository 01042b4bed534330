//! Files with secrets are owner-only (0600) also when a demo run keeps them
//! from an earlier run: a looser mode (a copy, an old version, a umask) is
//! tightened at start, not only on files written fresh.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use wxpay_combine_cli::app::{self, DemoOptions};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir` holding a secret: the demo's `secrets/`, the
/// simulator's private keys (merchant and platform) and `merchant.json`
/// (it carries the APIv3 key and AppSecret).
fn secret_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let in_secrets = p.parent().is_some_and(|d| d.ends_with("secrets"));
            let private_key = name.ends_with("key.pem") && !name.contains("public");
            if in_secrets || private_key || name == "merchant.json" {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn kept_secrets_are_made_owner_only_on_the_next_start() {
    let dir = std::env::temp_dir().join(format!("wxpay-modes-{}", uuid::Uuid::new_v4().simple()));
    let mut opts = DemoOptions::new(&dir);
    opts.addr = "127.0.0.1:0".parse().unwrap();
    drop(app::prepare_demo(&opts).await.expect("demo prepares"));

    let files = secret_files(&dir);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The kept-across-runs ones are what this is about.
    for kept in ["session_secret.txt", "internal_token.txt", "merchant.json"] {
        assert!(names.iter().any(|n| n == kept), "{kept} in {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with("key.pem")), "{names:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{} after the first run", f.display());
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    drop(app::prepare_demo(&opts).await.expect("demo prepares again"));
    for f in &files {
        assert_eq!(mode(f), 0o600, "{} kept with 0644", f.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
