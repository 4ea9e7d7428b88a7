//! `lvstun-images`: builds the OCI images of the release binaries (see `lvstun_tests::images`)
//! and prints each image's reference, digest, size, layout folder and archive. `./dev images`
//! builds the binaries and runs this.
//!
//! ```text
//! lvstun-images [--bin-dir DIR] [--out DIR] [--tag TAG] [--pause]
//! ```
//! `--bin-dir`: where the release binaries are (default `$CARGO_TARGET_DIR/release`, else
//! `target/release`); `--out`: where the layouts go (default `${LVSTUN_CACHE:-~/.cache/lvstun}/images`).
//! `--tag TAG`: tag the operator and node images TAG instead of the workspace version (the
//! chart's `appVersion`), e.g. `0.1.0-upgrade`: a second version of the same binaries whose
//! digests differ, for an upgrade test; its archives are `<binary>-TAG.oci.tar`, beside the
//! default ones, while the layout folders `<binary>/` hold the last build.
//! `--pause`: build only the pod sandbox image `registry.k8s.io/pause:3.10.1` instead, compiled
//! with gcc from upstream's source in the Kubernetes Go module (needs gcc, glibc's static libc
//! and, unless the module is cached, Go and the module proxy); a fixture for clusters that
//! cannot pull it, such as the lab's kubelets.
//! The layer mtimes come from `SOURCE_DATE_EPOCH` (0 when unset).

use std::path::PathBuf;
use std::process::ExitCode;

use lvstun_tests::controlplane::{cache_dir, repo_root};
use lvstun_tests::images::{self, IMAGES};

const USAGE: &str = "usage: lvstun-images [--bin-dir DIR] [--out DIR] [--tag TAG] [--pause]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lvstun-images: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut bin_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("release");
    let mut out = cache_dir().join("images");
    let mut pause = false;
    let mut tag = images::TAG.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--bin-dir" => bin_dir = PathBuf::from(value()?),
            "--out" => out = PathBuf::from(value()?),
            "--tag" => {
                tag = value()?;
                images::check_tag(&tag)?;
            }
            "--pause" => pause = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let epoch = images::source_date_epoch()?;
    if pause {
        if tag != images::TAG {
            return Err(format!(
                "--tag applies to the operator and node images, not to the pause image\n{USAGE}"
            ));
        }
        let (image, written) =
            images::build_pause(&images::go_mod_cache(), &out, epoch).map_err(|e| e.to_string())?;
        print(&image, &written);
        return Ok(());
    }
    for spec in &IMAGES {
        let (image, written) = images::build(&spec.with_tag(&tag), &bin_dir, &out, epoch)
            .map_err(|e| e.to_string())?;
        print(&image, &written);
    }
    Ok(())
}

/// One line per image: what to import or push, and where it is.
fn print(image: &images::Image, written: &images::Written) {
    println!(
        "{}  {}  {:.1} MB  {}  {}",
        image.reference,
        image.digest(),
        image.size() as f64 / 1e6,
        written.layout.display(),
        written.archive.display()
    );
}
