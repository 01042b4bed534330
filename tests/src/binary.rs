//! The workspace's places on disk and the `wxpay-combine` binary that the
//! process-level tests run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Cargo package that owns the `wxpay-combine` binary: the one place to
/// change when the binary moves to another package.
pub const SERVER_PACKAGE: &str = "wxpay-combine-cli";

/// The binary's name (without the platform's executable suffix).
pub const SERVER_BIN: &str = "wxpay-combine";

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace
/// root when relative), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The `wxpay-combine` binary: `WXPAY_E2E_BIN` when set, else built once per
/// test run (`cargo build -p SERVER_PACKAGE --bin wxpay-combine`, a no-op
/// when `cargo test --workspace` has built it already). Panics, naming the
/// cause, when it cannot be built: a server that does not build fails the
/// test, it is no reason to skip it.
pub fn server_binary() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build_server_binary)
        .clone()
        .unwrap_or_else(|e| panic!("the {SERVER_BIN} binary: {e}"))
}

fn build_server_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("WXPAY_E2E_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "-p", SERVER_PACKAGE, "--bin", SERVER_BIN])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build -p {SERVER_PACKAGE}` failed: {status}"
        ));
    }
    let bin = target_dir()
        .join("debug")
        .join(format!("{SERVER_BIN}{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} is missing after the build", bin.display()))
    }
}
