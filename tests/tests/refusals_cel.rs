//! The table of bad inputs (`tests/refusals.yaml`), checked against the CRDs' own CEL rules evaluated
//! in process (kube's client-side CEL, the same rules the API server runs): every `by: cel` case
//! is refused at its field with exactly its message, and the base objects pass. The control-plane
//! test `controlplane_refusals` checks the whole table against a real API server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on purpose

use kube::CustomResourceExt;
use kube::core::cel::{Validator, apply_defaults};
use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use lvstun_tests::refusals::{By, Case, base_object, cases};

fn schema_of(kind: &str) -> serde_json::Value {
    let crd = match kind {
        "VirtualService" => VirtualService::crd(),
        "RealServer" => RealServer::crd(),
        other => panic!("no base object of kind {other}"),
    };
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// What the CEL rules say of one object: (field, message) of each refusal.
fn refusals(kind: &str, object: &serde_json::Value) -> Vec<(String, String)> {
    let schema = schema_of(kind);
    let object = apply_defaults(&schema, object);
    match Validator::new().validate(&schema, &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| (e.field_path, e.message))
            .collect(),
    }
}

#[test]
fn the_base_objects_pass_every_rule() {
    for kind in ["VirtualService", "RealServer"] {
        let got = refusals(kind, &base_object(kind, "base"));
        assert!(got.is_empty(), "{kind}: {got:?}");
    }
}

#[test]
fn every_cel_case_is_refused_at_its_field_with_its_exact_message() {
    let table = cases();
    let cel: Vec<&Case> = table.iter().filter(|c| c.by == By::Cel).collect();
    assert!(cel.len() >= 25, "the table shrank: {} CEL cases", cel.len());
    let mut wrong = Vec::new();
    for case in cel {
        let got = refusals(&case.base, &case.object());
        let want = (case.field.clone(), case.message.clone());
        if got != [want.clone()] {
            wrong.push(format!(
                "{}: want exactly {want:?}\n  got {got:?}",
                case.name
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cases wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The standalone file's validator (`lvstun_crds::validate`, what `--config` files and
/// `check FILE` go through) refuses every case, CEL and schema alike, with exactly the cause
/// the API server gives: a file is as strict as `kubectl apply`.
#[test]
fn the_file_validator_says_what_the_api_server_says() {
    use lvstun_crds::validate::{Kind, object};
    let table = cases();
    let mut wrong = Vec::new();
    for case in &table {
        let kind = Kind::from_name(&case.base).unwrap();
        let got: Vec<String> = match object(kind, &case.object()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        };
        let want = case.cause();
        if got != [want.clone()] {
            wrong.push(format!(
                "{}: want exactly {want:?}\n  got {got:?}",
                case.name
            ));
        }
    }
    for kind in ["VirtualService", "RealServer"] {
        let k = Kind::from_name(kind).unwrap();
        assert!(object(k, &base_object(kind, "base")).is_ok(), "{kind}");
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        table.len(),
        wrong.join("\n")
    );
}
