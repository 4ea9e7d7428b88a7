//! Writes the CRD YAML generated from the API types into `deploy/crds/` and the helm chart's
//! `crds/` folder, and the field reference `docs/crd-reference.md` from the same CRDs. With `--check`, writes nothing and exits non-zero when a committed file
//! differs from what the types generate (CI and a unit test use this to catch stale YAML).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Folders (relative to the repository root) that hold a copy of the generated CRDs.
const TARGETS: [&str; 2] = ["deploy/crds", "deploy/helm/lvstun/crds"];

/// The checkout to write into: `cargo run` names the package's folder at run time. The value
/// compiled in is only the fallback: a binary in a target folder shared by two checkouts (CI's
/// clone and a working copy) may have been built in the other one.
fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let files = match lvstun_crds::render_crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = repo_root();
    let mut stale = Vec::new();
    for dir in TARGETS {
        let dir = root.join(dir);
        for file in &files {
            let path = dir.join(&file.name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == file.content {
                continue;
            }
            if check {
                stale.push(path);
                continue;
            }
            if let Err(e) =
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &file.content))
            {
                eprintln!("crdgen: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", path.display());
        }
    }
    // The reference: one more generated file, checked and written like the YAML.
    let reference = root.join(lvstun_crds::reference::PATH);
    let content = lvstun_crds::render_reference();
    if std::fs::read_to_string(&reference).unwrap_or_default() != content {
        if check {
            stale.push(reference);
        } else if let Err(e) = std::fs::write(&reference, &content) {
            eprintln!("crdgen: writing {}: {e}", reference.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", reference.display());
        }
    }
    if !stale.is_empty() {
        for p in &stale {
            eprintln!("stale: {}", p.display());
        }
        eprintln!(
            "CRD YAML or docs/crd-reference.md is stale; run `cargo run -p lvstun-crds --bin crdgen` and commit the result"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
