//! The `wxpay-combine-jsapi` npm package (the Rust crate in `wasm/`):
//!
//! * `cargo xtask wasm` builds `wasm/pkg/` and packs it into
//!   `target/npm/wxpay-combine-jsapi-<version>.tgz`;
//! * `cargo xtask wasm-size` prints its gzipped size (last line
//!   `wasm_gz=… js_gz=… total_gz=…`) and fails over the budget;
//! * `cargo xtask wasm-bindings-size` measures the binding choice: the
//!   package's browser calls with its own declarations, with js-sys +
//!   web-sys, and with serde-wasm-bindgen too (`wasm/bindings-probe`);
//! * `cargo xtask wasm-test` runs the crate's wasm-bindgen tests in headless
//!   Chromium, then loads the packed tarball in a plain HTML page (also
//!   under a CSP without `'wasm-unsafe-eval'`), a `vite build`, `vite dev`,
//!   webpack 5 and esbuild, each paying against a fake `WeixinJSBridge` and
//!   a fake merchant server on loopback; and holds the package's README to
//!   it (`wasm_readme`: examples type-checked and run, the CSP line served,
//!   error codes and exports as declared).

use crate::tools::{self, node_bin, repo_root, run, ChromiumPaths, CHROMIUM_ARGS};
use crate::wasm_readme;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CRATE: &str = "wxpay-combine-jsapi";
/// wasm-bindgen's output name (`<STEM>.js`, `<STEM>_bg.wasm`).
const STEM: &str = "wxpay_combine_jsapi";
/// The package's budget: .wasm + all .js, each `gzip -9`, added up.
pub const BUDGET_GZ: u64 = 14_000;
/// For the package build only: without reference types (no externref table
/// code). The shipped .wasm is WebAssembly MVP plus mutable globals, so it
/// runs in every WebView WeChat ships (iOS before 15 has no bulk memory,
/// Chrome before 75 no sign extension): rustc's other default features
/// (bulk memory, sign extension, non-trapping float-to-int; the precompiled
/// `core`/`alloc` have them too) are lowered by wasm-opt (`MVP_LOWERING`),
/// which then validates against exactly `WASM_FEATURES`. Lowering costs
/// ~80 B gzipped; `-Ctarget-cpu=mvp` instead would cost ~520 B (its generic
/// `memcpy`), see BENCHMARKS.md.
const PACKAGE_RUSTFLAGS: &str = "-Ctarget-feature=-reference-types";
/// binaryen passes that rewrite post-MVP instructions into MVP ones:
/// `memory.copy`/`memory.fill` into loops, sign-extension into shifts,
/// saturating float-to-int into checked conversions.
const MVP_LOWERING: [&str; 3] = [
    "--llvm-memory-copy-fill-lowering",
    "--signext-lowering",
    "--llvm-nontrapping-fptoint-lowering",
];
/// What the precompiled `core`/`alloc` may bring (Rust's wasm32 defaults),
/// for reading the module before lowering.
const PRECOMPILED_FEATURES: [&str; 5] = [
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-nontrapping-float-to-int",
    "--enable-mutable-globals",
    "--enable-reference-types",
];
/// What the shipped .wasm may use; wasm-opt validates against exactly these.
const WASM_FEATURES: [&str; 2] = ["--mvp-features", "--enable-mutable-globals"];

struct Metadata {
    target_dir: PathBuf,
    version: String,
    description: String,
    license: String,
    repository: String,
}

fn metadata() -> Result<Metadata> {
    let out = tools::output(Command::new("cargo").current_dir(repo_root()).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let v: Value = serde_json::from_str(&out).context("cargo metadata output")?;
    let package = v["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == CRATE))
        .with_context(|| format!("{CRATE} is not a workspace member"))?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(Metadata {
        target_dir: PathBuf::from(text(&v["target_directory"])),
        version: text(&package["version"]),
        description: text(&package["description"]),
        license: text(&package["license"]),
        repository: text(&package["repository"]),
    })
}

fn pkg_dir() -> PathBuf {
    repo_root().join("wasm").join("pkg")
}

/// `cargo xtask wasm`: builds `wasm/pkg/` and returns the packed tarball.
pub fn build() -> Result<PathBuf> {
    tools::ensure_wasm_target()?;
    tools::ensure_wasm_bindgen_cli()?;
    tools::ensure_node_modules()?;
    let root = repo_root();
    let meta = metadata()?;
    let pkg = pkg_dir();

    // 1. Rust → .wasm: size-tuned profile, `no_std` (no `std` feature).
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["build", "-p", CRATE, "--target", "wasm32-unknown-unknown"])
        .args(["--profile", "wasm-release"])
        .env("CARGO_ENCODED_RUSTFLAGS", PACKAGE_RUSTFLAGS))?;
    let artifact = meta
        .target_dir
        .join("wasm32-unknown-unknown")
        .join("wasm-release")
        .join(format!("{STEM}.wasm"));

    // 2. JS bindings and TypeScript declarations.
    if pkg.exists() {
        std::fs::remove_dir_all(&pkg).with_context(|| format!("removing {}", pkg.display()))?;
    }
    run(Command::new("wasm-bindgen")
        .args(["--target", "web", "--out-name", STEM])
        // index.js names the default location (and load(url) another one).
        .arg("--omit-default-module-path")
        .args(["--remove-name-section", "--remove-producers-section"])
        .arg("--out-dir")
        .arg(&pkg)
        .arg(&artifact))?;

    trim_glue(&pkg)?;

    // 3. MVP, then size: wasm-opt (npm `binaryen`) lowers the post-MVP
    // instructions of the precompiled core library, optimizes with -Oz, and
    // its validation fails the build if anything beyond WASM_FEATURES is left.
    let wasm = pkg.join(format!("{STEM}_bg.wasm"));
    run(Command::new(node_bin("wasm-opt"))
        .args(PRECOMPILED_FEATURES)
        .args(MVP_LOWERING)
        .arg(&wasm)
        .arg("-o")
        .arg(&wasm))?;
    shorten_imports(&pkg, &wasm)?;
    run(Command::new(node_bin("wasm-opt"))
        .args(["-Oz", "--converge"])
        .args(WASM_FEATURES)
        .arg(&wasm)
        .arg("-o")
        .arg(&wasm))?;
    let _ = std::fs::remove_file(pkg.join(format!("{STEM}_bg.wasm.d.ts")));

    // 4. The entry point (lazy loading, PayError re-export), then minify.
    let snippets = snippet_dir(&pkg)?;
    let index = std::fs::read_to_string(root.join("wasm/js/index.js"))?
        .replace("./SNIPPETS/", &format!("./{snippets}/"));
    std::fs::write(pkg.join("index.js"), index)?;
    std::fs::copy(root.join("wasm/js/index.d.ts"), pkg.join("index.d.ts"))?;
    for js in files_with_extension(&pkg, "js")? {
        run(Command::new(node_bin("terser"))
            .arg(&js)
            .args([
                "--module",
                "--compress",
                "passes=2",
                "--mangle",
                "--comments",
                "false",
            ])
            .arg("--output")
            .arg(&js))?;
    }

    // 5. package.json and README, then `npm pack`.
    let package_json = ordered_json(&[
        ("name", json!(CRATE)),
        ("version", json!(meta.version)),
        ("description", json!(meta.description)),
        ("license", json!(meta.license)),
        (
            "repository",
            json!({ "type": "git", "url": meta.repository }),
        ),
        (
            "keywords",
            json!([
                "wechat",
                "weixin",
                "wechatpay",
                "jsapi",
                "getBrandWCPayRequest",
                "WeixinJSBridge",
                "payment",
                "webassembly"
            ]),
        ),
        ("type", json!("module")),
        ("main", json!("./index.js")),
        ("module", json!("./index.js")),
        ("types", json!("./index.d.ts")),
        (
            "exports",
            json!({
                ".": { "types": "./index.d.ts", "default": "./index.js" },
                "./wasm": format!("./{STEM}_bg.wasm"),
                "./package.json": "./package.json"
            }),
        ),
        (
            "files",
            json!([
                "index.js",
                "index.d.ts",
                format!("{STEM}.js"),
                format!("{STEM}.d.ts"),
                format!("{STEM}_bg.wasm"),
                "snippets/",
                "README.md"
            ]),
        ),
        ("sideEffects", json!(false)),
    ])?;
    std::fs::write(pkg.join("package.json"), package_json)?;
    std::fs::copy(root.join("wasm/README.md"), pkg.join("README.md"))?;
    let npm_dir = meta.target_dir.join("npm");
    std::fs::create_dir_all(&npm_dir)?;
    let packed = tools::output(
        Command::new("npm")
            .current_dir(&pkg)
            .args(["pack", "--silent", "--pack-destination"])
            .arg(&npm_dir),
    )?;
    let name = packed
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| l.ends_with(".tgz"))
        .with_context(|| format!("npm pack printed no tarball name: {packed}"))?;
    let tarball = npm_dir.join(name);
    println!(
        "wasm: package in {}, tarball {}",
        pkg.display(),
        tarball.display()
    );
    Ok(tarball)
}

/// wasm-bindgen's loader takes a URL, a `Response` or bytes (streaming,
/// MIME-type fallback, deprecation warnings) and offers `initSync`; the
/// package's `load()` (js/index.js) fetches and checks the `.wasm` itself
/// and hands over a compiled `WebAssembly.Module`, so the glue keeps only
/// the instantiation: 578 B less gzipped (BENCHMARKS.md). The replaced
/// code is checked by name, so another wasm-bindgen fails the build here.
const GLUE_LOADER_START: &str = "async function __wbg_load(module, imports) {";
const GLUE_LOADER_END: &str = "export { initSync, __wbg_init as default };";
const GLUE_LOADER_FUNCTIONS: [&str; 4] = [
    "async function __wbg_load(",
    "function initSync(",
    "async function __wbg_init(",
    "async function __wbg_init_once(",
];
const GLUE_LOADER: &str =
    "// Given a compiled WebAssembly.Module by index.js (see xtask/src/wasm.rs).
async function __wbg_init({ module_or_path: module }) {
    if (wasm !== undefined) return wasm;
    return __wbg_finalize_init(await WebAssembly.instantiate(module, __wbg_get_imports()), module);
}

export { __wbg_init as default };
";
const GLUE_TYPES_START: &str = "export type SyncInitInput";
const GLUE_TYPES: &str = "/** Instantiates the module that index.js's `load()` compiled. */
export default function __wbg_init(init: { module_or_path: WebAssembly.Module }): Promise<InitOutput>;
";

/// Cuts wasm-bindgen's loader down to what `load()` uses (see `GLUE_LOADER`).
fn trim_glue(pkg: &Path) -> Result<()> {
    let js_path = pkg.join(format!("{STEM}.js"));
    let js = std::fs::read_to_string(&js_path)?;
    let start = js.find(GLUE_LOADER_START);
    let loader = start.map(|at| &js[at..]).unwrap_or_default();
    let functions = loader.matches("function ").count();
    if start.is_none()
        || !loader.trim_end().ends_with(GLUE_LOADER_END)
        || functions != GLUE_LOADER_FUNCTIONS.len() + 1
        || GLUE_LOADER_FUNCTIONS.iter().any(|f| !loader.contains(f))
    {
        bail!("{}: wasm-bindgen's loader is not the one trim_glue knows (another wasm-bindgen version?)", js_path.display());
    }
    let cut = start.unwrap_or_default();
    std::fs::write(&js_path, format!("{}{GLUE_LOADER}", &js[..cut]))?;
    let types_path = pkg.join(format!("{STEM}.d.ts"));
    let types = std::fs::read_to_string(&types_path)?;
    let Some(cut) = types.find(GLUE_TYPES_START) else {
        bail!("{}: no {GLUE_TYPES_START}", types_path.display());
    };
    std::fs::write(&types_path, format!("{}{GLUE_TYPES}", &types[..cut]))?;
    Ok(())
}

/// wasm-bindgen names each import of the .wasm `__wbg_<name>_<16 hex
/// digits>` from the module `./<STEM>_bg.js`, and each name is written
/// twice: in the .wasm and as a key of the glue's imports object, which no
/// minifier may rename. The hex digits do not compress; the names are
/// internal to the two files, so both get `i0`, `i1`… from module `w`
/// (BENCHMARKS.md has the saving). Every name must occur exactly once in
/// the glue, as its key, or the build stops here.
fn shorten_imports(pkg: &Path, wasm: &Path) -> Result<()> {
    let glue_path = pkg.join(format!("{STEM}.js"));
    let mut glue = std::fs::read_to_string(&glue_path)?;
    let wat_path = wasm.with_extension("wat");
    run(Command::new(node_bin("wasm-dis"))
        .arg(wasm)
        .arg("-o")
        .arg(&wat_path))?;
    let mut wat = std::fs::read_to_string(&wat_path)?;
    let module = format!("./{STEM}_bg.js");
    let prefix = format!("(import \"{module}\" \"");
    let names: Vec<String> = wat
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix(&prefix))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    if names.is_empty() || wat.matches("(import \"").count() != names.len() {
        bail!("{}: expected every import from {module}", wasm.display());
    }
    for (i, name) in names.iter().enumerate() {
        let key = format!("{name}: function(");
        if glue.matches(name.as_str()).count() != 1 || !glue.contains(&key) {
            bail!(
                "{}: the import {name} is not once a key of the imports object",
                glue_path.display()
            );
        }
        glue = glue.replacen(&key, &format!("i{i}: function("), 1);
        wat = wat.replacen(
            &format!("{prefix}{name}\""),
            &format!("(import \"w\" \"i{i}\""),
            1,
        );
    }
    let module_key = format!("\"{module}\": import0");
    if glue.matches(module.as_str()).count() != 1 || !glue.contains(&module_key) {
        bail!(
            "{}: {module} is not once the imports' module key",
            glue_path.display()
        );
    }
    glue = glue.replacen(&module_key, "w: import0", 1);
    std::fs::write(&wat_path, wat)?;
    run(Command::new(node_bin("wasm-as"))
        .args(WASM_FEATURES)
        .arg(&wat_path)
        .arg("-o")
        .arg(wasm))?;
    std::fs::remove_file(&wat_path)?;
    std::fs::write(&glue_path, glue)?;
    Ok(())
}

/// A JSON object with its keys in the given order (package.json reads best
/// that way; serde_json's map would sort them).
fn ordered_json(entries: &[(&str, Value)]) -> Result<String> {
    let mut out = String::from("{\n");
    for (i, (key, value)) in entries.iter().enumerate() {
        let value = serde_json::to_string_pretty(value)?.replace('\n', "\n  ");
        let comma = if i + 1 < entries.len() { "," } else { "" };
        out.push_str(&format!("  {}: {value}{comma}\n", json!(key)));
    }
    out.push_str("}\n");
    Ok(out)
}

/// `snippets/<crate>-<hash>`: where wasm-bindgen put js/support.js.
fn snippet_dir(pkg: &Path) -> Result<String> {
    let dirs: Vec<_> = std::fs::read_dir(pkg.join("snippets"))
        .context("wasm-bindgen wrote no snippets/")?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("js").join("support.js").exists())
        .collect();
    match dirs.as_slice() {
        [one] => Ok(format!("snippets/{}", one.file_name().to_string_lossy())),
        _ => bail!("expected one snippets/*/js/support.js in {}", pkg.display()),
    }
}

fn files_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(files_with_extension(&path, ext)?);
        } else if path.extension().is_some_and(|e| e == ext) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

fn gzip9(path: &Path) -> Result<u64> {
    let out = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(path)
        .output()
        .context("running gzip")?;
    if !out.status.success() {
        bail!("gzip -9 {} failed", path.display());
    }
    Ok(out.stdout.len() as u64)
}

struct Sizes {
    wasm_gz: u64,
    js_gz: u64,
}

/// Gzipped sizes of what the package ships (.wasm and every .js).
fn measure(verbose: bool) -> Result<Sizes> {
    let pkg = pkg_dir();
    let mut sizes = Sizes {
        wasm_gz: 0,
        js_gz: 0,
    };
    for (ext, total) in [("wasm", &mut sizes.wasm_gz), ("js", &mut sizes.js_gz)] {
        for f in files_with_extension(&pkg, ext)? {
            let gz = gzip9(&f)?;
            if verbose {
                let raw = std::fs::metadata(&f)?.len();
                let name = f.strip_prefix(&pkg).unwrap_or(&f).display().to_string();
                println!("  {name:<60} {raw:>7} B  gzip -9 {gz:>6} B");
            }
            *total += gz;
        }
    }
    Ok(sizes)
}

/// `cargo xtask wasm-size`.
pub fn size() -> Result<()> {
    build()?;
    let s = measure(true)?;
    let total = s.wasm_gz + s.js_gz;
    let verdict = if total <= BUDGET_GZ { "within" } else { "OVER" };
    println!("budget: total_gz {total} B, {verdict} the {BUDGET_GZ} B budget");
    println!("wasm_gz={} js_gz={} total_gz={total}", s.wasm_gz, s.js_gz);
    if total > BUDGET_GZ {
        bail!("the package is {total} B gzipped, over the {BUDGET_GZ} B budget");
    }
    Ok(())
}

/// `cargo xtask wasm-bindings-size`: the package's browser calls bound
/// three ways (`wasm/bindings-probe`: own declarations, js-sys + web-sys,
/// plus serde-wasm-bindgen), each built like the package (wasm-bindgen,
/// `wasm-opt -Oz`, terser) and measured gzipped.
pub fn bindings_size() -> Result<()> {
    tools::ensure_wasm_target()?;
    tools::ensure_wasm_bindgen_cli()?;
    tools::ensure_node_modules()?;
    let root = repo_root();
    let probe = root.join("wasm/bindings-probe");
    let meta = metadata()?;
    let target = meta.target_dir.join("bindings-probe");
    let mut rows = Vec::new();
    for (feature, what) in [
        ("own", "own extern declarations (as the package)"),
        ("sys", "js-sys + web-sys"),
        ("serde", "js-sys + web-sys + serde-wasm-bindgen"),
    ] {
        run(Command::new("cargo")
            .current_dir(&probe)
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                "wasm32-unknown-unknown",
            ])
            .args(["--no-default-features", "--features", feature])
            .arg("--target-dir")
            .arg(&target)
            .env("CARGO_ENCODED_RUSTFLAGS", PACKAGE_RUSTFLAGS))?;
        let out = target.join(format!("out-{feature}"));
        fresh_dir(&out)?;
        run(Command::new("wasm-bindgen")
            .args([
                "--target",
                "web",
                "--out-name",
                "probe",
                "--omit-default-module-path",
            ])
            .args(["--remove-name-section", "--remove-producers-section"])
            .arg("--out-dir")
            .arg(&out)
            .arg(target.join("wasm32-unknown-unknown/release/wxpay_jsapi_bindings_probe.wasm")))?;
        let wasm = out.join("probe_bg.wasm");
        run(Command::new(node_bin("wasm-opt"))
            .args(["-Oz", "--converge"])
            .args(PRECOMPILED_FEATURES)
            .arg(&wasm)
            .arg("-o")
            .arg(&wasm))?;
        let js = out.join("probe.js");
        run(Command::new(node_bin("terser"))
            .arg(&js)
            .args(["--module", "--compress", "--mangle", "--comments", "false"])
            .arg("--output")
            .arg(&js))?;
        rows.push((what, gzip9(&wasm)?, gzip9(&js)?));
    }
    println!("| bindings | wasm gz | js gz | total |");
    println!("|---|---:|---:|---:|");
    for (what, wasm, js) in rows {
        println!("| {what} | {wasm} | {js} | {} |", wasm + js);
    }
    Ok(())
}

/// `cargo xtask wasm-test`.
pub fn test() -> Result<()> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    tools::ensure_wasm_target()?;
    tools::ensure_wasm_bindgen_cli()?;
    tools::ensure_node_modules()?;
    let chromium = match tools::ensure_chromium() {
        Ok(c) => c,
        Err(e) if ci => return Err(e.context("CI=true: the browser tests need Chromium")),
        Err(e) => {
            println!("wasm-test: SKIPPED, no Chromium here: {e:#}");
            return Ok(());
        }
    };
    let root = repo_root();
    let meta = metadata()?;
    let work = meta.target_dir.join("wasm-e2e");
    std::fs::create_dir_all(&work)?;

    // 1. The crate's tests, in headless Chromium through chromedriver.
    let capabilities = work.join("webdriver.json");
    std::fs::write(
        &capabilities,
        serde_json::to_string_pretty(&chrome_capabilities(&chromium))?,
    )?;
    let runner = cargo_bin("wasm-bindgen-test-runner");
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["test", "-p", CRATE, "--target", "wasm32-unknown-unknown"])
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", &runner)
        .env("CHROMEDRIVER", &chromium.chromedriver)
        .env("WASM_BINDGEN_TEST_WEBDRIVER_JSON", &capabilities)
        .env("WASM_BINDGEN_TEST_TIMEOUT", "180"))?;

    // 2. The packed package: within budget, and working in real pages.
    let tarball = build()?;
    let s = measure(false)?;
    let total = s.wasm_gz + s.js_gz;
    if total > BUDGET_GZ {
        bail!("the package is {total} B gzipped, over the {BUDGET_GZ} B budget");
    }
    println!("wasm-test: package {total} B gzipped (budget {BUDGET_GZ} B)");
    let readme = wasm_readme::readme()?;
    wasm_readme::check_codes(&readme)?;
    let started = Instant::now();
    let driver = Driver::start(&chromium)?;
    let mut results = Vec::new();
    plain_page_test(&driver, &tarball, &work.join("plain"))?;
    results.push("plain page with load(Response)");
    results.push("plain page with load(WebAssembly.Module)");
    csp_page_tests(&driver, &work.join("plain"), &readme)?;
    results.push("README's CSP");
    results.push("CSP without wasm-unsafe-eval");
    readme_pages_test(&driver, &work.join("plain"), &readme)?;
    results.push("README examples run");
    no_wasm_page_test(&driver, &work.join("plain"))?;
    results.push("no WebAssembly");
    let app = work.join("app");
    install_app(&tarball, &app)?;
    let exports = runtime_exports(&app)?;
    wasm_readme::type_check(&readme, &app, &exports)?;
    results.push("README examples and exports type-check");
    vite_build_test(&driver, &app)?;
    results.push("vite build");
    vite_dev_test(&driver, &app)?;
    results.push("vite dev");
    webpack_test(&driver, &app)?;
    results.push("webpack 5");
    esbuild_test(&driver, &app)?;
    results.push("esbuild");
    println!(
        "wasm-test pages: {} passed, 0 failed ({}) in {:.1} s",
        results.len(),
        results.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    match home.map(|h| h.join("bin").join(name)) {
        Some(p) if p.exists() => p,
        _ => PathBuf::from(name),
    }
}

fn chrome_capabilities(chromium: &ChromiumPaths) -> Value {
    json!({
        "goog:chromeOptions": {
            "binary": chromium.chromium,
            "args": CHROMIUM_ARGS,
        }
    })
}

// ---------------------------------------------------------------------------
// Pages that load the packed tarball

/// Pay parameters the fake server hands out (shapes as the real server's).
const PAY_PARAMS: &str = r#"{
  "appId": "wx2421b1c4370ec43b",
  "timeStamp": "1700000000",
  "nonceStr": "e61463f8efa94090b1f366cccfbbb444",
  "package": "prepay_id=up_wx21201855730335ac86f8c43d1889123400",
  "signType": "RSA",
  "paySign": "oR9d8PuhnIc+YZ8cBHFCwfgpaK9gd7vaRvkYD7rthRAZ/X+QBhcCYL21N7cHCTUxbQ=="
}"#;

/// A fake WeChat, installed by a classic script before the module loads:
/// the bridge exists and answers `:ok` (or `window.__answer`).
const FAKE_BRIDGE: &str = r#"
  window.__invoked = [];
  window.WeixinJSBridge = {
    invoke(name, params, cb) {
      window.__invoked.push(name + " " + Object.keys(params).join(","));
      setTimeout(() => cb({ err_msg: window.__answer || "get_brand_wcpay_request:ok" }), 10);
    },
  };
"#;

/// The page's script: WASM_SOURCE defines `WASM` (where the `.wasm` is, or
/// `undefined` for the default next to index.js) and `PRELOADED` (whether
/// it loaded the module already, as the README's examples for `vite dev`
/// and esbuild do, verbatim); IMPORT is the package specifier (imported as
/// a namespace: the README's examples bring their own bindings). It writes
/// what happened into #result; the test reads it.
const PAGE_SCRIPT: &str = r#"WASM_SOURCE
import * as pkg from "IMPORT";
const show = (text) => (document.getElementById("result").textContent = text);
const out = [];
try {
  // Synchronous, before (and without) the module.
  out.push("env:" + pkg.isWeChat() + ":" + pkg.weChatVersion() + ":" + pkg.environment());
  if (!PRELOADED) {
    try {
      await pkg.load("/missing/wxpay_combine_jsapi_bg.wasm");
      out.push("missing:loaded");
    } catch (e) {
      out.push("missing:" + (e instanceof pkg.PayError) + ":" + e.code);
    }
  }
  await pkg.load(WASM);
  const params = await (await fetch("/pay-params.json")).json();
  const r = await pkg.requestPayment(params);
  out.push("pay:" + r.status + ":" + r.errMsg);
  try {
    await pkg.requestPayment({ ...params, timeStamp: String(Date.now()) });
    out.push("invalid:accepted");
  } catch (e) {
    out.push("invalid:" + (e instanceof pkg.PayError && e instanceof Error) + ":" + e.code);
  }
  const status = await pkg.checkout({ baseUrl: location.origin, order: "E2E-1", confirmTimeoutMs: 10000 });
  out.push("checkout:" + status.state + ":" + status.combine_out_trade_no);
  out.push("invoked:" + window.__invoked.length);
  show("DONE " + out.join(" "));
} catch (e) {
  show("ERROR " + (e && e.code) + " " + (e && e.message) + " after " + out.join(" "));
}
"#;

const EXPECTED: &str = "DONE env:false:undefined:other missing:true:load_failed \
pay:ok:get_brand_wcpay_request:ok invalid:true:invalid_params checkout:SUCCESS:E2E-1 invoked:2";

/// What a page that loaded the module first (`PRELOADED`) shows.
fn expected_preloaded() -> String {
    EXPECTED.replace(" missing:true:load_failed", "")
}

/// `WASM_SOURCE` for the default location.
const DEFAULT_WASM: &str = "const WASM = undefined, PRELOADED = false;";

/// `WASM_SOURCE` for the README's example `name`, which loads the module.
fn readme_wasm_source(name: &str) -> Result<String> {
    let readme = wasm_readme::readme()?;
    let example = wasm_readme::runnable(&readme, name)?;
    Ok(format!(
        "{example}const WASM = undefined, PRELOADED = true;"
    ))
}

fn page_script(wasm_source: &str, import: &str) -> String {
    PAGE_SCRIPT
        .replace("WASM_SOURCE", wasm_source)
        .replace("IMPORT", import)
}

fn page_html(body_script: &str) -> String {
    page_html_with(&format!("<script>{FAKE_BRIDGE}</script>"), body_script)
}

/// A page whose head holds `bridge` (the fake bridge, inline or not).
fn page_html_with(bridge: &str, body_script: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>wxpay-combine-jsapi e2e</title>\n\
         {bridge}\n</head><body>\n<pre id=\"result\">pending</pre>\n{body_script}\n</body></html>\n"
    )
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// The tarball unpacked under `node_modules/` of a plain static site, the
/// `.wasm` given to `load()` as a `Response` (index.html) and as a compiled
/// `WebAssembly.Module` (module.html).
fn plain_page_test(driver: &Driver, tarball: &Path, dir: &Path) -> Result<()> {
    fresh_dir(dir)?;
    let modules = dir.join("node_modules");
    std::fs::create_dir_all(&modules)?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(&modules))?;
    std::fs::rename(modules.join("package"), modules.join(CRATE))?;
    let wasm = format!("./node_modules/{CRATE}/{STEM}_bg.wasm");
    let server = TestServer::start(dir)?;
    for (page, source, what) in [
        (
            "index.html",
            format!("const WASM = await fetch(\"{wasm}\"), PRELOADED = false;"),
            "plain page, load(Response)",
        ),
        (
            "module.html",
            format!(
                "const WASM = await WebAssembly.compileStreaming(fetch(\"{wasm}\")), PRELOADED = false;"
            ),
            "plain page, load(WebAssembly.Module)",
        ),
    ] {
        let script = page_script(&source, &format!("./node_modules/{CRATE}/index.js"));
        let html = page_html(&format!("<script type=\"module\">{script}</script>"));
        std::fs::write(dir.join(page), html)?;
        check_page(driver, &server, page, EXPECTED, what)?;
    }
    Ok(())
}

/// The plain site's package under the README's Content-Security-Policy
/// line (the test server sends `PAGE.csp` with `PAGE`; scripts are files,
/// as that policy allows no inline script): it pays. Without
/// `'wasm-unsafe-eval'` `load()` must reject with `load_failed` naming the
/// fix, the browser's error as `cause`.
fn csp_page_tests(driver: &Driver, dir: &Path, readme: &str) -> Result<()> {
    let policy = wasm_readme::csp(readme)?;
    let bridge = "<script src=\"fake-bridge.js\"></script>";
    std::fs::write(dir.join("fake-bridge.js"), FAKE_BRIDGE)?;
    std::fs::write(
        dir.join("csp-readme.js"),
        page_script(DEFAULT_WASM, &format!("./node_modules/{CRATE}/index.js")),
    )?;
    std::fs::write(
        dir.join("csp-readme.html"),
        page_html_with(
            bridge,
            "<script type=\"module\" src=\"csp-readme.js\"></script>",
        ),
    )?;
    std::fs::write(dir.join("csp-readme.html.csp"), &policy)?;
    let script = format!(
        r#"import load, {{ PayError }} from "./node_modules/{CRATE}/index.js";
const show = (text) => (document.getElementById("result").textContent = text);
try {{
  await load();
  show("DONE loaded");
}} catch (e) {{
  show("DONE " + (e instanceof PayError) + " " + e.code + " " + /'wasm-unsafe-eval'/.test(e.message) + " " + (e.cause instanceof Error));
}}"#
    );
    std::fs::write(dir.join("csp.js"), script)?;
    std::fs::write(
        dir.join("csp.html"),
        page_html_with(bridge, "<script type=\"module\" src=\"csp.js\"></script>"),
    )?;
    std::fs::write(
        dir.join("csp.html.csp"),
        policy.replace(" 'wasm-unsafe-eval'", ""),
    )?;
    let server = TestServer::start(dir)?;
    check_page(
        driver,
        &server,
        "csp-readme.html",
        EXPECTED,
        &format!("page under the README's CSP ({policy})"),
    )?;
    check_page(
        driver,
        &server,
        "csp.html",
        "DONE true load_failed true true",
        "page whose CSP lacks 'wasm-unsafe-eval'",
    )
}

/// What the README's runnable examples find on their page: the helpers
/// they call, and every error reported in #result (none swallowed).
const README_PRELUDE: &str = r#"<script>
  const result = (text) => (document.getElementById("result").textContent = text);
  window.showNotice = (text) => sessionStorage.setItem("notice", text);
  // The failure the example shows and logs (a success shows none).
  window.showMessage = (text) => (window.__shown = text);
  window.payButton = document.createElement("button");
  window.order = "E2E-1";
  addEventListener("error", (e) => result("ERROR " + e.message));
  addEventListener("unhandledrejection", (e) => result("ERROR unhandled: " + (e.reason && e.reason.message)));
  console.error = (e) =>
    result("DONE shown:" + String(window.__shown).startsWith("WeChat refused the payment") +
      " logged:" + (e && e.name) + ":" + (e && e.code) + ":" + Boolean(e && e.hint));
</script>"#;

/// The README's examples marked `<!-- run: … -->`, verbatim, in the plain
/// site (the package imported through an import map, as a bundler would
/// resolve it): `checkout` pays on a tap and goes to the paid page, or,
/// WeChat answering `:fail`, shows and logs the error with its hint;
/// `hooks` pays through its own routes of the fake server.
fn readme_pages_test(driver: &Driver, dir: &Path, readme: &str) -> Result<()> {
    let import_map = format!(
        "<script type=\"importmap\">{{ \"imports\": {{ \"{CRATE}\": \"./node_modules/{CRATE}/index.js\" }} }}</script>"
    );
    let server = TestServer::start(dir)?;
    for (page, name, before, after, expected) in [
        (
            "readme-checkout.html",
            "checkout",
            "",
            "payButton.click();",
            "DONE paid C20240601001 notice:Open this page in WeChat to pay.",
        ),
        (
            "readme-checkout-fail.html",
            "checkout",
            "window.__answer = \"get_brand_wcpay_request:fail\";",
            "payButton.click();",
            "DONE shown:true logged:PayError:fail:true",
        ),
        (
            "readme-hooks.html",
            "hooks",
            "",
            "document.getElementById(\"result\").textContent = \"DONE hooks \" + paid.state + \" \" + paid.combine_out_trade_no;",
            "DONE hooks SUCCESS E2E-1",
        ),
    ] {
        let example = wasm_readme::runnable(readme, name)?;
        std::fs::write(
            dir.join(page),
            page_html(&format!(
                "{import_map}\n{README_PRELUDE}\n<script>{before}</script>\n\
                 <script type=\"module\">\n{example}\n{after}\n</script>"
            )),
        )?;
        check_page(
            driver,
            &server,
            page,
            expected,
            &format!("README example <!-- run: {name} --> ({page})"),
        )?;
    }
    Ok(())
}

/// The names `import()` of the installed tarball's entry point yields, in
/// Node (the environment helpers need no browser, the module no loading).
fn runtime_exports(app: &Path) -> Result<Vec<String>> {
    let index = app.join("node_modules").join(CRATE).join("index.js");
    let out = tools::output(
        Command::new("node")
            .args([
                "--input-type=module",
                "-e",
                "const m = await import(process.argv[1]); \
                 if (m.default !== m.load) throw Error('the default export is not load'); \
                 console.log(Object.keys(m).join(' '));",
            ])
            .arg(&index),
    )?;
    let names: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    if !names.iter().any(|n| n == "checkout") {
        bail!("importing {} in Node gave {names:?}", index.display());
    }
    Ok(names)
}

/// The plain site's package in a browser without WebAssembly (as with iOS
/// Lockdown Mode): the environment helpers still answer, `load()` and the
/// payments reject with `unsupported`.
fn no_wasm_page_test(driver: &Driver, dir: &Path) -> Result<()> {
    let script = format!(
        r#"import {{ requestPayment, environment, PayError }} from "./node_modules/{CRATE}/index.js";
const show = (text) => (document.getElementById("result").textContent = text);
try {{
  await requestPayment({{}});
  show("DONE paid");
}} catch (e) {{
  show("DONE " + environment() + " " + (e instanceof PayError) + " " + e.code);
}}"#
    );
    std::fs::write(
        dir.join("nowasm.html"),
        page_html(&format!(
            "<script>delete globalThis.WebAssembly;</script><script type=\"module\">{script}</script>"
        )),
    )?;
    let server = TestServer::start(dir)?;
    check_page(
        driver,
        &server,
        "nowasm.html",
        "DONE other true unsupported",
        "page without WebAssembly",
    )
}

/// An app that `npm install`s the tarball, shared by the bundler tests.
fn install_app(tarball: &Path, dir: &Path) -> Result<()> {
    fresh_dir(dir)?;
    let app = json!({ "name": "wxpay-e2e-app", "private": true, "type": "module" });
    std::fs::write(dir.join("package.json"), app.to_string())?;
    run(Command::new("npm")
        .current_dir(dir)
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-package-lock",
            "--offline",
        ])
        .arg(tarball))
    .or_else(|_| {
        run(Command::new("npm")
            .current_dir(dir)
            .args(["install", "--no-audit", "--no-fund", "--no-package-lock"])
            .arg(tarball))
    })
}

fn node_module(path: &str) -> PathBuf {
    repo_root().join("node_modules").join(path)
}

/// `vite build`, the package imported by name, the `.wasm` found by default
/// (Vite emits what `new URL(…, import.meta.url)` names).
fn vite_build_test(driver: &Driver, app: &Path) -> Result<()> {
    let dir = app.join("vite-build");
    fresh_dir(&dir)?;
    std::fs::write(dir.join("main.js"), page_script(DEFAULT_WASM, CRATE))?;
    std::fs::write(
        dir.join("index.html"),
        page_html("<script type=\"module\" src=\"./main.js\"></script>"),
    )?;
    run(Command::new("node")
        .current_dir(&dir)
        .arg(node_module("vite/bin/vite.js"))
        .args([
            "build",
            "--logLevel",
            "warn",
            "--outDir",
            "dist",
            "--emptyOutDir",
        ]))?;
    let server = TestServer::start(&dir.join("dist"))?;
    check_page(driver, &server, "index.html", EXPECTED, "vite build")
}

/// `vite dev`: dependencies are pre-bundled into `.vite/deps`, so the
/// `.wasm` is not next to the code; the page imports its URL from the
/// `./wasm` subpath (`?url`) and passes it to `load()`. The fake API is
/// proxied to the test server.
fn vite_dev_test(driver: &Driver, app: &Path) -> Result<()> {
    let dir = app.join("vite-dev");
    fresh_dir(&dir)?;
    let wasm = readme_wasm_source("vite-dev")?;
    std::fs::write(dir.join("main.js"), page_script(&wasm, CRATE))?;
    std::fs::write(
        dir.join("index.html"),
        page_html("<script type=\"module\" src=\"/main.js\"></script>"),
    )?;
    let api = TestServer::start(&dir)?;
    std::fs::write(
        dir.join("vite.config.js"),
        format!(
            "export default {{ server: {{ proxy: {{ \"/api\": \"{0}\", \"/pay-params.json\": \"{0}\" }} }} }};\n",
            api.base
        ),
    )?;
    std::fs::write(dir.join("pay-params.json"), PAY_PARAMS)?;
    let port = free_port()?;
    let mut vite = ChildGuard(
        Command::new("node")
            .current_dir(&dir)
            .arg(node_module("vite/bin/vite.js"))
            .args(["--logLevel", "warn", "--strictPort", "--host", "127.0.0.1"])
            .arg("--port")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("starting vite dev")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("{base}/index.html")).call().is_err() {
        if Instant::now() > deadline {
            bail!("vite dev did not start on port {port}");
        }
        if let Some(status) = vite.0.try_wait()? {
            bail!("vite dev exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check_url(
        driver,
        &format!("{base}/index.html"),
        &api,
        &expected_preloaded(),
        "vite dev, the README's example",
    )
}

/// webpack 5 (its Node API, production mode): the `.wasm` found by default
/// (webpack emits what `new URL(…, import.meta.url)` names as an asset).
fn webpack_test(driver: &Driver, app: &Path) -> Result<()> {
    let dir = app.join("webpack");
    fresh_dir(&dir)?;
    std::fs::write(dir.join("main.js"), page_script(DEFAULT_WASM, CRATE))?;
    let config = json!({
        "mode": "production",
        "context": dir,
        "entry": "./main.js",
        "output": { "path": dir.join("dist"), "filename": "main.js", "module": true },
        "experiments": { "outputModule": true },
        "resolve": { "modules": [app.join("node_modules")] },
    });
    let script = format!(
        "require({webpack})({config}, (err, stats) => {{ \
           if (err || stats.hasErrors()) {{ console.error(err || stats.toString('errors-only')); process.exit(1); }} }});",
        webpack = json!(node_module("webpack")),
    );
    run(Command::new("node").current_dir(&dir).args(["-e", &script]))?;
    std::fs::write(
        dir.join("dist/index.html"),
        page_html("<script type=\"module\" src=\"./main.js\"></script>"),
    )?;
    let server = TestServer::start(&dir.join("dist"))?;
    check_page(driver, &server, "index.html", EXPECTED, "webpack 5")
}

/// esbuild: it does not follow `new URL(…, import.meta.url)`, so the page
/// imports the `./wasm` subpath with the `file` loader (esbuild copies the
/// `.wasm` next to the bundle and gives its path) and passes it to `load()`.
fn esbuild_test(driver: &Driver, app: &Path) -> Result<()> {
    let dir = app.join("esbuild");
    fresh_dir(&dir)?;
    let wasm = readme_wasm_source("esbuild")?;
    std::fs::write(dir.join("main.js"), page_script(&wasm, CRATE))?;
    run(Command::new(node_module("esbuild/bin/esbuild"))
        .current_dir(&dir)
        .args([
            "main.js",
            "--bundle",
            "--format=esm",
            "--minify",
            "--loader:.wasm=file",
            "--outdir=dist",
            "--log-level=warning",
        ]))?;
    std::fs::write(
        dir.join("dist/index.html"),
        page_html("<script type=\"module\" src=\"./main.js\"></script>"),
    )?;
    let server = TestServer::start(&dir.join("dist"))?;
    check_page(
        driver,
        &server,
        "index.html",
        &expected_preloaded(),
        "esbuild, the README's example",
    )
}

/// Kills the child process (started by this test) when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `page` of the test server's site and checks the page's result.
fn check_page(
    driver: &Driver,
    server: &TestServer,
    page: &str,
    expected: &str,
    what: &str,
) -> Result<()> {
    std::fs::write(server.site.join("pay-params.json"), PAY_PARAMS)?;
    check_url(
        driver,
        &format!("{}/{page}", server.base),
        server,
        expected,
        what,
    )
}

/// Opens `url` in Chromium and checks what the page wrote into #result
/// (and, for a payment, that `server` saw a NOTPAY before the SUCCESS).
fn check_url(
    driver: &Driver,
    url: &str,
    server: &TestServer,
    expected: &str,
    what: &str,
) -> Result<()> {
    driver.open(url)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        let text = driver.eval("return document.getElementById('result')?.textContent || ''")?;
        let text = text.as_str().unwrap_or_default().to_string();
        if text.starts_with("DONE") || text.starts_with("ERROR") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if result != expected {
        bail!("{what}: expected\n  {expected}\ngot\n  {result}");
    }
    let polls = server.polls.swap(0, Ordering::SeqCst);
    if expected.contains("checkout:SUCCESS") && polls < 2 {
        bail!("{what}: checkout resolved after {polls} status request(s), expected a NOTPAY first");
    }
    println!("wasm-test: {what}: ok ({result})");
    Ok(())
}

// ---------------------------------------------------------------------------
// A static site plus the fake merchant API, on loopback

struct TestServer {
    base: String,
    site: PathBuf,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    polls: Arc<AtomicU32>,
}

const SESSION_COOKIE: &str = "wxpay_e2e_session=1";

impl TestServer {
    fn start(site: &Path) -> Result<TestServer> {
        let server = Arc::new(
            tiny_http::Server::http("127.0.0.1:0")
                .map_err(|e| anyhow::anyhow!("starting the test server: {e}"))?,
        );
        let port = server
            .server_addr()
            .to_ip()
            .context("test server address")?
            .port();
        let polls = Arc::new(AtomicU32::new(0));
        let thread = {
            let (server, site, polls) = (server.clone(), site.to_path_buf(), polls.clone());
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let _ = respond(request, &site, &polls);
                }
            })
        };
        Ok(TestServer {
            base: format!("http://127.0.0.1:{port}"),
            site: site.to_path_buf(),
            server,
            thread: Some(thread),
            polls,
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("a valid header (all are constants here)")
}

fn respond(request: tiny_http::Request, site: &Path, polls: &AtomicU32) -> std::io::Result<()> {
    let path = request.url().split('?').next().unwrap_or("/").to_string();
    let method = request.method().clone();
    let json_response = |status: u16, body: Value| {
        tiny_http::Response::from_string(body.to_string())
            .with_status_code(status)
            .with_header(header("Content-Type", "application/json"))
    };
    // The README's hooks example: its own routes, no session.
    if let Some(rest) = path.strip_prefix("/shop/orders/") {
        let response = match (method, rest.strip_suffix("/wechat-jsapi")) {
            (tiny_http::Method::Post, Some(_)) => {
                json_response(200, serde_json::from_str(PAY_PARAMS).unwrap_or_default())
            }
            (tiny_http::Method::Get, None) => json_response(200, order_status(rest, polls)),
            _ => json_response(404, json!({ "message": "no such route" })),
        };
        return request.respond(response);
    }
    // The page the README's example goes to once paid.
    if let Some(order) = path
        .strip_prefix("/orders/")
        .and_then(|p| p.strip_suffix("/paid"))
    {
        let html = format!(
            "<!doctype html><pre id=\"result\">pending</pre><script>\
             document.getElementById(\"result\").textContent = \"DONE paid {order} notice:\" + sessionStorage.getItem(\"notice\");\
             </script>"
        );
        return request.respond(
            tiny_http::Response::from_string(html)
                .with_header(header("Content-Type", "text/html; charset=utf-8")),
        );
    }
    if let Some(rest) = path.strip_prefix("/api/combine-orders/") {
        let has_session = request
            .headers()
            .iter()
            .any(|h| h.field.equiv("Cookie") && h.value.as_str().contains(SESSION_COOKIE));
        let response = if !has_session {
            json_response(
                401,
                json!({ "code": "UNAUTHENTICATED", "message": "no session cookie" }),
            )
        } else {
            match (method, rest.strip_suffix("/pay-params")) {
                (tiny_http::Method::Post, Some(order)) => {
                    let params: Value = serde_json::from_str(PAY_PARAMS).unwrap_or_default();
                    json_response(
                        200,
                        json!({ "combine_out_trade_no": order, "pay_params": params }),
                    )
                }
                (tiny_http::Method::Get, None) if !rest.contains('/') => {
                    json_response(200, order_status(rest, polls))
                }
                _ => json_response(
                    404,
                    json!({ "code": "NOT_FOUND", "message": "no such order" }),
                ),
            }
        };
        return request.respond(response);
    }
    let relative = path.trim_start_matches('/');
    let file = site.join(if relative.is_empty() {
        "index.html"
    } else {
        relative
    });
    if relative.split('/').any(|part| part == "..") || !file.is_file() {
        return request
            .respond(tiny_http::Response::from_string("not found").with_status_code(404));
    }
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    let mut response = tiny_http::Response::from_data(std::fs::read(&file)?)
        .with_header(header("Content-Type", content_type));
    // The session starts with the page, or (vite dev serves the page
    // itself) with the first request proxied here.
    response = response.with_header(header("Set-Cookie", &format!("{SESSION_COOKIE}; Path=/")));
    if let Ok(policy) = std::fs::read_to_string(site.join(format!("{relative}.csp"))) {
        response = response.with_header(header("Content-Security-Policy", policy.trim()));
    }
    request.respond(response)
}

/// The order's status: the first query still sees NOTPAY (`:ok` is not
/// proof), later ones SUCCESS.
fn order_status(order: &str, polls: &AtomicU32) -> Value {
    let n = polls.fetch_add(1, Ordering::SeqCst);
    let state = if n == 0 { "NOTPAY" } else { "SUCCESS" };
    json!({
        "combine_out_trade_no": order, "state": state, "total_amount": 300,
        "sub_orders": [
            { "mchid": "1900000109", "out_trade_no": format!("{order}-a"), "amount": 100, "trade_state": state },
            { "mchid": "1900000109", "out_trade_no": format!("{order}-b"), "amount": 200, "trade_state": state }
        ]
    })
}

// ---------------------------------------------------------------------------
// Just enough WebDriver (chromedriver over HTTP)

struct Driver {
    child: Child,
    base: String,
    session: String,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn webdriver(request: ureq::Request, body: Option<Value>) -> Result<Value> {
    let response = match body {
        Some(b) => request.send_json(b),
        None => request.call(),
    };
    let value: Value = match response {
        Ok(r) => r.into_json()?,
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            bail!("chromedriver answered {code}: {text}");
        }
        Err(e) => return Err(e.into()),
    };
    Ok(value["value"].clone())
}

impl Driver {
    fn start(chromium: &ChromiumPaths) -> Result<Driver> {
        let port = free_port()?;
        let child = Command::new(&chromium.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", chromium.chromedriver.display()))?;
        let base = format!("http://127.0.0.1:{port}");
        let mut driver = Driver {
            child,
            base,
            session: String::new(),
        };
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let deadline = Instant::now() + Duration::from_secs(15);
        while agent
            .get(&format!("{}/status", driver.base))
            .call()
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("chromedriver did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": chrome_capabilities(chromium) } });
        let session = webdriver(ureq::post(&format!("{}/session", driver.base)), Some(caps))
            .context("starting a Chromium session")?;
        driver.session = session["sessionId"]
            .as_str()
            .context("chromedriver gave no sessionId")?
            .to_string();
        Ok(driver)
    }

    fn url(&self, suffix: &str) -> String {
        format!("{}/session/{}{suffix}", self.base, self.session)
    }

    fn open(&self, url: &str) -> Result<()> {
        webdriver(ureq::post(&self.url("/url")), Some(json!({ "url": url })))?;
        Ok(())
    }

    fn eval(&self, script: &str) -> Result<Value> {
        webdriver(
            ureq::post(&self.url("/execute/sync")),
            Some(json!({ "script": script, "args": [] })),
        )
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&self.url("")).call();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
