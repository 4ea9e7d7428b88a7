//! The CRD YAML committed under `deploy/` and the reference `docs/crd-reference.md` must be
//! exactly what the types generate.

use std::path::Path;

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let files = lvstun_crds::render_crd_files().unwrap();
    assert_eq!(files.len(), 3);
    for dir in ["deploy/crds", "deploy/helm/lvstun/crds"] {
        for f in &files {
            let path = root.join(dir).join(&f.name);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                committed == f.content,
                "{} is stale: run `cargo run -p lvstun-crds --bin crdgen` and commit the result",
                path.display()
            );
        }
    }
}

#[test]
fn committed_crd_reference_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = root.join(lvstun_crds::reference::PATH);
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        committed == lvstun_crds::render_reference(),
        "{} is stale: run `cargo run -p lvstun-crds --bin crdgen` and commit the result",
        path.display()
    );
}

#[test]
fn short_names_do_not_collide_with_istio() {
    for crd in lvstun_crds::crds() {
        let short = crd.spec.names.short_names.unwrap_or_default();
        assert!(!short.iter().any(|s| s == "vs"), "{short:?}");
        assert_eq!(crd.spec.names.categories, Some(vec!["lvstun".to_string()]));
    }
}
