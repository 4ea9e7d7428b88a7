//! The table of bad inputs (`tests/refusals.yaml`) against a real kube-apiserver: every case is
//! refused with exactly its field and message, and nothing of it is stored. `refusals_cel`
//! checks the CEL cases in process; this test proves the API server agrees, and checks the
//! schema bounds that only the API server enforces.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on purpose

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt};
use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use lvstun_tests::controlplane::{ControlPlane, unique_namespace};
use lvstun_tests::refusals::{By, Case, base_object, cases};

/// The API server's whole message for one case: its cause after the object's name. A schema
/// bound stops the API server before the CEL rules, and it says so in a second cause.
fn api_message(case: &Case) -> String {
    let head = format!("{}.lvstun.io \"{}\" is invalid: ", case.base, case.name);
    match case.by {
        By::Cel => format!("{head}{}", case.cause()),
        By::Schema => format!(
            "{head}[{}, <nil>: Invalid value: null: {SKIPPED}]",
            case.cause()
        ),
    }
}

/// The API server's second cause after a schema bound refused a value.
const SKIPPED: &str = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

fn api_for(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("lvstun.io", "v1alpha1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [VirtualService::crd(), RealServer::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &kube::api::PatchParams::apply("lvstun-tests").force(),
            &kube::api::Patch::Apply(&crd),
        )
        .await
        .unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} not established in 60 s"))
        .unwrap();
    }
}

#[tokio::test]
async fn every_bad_input_is_refused_with_its_exact_message_and_not_stored() {
    let cp = ControlPlane::shared().unwrap();
    let client = cp.client().await.unwrap();
    install_crds(&client).await;
    let ns = unique_namespace("refusals");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.clone());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();

    // The base objects are accepted: each refusal below comes from the bad part alone.
    for kind in ["VirtualService", "RealServer"] {
        let object: DynamicObject = serde_json::from_value(base_object(kind, "base")).unwrap();
        api_for(&client, &ns, kind)
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("the base {kind} was refused: {e}"));
    }

    let table = cases();
    assert!(table.len() >= 30, "the table shrank: {} cases", table.len());
    let mut wrong = Vec::new();
    for case in &table {
        let object = case.object();
        let want = api_message(case);
        let api = api_for(&client, &ns, &case.base);
        let dynamic: DynamicObject = serde_json::from_value(object).unwrap();
        match api.create(&PostParams::default(), &dynamic).await {
            Ok(_) => wrong.push(format!("{}: accepted, expected {want:?}", case.name)),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || status.message != want {
                    wrong.push(format!(
                        "{}: want 422 {want:?}\n  got {} {:?}",
                        case.name, status.code, status.message
                    ));
                }
            }
            Err(other) => wrong.push(format!("{}: {other}", case.name)),
        }
        match api.get_opt(&case.name).await {
            Ok(None) => {}
            Ok(Some(_)) => wrong.push(format!("{}: refused, yet stored", case.name)),
            Err(e) => wrong.push(format!("{}: looking it up: {e}", case.name)),
        }
    }
    let _ = namespaces.delete(&ns, &Default::default()).await;
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong ({}):\n{}",
        wrong.len(),
        table.len(),
        plural_note(&table),
        wrong.join("\n")
    );
}

/// How many of each kind the table holds, for the failure message.
fn plural_note(table: &[Case]) -> String {
    let vs = table
        .iter()
        .filter(|c| c.plural() == "virtualservices")
        .count();
    format!("{vs} VirtualServices, {} RealServers", table.len() - vs)
}
