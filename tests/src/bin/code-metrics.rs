//! `code-metrics [ROOT]`: the structure figures the restructure is judged by, read from the
//! Rust sources of a checkout (default: the current directory), so that a "before" and an
//! "after" are one command each (`git worktree add /tmp/before REV`, then run it there):
//! - lines per crate, split into product and test code (`#[cfg(test)]` items, `#[test]`
//!   functions, and the `tests/` and `benches/` folders count as test code);
//! - the ten longest product functions (methods and trait defaults included);
//! - import circles between the top-level modules of each crate: module A uses
//!   `crate::B::…` (in a `use` or inline) and B uses `crate::A::…`, directly or round a longer
//!   ring (the strongly connected components of that graph).
//!
//! Parsing is `syn`'s, so a brace in a string or a comment cannot skew a count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use quote::ToTokens;
use syn::spanned::Spanned;
use syn::visit::Visit;

/// One crate: its name (the folder) and its `src` folder.
struct Crate {
    name: String,
    dir: PathBuf,
}

/// The crates of the workspace: folders with a `Cargo.toml` and a `src/` at the top or in
/// `crates/`.
fn crates(root: &Path) -> Vec<Crate> {
    let mut out = Vec::new();
    for base in [root.to_path_buf(), root.join("crates")] {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for dir in entries.flatten().map(|e| e.path()) {
            if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
                let name = dir
                    .strip_prefix(root)
                    .unwrap_or(&dir)
                    .to_string_lossy()
                    .into_owned();
                out.push(Crate { name, dir });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test_attr(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let path = a.path();
        if path.is_ident("cfg") {
            return a.meta.to_token_stream().to_string().contains("test");
        }
        path.segments.last().is_some_and(|s| s.ident == "test")
    })
}

/// What one file holds.
#[derive(Default)]
struct FileFacts {
    /// Line numbers (1-based) inside test items.
    test_lines: BTreeSet<usize>,
    /// Product functions: (name, first line, lines).
    functions: Vec<(String, usize, usize)>,
    /// The paths this file names through `crate::…` (up to two segments after `crate`) or
    /// `super::…` (one segment, marked by a leading `super`).
    uses: BTreeSet<Vec<String>>,
}

struct Visitor<'a> {
    facts: &'a mut FileFacts,
    in_test: usize,
    impl_of: Vec<String>,
}

fn lines_of(span: proc_macro2::Span) -> (usize, usize) {
    (span.start().line, span.end().line)
}

impl Visitor<'_> {
    fn test_region(&mut self, attrs: &[syn::Attribute], span: proc_macro2::Span) -> bool {
        if is_test_attr(attrs) {
            let (a, b) = lines_of(span);
            self.facts.test_lines.extend(a..=b);
            return true;
        }
        false
    }

    fn function(&mut self, name: String, span: proc_macro2::Span) {
        if self.in_test == 0 {
            let (a, b) = lines_of(span);
            self.facts.functions.push((name, a, b + 1 - a));
        }
    }
}

impl<'ast> Visit<'ast> for Visitor<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let test = self.test_region(&m.attrs, m.span());
        self.in_test += usize::from(test);
        syn::visit::visit_item_mod(self, m);
        self.in_test -= usize::from(test);
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let test = self.test_region(&f.attrs, f.span());
        self.in_test += usize::from(test);
        self.function(f.sig.ident.to_string(), f.span());
        syn::visit::visit_item_fn(self, f);
        self.in_test -= usize::from(test);
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        let test = self.test_region(&i.attrs, i.span());
        self.in_test += usize::from(test);
        let ty = i.self_ty.to_token_stream().to_string().replace(' ', "");
        self.impl_of.push(ty);
        syn::visit::visit_item_impl(self, i);
        self.impl_of.pop();
        self.in_test -= usize::from(test);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let test = self.test_region(&f.attrs, f.span());
        self.in_test += usize::from(test);
        let owner = self.impl_of.last().cloned().unwrap_or_default();
        self.function(format!("{owner}::{}", f.sig.ident), f.span());
        syn::visit::visit_impl_item_fn(self, f);
        self.in_test -= usize::from(test);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if f.default.is_some() {
            self.function(f.sig.ident.to_string(), f.span());
        }
        syn::visit::visit_trait_item_fn(self, f);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segs);
        syn::visit::visit_path(self, p);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if self.in_test == 0 {
            let mut paths = Vec::new();
            use_paths(&u.tree, Vec::new(), &mut paths);
            for path in paths {
                self.record(&path);
            }
        }
    }
}

impl Visitor<'_> {
    /// Keeps a `crate::a::b…` path as `[a, b]` and a `super::x…` one as `[super, x]`.
    fn record(&mut self, segs: &[String]) {
        if self.in_test > 0 || segs.len() < 2 {
            return;
        }
        match segs[0].as_str() {
            "crate" => {
                self.facts.uses.insert(segs[1..segs.len().min(3)].to_vec());
            }
            "super" if segs[1] != "super" => {
                self.facts.uses.insert(segs[..2].to_vec());
            }
            _ => {}
        }
    }
}

/// Every path a use tree names, each as its segments (`a::{b, c::d}` gives a::b and a::c::d).
fn use_paths(t: &syn::UseTree, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let with = |ident: &syn::Ident| {
        let mut p = prefix.clone();
        p.push(ident.to_string());
        p
    };
    match t {
        syn::UseTree::Path(p) => use_paths(&p.tree, with(&p.ident), out),
        syn::UseTree::Name(n) => out.push(with(&n.ident)),
        syn::UseTree::Rename(r) => out.push(with(&r.ident)),
        syn::UseTree::Glob(_) => out.push(prefix),
        syn::UseTree::Group(g) => g
            .items
            .iter()
            .for_each(|i| use_paths(i, prefix.clone(), out)),
    }
}

/// The module a file of `src/` is, as at most two names: `a` for `src/a.rs` and
/// `src/a/mod.rs`, `a::b` for `src/a/b.rs` and everything below `src/a/b/`; the root files
/// (`main.rs`, `lib.rs`) are `main`/`lib`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut names: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    if names.last().is_some_and(|n| n == "mod") {
        names.pop();
    }
    names.truncate(2);
    names
}

/// The module graphs of one crate: between top-level modules, and between the sibling
/// modules inside each top-level one (a parent and its children are left out: a parent
/// declares its children and they use what it holds, by design).
fn graphs(
    files: &[(Vec<String>, BTreeSet<Vec<String>>)],
) -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let known: BTreeSet<String> = files.iter().map(|(m, _)| m.join("::")).collect();
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut inner: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, uses) in files {
        let Some(first) = module.first() else {
            continue;
        };
        let from = module.join("::");
        for path in uses {
            // `super::x` from `a::b` is `a::x`; from a top-level file it is the crate root's x.
            let target: Vec<String> = match path.first().map(String::as_str) {
                Some("super") if module.len() == 2 => vec![first.clone(), path[1].clone()],
                Some("super") => vec![path[1].clone()],
                _ => path.clone(),
            };
            let Some(target_first) = target.first() else {
                continue;
            };
            if target_first != first {
                top.entry(first.clone())
                    .or_default()
                    .insert(target_first.clone());
                continue;
            }
            if module.len() == 2 && target.len() == 2 {
                let to = target.join("::");
                if to != from && known.contains(&to) {
                    inner.entry(from.clone()).or_default().insert(to);
                }
            }
        }
        top.entry(first.clone()).or_default();
        if module.len() == 2 {
            inner.entry(from.clone()).or_default();
        }
    }
    (top, inner)
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn connect<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.graph.get(v) {
            for w in targets {
                let w = w.as_str();
                if !s.graph.contains_key(w) {
                    continue;
                }
                if !s.index.contains_key(w) {
                    connect(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut ring = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                ring.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if ring.len() > 1 {
                ring.sort();
                s.out.push(ring);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            connect(&mut s, v);
        }
    }
    s.out
}

fn main() -> ExitCode {
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let mut longest: Vec<(usize, String)> = Vec::new();
    let mut failed = false;
    println!(
        "{:<28} {:>8} {:>8} {:>8}",
        "crate", "product", "test", "files"
    );
    for krate in crates(&root) {
        let src = krate.dir.join("src");
        let mut files = Vec::new();
        rust_files(&krate.dir, &mut files);
        let (mut product, mut test) = (0usize, 0usize);
        let mut modules: Vec<(Vec<String>, BTreeSet<Vec<String>>)> = Vec::new();
        for file in &files {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            let total = text.lines().count();
            let rel = file.strip_prefix(&krate.dir).unwrap_or(file);
            let test_dir = rel.starts_with("tests") || rel.starts_with("benches");
            let ast = match syn::parse_file(&text) {
                Ok(ast) => ast,
                Err(e) => {
                    eprintln!("code-metrics: {}: {e}", file.display());
                    failed = true;
                    continue;
                }
            };
            let mut facts = FileFacts::default();
            let mut v = Visitor {
                facts: &mut facts,
                in_test: usize::from(test_dir),
                impl_of: Vec::new(),
            };
            v.visit_file(&ast);
            let in_tests = if test_dir {
                total
            } else {
                facts.test_lines.len().min(total)
            };
            test += in_tests;
            product += total - in_tests;
            let shown = file
                .strip_prefix(&root)
                .unwrap_or(file)
                .display()
                .to_string();
            for (name, line, len) in facts.functions {
                longest.push((len, format!("{shown}:{line} {name}")));
            }
            if file.starts_with(&src) && !test_dir {
                modules.push((module_of(&src, file), facts.uses));
            }
        }
        println!(
            "{:<28} {:>8} {:>8} {:>8}",
            krate.name,
            product,
            test,
            files.len()
        );
        let (top, inner) = graphs(&modules);
        for ring in circles(&top).into_iter().chain(circles(&inner)) {
            println!("  import circle in {}: {}", krate.name, ring.join(" <-> "));
        }
    }
    longest.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    println!("\nthe ten longest product functions (lines):");
    for (len, at) in longest.iter().take(10) {
        println!("{len:>6}  {at}");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
