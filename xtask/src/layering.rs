//! `cargo xtask layering`: the module structure of every crate under
//! `server/` stays a layered, acyclic graph.
//!
//! Every `Cargo.toml` under `server/` (recursively, skipping `target`) is a
//! crate; its roots are `src/lib.rs` and `src/main.rs` (each that exists; a
//! crate may have both, and each is checked as its own module tree). The
//! check fails, listing each offending edge as
//! `file:line: module a uses module b`, on:
//!
//! 1. **A module cycle inside a crate.** A graph is built at every level of
//!    the module tree between SIBLING modules: a reference from a file in
//!    module path `[p.., x, ..]` to an item path `[p.., y, ..]` with
//!    `x != y` is an edge `x -> y` among the children of `[p..]`.
//!    References to an ancestor's own items (a path that is a prefix of the
//!    file's own module path, e.g. `super::Thing` defined in the parent's
//!    `mod.rs`) are not edges. Any cycle among siblings fails; the report
//!    names the cycle's members and one location for each edge between them.
//! 2. **An upward import against a declared layer order.** A crate root may
//!    declare its layers in its top doc comment, in a section that starts
//!    with the line `//! ## Layers` and continues until the next line that
//!    is not a `//!` list item (`//! - ...` or `//! 1. ...`); blank `//!`
//!    lines between the heading and the first item are allowed. Each item
//!    starts with one or more top-level module names in backticks, separated
//!    by commas (``//! - `kit` ``, ``//! - `http`, `notify` ``); any text after
//!    them is commentary. Items are ordered from the top (may use everything
//!    below) to the bottom (uses nothing above). A top-level module may use
//!    modules of its own item or of lower items, never of a higher item.
//!    When the section exists, every top-level module the root declares
//!    must appear in it, and every name in it must be such a module.
//!
//! How the sources are read (a tokenizer, no Rust parser):
//! - The module tree comes from `mod x;` declarations (`x.rs` or
//!   `x/mod.rs`; children of `x` live in `x/` either way) and inline
//!   `mod x { .. }` blocks. `#[path]` is not followed: a module declared
//!   with it is reported as a problem.
//! - Test code is not a source of edges (tests may use anything): modules
//!   named `tests`, and any item gated by a `cfg` that requires `test`
//!   (`#[cfg(test)] mod tests;`, `#[cfg(test)] use ..;`, ...), are skipped.
//! - References are `use` declarations, including nested brace groups
//!   (`use crate::{a::{b, c}, d};`), and path expressions anywhere in the
//!   code (macro bodies included) of the form `crate::a::b`, `$crate::a`,
//!   `super::x`, `super::super::x` and `self::x`; `super`/`self` resolve
//!   relative to the module the code is in (for `mod.rs`/`lib.rs`, `self`
//!   is the module itself). A path's target is its longest prefix that is
//!   a known module. Comments (line, block, doc) and string and character
//!   literals are skipped.
//! - Not seen: paths that start from a name brought into scope by an
//!   earlier `use` (that `use` is already an edge, though possibly to an
//!   ancestor), and items re-exported by an ancestor (`crate::sim::Thing`
//!   defined in `sim::api` counts as `sim`'s own item). Bare relative paths
//!   (`child::x`) can only reach the module's own descendants, which are
//!   never edges.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `cargo xtask layering`: checks every crate under `server/` and fails
/// with the list of problems.
pub fn run() -> Result<()> {
    let root = crate::tools::repo_root();
    let outcome = check(&root, Path::new("server"))?;
    if outcome.problems.is_empty() {
        println!(
            "layering: {} crate roots checked, no module cycle, no upward import",
            outcome.roots.len()
        );
        return Ok(());
    }
    for problem in &outcome.problems {
        println!("{problem}");
    }
    bail!(
        "layering: {} problem(s) in {} crate root(s) checked ({})",
        outcome.problems.len(),
        outcome.roots.len(),
        outcome.roots.join(", ")
    )
}

/// What [`check`] found.
#[derive(Debug)]
pub struct Outcome {
    /// The crate roots checked, relative to the repository root.
    pub roots: Vec<String>,
    /// One entry per problem: a headline, then one indented
    /// `file:line: module a uses module b` line per edge. Sorted.
    pub problems: Vec<String>,
}

/// Checks every crate found under `repo/dir`; paths in the outcome are
/// relative to `repo`.
pub fn check(repo: &Path, dir: &Path) -> Result<Outcome> {
    let mut manifests = Vec::new();
    find_manifests(&repo.join(dir), &mut manifests)?;
    manifests.sort();
    let mut outcome = Outcome {
        roots: Vec::new(),
        problems: Vec::new(),
    };
    for manifest in manifests {
        let src = manifest.parent().unwrap_or(repo).join("src");
        for root_name in ["lib.rs", "main.rs"] {
            let root_file = src.join(root_name);
            if !root_file.is_file() {
                continue;
            }
            let mut scan = CrateScan::new(repo);
            scan.scan(&root_file, &src)?;
            outcome.roots.push(scan.display(&root_file));
            outcome.problems.extend(scan.problems(&root_file)?);
        }
    }
    if outcome.roots.is_empty() {
        bail!(
            "no crate root (src/lib.rs or src/main.rs) found under {}",
            repo.join(dir).display()
        );
    }
    Ok(outcome)
}

fn find_manifests(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            // Build output and hidden directories (.git, .cargo) hold no crate
            // of ours.
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                find_manifests(&path, out)?;
            }
        } else if name == "Cargo.toml" {
            out.push(path);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- tokens --

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A string, character or number literal; its content never matters.
    Literal,
    Lifetime,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Splits Rust source into the tokens the check needs, dropping comments
/// and the content of literals so that a module name mentioned there is
/// never read as a reference.
fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Skips from `start` to the end of a quoted literal whose opening quote is
    // at `start`, honouring backslash escapes; counts newlines.
    let skip_quoted = |start: usize, line: &mut usize| -> usize {
        let mut j = start + 1;
        while j < chars.len() && chars[j] != '"' {
            if chars[j] == '\\' {
                j += 1;
            }
            if at(j) == '\n' {
                *line += 1;
            }
            j += 1;
        }
        j + 1
    };
    // Skips a raw string whose `#`s (zero or more) start at `start`.
    let skip_raw = |start: usize, line: &mut usize| -> usize {
        let mut hashes = 0;
        let mut j = start;
        while at(j) == '#' {
            hashes += 1;
            j += 1;
        }
        j += 1; // the opening quote
        while j < chars.len() {
            if chars[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                return j + 1 + hashes;
            }
            if chars[j] == '\n' {
                *line += 1;
            }
            j += 1;
        }
        j
    };
    let is_raw_string_start = |j: usize| {
        let mut k = j;
        while at(k) == '#' {
            k += 1;
        }
        at(k) == '"'
    };
    while i < chars.len() {
        let c = chars[i];
        let start_line = line;
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            // Block comments nest.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_quoted(i, &mut line);
            tokens.push(Token {
                tok: Tok::Literal,
                line: start_line,
            });
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                // An escaped character: the closing quote comes after the
                // escaped one (`'\''`).
                let mut j = i + 3;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                tokens.push(Token {
                    tok: Tok::Literal,
                    line,
                });
            } else if at(i + 2) == '\'' {
                if at(i + 1) == '\n' {
                    line += 1;
                }
                i += 3;
                tokens.push(Token {
                    tok: Tok::Literal,
                    line: start_line,
                });
            } else {
                i += 1;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
                tokens.push(Token {
                    tok: Tok::Lifetime,
                    line,
                });
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = at(i);
            if matches!(word.as_str(), "r" | "br" | "cr")
                && (next == '"' || (next == '#' && is_raw_string_start(i)))
            {
                i = skip_raw(i, &mut line);
                tokens.push(Token {
                    tok: Tok::Literal,
                    line: start_line,
                });
            } else if word == "r" && next == '#' {
                // A raw identifier: kept distinct from the keyword it spells.
                let s = i + 1;
                i = s;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
                let raw: String = chars[s..i].iter().collect();
                tokens.push(Token {
                    tok: Tok::Ident(format!("r#{raw}")),
                    line,
                });
            } else if matches!(word.as_str(), "b" | "c") && next == '"' {
                i = skip_quoted(i, &mut line);
                tokens.push(Token {
                    tok: Tok::Literal,
                    line: start_line,
                });
            } else if word == "b" && next == '\'' {
                // A byte literal: drop the prefix, the quote is read next.
                continue;
            } else {
                tokens.push(Token {
                    tok: Tok::Ident(word),
                    line,
                });
            }
        } else if c.is_ascii_digit() {
            while at(i).is_alphanumeric()
                || at(i) == '_'
                || (at(i) == '.' && at(i + 1).is_ascii_digit())
            {
                i += 1;
            }
            tokens.push(Token {
                tok: Tok::Literal,
                line,
            });
        } else if c == ':' && at(i + 1) == ':' {
            i += 2;
            tokens.push(Token {
                tok: Tok::PathSep,
                line,
            });
        } else {
            i += 1;
            tokens.push(Token {
                tok: Tok::Punct(c),
                line,
            });
        }
    }
    tokens
}

/// Index just past the bracket group opening at `open` (`(`, `[` or `{`).
fn skip_group(toks: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < toks.len() {
        match toks[i].tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    toks.len()
}

/// Whether the `cfg` predicate in `toks` (the tokens between the
/// parentheses of `cfg(..)`) holds only when compiling tests.
fn cfg_requires_test(toks: &[Token]) -> bool {
    fn predicate(toks: &[Token], i: &mut usize) -> bool {
        let Some(Tok::Ident(name)) = toks.get(*i).map(|t| &t.tok) else {
            *i += 1;
            return false;
        };
        *i += 1;
        match toks.get(*i).map(|t| &t.tok) {
            Some(Tok::Punct('(')) => {
                let end = skip_group(toks, *i) - 1;
                *i += 1;
                let mut args = Vec::new();
                while *i < end {
                    args.push(predicate(toks, i));
                    if toks.get(*i).map(|t| &t.tok) == Some(&Tok::Punct(',')) {
                        *i += 1;
                    }
                }
                *i = end + 1;
                match name.as_str() {
                    "all" => args.iter().any(|&a| a),
                    "any" => !args.is_empty() && args.iter().all(|&a| a),
                    _ => false,
                }
            }
            Some(Tok::Punct('=')) => {
                *i += 2;
                false
            }
            _ => name == "test",
        }
    }
    let mut i = 0;
    predicate(toks, &mut i)
}

const ITEM_KEYWORDS: &[&str] = &[
    "async",
    "const",
    "enum",
    "extern",
    "fn",
    "impl",
    "let",
    "macro_rules",
    "mod",
    "static",
    "struct",
    "trait",
    "type",
    "union",
    "unsafe",
    "use",
];

/// Index just past the item (or `let` statement) starting at `start`.
fn skip_item(toks: &[Token], start: usize) -> usize {
    // Items that carry an initializer end at their `;` even when a block
    // comes first (`const X: T = S { .. };`); `const fn` is a function.
    let ident = |i: usize| match toks.get(i).map(|t| &t.tok) {
        Some(Tok::Ident(s)) => s.as_str(),
        _ => "",
    };
    let initialized = matches!(ident(start), "static" | "let" | "type" | "use")
        || (ident(start) == "const"
            && !matches!(ident(start + 1), "fn" | "unsafe" | "async" | "extern"));
    let mut i = start;
    while i < toks.len() {
        match toks[i].tok {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('{') if !initialized => return skip_group(toks, i),
            Tok::Punct('(' | '[' | '{') => i = skip_group(toks, i),
            _ => i += 1,
        }
    }
    toks.len()
}

// ------------------------------------------------------------- the scan --

/// A path written in the code, resolved to an absolute path in the crate.
struct Reference {
    file: String,
    line: usize,
    /// The module the code is in.
    from: Vec<String>,
    /// The absolute path the code names (`crate::` stripped).
    target: Vec<String>,
}

/// A module file waiting to be read.
struct Pending {
    file: PathBuf,
    module: Vec<String>,
    /// Where the files of its child modules live.
    child_dir: PathBuf,
}

struct CrateScan<'a> {
    repo: &'a Path,
    modules: BTreeSet<Vec<String>>,
    references: Vec<Reference>,
    /// Non-test modules declared at the top level: name, line.
    top_level: Vec<(String, usize)>,
    /// Structural problems met while reading (missing files, `#[path]`).
    errors: Vec<String>,
    queue: VecDeque<Pending>,
}

impl<'a> CrateScan<'a> {
    fn new(repo: &'a Path) -> Self {
        CrateScan {
            repo,
            modules: BTreeSet::new(),
            references: Vec::new(),
            top_level: Vec::new(),
            errors: Vec::new(),
            queue: VecDeque::new(),
        }
    }

    fn display(&self, path: &Path) -> String {
        let rel = path.strip_prefix(self.repo).unwrap_or(path);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }

    fn scan(&mut self, root: &Path, src: &Path) -> Result<()> {
        self.modules.insert(Vec::new());
        self.queue.push_back(Pending {
            file: root.to_path_buf(),
            module: Vec::new(),
            child_dir: src.to_path_buf(),
        });
        while let Some(pending) = self.queue.pop_front() {
            let text = std::fs::read_to_string(&pending.file)
                .with_context(|| format!("reading {}", pending.file.display()))?;
            let toks = tokenize(&text);
            self.walk(&toks, &pending);
        }
        Ok(())
    }

    /// Reads one file's tokens: module declarations, inline modules, `use`
    /// trees and `crate::`/`self::`/`super::` paths.
    fn walk(&mut self, toks: &[Token], file: &Pending) {
        let display = self.display(&file.file);
        let tok = |i: usize| toks.get(i).map(|t| &t.tok);
        let ident = |i: usize| match tok(i) {
            Some(Tok::Ident(s)) => Some(s.as_str()),
            _ => None,
        };
        // Inline modules open here: (module path, child dir, brace depth
        // outside the module).
        let mut inline: Vec<(Vec<String>, PathBuf, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut path_attr = false;
        let mut i = 0;
        while i < toks.len() {
            let (module, dir) = match inline.last() {
                Some((m, d, _)) => (m.clone(), d.clone()),
                None => (file.module.clone(), file.child_dir.clone()),
            };
            match &toks[i].tok {
                Tok::Punct('#') => {
                    let open = if tok(i + 1) == Some(&Tok::Punct('!')) {
                        i + 2
                    } else {
                        i + 1
                    };
                    if tok(open) != Some(&Tok::Punct('[')) {
                        i += 1;
                        continue;
                    }
                    let end = skip_group(toks, open);
                    // The tokens between `[` and `]`.
                    let inner = &toks[(open + 1).min(end)..end.saturating_sub(1).max(open + 1)];
                    let inner_tok = |k: usize| inner.get(k).map(|t| &t.tok);
                    let attr_name = match inner_tok(0) {
                        Some(Tok::Ident(s)) => s.as_str(),
                        _ => "",
                    };
                    if attr_name == "path" {
                        path_attr = true;
                    }
                    let test_only = attr_name == "cfg"
                        && inner_tok(1) == Some(&Tok::Punct('('))
                        && cfg_requires_test(&inner[2..inner.len().saturating_sub(1).max(2)]);
                    i = end;
                    if test_only {
                        // A test-only item: skip it whole, further
                        // attributes and visibility included. (Attributes
                        // on fields, arms and expressions are left alone.)
                        let mut j = i;
                        loop {
                            match tok(j) {
                                Some(Tok::Punct('#')) if tok(j + 1) == Some(&Tok::Punct('[')) => {
                                    j = skip_group(toks, j + 1);
                                }
                                Some(Tok::Ident(s)) if s == "pub" => {
                                    j += 1;
                                    if tok(j) == Some(&Tok::Punct('(')) {
                                        j = skip_group(toks, j);
                                    }
                                }
                                _ => break,
                            }
                        }
                        if ident(j).is_some_and(|k| ITEM_KEYWORDS.contains(&k)) {
                            i = skip_item(toks, j);
                            path_attr = false;
                        }
                    }
                }
                Tok::Ident(kw) if kw == "mod" => {
                    let (Some(name), Some(after)) = (ident(i + 1), tok(i + 2)) else {
                        i += 1;
                        continue;
                    };
                    let name = name.to_string();
                    let line = toks[i].line;
                    let mut child = module.clone();
                    child.push(name.clone());
                    let is_test = name == "tests";
                    let at_root = module.is_empty();
                    match after {
                        Tok::Punct(';') => {
                            i += 3;
                            if is_test {
                                continue;
                            }
                            if std::mem::take(&mut path_attr) {
                                self.errors.push(format!(
                                    "{display}:{line}: module `{name}` is declared with #[path], which the layering check does not follow"
                                ));
                                continue;
                            }
                            let flat = dir.join(format!("{name}.rs"));
                            let nested = dir.join(&name).join("mod.rs");
                            let found = match (flat.is_file(), nested.is_file()) {
                                (true, false) => flat,
                                (false, true) => nested,
                                (true, true) => {
                                    self.errors.push(format!(
                                        "{display}:{line}: module `{name}` has both {} and {}",
                                        self.display(&flat),
                                        self.display(&nested)
                                    ));
                                    continue;
                                }
                                (false, false) => {
                                    self.errors.push(format!(
                                        "{display}:{line}: module `{name}` has neither {} nor {}",
                                        self.display(&flat),
                                        self.display(&nested)
                                    ));
                                    continue;
                                }
                            };
                            if at_root {
                                self.top_level.push((name.clone(), line));
                            }
                            self.modules.insert(child.clone());
                            self.queue.push_back(Pending {
                                file: found,
                                module: child,
                                child_dir: dir.join(&name),
                            });
                        }
                        Tok::Punct('{') => {
                            path_attr = false;
                            if is_test {
                                i = skip_group(toks, i + 2);
                                continue;
                            }
                            if at_root {
                                self.top_level.push((name.clone(), line));
                            }
                            self.modules.insert(child.clone());
                            inline.push((child, dir.join(&name), depth));
                            depth += 1;
                            i += 3;
                        }
                        _ => i += 1,
                    }
                }
                // `use<..>` is precise capturing in `impl Trait`, not an import.
                Tok::Ident(kw) if kw == "use" && tok(i + 1) != Some(&Tok::Punct('<')) => {
                    let mut paths = Vec::new();
                    i = use_tree(toks, i + 1, &[], toks[i].line, &mut paths);
                    for (path, line) in paths {
                        self.reference(&display, line, &module, &path);
                    }
                }
                Tok::Ident(first)
                    if matches!(first.as_str(), "crate" | "self" | "super")
                        && tok(i + 1) == Some(&Tok::PathSep)
                        && (i == 0 || toks[i - 1].tok != Tok::PathSep) =>
                {
                    let line = toks[i].line;
                    let mut path = vec![first.clone()];
                    i += 1;
                    while tok(i) == Some(&Tok::PathSep) {
                        match ident(i + 1) {
                            Some(seg) => {
                                path.push(seg.to_string());
                                i += 2;
                            }
                            None => break,
                        }
                    }
                    self.reference(&display, line, &module, &path);
                }
                Tok::Punct('{') => {
                    depth += 1;
                    i += 1;
                }
                Tok::Punct('}') => {
                    depth = depth.saturating_sub(1);
                    if inline.last().is_some_and(|(_, _, d)| *d == depth) {
                        inline.pop();
                    }
                    i += 1;
                }
                Tok::Punct(';') => {
                    path_attr = false;
                    i += 1;
                }
                _ => i += 1,
            }
        }
    }

    /// Records `path` (as written in module `from`) if it starts at
    /// `crate`, `self` or `super`.
    fn reference(&mut self, file: &str, line: usize, from: &[String], path: &[String]) {
        let mut target: Vec<String> = match path.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("self" | "super") => from.to_vec(),
            _ => return,
        };
        let mut rest = if path[0] == "crate" { &path[1..] } else { path };
        while let Some(first) = rest.first() {
            match first.as_str() {
                "self" => {}
                "super" => {
                    if target.pop().is_none() {
                        return; // above the crate root: not ours to judge
                    }
                }
                _ => break,
            }
            rest = &rest[1..];
        }
        target.extend(rest.iter().cloned());
        self.references.push(Reference {
            file: file.to_string(),
            line,
            from: from.to_vec(),
            target,
        });
    }

    /// Sibling edges, with the first location (by file and line) of each
    /// and how many references make it.
    fn edges(&self) -> BTreeMap<Edge, (Location, usize)> {
        let mut edges: BTreeMap<Edge, (Location, usize)> = BTreeMap::new();
        for r in &self.references {
            // The longest prefix of the target that is a module.
            let mut module = r.target.as_slice();
            while !self.modules.contains(module) {
                module = &module[..module.len() - 1];
            }
            let common = r
                .from
                .iter()
                .zip(module)
                .take_while(|(a, b)| a == b)
                .count();
            if common == r.from.len() || common == module.len() {
                continue; // own descendant or ancestor: not an edge
            }
            let edge = Edge {
                parent: r.from[..common].to_vec(),
                from: r.from[common].clone(),
                to: module[common].clone(),
            };
            let location = Location {
                file: r.file.clone(),
                line: r.line,
            };
            let entry = edges.entry(edge).or_insert((location.clone(), 0));
            entry.0 = entry.0.clone().min(location);
            entry.1 += 1;
        }
        edges
    }

    /// Every problem in this crate root: structural errors, cycles, layer
    /// declaration errors and upward imports.
    fn problems(&self, root: &Path) -> Result<Vec<String>> {
        let root_display = self.display(root);
        let mut problems: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{root_display}: {e}"))
            .collect();
        let edges = self.edges();

        // 1. Cycles among siblings, one parent at a time.
        let mut by_parent: BTreeMap<&Vec<String>, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
        for edge in edges.keys() {
            by_parent
                .entry(&edge.parent)
                .or_default()
                .entry(&edge.from)
                .or_default()
                .insert(&edge.to);
        }
        for (parent, graph) in &by_parent {
            for scc in strongly_connected(graph) {
                let members: BTreeSet<&str> = scc.iter().copied().collect();
                let mut text = format!(
                    "{root_display}: module cycle among the children of {}: {}\n  e.g. {}",
                    qualified(parent, None),
                    scc.iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    shortest_cycle(graph, &members, scc[0])
                        .iter()
                        .map(|m| qualified(parent, Some(m)))
                        .collect::<Vec<_>>()
                        .join(" -> ")
                );
                let mut lines: Vec<(&Location, String)> = edges
                    .iter()
                    .filter(|(e, _)| {
                        &&e.parent == parent
                            && members.contains(e.from.as_str())
                            && members.contains(e.to.as_str())
                    })
                    .map(|(e, (loc, n))| (loc, edge_line(e, loc, *n)))
                    .collect();
                lines.sort();
                for (_, line) in lines {
                    let _ = write!(text, "\n  {line}");
                }
                problems.push(text);
            }
        }

        // 2. The declared layers of the top-level modules.
        let text =
            std::fs::read_to_string(root).with_context(|| format!("reading {}", root.display()))?;
        if let Some(layers) = parse_layers(&text) {
            let layers = match layers {
                Ok(layers) => layers,
                Err(e) => {
                    problems.push(format!("{root_display}: ## Layers: {e}"));
                    return Ok(sorted(problems));
                }
            };
            let mut rank: BTreeMap<&str, usize> = BTreeMap::new();
            for (n, item) in layers.iter().enumerate() {
                for name in item {
                    if rank.insert(name, n).is_some() {
                        problems.push(format!(
                            "{root_display}: ## Layers: `{name}` is listed more than once"
                        ));
                    }
                }
            }
            let declared: BTreeSet<&str> = self.top_level.iter().map(|(m, _)| m.as_str()).collect();
            for name in rank.keys() {
                if !declared.contains(name) {
                    problems.push(format!(
                        "{root_display}: ## Layers: `{name}` is not a top-level module of this crate"
                    ));
                }
            }
            for (name, line) in &self.top_level {
                if !rank.contains_key(name.as_str()) {
                    problems.push(format!(
                        "{root_display}:{line}: module `{name}` is missing from the ## Layers list"
                    ));
                }
            }
            let mut upward: Vec<(&Location, String)> = Vec::new();
            for (edge, (loc, n)) in &edges {
                if !edge.parent.is_empty() {
                    continue;
                }
                let (Some(&from), Some(&to)) =
                    (rank.get(edge.from.as_str()), rank.get(edge.to.as_str()))
                else {
                    continue;
                };
                if to < from {
                    upward.push((
                        loc,
                        format!(
                            "{} (`{}` is in layer {}, above `{}` in layer {})",
                            edge_line(edge, loc, *n),
                            edge.to,
                            to + 1,
                            edge.from,
                            from + 1
                        ),
                    ));
                }
            }
            if !upward.is_empty() {
                upward.sort();
                let mut text = format!(
                    "{root_display}: upward imports against the ## Layers order (top = layer 1):"
                );
                for (_, line) in upward {
                    let _ = write!(text, "\n  {line}");
                }
                problems.push(text);
            }
        }
        Ok(sorted(problems))
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    parent: Vec<String>,
    from: String,
    to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Location {
    file: String,
    line: usize,
}

/// `crate::a::b` for display; the crate root is `crate`.
fn qualified(parent: &[String], child: Option<&str>) -> String {
    let mut parts: Vec<&str> = parent.iter().map(String::as_str).collect();
    parts.extend(child);
    if parts.is_empty() {
        "the crate root".to_string()
    } else if child.is_some() {
        parts.join("::")
    } else {
        format!("`{}`", parts.join("::"))
    }
}

/// `file:line: module a uses module b`, with the module paths spelled from
/// the crate root so nested cycles read unambiguously.
fn edge_line(edge: &Edge, loc: &Location, count: usize) -> String {
    let mut line = format!(
        "{}:{}: module {} uses module {}",
        loc.file,
        loc.line,
        qualified(&edge.parent, Some(&edge.from)),
        qualified(&edge.parent, Some(&edge.to))
    );
    if count > 1 {
        let _ = write!(line, " (and {} more)", count - 1);
    }
    line
}

/// The strongly connected components with more than one member (Tarjan),
/// each sorted, in a stable order.
fn strongly_connected<'g>(graph: &BTreeMap<&'g str, BTreeSet<&'g str>>) -> Vec<Vec<&'g str>> {
    struct State<'g> {
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<&'g str>>,
    }
    fn visit<'g>(v: &'g str, graph: &BTreeMap<&'g str, BTreeSet<&'g str>>, s: &mut State<'g>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, graph, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(v, graph, &mut state);
        }
    }
    state.out.sort();
    state.out
}

/// A shortest cycle through `start` inside `members` (breadth-first), as
/// `start, .., start`.
fn shortest_cycle<'g>(
    graph: &BTreeMap<&'g str, BTreeSet<&'g str>>,
    members: &BTreeSet<&'g str>,
    start: &'g str,
) -> Vec<&'g str> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in graph.get(v).into_iter().flatten() {
            if !members.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![start, v];
                let mut at = v;
                while at != start {
                    at = came_from[at];
                    path.push(at);
                }
                path.reverse();
                return path;
            }
            if !came_from.contains_key(w) && w != start {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start]
}

/// Expands the `use` tree starting at `i` under `prefix` into full paths,
/// each with the line of its last segment. Returns the index after the
/// tree.
fn use_tree(
    toks: &[Token],
    mut i: usize,
    prefix: &[String],
    mut line: usize,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let tok = |i: usize| toks.get(i).map(|t| &t.tok);
    let mut path = prefix.to_vec();
    if tok(i) == Some(&Tok::PathSep) {
        // `::name`: an external crate, never one of our modules.
        path.push("::".to_string());
        i += 1;
    }
    loop {
        match tok(i) {
            Some(Tok::Ident(seg)) => {
                // `self` inside a group names the group's prefix.
                if seg != "self" || path.is_empty() {
                    path.push(seg.clone());
                }
                line = toks[i].line;
                i += 1;
                if tok(i) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                break;
            }
            Some(Tok::Punct('*')) => {
                line = toks[i].line;
                i += 1;
                break;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                while i < toks.len() {
                    match tok(i) {
                        Some(Tok::Punct('}')) => {
                            i += 1;
                            break;
                        }
                        Some(Tok::Punct(',')) => i += 1,
                        _ => {
                            let before = i;
                            i = use_tree(toks, i, &path, line, out);
                            if i == before {
                                i += 1; // malformed: never loop forever
                            }
                        }
                    }
                }
                return i;
            }
            _ => return i,
        }
    }
    if matches!(tok(i), Some(Tok::Ident(s)) if s == "as") {
        i += 2;
    }
    out.push((path, line));
    i
}

/// The `## Layers` section of a crate root's top doc comment: `None` when
/// there is none, else its items (top first), each the module names it
/// starts with.
fn parse_layers(text: &str) -> Option<Result<Vec<Vec<String>>, String>> {
    let doc_lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| l.is_empty() || l.starts_with("//") || l.starts_with("#!["))
        .filter(|l| l.starts_with("//!"))
        .map(|l| &l[3..])
        .collect();
    let heading = doc_lines.iter().position(|l| l.trim() == "## Layers")?;
    let mut items = Vec::new();
    for body in &doc_lines[heading + 1..] {
        let content = body.trim();
        if content.is_empty() && items.is_empty() {
            continue;
        }
        let Some(rest) = list_item(content) else {
            break;
        };
        let names = leading_names(rest);
        if names.is_empty() {
            return Some(Err(format!(
                "the item `{content}` does not start with a module name in backticks"
            )));
        }
        items.push(names);
    }
    if items.is_empty() {
        return Some(Err(
            "the section lists no module (items are `//! - `name`` lines right after the heading)"
                .to_string(),
        ));
    }
    Some(Ok(items))
}

/// The text of a `- item` / `1. item` list line, without its marker.
fn list_item(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("- ") {
        return Some(rest);
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits > 0 {
        return line[digits..].strip_prefix(". ");
    }
    None
}

/// The backticked names an item starts with: `` `a`, `b`: text `` gives
/// `a` and `b`.
fn leading_names(mut rest: &str) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        rest = rest.trim_start();
        let Some(after) = rest.strip_prefix('`') else {
            break;
        };
        let Some(end) = after.find('`') else {
            break;
        };
        names.push(after[..end].trim().to_string());
        rest = after[end + 1..].trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None => break,
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic crate under `server/` in a temporary directory.
    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            let tree = Tree {
                dir: tempfile::tempdir().expect("temp dir"),
            };
            tree.write("server/Cargo.toml", "[package]\nname = \"demo\"\n");
            tree
        }

        fn write(&self, path: &str, text: &str) -> &Self {
            let path = self.dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
            self
        }

        fn problems(&self) -> Vec<String> {
            check(self.dir.path(), Path::new("server"))
                .expect("check")
                .problems
        }

        fn report(&self) -> String {
            self.problems().join("\n")
        }
    }

    const LAYERED_LIB: &str = "\
//! A demo crate.
//!
//! ## Layers
//!
//! - `kit`: wires everything
//! - `http`, `notify`
//! - `store`
//!
//! More prose.

pub mod http;
pub mod kit;
pub mod notify;
pub mod store;
";

    /// kit -> http, notify -> store; http and notify share a layer and may
    /// use each other one way.
    fn layered() -> Tree {
        let tree = Tree::new();
        tree.write("server/src/lib.rs", LAYERED_LIB)
            .write(
                "server/src/kit.rs",
                "use crate::http::Router;\nuse crate::notify;\npub fn f() { crate::store::open(); }\n",
            )
            .write(
                "server/src/http/mod.rs",
                "mod orders;\npub struct Router;\npub use orders::Order;\n",
            )
            .write(
                "server/src/http/orders.rs",
                "use super::Router;\nuse crate::notify::Notice;\npub struct Order(crate::store::Row);\n",
            )
            .write("server/src/notify.rs", "pub struct Notice;\n")
            .write(
                "server/src/store/mod.rs",
                "mod sqlite;\npub struct Row;\npub fn open() {}\n",
            )
            .write(
                "server/src/store/sqlite.rs",
                "use super::Row;\nmod group;\n",
            )
            .write(
                "server/src/store/sqlite/group.rs",
                "use super::super::Row;\nuse crate::store::open;\n",
            );
        tree
    }

    #[test]
    fn clean_layered_tree_passes() {
        let tree = layered();
        let outcome = check(tree.dir.path(), Path::new("server")).expect("check");
        assert_eq!(outcome.roots, ["server/src/lib.rs"]);
        assert_eq!(outcome.problems, Vec::<String>::new());
    }

    #[test]
    fn lower_layer_using_a_higher_one_fails_naming_file_and_line() {
        let tree = layered();
        tree.write(
            "server/src/store/mod.rs",
            "mod sqlite;\npub struct Row;\n\nuse crate::http::X;\npub fn open() {}\n",
        );
        let report = tree.report();
        assert!(
            report.contains("server/src/store/mod.rs:4: module store uses module http"),
            "{report}"
        );
        assert!(report.contains("upward imports"), "{report}");
    }

    #[test]
    fn two_module_cycle_fails() {
        let tree = layered();
        tree.write(
            "server/src/notify.rs",
            "pub struct Notice;\nfn f() { crate::http::Router; }\n",
        );
        let report = tree.report();
        assert!(
            report.contains("module cycle among the children of the crate root: `http`, `notify`"),
            "{report}"
        );
        assert!(
            report.contains("server/src/notify.rs:2: module notify uses module http"),
            "{report}"
        );
        assert!(
            report.contains("server/src/http/orders.rs:2: module http uses module notify"),
            "{report}"
        );
    }

    #[test]
    fn three_module_cycle_in_a_nested_module_fails() {
        let tree = Tree::new();
        tree.write("server/src/lib.rs", "pub mod sim;\n")
            .write(
                "server/src/sim/mod.rs",
                "mod api;\nmod order;\nmod state;\npub struct Shared;\n",
            )
            .write(
                "server/src/sim/api.rs",
                "use super::order::place;\nuse super::Shared;\n",
            )
            .write(
                "server/src/sim/order.rs",
                "pub fn place() { crate::sim::state::get(); }\n",
            )
            .write(
                "server/src/sim/state.rs",
                "pub fn get() {\n    super::api::serve();\n}\n",
            );
        let report = tree.report();
        assert!(
            report.contains("module cycle among the children of `sim`: `api`, `order`, `state`"),
            "{report}"
        );
        assert!(
            report.contains("e.g. sim::api -> sim::order -> sim::state -> sim::api"),
            "{report}"
        );
        for edge in [
            "server/src/sim/api.rs:1: module sim::api uses module sim::order",
            "server/src/sim/order.rs:1: module sim::order uses module sim::state",
            "server/src/sim/state.rs:2: module sim::state uses module sim::api",
        ] {
            assert!(report.contains(edge), "{edge} missing from:\n{report}");
        }
    }

    #[test]
    fn sim_api_order_cycle_fails() {
        let tree = Tree::new();
        tree.write("server/src/lib.rs", "pub mod sim;\n")
            .write("server/src/sim/mod.rs", "mod api;\nmod order;\n")
            .write("server/src/sim/api.rs", "use crate::sim::order::Order;\n")
            .write(
                "server/src/sim/order.rs",
                "pub struct Order;\nfn f() { super::api::g(); }\n",
            );
        let problems = tree.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0],
            "server/src/lib.rs: module cycle among the children of `sim`: `api`, `order`\n  \
             e.g. sim::api -> sim::order -> sim::api\n  \
             server/src/sim/api.rs:1: module sim::api uses module sim::order\n  \
             server/src/sim/order.rs:2: module sim::order uses module sim::api"
        );
    }

    #[test]
    fn child_using_its_parents_item_is_not_an_edge() {
        let tree = Tree::new();
        tree.write(
            "server/src/lib.rs",
            "pub mod a;\npub mod b;\npub struct Top;\n",
        )
        .write("server/src/a/mod.rs", "mod x;\nmod y;\npub struct Item;\n")
        .write(
            "server/src/a/x.rs",
            "use super::Item;\nuse crate::Top;\nfn f() { super::super::Top; }\n",
        )
        .write(
            "server/src/a/y.rs",
            "use super::Item;\nuse crate::a::Item as I;\n",
        )
        .write("server/src/b.rs", "use crate::a::Item;\n");
        assert_eq!(tree.problems(), Vec::<String>::new());
        let mut scan = CrateScan::new(tree.dir.path());
        let src = tree.dir.path().join("server/src");
        scan.scan(&src.join("lib.rs"), &src).expect("scan");
        let edges: Vec<Edge> = scan.edges().into_keys().collect();
        assert_eq!(
            edges,
            [Edge {
                parent: vec![],
                from: "b".into(),
                to: "a".into()
            }]
        );
    }

    fn edges_of(tree: &Tree) -> Vec<(String, String, String, usize)> {
        let mut scan = CrateScan::new(tree.dir.path());
        let src = tree.dir.path().join("server/src");
        scan.scan(&src.join("lib.rs"), &src).expect("scan");
        scan.edges()
            .into_iter()
            .map(|(e, (loc, _))| (e.parent.join("::"), e.from, e.to, loc.line))
            .collect()
    }

    #[test]
    fn nested_brace_use_creates_the_right_edges() {
        let tree = Tree::new();
        tree.write(
            "server/src/lib.rs",
            "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\n",
        )
        .write(
            "server/src/a.rs",
            "use crate::{\n    b::{self, x::{Y, Z as W}},\n    d::*,\n};\nuse ::std::fmt;\n",
        )
        .write("server/src/b/mod.rs", "pub mod x;\n")
        .write("server/src/b/x.rs", "pub struct Y;\npub struct Z;\n")
        .write("server/src/c.rs", "")
        .write("server/src/d.rs", "")
        .write("server/src/e.rs", "use {crate::c, self::super::d};\n");
        assert_eq!(
            edges_of(&tree),
            [
                ("".into(), "a".into(), "b".into(), 2),
                ("".into(), "a".into(), "d".into(), 3),
                ("".into(), "e".into(), "c".into(), 1),
                ("".into(), "e".into(), "d".into(), 1),
            ]
        );
    }

    #[test]
    fn comments_strings_and_tests_create_no_edges() {
        let tree = Tree::new();
        tree.write("server/src/lib.rs", "mod a;\nmod b;\n")
            .write(
                "server/src/a.rs",
                r####"
// use crate::b::X;
/// See [`crate::b::X`].
/* crate::b::X /* nested crate::b::X */ still a comment crate::b::X */
const S: &str = "crate::b::X \" crate::b::X";
const R: &str = r#"crate::b::X " crate::b::X"#;
const C: char = '"';
const Q: char = '\'';
const B: &[u8] = b"crate::b::X";
fn life<'a>(s: &'a str) -> &'a str { s }
#[cfg(test)]
use crate::b::T;
#[cfg(all(test, feature = "x"))]
pub(crate) fn helper() { crate::b::f(); }
#[cfg(test)]
mod tests {
    use crate::b::X;
}
mod tests_inline_named {
}
"####,
            )
            .write(
                "server/src/b.rs",
                "pub struct X;\n#[cfg(test)]\nmod tests;\n",
            )
            .write("server/src/b/tests.rs", "use crate::a::S;\n");
        assert_eq!(edges_of(&tree), []);
    }

    #[test]
    fn inline_modules_and_macros_are_read() {
        let tree = Tree::new();
        tree.write("server/src/lib.rs", "mod a;\nmod b;\n")
            .write(
                "server/src/a.rs",
                "pub mod inner {\n    pub fn f() { super::super::b::g(); }\n}\nfn h() { println!(\"{}\", crate::b::N); }\n",
            )
            .write("server/src/b.rs", "pub const N: u8 = 1;\n#[cfg(not(test))]\nuse crate::a::inner;\n");
        assert_eq!(
            edges_of(&tree),
            [
                ("".into(), "a".into(), "b".into(), 2),
                ("".into(), "b".into(), "a".into(), 3),
            ]
        );
    }

    #[test]
    fn module_missing_from_the_layers_list_fails() {
        let tree = layered();
        tree.write(
            "server/src/lib.rs",
            &format!("{LAYERED_LIB}pub mod extra;\n"),
        )
        .write("server/src/extra.rs", "");
        let report = tree.report();
        assert!(
            report.contains(
                "server/src/lib.rs:15: module `extra` is missing from the ## Layers list"
            ),
            "{report}"
        );
    }

    #[test]
    fn unknown_name_in_the_layers_list_fails() {
        let tree = layered();
        tree.write(
            "server/src/lib.rs",
            &LAYERED_LIB.replace("//! - `store`", "//! - `store`, `ghost`"),
        );
        let report = tree.report();
        assert!(
            report.contains("`ghost` is not a top-level module of this crate"),
            "{report}"
        );
    }

    #[test]
    fn both_crate_roots_are_checked_and_target_is_skipped() {
        let tree = layered();
        tree.write("server/src/main.rs", "mod cli;\nmod run;\n")
            .write("server/src/cli.rs", "use crate::run::go;\n")
            .write("server/src/run.rs", "pub fn go() { crate::cli::x(); }\n")
            .write(
                "server/target/debug/Cargo.toml",
                "[package]\nname = \"junk\"\n",
            )
            .write("server/target/debug/src/lib.rs", "mod missing;\n");
        let outcome = check(tree.dir.path(), Path::new("server")).expect("check");
        assert_eq!(outcome.roots, ["server/src/lib.rs", "server/src/main.rs"]);
        assert_eq!(outcome.problems.len(), 1, "{:?}", outcome.problems);
        assert!(outcome.problems[0].starts_with("server/src/main.rs: module cycle"));
    }

    #[test]
    fn missing_module_file_is_reported() {
        let tree = Tree::new();
        tree.write("server/src/lib.rs", "\nmod gone;\n");
        let report = tree.report();
        assert!(
            report.contains("server/src/lib.rs:2: module `gone` has neither server/src/gone.rs nor server/src/gone/mod.rs"),
            "{report}"
        );
    }

    #[test]
    fn cfg_predicates() {
        let cfg = |s: &str| cfg_requires_test(&tokenize(s));
        assert!(cfg("test"));
        assert!(cfg("all(test, feature = \"x\")"));
        assert!(cfg("any(test, all(test, unix))"));
        assert!(!cfg("any(test, unix)"));
        assert!(!cfg("not(test)"));
        assert!(!cfg("feature = \"test\""));
    }
}
