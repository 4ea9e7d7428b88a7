//! Daemonless, reproducible container images of the release binaries, as OCI image layouts.
//!
//! Why not a Dockerfile here: no container engine runs on the machines that build and test
//! lvstun, and an image built by an engine carries timestamps that change its digest on every
//! build. An image is only a few files (a tar of the root filesystem, a JSON config, a JSON
//! manifest, an index), so this module writes them itself:
//!
//! - the root filesystem is the binary at `/usr/local/bin/<name>` plus exactly the shared
//!   libraries `ldd` names for it (the ELF interpreter included) and, for `lvstun-node`, the
//!   `nft` program the web role runs with its own libraries; no base image, no shell;
//! - one uncompressed layer (`application/vnd.oci.image.layer.v1.tar`, which the OCI spec and
//!   registries accept): compression would add a crate and a second digest for no gain on a
//!   ~20 MB layer;
//! - reproducible: entries sorted by path, every mtime `SOURCE_DATE_EPOCH`, uid/gid 0 and no
//!   user or group names, fixed modes, no timestamp in the config, JSON with a fixed key order.
//!   Same binaries and same epoch give the same digest, byte for byte.
//!
//! The result per binary is an OCI image layout folder and the same folder as one tar (for
//! `ctr images import` or `skopeo copy oci-archive:...`), both named after the image the helm
//! chart expects (`localhost/lvstun/lvstun-operator`, `localhost/lvstun/lvstun-node`, tag = the
//! workspace version, or another given with [`ImageSpec::with_tag`] to build a second version
//! of the same binaries, as an upgrade test needs). The name is fully qualified on purpose: `ctr images import` keeps the
//! name written in the archive (`io.containerd.image.name`) as it is, while the kubelet asks for
//! the normalized name, so a short `lvstun/lvstun-node:0.1.0` would be imported under a name
//! the kubelet never asks for (it asks for `docker.io/lvstun/lvstun-node:0.1.0`). `localhost` is
//! the convention for locally built images: every runtime reads it as a registry host, so no
//! public registry is ever asked for an image this project does not publish there.
//!
//! [`PAUSE`] is the one image not of our own: the pod sandbox ("pause") image that containerd
//! starts for every pod, built from upstream's own `build/pause/linux/pause.c` in the Kubernetes
//! Go module (see [`build_pause`]), because a lab without a registry cannot pull it.
//!
//! I/O: reads the binaries and libraries, runs `ldd`, writes the output folder; for the pause
//! image also `go mod download` (when the module is not cached yet) and `gcc`. The reader half
//! ([`read_layout`]) parses a layout back (index → manifest → config and layers) and checks every
//! blob's digest, and [`unpack`] extracts its layers into a root filesystem, for the tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// The tag every image gets: the workspace version, which is also the chart's `appVersion`.
pub const TAG: &str = env!("CARGO_PKG_VERSION");

/// The uid and gid the operator runs as (the chart's `runAsUser`/`runAsGroup`).
pub const NONROOT: u32 = 65532;

/// Where our binaries sit in the image.
pub const BIN_DIR: &str = "usr/local/bin";

/// The Kubernetes release whose `build/pause` sources the pause image is compiled from: the
/// same release `tests/controlplane/build.sh` builds the control plane and kubelets from.
pub const KUBERNETES_VERSION: &str = "v1.35.4";

/// The pause image's repository: upstream's, so the runtime's default needs no change.
pub const PAUSE_REPOSITORY: &str = "registry.k8s.io/pause";

/// The pause release: `TAG` in `build/pause/Makefile` of [`KUBERNETES_VERSION`] (checked when
/// building, see [`pause_source`]).
pub const PAUSE_TAG: &str = "3.10.1";

/// The sandbox image containerd v2.2.10 uses when its config names none
/// (`DefaultSandboxImage` in `internal/cri/config/config.go`, the default of
/// `pinned_images.sandbox`). The pause image carries exactly this name, so importing it is all
/// a containerd with a default config needs: nothing is pulled and no config changes.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10.1";

/// One image to build; `'t` is the tag's lifetime (`'static` for [`IMAGES`] and [`PAUSE`],
/// shorter for one retagged with [`ImageSpec::with_tag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSpec<'t> {
    /// The binary (file name in the folder it is built into); also names the layout folder and
    /// the archive.
    pub binary: &'static str,
    /// Where the binary sits in the image (relative to `/`); the entrypoint.
    pub path: &'static str,
    /// Fully qualified repository (registry host included), as the chart's values name it
    /// (`image.repository`, `nodeImage.repository`).
    pub repository: &'static str,
    /// The tag: the workspace version for our images, unless retagged.
    pub tag: &'t str,
    /// uid (and gid) of the process, recorded as the config's `User`.
    pub user: u32,
    /// Other host programs the binary runs, copied to the same path with their libraries.
    pub programs: &'static [&'static str],
}

impl ImageSpec<'_> {
    /// The same image under another tag, so that two versions of one build can be told apart
    /// (an upgrade test needs two images whose digests differ: the tag is in the config's
    /// `org.opencontainers.image.version` label and the manifest's annotations, so they do;
    /// the layer, the same binaries, is shared). Check the tag first with [`check_tag`].
    pub fn with_tag<'t>(&self, tag: &'t str) -> ImageSpec<'t> {
        ImageSpec {
            binary: self.binary,
            path: self.path,
            repository: self.repository,
            tag,
            user: self.user,
            programs: self.programs,
        }
    }

    /// `repository:tag`, the reference the chart renders by default and the name the archive
    /// carries for `ctr images import`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// The entrypoint: the absolute path of the binary in the image.
    pub fn entrypoint(&self) -> String {
        format!("/{}", self.path)
    }

    /// File name of the archive [`write_image`] writes: `<binary>-<tag>.oci.tar`.
    pub fn archive_name(&self) -> String {
        format!("{}-{}.oci.tar", self.binary, self.tag)
    }
}

/// The images lvstun ships. The operator runs as [`NONROOT`]; the node daemon runs as root
/// with every capability dropped but NET_ADMIN and NET_RAW (and SYS_NICE; see the DaemonSet the operator
/// builds: capabilities added to a container reach a non-root process only through file
/// capabilities). `nft` is in the node image because the web role drives nf_tables through it
/// (see node-daemon/src/net/arp_guard.rs).
pub const IMAGES: [ImageSpec<'static>; 2] = [
    ImageSpec {
        binary: "lvstun-operator",
        path: "usr/local/bin/lvstun-operator",
        repository: "localhost/lvstun/lvstun-operator",
        tag: TAG,
        user: NONROOT,
        programs: &[],
    },
    ImageSpec {
        binary: "lvstun-node",
        path: "usr/local/bin/lvstun-node",
        repository: "localhost/lvstun/lvstun-node",
        tag: TAG,
        user: 0,
        programs: &["/usr/sbin/nft"],
    },
];

/// The pod sandbox image, laid out as upstream's `build/pause/Dockerfile` does: the static
/// binary at `/pause` as the entrypoint, user 65535:65535. Not one of [`IMAGES`]: it is a
/// fixture for clusters without a registry (the lab's kubelets), built by [`build_pause`].
pub const PAUSE: ImageSpec<'static> = ImageSpec {
    binary: "pause",
    path: "pause",
    repository: PAUSE_REPOSITORY,
    tag: PAUSE_TAG,
    user: 65535,
    programs: &[],
};

/// Whether `tag` is a valid image tag (the OCI distribution spec's
/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`); it also names the archive, so a `/` or `..` could
/// not write outside the output folder. Refused, never mended: a reference the runtime would
/// reject is better said at build time.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?}: expected 1-128 characters of [A-Za-z0-9_.-], not starting with . or -"
        ))
    }
}

/// Media types (OCI image spec v1.1).
pub mod media {
    /// The index of a layout.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
}

/// Why building or reading an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `ldd` failed or named a library it could not find.
    #[error("ldd {binary}: {detail}")]
    Ldd {
        /// The program examined.
        binary: String,
        /// What went wrong.
        detail: String,
    },
    /// A path or size that a ustar header cannot hold.
    #[error("tar entry {path}: {detail}")]
    Tar {
        /// The entry.
        path: String,
        /// What does not fit.
        detail: String,
    },
    /// `tar` could not extract a layer.
    #[error("unpacking layer {layer}: {detail}")]
    Unpack {
        /// The layer blob.
        layer: String,
        /// tar's status and stderr.
        detail: String,
    },
    /// The Kubernetes module holding the pause source could not be downloaded or is not the
    /// release expected.
    #[error("pause source (k8s.io/kubernetes@{version}): {detail}")]
    PauseSource {
        /// The module version asked for.
        version: String,
        /// What went wrong.
        detail: String,
    },
    /// `gcc` could not compile the pause binary.
    #[error("compiling {source_file}: {detail}")]
    Compile {
        /// The C file.
        source_file: String,
        /// gcc's status and stderr.
        detail: String,
    },
    /// A layout that does not parse or whose blobs do not match their digests.
    #[error("OCI layout {dir}: {detail}")]
    Layout {
        /// The layout folder.
        dir: String,
        /// What is wrong.
        detail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}

fn layout_err(dir: &Path, detail: impl Into<String>) -> ImageError {
    ImageError::Layout {
        dir: dir.display().to_string(),
        detail: detail.into(),
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The libraries a dynamically linked program loads, as absolute paths in the order `ldd`
/// prints them; the ELF interpreter is among them (`/lib64/ld-linux-x86-64.so.2` on amd64).
///
/// Why `ldd` and not an ELF parser: it resolves exactly as the loader will at run time
/// (search paths, `DT_RUNPATH`, transitive dependencies), and the binaries are our own, so
/// letting the loader inspect them is safe.
pub fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let name = program.display().to_string();
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(io(format!("running ldd {name}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static binary makes ldd print "not a dynamic executable" and exit 1.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("not a dynamic executable") || stdout.contains("statically linked") {
            return Ok(Vec::new());
        }
        return Err(ImageError::Ldd {
            binary: name,
            detail: format!("exit {}: {}", out.status, stderr.trim()),
        });
    }
    parse_ldd(&stdout).map_err(|detail| ImageError::Ldd {
        binary: name,
        detail,
    })
}

/// Parses `ldd` output. Lines are `name => /path (0x...)`, `/path (0x...)` (the interpreter)
/// or `linux-vdso.so.1 (0x...)` (provided by the kernel, no file); `name => not found` is an
/// error because the image would not start.
pub fn parse_ldd(stdout: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((lib, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("{} not found", lib.trim()));
                }
                rest
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if !path.starts_with("linux-vdso") && !path.starts_with("linux-gate") {
            return Err(format!("unexpected line {line:?}"));
        }
    }
    Ok(libs)
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory with its mode.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
}

/// A root filesystem being assembled: paths relative to `/`, without a leading slash.
#[derive(Debug, Default, Clone)]
pub struct RootFs {
    entries: BTreeMap<String, Entry>,
}

impl RootFs {
    /// Adds a directory and its parents (mode 0755 unless already present).
    pub fn dir(&mut self, path: &str, mode: u32) {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755);
        }
        self.entries
            .entry(format!("{path}/"))
            .or_insert(Entry::Dir { mode });
    }

    /// Adds a regular file and its parent directories.
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755);
        }
        self.entries
            .insert(path.to_string(), Entry::File { mode, data });
    }

    /// Paths in layer order (directories end with `/`).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The layer: a ustar archive with entries sorted by path (a directory sorts before what it
    /// holds), owner 0:0 without names, every mtime `mtime`.
    pub fn to_tar(&self, mtime: u64) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::new();
        for (path, entry) in &self.entries {
            match entry {
                Entry::Dir { mode } => tar_entry(&mut out, path, *mode, b'5', &[], mtime)?,
                Entry::File { mode, data } => tar_entry(&mut out, path, *mode, b'0', data, mtime)?,
            }
        }
        // End of archive: two zero blocks.
        out.extend_from_slice(&[0u8; 1024]);
        Ok(out)
    }
}

/// Writes `value` as zero-padded octal filling `field` but its last byte (a NUL).
fn octal(field: &mut [u8], value: u64, path: &str) -> Result<(), ImageError> {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    if text.len() > width {
        return Err(ImageError::Tar {
            path: path.into(),
            detail: format!("{value} does not fit {width} octal digits"),
        });
    }
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
    Ok(())
}

/// Appends one ustar header (POSIX.1-1988) and the data padded to 512 bytes.
fn tar_entry(
    out: &mut Vec<u8>,
    path: &str,
    mode: u32,
    kind: u8,
    data: &[u8],
    mtime: u64,
) -> Result<(), ImageError> {
    let mut h = [0u8; 512];
    if path.len() > 100 {
        return Err(ImageError::Tar {
            path: path.into(),
            detail: "longer than the 100 bytes of a ustar name".into(),
        });
    }
    h[..path.len()].copy_from_slice(path.as_bytes());
    octal(&mut h[100..108], u64::from(mode), path)?;
    octal(&mut h[108..116], 0, path)?; // uid
    octal(&mut h[116..124], 0, path)?; // gid
    octal(&mut h[124..136], data.len() as u64, path)?;
    octal(&mut h[136..148], mtime, path)?;
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field read as eight spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.resize(out.len() + pad, 0);
    Ok(())
}

/// The root filesystem of one image, read from the host: the binary from `bin_dir`, the
/// spec's other programs, and every library `ldd` names for any of them, each at the path the
/// loader will open. Directories are 0755 and `/tmp` 1777; files keep only whether they are
/// executable (0755 or 0644), so a host's umask does not reach the digest.
pub fn root_fs(spec: &ImageSpec, bin_dir: &Path) -> Result<RootFs, ImageError> {
    let binary = bin_dir.join(spec.binary);
    let mut fs = RootFs::default();
    fs.dir("tmp", 0o1777);
    fs.dir("etc", 0o755);
    let mut programs = vec![(binary.clone(), spec.path.to_string())];
    programs.extend(
        spec.programs
            .iter()
            .map(|p| (PathBuf::from(p), p.to_string())),
    );
    for (host, in_image) in programs {
        fs.file(&in_image, 0o755, read(&host)?);
        for lib in shared_libraries(&host)? {
            let data = read(&lib)?;
            fs.file(&lib.display().to_string(), mode_of(&lib)?, data);
        }
    }
    Ok(fs)
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(io(format!("reading {}", path.display())))
}

fn mode_of(path: &Path) -> Result<u32, ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(io(format!("stat {}", path.display())))?;
    Ok(if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    })
}

/// The blobs of one image, ready to write.
#[derive(Debug, Clone)]
pub struct Image {
    /// `repository:tag`.
    pub reference: String,
    /// The image config (JSON).
    pub config: Vec<u8>,
    /// The one layer (tar).
    pub layer: Vec<u8>,
    /// The manifest (JSON).
    pub manifest: Vec<u8>,
    /// `index.json` of the layout.
    pub index: Vec<u8>,
}

impl Image {
    /// The image's digest: the manifest's, as a registry and `crictl images` show it.
    pub fn digest(&self) -> String {
        digest(&self.manifest)
    }

    /// Bytes of all blobs (config, layer, manifest): what a registry stores for it.
    pub fn size(&self) -> u64 {
        (self.config.len() + self.layer.len() + self.manifest.len()) as u64
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
}

fn to_json(v: &Value) -> Vec<u8> {
    // serde_json's map is ordered by key (no `preserve_order` feature): fixed bytes.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Assembles config, manifest and index around a root filesystem. No timestamps: the config's
/// optional `created` and the history are left out, so only the files make the digest.
pub fn assemble(spec: &ImageSpec, fs: &RootFs, mtime: u64) -> Result<Image, ImageError> {
    let layer = fs.to_tar(mtime)?;
    let user = format!("{0}:{0}", spec.user);
    let config = to_json(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": user,
            "Entrypoint": [spec.entrypoint()],
            "Env": ["PATH=/usr/local/bin:/usr/sbin"],
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.title": spec.binary,
                "org.opencontainers.image.version": spec.tag,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    }));
    let manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "config": descriptor(media::CONFIG, &config),
        "layers": [descriptor(media::LAYER_TAR, &layer)],
        "annotations": {
            "org.opencontainers.image.title": spec.binary,
            "org.opencontainers.image.version": spec.tag,
        },
    }));
    let mut m = descriptor(media::MANIFEST, &manifest);
    // `ref.name` is the tag within the layout (skopeo's `oci:DIR:TAG`). containerd's import
    // (`ctr images import`, both its transfer-service and `--local` paths) names the image after
    // `io.containerd.image.name` when present, unchanged, and only falls back to `ref.name`
    // (prefixed with `--base-name` or `import-<date>`) without it; so the fully qualified name
    // goes there and the tag stays usable by skopeo.
    m["annotations"] = json!({
        "org.opencontainers.image.ref.name": spec.tag,
        "io.containerd.image.name": spec.reference(),
    });
    let index = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": media::INDEX,
        "manifests": [m],
    }));
    Ok(Image {
        reference: spec.reference(),
        config,
        layer,
        manifest,
        index,
    })
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// The layout's files (relative path, contents), sorted.
fn layout_files(image: &Image) -> RootFs {
    let mut fs = RootFs::default();
    fs.file("oci-layout", 0o644, OCI_LAYOUT.to_vec());
    fs.file("index.json", 0o644, image.index.clone());
    for blob in [&image.config, &image.layer, &image.manifest] {
        fs.file(&blob_path(&digest(blob)), 0o644, blob.clone());
    }
    fs
}

/// What [`write_image`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The layout folder.
    pub layout: PathBuf,
    /// The same layout as one tar.
    pub archive: PathBuf,
}

/// Writes `<out>/<binary>/` (an OCI image layout, replaced if present) and
/// `<out>/<binary>-<tag>.oci.tar` (the same files in one reproducible tar). The layout folder
/// is per binary, so it holds the last tag built into `out`; the archives are per tag, so two
/// versions built into one folder (see [`ImageSpec::with_tag`]) sit side by side, ready to
/// import.
pub fn write_image(
    spec: &ImageSpec,
    image: &Image,
    out: &Path,
    mtime: u64,
) -> Result<Written, ImageError> {
    let layout = out.join(spec.binary);
    if layout.exists() {
        std::fs::remove_dir_all(&layout).map_err(io(format!("removing {}", layout.display())))?;
    }
    let files = layout_files(image);
    for (path, entry) in &files.entries {
        let target = layout.join(path);
        match entry {
            Entry::Dir { .. } => std::fs::create_dir_all(&target),
            Entry::File { data, .. } => std::fs::write(&target, data),
        }
        .map_err(io(format!("writing {}", target.display())))?;
    }
    let archive = out.join(spec.archive_name());
    std::fs::write(&archive, files.to_tar(mtime)?)
        .map_err(io(format!("writing {}", archive.display())))?;
    Ok(Written { layout, archive })
}

/// Builds one image from the binaries in `bin_dir` into `out`.
pub fn build(
    spec: &ImageSpec,
    bin_dir: &Path,
    out: &Path,
    mtime: u64,
) -> Result<(Image, Written), ImageError> {
    let fs = root_fs(spec, bin_dir)?;
    let image = assemble(spec, &fs, mtime)?;
    std::fs::create_dir_all(out).map_err(io(format!("creating {}", out.display())))?;
    let written = write_image(spec, &image, out, mtime)?;
    Ok((image, written))
}

/// The Go module cache the project's Go builds share (`tests/controlplane/build.sh` sets
/// `GOMODCACHE` to the same folder), so the Kubernetes module is downloaded once.
pub fn go_mod_cache() -> PathBuf {
    crate::controlplane::cache_dir().join("go/mod")
}

fn pause_err(detail: impl Into<String>) -> ImageError {
    ImageError::PauseSource {
        version: KUBERNETES_VERSION.into(),
        detail: detail.into(),
    }
}

/// Where `pause.c` lives inside the Kubernetes module.
pub const PAUSE_SOURCE: &str = "build/pause/linux/pause.c";

/// `build/pause/linux/pause.c` of k8s.io/kubernetes@[`KUBERNETES_VERSION`] in `gomodcache`,
/// downloaded with `go mod download` (through the Go module proxy, like every Go build of the
/// project) when that module is not there yet.
///
/// Why the Go module and not a copy in this repository: it is upstream's own source at a
/// pinned release, checksummed by the Go module system (`go.sum` database), and the control
/// plane build needs the same module anyway. The release's `build/pause/Makefile` must name
/// [`PAUSE_TAG`], so the image is really the pause that its name says.
pub fn pause_source(gomodcache: &Path) -> Result<PathBuf, ImageError> {
    let mut module = gomodcache.join(format!("k8s.io/kubernetes@{KUBERNETES_VERSION}"));
    if !module.join(PAUSE_SOURCE).is_file() {
        let out = Command::new("go")
            .args(["mod", "download", "-json"])
            .arg(format!("k8s.io/kubernetes@{KUBERNETES_VERSION}"))
            .env("GOMODCACHE", gomodcache)
            .env("GOFLAGS", "-modcacherw")
            .env("GOTOOLCHAIN", "local")
            // Outside any module, so no go.mod around changes what is resolved.
            .current_dir(std::env::temp_dir())
            .output()
            .map_err(io("running go mod download (is Go installed?)"))?;
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if !out.status.success() || info.get("Error").is_some() {
            return Err(pause_err(format!(
                "go mod download exited with {}: {} {}",
                out.status,
                info["Error"].as_str().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        module = info["Dir"]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| pause_err("go mod download printed no Dir"))?;
    }
    let source = module.join(PAUSE_SOURCE);
    if !source.is_file() {
        return Err(pause_err(format!(
            "no {PAUSE_SOURCE} in {}",
            module.display()
        )));
    }
    let makefile = read(&module.join("build/pause/Makefile"))?;
    let tag = makefile_tag(&String::from_utf8_lossy(&makefile));
    if tag.as_deref() != Some(PAUSE_TAG) {
        return Err(pause_err(format!(
            "build/pause/Makefile has TAG {tag:?}, expected {PAUSE_TAG}"
        )));
    }
    Ok(source)
}

/// The `TAG ?= X` default of upstream's `build/pause/Makefile`.
pub fn makefile_tag(makefile: &str) -> Option<String> {
    makefile.lines().find_map(|l| {
        let (name, value) = l.split_once("?=")?;
        (name.trim() == "TAG").then(|| value.trim().to_string())
    })
}

/// The `VERSION` macro the binary is compiled with (`pause -v` prints `pause.c <it>`):
/// upstream's Makefile passes `v$(TAG)-$(REV)` with `REV` from `git describe`; the module has
/// no git history, so `REV` is the release the source comes from.
pub fn pause_version() -> String {
    format!("v{PAUSE_TAG}-{KUBERNETES_VERSION}")
}

/// Compiles `source` (upstream's `pause.c`) into `<build_dir>/pause` with upstream's flags:
/// `-Os -Wall -Werror -static`, glibc linked in, so the image needs no library and no loader.
///
/// gcc runs in the source's folder and is given the bare file name, so no path of this machine
/// reaches the binary (the symbol table's file symbol): the same compiler and libc give the
/// same bytes, hence the same image digest.
pub fn compile_pause(source: &Path, build_dir: &Path) -> Result<PathBuf, ImageError> {
    let compile_err = |detail: String| ImageError::Compile {
        source_file: source.display().to_string(),
        detail,
    };
    let (Some(dir), Some(file)) = (source.parent(), source.file_name()) else {
        return Err(compile_err("not a file path".into()));
    };
    std::fs::create_dir_all(build_dir).map_err(io(format!("creating {}", build_dir.display())))?;
    let build_dir = build_dir
        .canonicalize()
        .map_err(io(format!("resolving {}", build_dir.display())))?;
    let binary = build_dir.join(PAUSE.binary);
    let out = Command::new("gcc")
        .args(["-Os", "-Wall", "-Werror", "-static"])
        .arg(format!("-DVERSION={}", pause_version()))
        .arg("-o")
        .arg(&binary)
        .arg(file)
        .current_dir(dir)
        .output()
        .map_err(io("running gcc (is it installed, with the static libc.a?)"))?;
    if !out.status.success() {
        return Err(compile_err(format!(
            "gcc exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(binary)
}

/// Builds the [`PAUSE`] image into `out` (layout `<out>/pause/`, archive
/// `<out>/pause-<tag>.oci.tar`, named [`SANDBOX_IMAGE`]): finds or downloads upstream's source
/// in `gomodcache`, compiles it into `<out>/.pause-build/`, and packages it like our images.
pub fn build_pause(
    gomodcache: &Path,
    out: &Path,
    mtime: u64,
) -> Result<(Image, Written), ImageError> {
    let source = pause_source(gomodcache)?;
    let build_dir = out.join(".pause-build");
    compile_pause(&source, &build_dir)?;
    build(&PAUSE, &build_dir, out, mtime)
}

/// `SOURCE_DATE_EPOCH` (the reproducible-builds convention), or 0 when unset. A value that is
/// not a number is refused rather than replaced.
pub fn source_date_epoch() -> Result<u64, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
    }
}

/// An image read back from a layout folder, every blob checked against its digest.
#[derive(Debug, Clone)]
pub struct ReadImage {
    /// The manifest's digest (from `index.json`).
    pub digest: String,
    /// `org.opencontainers.image.ref.name` of the index entry.
    pub tag: String,
    /// The parsed config.
    pub config: Value,
    /// The layer blobs, in order (base first).
    pub layers: Vec<PathBuf>,
}

fn read_blob(dir: &Path, descriptor: &Value) -> Result<(Vec<u8>, PathBuf), ImageError> {
    let d = descriptor["digest"]
        .as_str()
        .ok_or_else(|| layout_err(dir, format!("descriptor without digest: {descriptor}")))?;
    let path = dir.join(blob_path(d));
    let bytes = read(&path)?;
    if digest(&bytes) != d {
        return Err(layout_err(
            dir,
            format!("blob {d} does not match its digest"),
        ));
    }
    if descriptor["size"].as_u64() != Some(bytes.len() as u64) {
        return Err(layout_err(dir, format!("blob {d} does not match its size")));
    }
    Ok((bytes, path))
}

fn parse(dir: &Path, bytes: &[u8], what: &str) -> Result<Value, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| layout_err(dir, format!("{what}: {e}")))
}

/// Reads the one image of a layout: `index.json` → manifest → config and layers.
pub fn read_layout(dir: &Path) -> Result<ReadImage, ImageError> {
    let layout = parse(dir, &read(&dir.join("oci-layout"))?, "oci-layout")?;
    if layout["imageLayoutVersion"] != "1.0.0" {
        return Err(layout_err(dir, format!("unknown layout {layout}")));
    }
    let index = parse(dir, &read(&dir.join("index.json"))?, "index.json")?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let [entry] = entries.as_slice() else {
        return Err(layout_err(
            dir,
            format!("expected one manifest, found {}", entries.len()),
        ));
    };
    if entry["mediaType"] != media::MANIFEST {
        return Err(layout_err(dir, format!("not an image manifest: {entry}")));
    }
    let (manifest, _) = read_blob(dir, entry)?;
    let manifest = parse(dir, &manifest, "manifest")?;
    let (config, _) = read_blob(dir, &manifest["config"])?;
    let config = parse(dir, &config, "config")?;
    let mut layers = Vec::new();
    for layer in manifest["layers"].as_array().cloned().unwrap_or_default() {
        if layer["mediaType"] != media::LAYER_TAR {
            return Err(layout_err(dir, format!("unexpected layer type: {layer}")));
        }
        let (_, path) = read_blob(dir, &layer)?;
        layers.push(path);
    }
    Ok(ReadImage {
        digest: entry["digest"].as_str().unwrap_or_default().to_string(),
        tag: entry["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        config,
        layers,
    })
}

/// Reads the layout at `layout` and extracts its layers, base first, into `root` (created if
/// missing), as a container runtime would before starting the entrypoint.
///
/// Why GNU tar and not our own reader: it is a second implementation of the format, so what
/// [`RootFs::to_tar`] wrote is proven readable by a tool we did not write. `--numeric-owner`
/// keeps the layer's 0:0 owners (when run as root) instead of mapping names.
pub fn unpack(layout: &Path, root: &Path) -> Result<ReadImage, ImageError> {
    let image = read_layout(layout)?;
    std::fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
    for layer in &image.layers {
        let out = Command::new("tar")
            .arg("--extract")
            .arg("--numeric-owner")
            .arg("--file")
            .arg(layer)
            .arg("--directory")
            .arg(root)
            .output()
            .map_err(io(format!("running tar for {}", layer.display())))?;
        if !out.status.success() {
            return Err(ImageError::Unpack {
                layer: layer.display().to_string(),
                detail: format!(
                    "tar exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ldd_output_is_parsed_and_a_missing_library_refused() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f04)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f04)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f04)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert_eq!(err, "libfoo.so.1 not found");
    }

    #[test]
    fn tar_headers_are_ustar_with_valid_checksums_and_sorted_entries() {
        let mut fs = RootFs::default();
        fs.file("usr/local/bin/x", 0o755, b"hello".to_vec());
        fs.dir("tmp", 0o1777);
        assert_eq!(
            fs.paths().collect::<Vec<_>>(),
            [
                "tmp/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/x"
            ]
        );
        let tar = fs.to_tar(1_700_000_000).unwrap();
        // 5 headers, one data block, two end blocks.
        assert_eq!(tar.len(), 512 * 8);
        let file = &tar[512 * 4..512 * 5];
        assert_eq!(&file[..15], b"usr/local/bin/x");
        assert_eq!(&file[100..108], b"0000755\0");
        assert_eq!(&file[124..136], b"00000000005\0");
        assert_eq!(
            &file[136..148],
            format!("{:011o}\0", 1_700_000_000).as_bytes()
        );
        assert_eq!(&file[257..263], b"ustar\0");
        let mut blank = file.to_vec();
        blank[148..156].copy_from_slice(b"        ");
        let sum: u32 = blank.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(&file[148..156], format!("{sum:06o}\0 ").as_bytes());
        assert_eq!(&tar[512 * 5..512 * 5 + 5], b"hello");
        assert_eq!(&tar[0..4], b"tmp/");
        assert_eq!(&tar[100..108], b"0001777\0");
    }

    #[test]
    fn a_name_longer_than_ustar_allows_is_refused() {
        let mut fs = RootFs::default();
        fs.file(&"a".repeat(101), 0o644, Vec::new());
        assert!(matches!(fs.to_tar(0), Err(ImageError::Tar { .. })));
    }

    #[test]
    fn assembled_image_links_index_manifest_config_and_layer_by_digest() {
        let mut fs = RootFs::default();
        fs.file("usr/local/bin/lvstun-node", 0o755, b"\x7fELF".to_vec());
        let spec = IMAGES[1];
        let img = assemble(&spec, &fs, 0).unwrap();
        let index: Value = serde_json::from_slice(&img.index).unwrap();
        assert_eq!(index["manifests"][0]["digest"], img.digest());
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            format!("localhost/lvstun/lvstun-node:{TAG}")
        );
        let manifest: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(manifest["config"]["digest"], digest(&img.config));
        assert_eq!(manifest["layers"][0]["digest"], digest(&img.layer));
        let config: Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], digest(&img.layer));
        assert_eq!(config["config"]["User"], "0:0");
        assert!(config.get("created").is_none() && config.get("history").is_none());
        // Same input, same bytes; another epoch, another layer.
        assert_eq!(assemble(&spec, &fs, 0).unwrap().digest(), img.digest());
        assert_ne!(assemble(&spec, &fs, 1).unwrap().digest(), img.digest());
    }

    #[test]
    fn every_image_is_named_fully_qualified_and_the_pause_image_as_containerds_default() {
        assert_eq!(
            IMAGES.map(|s| s.reference()),
            [
                format!("localhost/lvstun/lvstun-operator:{TAG}"),
                format!("localhost/lvstun/lvstun-node:{TAG}"),
            ]
        );
        for spec in IMAGES {
            assert_eq!(spec.path, format!("{BIN_DIR}/{}", spec.binary));
            assert_eq!(
                spec.archive_name(),
                format!("{}-{TAG}.oci.tar", spec.binary)
            );
        }
        assert_eq!(PAUSE.reference(), SANDBOX_IMAGE);
        assert_eq!(PAUSE.entrypoint(), "/pause");
        assert_eq!(PAUSE.archive_name(), "pause-3.10.1.oci.tar");
        assert_eq!(pause_version(), "v3.10.1-v1.35.4");
        // What the archive tells `ctr images import` to call it.
        let img = assemble(&PAUSE, &RootFs::default(), 0).unwrap();
        let index: Value = serde_json::from_slice(&img.index).unwrap();
        let annotations = &index["manifests"][0]["annotations"];
        assert_eq!(annotations["io.containerd.image.name"], SANDBOX_IMAGE);
        assert_eq!(annotations["org.opencontainers.image.ref.name"], PAUSE_TAG);
    }

    #[test]
    fn tags_are_checked_not_mended() {
        for good in ["0.1.0", "0.1.0-upgrade", "_x", "V1.2_rc.3"] {
            assert_eq!(check_tag(good), Ok(()), "{good}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "../x",
            "a:b",
            "a b",
            long.as_str(),
        ] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pause_makefiles_tag_default_is_read() {
        let makefile = "REGISTRY ?= staging-k8s.gcr.io\nIMAGE = $(REGISTRY)/pause\n\n\
                        TAG ?= 3.10.1\nREV = $(shell git describe)\n";
        assert_eq!(makefile_tag(makefile).as_deref(), Some("3.10.1"));
        assert_eq!(makefile_tag("IMAGE_TAG ?= 1\n"), None);
    }

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        assert_eq!(
            digest(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
