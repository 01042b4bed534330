//! The package's README (`wasm/README.md`) and type declarations held to
//! the package, for `cargo xtask wasm-test` (and this module's unit tests):
//!
//! * every fenced ```js / ```ts example type-checks with `tsc --noEmit
//!   --strict` against the `index.d.ts` of the packed tarball; the API
//!   summary's signatures equal the declared ones (same types, same option
//!   keys) and name every export;
//! * examples marked `<!-- run: NAME -->` on the line before the fence also
//!   run in a fake-bridge page (`wasm.rs`);
//! * the declared exports equal the runtime exports of the tarball;
//! * the `PayError` codes of the d.ts union, the README's table and the
//!   codes the sources can produce are the same set;
//! * the README's `Content-Security-Policy:` line is the one the CSP pages
//!   are served with.

use crate::tools::{node_bin, repo_root, run};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// One fenced example of the README.
#[derive(Debug)]
pub struct Example {
    /// `js` or `ts`.
    pub lang: String,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The page it runs in (`<!-- run: NAME -->`), if any.
    pub run: Option<String>,
    pub code: String,
}

pub fn readme() -> Result<String> {
    let path = repo_root().join("wasm/README.md");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The ```js and ```ts blocks (indented ones too, as in a list item).
pub fn examples(readme: &str) -> Vec<Example> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        let indent = lines[i].len() - fence.len();
        let lang = fence.strip_prefix("```").unwrap_or_default().trim();
        if !fence.starts_with("```") {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        let mut code = String::new();
        while i < lines.len() && lines[i].trim() != "```" {
            code.push_str(lines[i].get(indent..).unwrap_or(lines[i].trim_start()));
            code.push('\n');
            i += 1;
        }
        i += 1;
        if lang == "js" || lang == "ts" {
            let run = start
                .checked_sub(1)
                .and_then(|p| lines[p].trim().strip_prefix("<!-- run:"))
                .and_then(|r| r.strip_suffix("-->"))
                .map(|r| r.trim().to_string());
            out.push(Example {
                lang: lang.to_string(),
                line: start + 1,
                run,
                code,
            });
        }
    }
    out
}

/// The example that runs in page `name`.
pub fn runnable(readme: &str, name: &str) -> Result<String> {
    examples(readme)
        .into_iter()
        .find(|e| e.run.as_deref() == Some(name))
        .map(|e| e.code)
        .with_context(|| format!("wasm/README.md has no example marked <!-- run: {name} -->"))
}

/// The value of the README's `Content-Security-Policy:` line.
pub fn csp(readme: &str) -> Result<String> {
    let values: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Content-Security-Policy: "))
        .collect();
    match values[..] {
        [one] if one.contains("'wasm-unsafe-eval'") => Ok(one.to_string()),
        _ => bail!("wasm/README.md must show one Content-Security-Policy line with 'wasm-unsafe-eval', found {values:?}"),
    }
}

/// The first string literal given to each call of `names` in `source`.
fn first_literals(source: &str, names: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in names {
        for (at, _) in source.match_indices(name) {
            let before = source[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = source[at + name.len()..].trim_start();
            if let Some(lit) = rest.strip_prefix('"') {
                if let Some(end) = lit.find('"') {
                    out.insert(lit[..end].to_string());
                }
            }
        }
    }
    out
}

/// The codes the package's code can reject with: the first argument of
/// every `PayError` it constructs (Rust: `pay_error`, `error`, `error4`; JS:
/// `new PayError`, index.js's `failed`).
pub fn produced_codes() -> Result<BTreeSet<String>> {
    let root = repo_root().join("wasm");
    let mut codes = BTreeSet::new();
    for (file, names) in [
        ("src/lib.rs", &["pay_error(", "error(", "error4("][..]),
        ("src/task.rs", &["pay_error(", "error(", "error4("][..]),
        ("js/support.js", &["PayError("][..]),
        ("js/index.js", &["PayError(", "failed("][..]),
    ] {
        let text = std::fs::read_to_string(root.join(file))?;
        codes.extend(first_literals(&text, names));
    }
    codes.remove("");
    Ok(codes)
}

/// The `PayErrorCode` union declared in src/lib.rs (the d.ts's source).
pub fn declared_codes() -> Result<BTreeSet<String>> {
    let lib = std::fs::read_to_string(repo_root().join("wasm/src/lib.rs"))?;
    let start = lib
        .find("export type PayErrorCode =")
        .context("src/lib.rs declares no PayErrorCode")?;
    let end = start + lib[start..].find(';').context("PayErrorCode without ;")?;
    Ok(lib[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect())
}

/// The codes of the README's error table (`### Error codes`).
pub fn readme_codes(readme: &str) -> Result<BTreeSet<String>> {
    let table = readme
        .split("### Error codes")
        .nth(1)
        .context("wasm/README.md has no ### Error codes section")?;
    Ok(table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect())
}

/// Declared, documented and produced `PayError` codes are the same set.
pub fn check_codes(readme: &str) -> Result<()> {
    let declared = declared_codes()?;
    let documented = readme_codes(readme)?;
    let produced = produced_codes()?;
    if declared != documented || declared != produced {
        bail!(
            "PayError codes differ:\n  d.ts union   {declared:?}\n  README table {documented:?}\n  the code     {produced:?}"
        );
    }
    Ok(())
}

/// What the examples use without defining (the page's own helpers), and
/// the module types a bundler provides (as `vite/client` does for `?url`).
const PRELUDE: &str = "declare function showNotice(text: string): void;
declare function showMessage(text: string): void;
declare const payButton: HTMLButtonElement;
declare const order: string;
declare const token: string;
declare const csrf: string;
";

const BUNDLER_TYPES: &str = "// vite/client declares this for `?url` imports.
declare module \"*?url\" {
  const url: string;
  export default url;
}
// esbuild's `--loader:.wasm=file` turns the import into the file's URL.
declare module \"wxpay-combine-jsapi/wasm\" {
  const url: string;
  export default url;
}
";

/// Types compared both ways; `Keys` also compares each parameter's keys
/// (optional options would otherwise match whatever their keys).
const COMPARE: &str = "type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Keys<F> = F extends (...a: infer P) => unknown ? { [I in keyof P]-?: keyof NonNullable<P[I]> } : never;
type Members<C> = C extends abstract new (...a: never[]) => infer I ? keyof I : never;
";

/// Type-checks the README with `tsc` in `dir`, where `node_modules` holds
/// the installed tarball, and compares its declared exports with
/// `runtime_exports` (the names `import()` of the tarball yields).
pub fn type_check(readme: &str, dir: &Path, runtime_exports: &[String]) -> Result<()> {
    let check = dir.join("readme-types");
    if check.exists() {
        std::fs::remove_dir_all(&check)?;
    }
    std::fs::create_dir_all(&check)?;
    std::fs::write(
        check.join("tsconfig.json"),
        r#"{
  "compilerOptions": {
    "strict": true, "noEmit": true, "target": "es2022", "module": "esnext",
    "moduleResolution": "bundler", "lib": ["es2022", "dom"], "types": []
  },
  "include": ["*.ts"]
}
"#,
    )?;
    std::fs::write(check.join("bundlers.d.ts"), BUNDLER_TYPES)?;
    let mut api = 0;
    for ex in examples(readme) {
        let name = format!("readme-line-{}.ts", ex.line);
        let source = if ex.lang == "js" || ex.code.contains("import ") {
            format!("{PRELUDE}{}", ex.code)
        } else {
            // The API summary: its signatures against the package's.
            api += 1;
            api_check(&ex.code)?
        };
        std::fs::write(check.join(name), source)?;
    }
    if api != 1 {
        bail!(
            "wasm/README.md: expected one API summary (a ```ts block without import), found {api}"
        );
    }
    let names = runtime_exports
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(" | ");
    let uses = runtime_exports
        .iter()
        .map(|n| format!("pkg.{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        check.join("exports.ts"),
        format!(
            "import * as pkg from \"wxpay-combine-jsapi\";\n{COMPARE}\
             // Every runtime export is declared…\nexport const runtime = [{uses}];\n\
             // …and every declared one exists at runtime.\n\
             export const declared: Same<keyof typeof pkg, {names}> = true;\n"
        ),
    )?;
    run(Command::new(node_bin("tsc"))
        .current_dir(&check)
        .args(["-p", ".", "--noEmit", "--strict"]))
    .context("the README's examples or the package's declarations do not type-check")
}

/// The API summary as a namespace, each of its functions and classes
/// compared with the package's export of that name, and its names with
/// the package's exports.
fn api_check(block: &str) -> Result<String> {
    let names: Vec<&str> = block
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("function ")
                .or_else(|| l.strip_prefix("class "))?;
            l.split(|c: char| !c.is_alphanumeric() && c != '_').next()
        })
        .collect();
    if names.is_empty() {
        bail!("the README's API summary declares nothing");
    }
    let mut out = format!(
        "import * as pkg from \"wxpay-combine-jsapi\";\n\
         import type {{ PayParams, OrderStatus, PayErrorCode }} from \"wxpay-combine-jsapi\";\n\
         {COMPARE}declare namespace readme {{\n{block}}}\n\
         export const named: Same<keyof typeof readme, Exclude<keyof typeof pkg, \"default\">> = true;\n\
         export const default_is_load: Same<typeof pkg.default, typeof pkg.load> = true;\n"
    );
    for n in names {
        out.push_str(&format!(
            "export const {n}_type: Same<typeof readme.{n}, typeof pkg.{n}> = true;\n\
             export const {n}_keys: Same<Keys<typeof readme.{n}>, Keys<typeof pkg.{n}>> = true;\n\
             export const {n}_members: Same<Members<typeof readme.{n}>, Members<typeof pkg.{n}>> = true;\n"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_has_the_examples_the_pages_run() {
        let text = readme().unwrap();
        let all = examples(&text);
        assert!(all.len() >= 5, "{all:?}");
        for page in ["checkout", "hooks", "vite-dev", "esbuild"] {
            let code = runnable(&text, page).unwrap();
            assert!(code.contains("from \"wxpay-combine-jsapi\""), "{code}");
        }
    }

    #[test]
    fn readme_csp_line_allows_wasm() {
        let value = csp(&readme().unwrap()).unwrap();
        assert!(value.starts_with("script-src "), "{value}");
    }

    #[test]
    fn pay_error_codes_are_declared_documented_and_produced() {
        let declared = declared_codes().unwrap();
        assert!(
            declared.contains("load_failed") && declared.len() >= 12,
            "{declared:?}"
        );
        check_codes(&readme().unwrap()).unwrap();
    }

    #[test]
    fn examples_and_codes_are_found() {
        let text =
            "a\n<!-- run: x -->\n```js\nlet a = 1;\n```\n  ```ts\n  f();\n  ```\n```sh\nls\n```\n";
        let found = examples(text);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].run.as_deref(), Some("x"));
        assert_eq!(found[0].line, 3);
        assert_eq!(found[1].code, "f();\n");
        let codes = first_literals(
            "error(\"a\", x); pay_error(\n \"b\"); my_error(\"c\"); error(code)",
            &["error(", "pay_error("],
        );
        assert_eq!(codes, BTreeSet::from(["a".to_string(), "b".to_string()]));
    }
}
