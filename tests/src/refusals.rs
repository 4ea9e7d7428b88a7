//! The table of bad inputs (`tests/refusals.yaml`): each case is a valid base object with some
//! fields set to values that can never work, and the one refusal it must get (field and exact
//! message). Read by `refusals_cel` (the CEL rules evaluated in process) and by
//! `controlplane_refusals` (a real API server). No I/O beyond reading the table.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::controlplane::repo_root;

/// Where the refusal comes from, which decides who can check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// A CEL rule of the CRD: checked in process and by the API server.
    Cel,
    /// A schema bound (length, enum, range): only the API server checks it.
    Schema,
}

/// One bad input.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// The object's name, unique in the table.
    pub name: String,
    /// `VirtualService` or `RealServer`: which valid object the case starts from.
    pub base: String,
    /// Dotted paths (a list index is a segment) and the bad values they get. A value
    /// `{repeat: S, times: N}` is S repeated N times (large inputs without a large table).
    pub set: BTreeMap<String, serde_json::Value>,
    /// Who refuses it.
    pub by: By,
    /// The field the refusal names.
    pub field: String,
    /// The refusal's exact message.
    pub message: String,
}

impl Case {
    /// The object this case sends: the base with `set` applied.
    pub fn object(&self) -> Value {
        let mut object = base_object(&self.base, &self.name);
        for (path, value) in &self.set {
            set_path(&mut object, path, expand(value.clone()));
        }
        object
    }

    /// The refusal's one cause as the API server words it, `<field>: <detail>`: a CEL rule's
    /// detail is `Invalid value: "<value>": <message>` for a string or a number (quoted as
    /// Go's `%q` does, which JSON's escaping matches for these values) and
    /// `Invalid value: <message>` for a list or an object; a schema bound's detail is the
    /// table's message whole.
    pub fn cause(&self) -> String {
        let object = self.object();
        let detail = match (self.by, value_at(&object, &self.field)) {
            (By::Cel, Some(v @ (Value::String(_) | Value::Number(_)))) => {
                format!("Invalid value: {v}: {}", self.message)
            }
            (By::Cel, _) => format!("Invalid value: {}", self.message),
            (By::Schema, _) => self.message.clone(),
        };
        format!("{}: {detail}", self.field)
    }

    /// The kind's plural, for API paths and messages.
    pub fn plural(&self) -> &'static str {
        if self.base == "RealServer" {
            "realservers"
        } else {
            "virtualservices"
        }
    }
}

/// Reads the table.
pub fn cases() -> Vec<Case> {
    let path = repo_root().join("tests/refusals.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let cases: Vec<Case> =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    cases
}

/// A valid object of `kind` named `name`: the examples' www VirtualService or web1 RealServer.
pub fn base_object(kind: &str, name: &str) -> Value {
    match kind {
        "VirtualService" => json!({
            "apiVersion": "lvstun.io/v1alpha1",
            "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": {
                "vip": "192.0.2.100",
                "ports": [{"port": 80, "protocol": "TCP"}],
                "scheduler": "rr",
                "realServerSelector": {"matchLabels": {"app": "www"}},
                "balancers": {
                    "nodeSelector": {"matchLabels": {"lvstun.io/balancer": "true"}},
                    "virtualRouterID": 51,
                    "advertIntervalMilliseconds": 1000
                }
            }
        }),
        "RealServer" => json!({
            "apiVersion": "lvstun.io/v1alpha1",
            "kind": "RealServer",
            "metadata": {"name": name, "labels": {"app": "www"}},
            "spec": {"address": "198.51.100.10", "weight": 1}
        }),
        other => panic!("no base object of kind {other}"),
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

/// `{repeat: S, times: N}` → S×N, anywhere inside `value`.
fn expand(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            if let (Some(Value::String(s)), Some(n), 2) = (
                map.get("repeat"),
                map.get("times").and_then(Value::as_u64),
                map.len(),
            ) {
                return Value::String(s.repeat(n as usize));
            }
            Value::Object(map.into_iter().map(|(k, v)| (k, expand(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(expand).collect()),
        other => other,
    }
}

/// Sets `path` (dots between segments; numeric segments index lists) to `value`, creating
/// objects on the way.
fn set_path(object: &mut Value, path: &str, value: Value) {
    let mut at = object;
    let segments: Vec<&str> = path.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let next = match segment.parse::<usize>() {
            Ok(index) => at
                .get_mut(index)
                .unwrap_or_else(|| panic!("{path}: no item {index}")),
            Err(_) => {
                if !at.is_object() {
                    *at = json!({});
                }
                let map = at.as_object_mut().unwrap_or_else(|| unreachable!());
                map.entry(segment.to_string()).or_insert(Value::Null)
            }
        };
        if last {
            *next = value;
            return;
        }
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_path_creates_objects_and_replaces_values() {
        let mut object = base_object("VirtualService", "x");
        set_path(&mut object, "spec.healthCheck.http.path", json!("/x"));
        set_path(&mut object, "spec.ports.0.port", json!(81));
        assert_eq!(object["spec"]["healthCheck"]["http"]["path"], "/x");
        assert_eq!(object["spec"]["ports"][0]["port"], 81);
    }

    #[test]
    fn repeat_expands_to_a_long_string() {
        let got = expand(json!({"app": {"repeat": "ab", "times": 3}}));
        assert_eq!(got, json!({"app": "ababab"}));
    }
}
