//! The container images (`lvstun_tests::images`, `./dev images`): built twice from the same
//! release binaries they are identical to the byte; their layouts parse (index → manifest →
//! config → layer, every digest checked) by our reader and by skopeo; the binaries start from
//! the unpacked root filesystem alone (chroot, so nothing of the host's leaks in); the node
//! image's daemon, started from that root filesystem in the lab VM, programs the seed's service
//! into a real kernel and forwards traffic (`tests/lab/scenarios/image-node.sh`); the chart and
//! the operator name exactly these images by default, and each archive carries exactly that
//! fully qualified name for `ctr images import`. The pause image is upstream's `pause.c`,
//! compiled static, named as containerd's default sandbox image, and behaves as upstream's:
//! it runs from its unpacked root filesystem alone and exits 0 on SIGTERM and SIGINT.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns panic on purpose

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lvstun_tests::controlplane::{bin_dir as k8s_bin_dir, repo_root};
use lvstun_tests::images::{
    self, BIN_DIR, IMAGES, ImageSpec, KUBERNETES_VERSION, NONROOT, PAUSE, SANDBOX_IMAGE, TAG,
};
use lvstun_tests::lab::{self, LabRun, ScenarioOptions, parse};
use serde_json::Value;

/// A fixed epoch (2023-11-14), so the tests do not depend on the environment's.
const EPOCH: u64 = 1_700_000_000;

/// Builds the release binaries the images hold (once per process; see `lab::ensure_built_bins`).
fn release_bins() -> PathBuf {
    lab::ensure_built_bins(&[
        ("lvstun-node", "lvstun-node"),
        ("lvstun-operator", "lvstun-operator"),
    ])
    .unwrap();
    lab::bin_dir()
}

/// A fresh scratch folder for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lvstun-images-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} exited with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    // /proc/self belongs to the process's effective uid.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn spec(binary: &str) -> ImageSpec<'static> {
    *IMAGES.iter().find(|s| s.binary == binary).unwrap()
}

#[test]
fn building_twice_gives_the_same_bytes_and_another_epoch_another_digest() {
    let bins = release_bins();
    let scratch = Scratch::new("repro");
    for spec in &IMAGES {
        let (a, wa) = images::build(spec, &bins, &scratch.0.join("a"), EPOCH).unwrap();
        let (b, wb) = images::build(spec, &bins, &scratch.0.join("b"), EPOCH).unwrap();
        assert_eq!(a.digest(), b.digest(), "{}", spec.binary);
        assert_eq!(
            std::fs::read(&wa.archive).unwrap(),
            std::fs::read(&wb.archive).unwrap(),
            "{}: the .oci.tar differs",
            spec.binary
        );
        // The epoch really reaches the layer (so the equality above is not vacuous).
        let (c, _) = images::build(spec, &bins, &scratch.0.join("c"), EPOCH + 1).unwrap();
        assert_ne!(a.digest(), c.digest(), "{}", spec.binary);
        eprintln!("{}  {}  {} bytes", a.reference, a.digest(), a.size());
    }
}

#[test]
fn layouts_hold_exactly_the_binary_its_libraries_and_a_fixed_owner_and_time() {
    let bins = release_bins();
    let scratch = Scratch::new("contents");
    for spec in &IMAGES {
        let (built, written) = images::build(spec, &bins, &scratch.0, EPOCH).unwrap();
        let image = images::read_layout(&written.layout).unwrap();
        assert_eq!(image.digest, built.digest());
        assert_eq!(image.tag, TAG);
        let cfg = &image.config["config"];
        assert_eq!(cfg["User"], format!("{0}:{0}", spec.user));
        assert_eq!(
            cfg["Entrypoint"],
            serde_json::json!([format!("/{BIN_DIR}/{}", spec.binary)])
        );
        assert!(
            image.config.get("created").is_none(),
            "no timestamp in the config"
        );
        assert_eq!(image.layers.len(), 1);

        // What tar lists: regular files are the binary, the spec's programs and what ldd names
        // for them, nothing else; owner 0/0 and the epoch everywhere.
        let listing = stdout(&run(Command::new("tar")
            .args([
                "--list",
                "--verbose",
                "--numeric-owner",
                "--full-time",
                "--file",
            ])
            .arg(&image.layers[0])
            .env("TZ", "UTC")));
        let mut expected: BTreeSet<String> = BTreeSet::from([format!("{BIN_DIR}/{}", spec.binary)]);
        let mut programs = vec![bins.join(spec.binary)];
        programs.extend(spec.programs.iter().map(PathBuf::from));
        for p in &programs {
            for lib in images::shared_libraries(p).unwrap() {
                expected.insert(lib.display().to_string().trim_start_matches('/').into());
            }
        }
        expected.extend(
            spec.programs
                .iter()
                .map(|p| p.trim_start_matches('/').to_string()),
        );
        let mut files = BTreeSet::new();
        for line in listing.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols[1], "0/0", "{line}");
            assert_eq!(
                format!("{} {}", cols[3], cols[4]),
                "2023-11-14 22:13:20",
                "{line}"
            );
            if cols[0].starts_with('-') {
                files.insert(cols[5].to_string());
            } else {
                assert!(cols[0].starts_with('d'), "only files and folders: {line}");
            }
        }
        assert_eq!(files, expected, "{}", spec.binary);
        assert!(
            files.iter().any(|f| f.contains("ld-linux")),
            "the ELF interpreter is in the image: {files:?}"
        );
    }
}

#[test]
fn skopeo_reads_both_forms_and_verifies_every_blob() {
    let bins = release_bins();
    let scratch = Scratch::new("skopeo");
    let skopeo = which("skopeo").expect("skopeo is missing: tests/lab/setup.sh installs it");
    for spec in &IMAGES {
        let (built, written) = images::build(spec, &bins, &scratch.0.join("out"), EPOCH).unwrap();
        for source in [
            format!("oci:{}:{TAG}", written.layout.display()),
            format!("oci-archive:{}", written.archive.display()),
        ] {
            let inspect: Value = serde_json::from_slice(
                &run(Command::new(&skopeo).args(["inspect", &source])).stdout,
            )
            .unwrap();
            assert_eq!(inspect["Digest"], built.digest(), "{source}");
            assert_eq!(inspect["Architecture"], "amd64");
            // A copy reads every blob and checks it against its digest.
            let dest = scratch.0.join(format!("copy-{}", spec.binary));
            let _ = std::fs::remove_dir_all(&dest);
            run(Command::new(&skopeo).args([
                "copy",
                "--quiet",
                &source,
                &format!("dir:{}", dest.display()),
            ]));
            assert_eq!(
                std::fs::read(dest.join("manifest.json")).unwrap(),
                built.manifest,
                "{source}: copied unchanged"
            );
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

#[test]
fn binaries_run_from_the_unpacked_root_filesystem_alone() {
    if !is_root() {
        eprintln!(
            "SKIPPED binaries_run_from_the_unpacked_root_filesystem_alone: chroot needs root \
             (CI runs ./dev test as root)"
        );
        return;
    }
    let bins = release_bins();
    let scratch = Scratch::new("chroot");
    let built: Vec<_> = IMAGES
        .iter()
        .map(|spec| images::build(spec, &bins, &scratch.0.join("out"), EPOCH).unwrap())
        .collect();
    for (spec, (_, written)) in IMAGES.iter().zip(&built) {
        let root = scratch.0.join(format!("rootfs-{}", spec.binary));
        let image = images::unpack(&written.layout, &root).unwrap();
        let entry = image.config["config"]["Entrypoint"][0]
            .as_str()
            .unwrap()
            .to_string();
        // As the image's user: the operator's is not root, so this also proves that uid can
        // read and run everything it needs.
        let chroot = |args: &[&str]| {
            // Resolved here: with the environment cleared, the child has no PATH to search.
            let mut c = Command::new(which("chroot").unwrap());
            c.arg(format!("--userspec={0}:{0}", spec.user))
                .arg(&root)
                .arg(&entry)
                .args(args)
                .env_clear();
            stdout(&run(&mut c))
        };
        assert_eq!(
            chroot(&["--version"]).trim(),
            format!("{} {TAG}", spec.binary)
        );
        let help = chroot(&["--help"]);
        assert!(help.to_lowercase().contains("usage"), "{help}");
        match spec.binary {
            "lvstun-operator" => {
                assert_eq!(spec.user, NONROOT);
                // The operator's default for the DaemonSets' image is the node image built here.
                assert!(
                    help.contains(&format!("[default: {}]", spec_ref("lvstun-node"))),
                    "{help}"
                );
            }
            "lvstun-node" => {
                for role in ["balancer", "web"] {
                    let h = chroot(&[role, "--help"]);
                    assert!(h.contains(&format!("lvstun-node {role}")), "{h}");
                }
                // The web role's nf_tables helper runs from the image too.
                let out = run(Command::new("chroot")
                    .arg(&root)
                    .args(["/usr/sbin/nft", "--version"]));
                assert!(stdout(&out).starts_with("nftables v"), "{}", stdout(&out));
            }
            other => panic!("no check for {other}"),
        }
    }
}

/// The seed's service (deploy/examples/) as `ipvsadm -Sn` prints it, both real servers healthy.
const SEED_RULES: [&str; 3] = [
    "-A -t 192.0.2.100:80 -s rr",
    "-a -t 192.0.2.100:80 -r 198.51.100.10:80 -i -w 1",
    "-a -t 192.0.2.100:80 -r 198.51.100.130:80 -i -w 1",
];

fn lab_result<'a>(run: &'a LabRun, key: &str) -> &'a str {
    run.result(key)
        .unwrap_or_else(|| panic!("no {key} in {}/results.txt", run.out_dir.display()))
}

/// The value of `key=` in a log line of the daemon (tracing's `key=value` fields).
fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_owned())
}

#[test]
fn node_image_runs_the_balancer_in_the_lab_from_its_unpacked_root_filesystem() {
    if !is_root() {
        eprintln!(
            "SKIPPED node_image_runs_the_balancer_in_the_lab_from_its_unpacked_root_filesystem: \
             the lab needs root (CI runs ./dev test as root)"
        );
        return;
    }
    let bins = release_bins();
    let spec = spec("lvstun-node");
    let scratch = Scratch::new("lab");
    let (built, written) = images::build(&spec, &bins, &scratch.0, EPOCH).unwrap();
    // Unpacked inside the run's folder: the guest sees the host's root read-only and only
    // that folder read-write, and the scenario mounts /proc and the folder inside the root.
    let run_dir = lab::new_run_dir("image-node").unwrap();
    let rootfs = run_dir.join("rootfs");
    let image = images::unpack(&written.layout, &rootfs).unwrap();
    assert_eq!(image.digest, built.digest());
    let entry = image.config["config"]["Entrypoint"][0]
        .as_str()
        .unwrap()
        .to_string();
    let path = image.config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap()
        .to_string();
    let options = ScenarioOptions {
        env: vec![
            ("IMAGE_ROOTFS".into(), rootfs.display().to_string()),
            ("IMAGE_ENTRYPOINT".into(), entry.clone()),
            ("IMAGE_PATH".into(), path),
        ],
        timeout: Some(std::time::Duration::from_secs(300)),
        out_dir: Some(run_dir.clone()),
        ..ScenarioOptions::default()
    };
    let run = lab::run_scenario_with("image-node", &options).unwrap();
    let out = run.out_dir.display().to_string();
    eprintln!(
        "[images] {} ({}) in the lab: run folder {out}; vm {:?}s",
        built.reference,
        built.digest(),
        run.timing.get("vm_wall_s")
    );

    // The process that ran was the image's binary, rooted in the image: its executable and
    // every file it mapped (the loader and the libraries) come from the unpacked root.
    assert_eq!(lab_result(&run, "version"), format!("lvstun-node {TAG}"));
    let exe = rootfs.join(entry.trim_start_matches('/'));
    assert_eq!(lab_result(&run, "exe"), exe.display().to_string(), "{out}");
    assert_eq!(lab_result(&run, "root"), rootfs.display().to_string());
    let maps = run.artifact("maps.txt").unwrap();
    let mapped: BTreeSet<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .collect();
    eprintln!("[images] files the daemon mapped: {mapped:#?}");
    for p in &mapped {
        assert!(
            Path::new(p).starts_with(&rootfs),
            "{p} is not from the image ({out}/maps.txt)"
        );
    }
    for wanted in ["usr/local/bin/lvstun-node", "ld-linux", "libc.so"] {
        assert!(
            mapped.iter().any(|p| p.contains(wanted)),
            "nothing like {wanted} mapped: {mapped:?}"
        );
    }

    // What the kernel holds: the seed's service exactly, both real servers healthy.
    let start = lab_result(&run, "start_pass");
    eprintln!("[images] first pass: {start}");
    assert_eq!(field(start, "ops").as_deref(), Some("3"), "{start}");
    assert_eq!(field(start, "failed").as_deref(), Some("0"), "{start}");
    let save = run.artifact("save-1.txt").unwrap();
    let rules: Vec<&str> = save
        .lines()
        .filter(|l| l.contains(" 192.0.2.100:"))
        .collect();
    assert_eq!(
        rules.len(),
        SEED_RULES.len(),
        "{rules:#?} ({out}/save-1.txt)"
    );
    for (got, want) in rules.iter().zip(SEED_RULES) {
        assert!(
            *got == want || got.starts_with(&format!("{want} ")),
            "{got:?} is not {want:?} ({out}/save-1.txt)"
        );
    }
    // /proc inside the root reached lb1's kernel settings; the state folder, the run folder.
    let sysctl = lab_result(&run, "sysctl_set");
    assert!(sysctl.contains("set net.ipv4.vs sysctl"), "{sysctl}");
    assert_eq!(lab_result(&run, "expire_nodest_conn"), "1", "{out}");
    let owned: Value =
        serde_json::from_str(&run.artifact("state-lb1/balancer-owned.json").unwrap()).unwrap();
    assert_eq!(owned["vips"], serde_json::json!(["192.0.2.100"]), "{out}");

    // And it forwards: the client's requests reach both real servers through the VIP.
    let requests: usize = lab_result(&run, "requests").parse().unwrap();
    let responses = parse::http_responses(&run.artifact("client-curl.txt").unwrap()).unwrap();
    assert_eq!(responses.len(), requests, "{out}/client-curl.txt");
    let nodes: BTreeSet<&str> = responses
        .iter()
        .map(|r| r.header("Node").unwrap_or("-"))
        .collect();
    assert_eq!(nodes, BTreeSet::from(["www1", "www2"]), "{out}");
    eprintln!(
        "[images] programmed and healthy after {} ms; Node headers {nodes:?}",
        lab_result(&run, "programmed_ms")
    );

    // The root filesystem is the image, rebuilt by the next run; the evidence stays.
    std::fs::remove_dir_all(&rootfs).unwrap();
}

/// `index.json` of an `.oci.tar`, read by GNU tar (not by our own code).
fn archive_index(archive: &Path) -> Value {
    let out = run(Command::new("tar")
        .args(["--extract", "--to-stdout", "--file"])
        .arg(archive)
        .arg("index.json"));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn each_archive_names_its_image_fully_qualified_as_the_chart_references_it() {
    let bins = release_bins();
    let scratch = Scratch::new("names");
    assert_eq!(
        spec_ref("lvstun-operator"),
        format!("localhost/lvstun/lvstun-operator:{TAG}")
    );
    assert_eq!(
        spec_ref("lvstun-node"),
        format!("localhost/lvstun/lvstun-node:{TAG}")
    );
    for spec in &IMAGES {
        let (_, written) = images::build(spec, &bins, &scratch.0, EPOCH).unwrap();
        assert_eq!(
            written.archive,
            scratch.0.join(format!("{}-{TAG}.oci.tar", spec.binary))
        );
        let index = archive_index(&written.archive);
        let annotations = &index["manifests"][0]["annotations"];
        // The name containerd's import stores, unchanged; the kubelet asks for this very name
        // because a reference with a registry host is already normalized.
        assert_eq!(
            annotations["io.containerd.image.name"],
            spec.reference(),
            "{}",
            written.archive.display()
        );
        assert_eq!(annotations["org.opencontainers.image.ref.name"], TAG);
    }
}

/// Two versions of one build, for an upgrade test (`./dev images --tag`): the same files under
/// two tags give two images with different digests and archive names, side by side in one
/// folder, each archive naming its own reference, while the layer (the binaries) is shared.
/// The root filesystem is made here (no release build needed): only the tag differs.
#[test]
fn two_tags_give_two_images_with_their_own_digests_and_archives() {
    let scratch = Scratch::new("tags");
    let mut fs = images::RootFs::default();
    fs.dir(BIN_DIR, 0o755);
    fs.file(
        &format!("{BIN_DIR}/lvstun-node"),
        0o755,
        b"\x7fELF stand-in".to_vec(),
    );
    let upgrade = format!("{TAG}-upgrade");
    images::check_tag(&upgrade).unwrap();
    let a_spec = spec("lvstun-node");
    let b_spec = a_spec.with_tag(&upgrade);
    assert_eq!(
        b_spec.reference(),
        format!("localhost/lvstun/lvstun-node:{upgrade}")
    );

    let a = images::assemble(&a_spec, &fs, EPOCH).unwrap();
    let wa = images::write_image(&a_spec, &a, &scratch.0, EPOCH).unwrap();
    let b = images::assemble(&b_spec, &fs, EPOCH).unwrap();
    let wb = images::write_image(&b_spec, &b, &scratch.0, EPOCH).unwrap();

    assert_ne!(a.digest(), b.digest());
    assert_eq!(a.layer, b.layer, "the same files: one layer");
    assert_eq!(
        wa.archive,
        scratch.0.join(format!("lvstun-node-{TAG}.oci.tar"))
    );
    assert_eq!(
        wb.archive,
        scratch.0.join(format!("lvstun-node-{upgrade}.oci.tar"))
    );
    // Both archives stay, each naming its own image and carrying its own digest.
    for (archive, image, spec) in [(&wa.archive, &a, &a_spec), (&wb.archive, &b, &b_spec)] {
        let index = archive_index(archive);
        let entry = &index["manifests"][0];
        assert_eq!(entry["digest"], image.digest(), "{}", archive.display());
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            spec.reference()
        );
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            spec.tag
        );
    }
    // The layout folder holds the last build, readable under its tag with its version label.
    let read = images::read_layout(&wb.layout).unwrap();
    assert_eq!(
        (read.digest.as_str(), read.tag.as_str()),
        (b.digest().as_str(), upgrade.as_str())
    );
    assert_eq!(
        read.config["config"]["Labels"]["org.opencontainers.image.version"],
        upgrade.as_str()
    );
    // The same tag again gives the same bytes: version B is as reproducible as version A.
    let again = images::assemble(&b_spec, &fs, EPOCH).unwrap();
    assert_eq!(again.digest(), b.digest());
}

/// Builds the pause image into `out` from upstream's source (downloading the Kubernetes module
/// into the project's Go module cache if needed).
fn pause_image(out: &Path) -> (images::Image, images::Written) {
    images::build_pause(&images::go_mod_cache(), out, EPOCH).unwrap()
}

/// Where the Go module cache holds `module@version`, downloaded there if missing.
fn go_module_dir(module: &str) -> PathBuf {
    let out = run(Command::new("go")
        .args(["mod", "download", "-json", module])
        .env("GOMODCACHE", images::go_mod_cache())
        .env("GOFLAGS", "-modcacherw")
        .env("GOTOOLCHAIN", "local")
        .current_dir(std::env::temp_dir()));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(info["Dir"].as_str().unwrap())
}

#[test]
fn pause_image_is_upstreams_static_pause_named_as_containerds_default_sandbox_image() {
    // The release the pause comes from is the one the control plane and kubelets are built from.
    let build_sh =
        std::fs::read_to_string(repo_root().join("tests/controlplane/build.sh")).unwrap();
    assert!(
        build_sh.contains(&format!(
            "K8S_VERSION=\"${{K8S_VERSION:-{KUBERNETES_VERSION}}}\""
        )),
        "tests/controlplane/build.sh does not default to {KUBERNETES_VERSION}"
    );
    // containerd v2.2.10 (the lab's runtime) names this sandbox image when its config is empty.
    let containerd = go_module_dir("github.com/containerd/containerd/v2@v2.2.10");
    let config = std::fs::read_to_string(containerd.join("internal/cri/config/config.go")).unwrap();
    assert!(
        config.contains(&format!("DefaultSandboxImage = \"{SANDBOX_IMAGE}\"")),
        "containerd v2.2.10's DefaultSandboxImage is not {SANDBOX_IMAGE}"
    );

    let scratch = Scratch::new("pause");
    let (a, written) = pause_image(&scratch.0.join("a"));
    assert_eq!(a.reference, "registry.k8s.io/pause:3.10.1");
    assert_eq!(written.archive, scratch.0.join("a/pause-3.10.1.oci.tar"));
    let index = archive_index(&written.archive);
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        SANDBOX_IMAGE
    );
    // Compiled and packaged again elsewhere: the same bytes (no path or time of this build in it).
    let (b, _) = pause_image(&scratch.0.join("b"));
    assert_eq!(a.digest(), b.digest());

    // Laid out as upstream's build/pause/Dockerfile: /pause, user 65535, nothing else to run.
    let image = images::read_layout(&written.layout).unwrap();
    assert_eq!(image.digest, a.digest());
    assert_eq!(image.tag, "3.10.1");
    assert_eq!(image.config["config"]["User"], "65535:65535");
    assert_eq!(
        image.config["config"]["Entrypoint"],
        serde_json::json!(["/pause"])
    );
    let listing = stdout(&run(Command::new("tar")
        .args(["--list", "--verbose", "--file"])
        .arg(&image.layers[0])));
    let files: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(files, ["pause"], "{listing}");
    // Static: no interpreter, no library (the image has none to offer).
    let binary = written.layout.parent().unwrap().join(".pause-build/pause");
    assert_eq!(
        images::shared_libraries(&binary).unwrap(),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        program_header_types(&std::fs::read(&binary).unwrap())
            .iter()
            .filter(|&&t| t == PT_INTERP)
            .count(),
        0,
        "the pause binary asks for a dynamic loader"
    );
    eprintln!("{}  {}  {} bytes", a.reference, a.digest(), a.size());
}

/// `PT_INTERP`: the program header naming the dynamic loader; a static binary has none.
const PT_INTERP: u32 = 3;

/// The `p_type` of every program header of a little-endian ELF64 file.
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x02\x01",
        "not a little-endian ELF64 file"
    );
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([elf[o], elf[o + 1]]));
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    assert!(count > 0, "no program headers");
    (0..count)
        .map(|i| {
            let at = phoff + i * size;
            u32::from_le_bytes(elf[at..at + 4].try_into().unwrap())
        })
        .collect()
}

/// Bit of `signal` in a `/proc/PID/status` signal mask (`SigCgt`: handlers installed).
fn catches(pid: u32, signal: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

#[test]
fn pause_runs_from_its_unpacked_root_filesystem_and_exits_on_sigterm_and_sigint() {
    if !is_root() {
        eprintln!(
            "SKIPPED pause_runs_from_its_unpacked_root_filesystem_and_exits_on_sigterm_and_sigint: \
             chroot needs root (CI runs ./dev test as root)"
        );
        return;
    }
    let scratch = Scratch::new("pause-run");
    let (_, written) = pause_image(&scratch.0.join("out"));
    let root = scratch.0.join("rootfs");
    let image = images::unpack(&written.layout, &root).unwrap();
    let entry = image.config["config"]["Entrypoint"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(entry, PAUSE.entrypoint());
    let chroot = || {
        let mut c = Command::new(which("chroot").unwrap());
        c.arg(format!("--userspec={0}:{0}", PAUSE.user))
            .arg(&root)
            .arg(&entry)
            .env_clear();
        c
    };
    // Upstream's version switch: the source and the VERSION macro upstream's Makefile passes.
    let version = stdout(&run(chroot().arg("-v")));
    assert_eq!(
        version.trim(),
        format!("pause.c {}", images::pause_version())
    );

    // SIGTERM (what a runtime sends to stop a sandbox) and SIGINT: a clean exit 0 with
    // upstream's message; and until then it keeps running.
    for (signal, name, text) in [(15, "TERM", "Terminated"), (2, "INT", "Interrupt")] {
        let mut child = chroot()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // chroot execs pause in the same process: wait for pause's handlers, so the signal
        // cannot reach chroot (or pause before it installed them) instead.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !catches(pid, signal) {
            assert!(
                std::time::Instant::now() < deadline,
                "pause never installed its handlers"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "pause exited by itself"
        );
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(
            exe,
            root.join("pause"),
            "the running program is the image's"
        );
        run(Command::new("kill").args([format!("-{name}"), pid.to_string()]));
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "SIG{name}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Not pid 1 here, so upstream's warning comes first.
        assert!(
            stderr.contains("Warning: pause should be the first process"),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("Shutting down, got signal: {text}")),
            "SIG{name}: {stderr}"
        );
    }
}

fn spec_ref(binary: &str) -> String {
    spec(binary).reference()
}

/// Every `image:` in a rendered manifest (containers and init containers of any workload).
fn images_in(doc: &Value, out: &mut Vec<String>) {
    match doc {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "image" {
                    out.push(v.as_str().unwrap_or_default().to_string());
                } else {
                    images_in(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| images_in(v, out)),
        _ => {}
    }
}

#[test]
fn the_chart_and_the_plain_manifests_name_the_images_this_build_produces() {
    let helm = k8s_bin_dir().unwrap().join("helm");
    let home = Scratch::new("helm");
    let chart = repo_root().join("deploy/helm/lvstun");
    let rendered = stdout(&run(Command::new(&helm)
        .args(["template", "lvstun"])
        .arg(&chart)
        .args(["--namespace", "lvstun-system"])
        .env("HELM_CACHE_HOME", home.0.join("cache"))
        .env("HELM_CONFIG_HOME", home.0.join("config"))
        .env("HELM_DATA_HOME", home.0.join("data"))));
    let plain = std::fs::read_to_string(repo_root().join("deploy/manifests/lvstun.yaml")).unwrap();
    for (what, text) in [("helm template", rendered), ("deploy/manifests", plain)] {
        let mut images = Vec::new();
        let mut node_image_args = Vec::new();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
            images_in(&doc, &mut images);
            if doc["kind"] == "Deployment" {
                for c in doc["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .unwrap()
                {
                    for a in c["args"].as_array().into_iter().flatten() {
                        if let Some(v) = a.as_str().and_then(|a| a.strip_prefix("--node-image=")) {
                            node_image_args.push(v.to_string());
                        }
                    }
                }
            }
        }
        // The Deployment and, in the chart, the uninstall hook's Job: both the operator image.
        images.sort();
        images.dedup();
        assert_eq!(images, vec![spec_ref("lvstun-operator")], "{what}");
        assert_eq!(node_image_args, vec![spec_ref("lvstun-node")], "{what}");
    }
    // The chart's appVersion is the tag; an upgrade of one without the other would break pulls.
    let chart_yaml: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart.join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart_yaml["appVersion"], TAG);
}
