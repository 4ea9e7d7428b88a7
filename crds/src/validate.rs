//! Validation of one object outside the API server, by the same schema and CEL rules the API
//! server runs, with the API server's wording: what a standalone configuration file (a balancer
//! or web role outside a cluster, `--config`) and `lvstun-node ... check FILE` use, so a file
//! is exactly as strict as `kubectl apply`. Pure (no I/O).
//!
//! The schema is the generated CRD's own `openAPIV3Schema`; the checks are the structural ones
//! the API server makes before its CEL rules (unknown fields, types, required fields, lengths,
//! item counts, ranges, enums), then the CEL rules themselves (kube's client-side CEL, after
//! the schema's defaults are applied), skipped when a structural check failed, as the API
//! server skips them. Written here because no maintained crate checks a Kubernetes structural
//! schema; the CEL half is kube's.

use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::cel::{Validator, apply_defaults};
use serde_json::Value;

use crate::v1alpha1::{RealServer, VirtualService};

/// One refusal: the field and the API server's text for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct FieldError {
    /// The field's path, as the API server writes it (`spec.ports[0].port`).
    pub field: String,
    /// What is wrong, in the API server's words.
    pub detail: String,
}

/// The kinds this module validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `VirtualService`.
    VirtualService,
    /// `RealServer`.
    RealServer,
}

impl Kind {
    /// The kind named `name`, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "VirtualService" => Some(Kind::VirtualService),
            "RealServer" => Some(Kind::RealServer),
            _ => None,
        }
    }

    fn schema(self) -> &'static Value {
        static VS: OnceLock<Value> = OnceLock::new();
        static RS: OnceLock<Value> = OnceLock::new();
        let (cell, crd) = match self {
            Kind::VirtualService => (&VS, VirtualService::crd as fn() -> CustomResourceDefinition),
            Kind::RealServer => (&RS, RealServer::crd as fn() -> CustomResourceDefinition),
        };
        cell.get_or_init(|| {
            let crd = crd();
            crd.spec
                .versions
                .first()
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or(Value::Null)
        })
    }
}

/// Validates `object` (a whole object: apiVersion, kind, metadata, spec) as the API server
/// would on create. On success returns the object with the schema's defaults filled in (a
/// `status` it carries is kept as it is, unvalidated: the daemons' and the operator's to write,
/// and the API server ignores it on create).
pub fn object(kind: Kind, object: &Value) -> Result<Value, Vec<FieldError>> {
    let schema = kind.schema();
    let mut errors = Vec::new();
    if let Some(spec_schema) = schema.get("properties").and_then(|p| p.get("spec")) {
        match object.get("spec") {
            Some(spec) => structural(spec_schema, spec, "spec", &mut errors),
            None => errors.push(FieldError {
                field: "spec".into(),
                detail: "Required value".into(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let defaulted = apply_defaults(schema, object);
    let mut checked = defaulted.clone();
    if let Some(map) = checked.as_object_mut() {
        map.remove("status");
    }
    match Validator::new().validate(schema, &checked, None) {
        Ok(()) => Ok(defaulted),
        Err(failures) => Err(failures
            .into_vec()
            .into_iter()
            .map(|e| {
                let value = value_at(&defaulted, &e.field_path);
                let detail = match value {
                    Some(v @ Value::String(_)) => format!("Invalid value: {v}: {}", e.message),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                        format!("Invalid value: {v}: {}", e.message)
                    }
                    _ => format!("Invalid value: {}", e.message),
                };
                FieldError {
                    field: e.field_path,
                    detail,
                }
            })
            .collect()),
    }
}

/// The value at an API-server field path (`a.b[0].c`).
fn value_at<'a>(object: &'a Value, field: &str) -> Option<&'a Value> {
    let mut at = object;
    for part in field.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        at = at.get(name)?;
        if let Some(i) = index {
            at = at.get(i)?;
        }
    }
    Some(at)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The structural checks of one value against its schema, collected into `errors`.
fn structural(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let mut push = |detail: String| {
        errors.push(FieldError {
            field: path.to_owned(),
            detail,
        })
    };
    if value.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let want = schema.get("type").and_then(Value::as_str);
    let got = type_name(value);
    let type_ok = match want {
        None => true,
        Some("number") => matches!(got, "integer" | "number"),
        Some(t) => t == got,
    };
    if !type_ok {
        let want = want.unwrap_or_default();
        push(format!(
            "Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""
        ));
        return;
    }
    let int = |key: &str| schema.get(key).and_then(Value::as_i64);
    match value {
        Value::Object(map) => {
            if let Some(n) = int("maxProperties")
                && map.len() as i64 > n
            {
                push(format!(
                    "Too many: {}: must have at most {n} items",
                    map.len()
                ));
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(name) {
                    errors.push(FieldError {
                        field: format!("{path}.{name}"),
                        detail: "Required value".into(),
                    });
                }
            }
            for (key, item) in map {
                let child = format!("{path}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) => structural(s, item, &child, errors),
                    (None, Some(s)) => structural(s, item, &child, errors),
                    (None, None) if preserve => {}
                    (None, None) => errors.push(FieldError {
                        field: child.clone(),
                        detail: format!("unknown field \"{child}\""),
                    }),
                }
            }
        }
        Value::Array(items) => {
            if let Some(n) = int("maxItems")
                && items.len() as i64 > n
            {
                push(format!(
                    "Too many: {}: must have at most {n} items",
                    items.len()
                ));
            }
            if let Some(n) = int("minItems")
                && (items.len() as i64) < n
            {
                let s = if n == 1 { "" } else { "s" };
                push(format!(
                    "Invalid value: {}: {path} in body should have at least {n} item{s}",
                    items.len()
                ));
            }
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    structural(s, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::String(s) => {
            if let Some(n) = int("maxLength")
                && s.chars().count() as i64 > n
            {
                push(format!("Too long: may not be more than {n} bytes"));
            }
            if let Some(n) = int("minLength")
                && (s.chars().count() as i64) < n
            {
                push(format!(
                    "Invalid value: \"{s}\": {path} in body should be at least {n} chars long"
                ));
            }
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a.as_str() == Some(s))
            {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                push(format!(
                    "Unsupported value: \"{s}\": supported values: {}",
                    list.join(", ")
                ));
            }
        }
        Value::Number(n) => {
            let v = n.as_f64().unwrap_or_default();
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && v < min
            {
                push(format!(
                    "Invalid value: {n}: {path} in body should be greater than or equal to {min}"
                ));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && v > max
            {
                push(format!(
                    "Invalid value: {n}: {path} in body should be less than or equal to {max}"
                ));
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn www() -> Value {
        json!({
            "apiVersion": "lvstun.io/v1alpha1",
            "kind": "VirtualService",
            "metadata": {"name": "www"},
            "spec": {
                "vip": "192.0.2.100",
                "ports": [{"port": 80}],
                "realServerSelector": {"matchLabels": {"app": "www"}},
                "balancers": {"nodeSelector": {"matchLabels": {"lvstun.io/balancer": "true"}}, "virtualRouterID": 51}
            }
        })
    }

    #[test]
    fn a_valid_object_passes_and_gets_the_defaults() {
        let got = object(Kind::VirtualService, &www()).unwrap();
        assert_eq!(got["spec"]["scheduler"], "rr");
        assert_eq!(
            got["spec"]["healthCheck"]["http"]["path"],
            "/healthcheck.html"
        );
    }

    #[test]
    fn structural_refusals_name_the_field_as_the_api_server_does() {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "a misspelled field",
                json!({"sheduler": "rr"}),
                "spec.sheduler: unknown field \"spec.sheduler\"",
            ),
            (
                "a port out of range",
                json!({"ports": [{"port": 70000}]}),
                "spec.ports[0].port: Invalid value: 70000: spec.ports[0].port in body should be less than or equal to 65535",
            ),
            (
                "a scheduler the kernel lacks",
                json!({"scheduler": "fastest"}),
                "spec.scheduler: Unsupported value: \"fastest\": supported values: \"rr\", \"wrr\", \"lc\", \"wlc\", \"lblc\", \"lblcr\", \"dh\", \"sh\", \"sed\", \"nq\", \"fo\", \"ovf\", \"mh\", \"twos\"",
            ),
            (
                "a string for a number",
                json!({"ports": [{"port": "80"}]}),
                "spec.ports[0].port: Invalid value: \"string\": spec.ports[0].port in body must be of type integer: \"string\"",
            ),
        ];
        for (name, patch, want) in cases {
            let mut vs = www();
            for (k, v) in patch.as_object().unwrap() {
                vs["spec"][k] = v.clone();
            }
            let got: Vec<String> = object(Kind::VirtualService, &vs)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, [want], "{name}");
        }
    }

    #[test]
    fn cel_refusals_come_after_the_structure_passes() {
        let mut vs = www();
        vs["spec"]["vip"] = json!("127.0.0.1");
        let got = object(Kind::VirtualService, &vs).unwrap_err();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].field, "spec.vip");
        assert!(
            got[0].detail.starts_with(
                "Invalid value: \"127.0.0.1\": spec.vip 127.0.0.1 is a loopback address"
            ),
            "{got:?}"
        );
    }
}
