//! Installs what the project's commands need, idempotently: every `ensure_*`
//! checks first and is quick when the tool is already there, so any command
//! can call them on a fresh machine or CI.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Chromium and its WebDriver, for the browser tests.
#[derive(Debug, Clone)]
pub struct ChromiumPaths {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// Flags every headless Chromium of this project starts with (this machine
/// runs as root, without a GPU or network).
pub const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];

/// The repository root (the workspace, one level above `xtask/`).
pub fn repo_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// Prints `cmd`, runs it, and fails with its exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    println!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its standard output (fails like [`run`]).
pub fn output(cmd: &mut Command) -> Result<String> {
    println!("$ {}", describe(cmd));
    let out = cmd
        .output()
        .with_context(|| format!("could not start {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Standard output of a quick probe, or `None` when it cannot run or fails.
fn probe(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `rustup target add wasm32-unknown-unknown` unless it is installed.
pub fn ensure_wasm_target() -> Result<()> {
    let installed = probe("rustup", &["target", "list", "--installed"]);
    if installed.is_some_and(|t| t.lines().any(|l| l.trim() == "wasm32-unknown-unknown")) {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

/// The exact version of `package` in the workspace's Cargo.lock.
pub fn locked_version(package: &str) -> Result<String> {
    let lock = repo_root().join("Cargo.lock");
    let text =
        std::fs::read_to_string(&lock).with_context(|| format!("reading {}", lock.display()))?;
    let name_line = format!("name = \"{package}\"");
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == name_line {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
            {
                return Ok(v.to_string());
            }
        }
    }
    bail!("{package} is not in {}", lock.display())
}

/// `cargo install wasm-bindgen-cli --version X` (X from Cargo.lock) unless
/// `wasm-bindgen --version` already says X. The CLI must match the library
/// exactly. Not `--locked`: one of its locked dependencies is missing from
/// the registry mirror here.
pub fn ensure_wasm_bindgen_cli() -> Result<()> {
    let want = locked_version("wasm-bindgen")?;
    let have = probe("wasm-bindgen", &["--version"]);
    let runner = probe("wasm-bindgen-test-runner", &["--version"]);
    if have.as_deref().map(str::trim) == Some(&format!("wasm-bindgen {want}")) && runner.is_some() {
        return Ok(());
    }
    run(Command::new("cargo").args(["install", "wasm-bindgen-cli", "--version", &want]))
}

/// `npm ci` at the repository root when node_modules is missing or older
/// than package-lock.json.
pub fn ensure_node_modules() -> Result<()> {
    let root = repo_root();
    let lock = root.join("package-lock.json");
    // npm writes node_modules/.package-lock.json at the end of every install.
    let installed = root.join("node_modules").join(".package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(done), Some(wanted)) = (modified(&installed), modified(&lock)) {
        if done >= wanted {
            return Ok(());
        }
    }
    run(Command::new("npm")
        .current_dir(&root)
        .args(["ci", "--no-audit", "--no-fund"]))
}

/// `node_modules/.bin/<name>` at the repository root.
pub fn node_bin(name: &str) -> PathBuf {
    repo_root().join("node_modules").join(".bin").join(name)
}

fn is_root() -> bool {
    probe("id", &["-u"]).is_some_and(|uid| uid.trim() == "0")
}

/// Finds Chromium and chromedriver; installs Debian's `chromium` and
/// `chromium-driver` when they are missing and this runs as root.
pub fn ensure_chromium() -> Result<ChromiumPaths> {
    let find = || {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())?;
        let chromedriver = PathBuf::from("/usr/bin/chromedriver");
        chromedriver.exists().then_some(ChromiumPaths {
            chromium,
            chromedriver,
        })
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    if !is_root() {
        bail!(
            "Chromium and chromedriver are missing: install the Debian packages \
             `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver)"
        );
    }
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd)
    };
    apt(&["update"])?;
    apt(&[
        "install",
        "-y",
        "chromium",
        "chromium-driver",
        "fonts-noto-cjk",
    ])?;
    find().context("apt-get installed chromium and chromium-driver, but /usr/bin/chromium or /usr/bin/chromedriver is still missing")
}

/// Python's `cryptography` package: the independent implementation the
/// known-answer fixtures and the simulator's cross-checks are verified with.
pub fn ensure_python_cryptography() -> Result<()> {
    if probe("python3", &["-c", "import cryptography"]).is_some() {
        return Ok(());
    }
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "cryptography",
    ]))
}
