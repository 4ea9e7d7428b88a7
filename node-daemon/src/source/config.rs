//! The standalone configuration file: the same `VirtualService` and `RealServer` objects the
//! cluster holds, as a multi-document YAML file (what `kubectl get -o yaml` or the examples in
//! `deploy/examples/` look like). Parsing is pure; [`load`] only reads the file.

use lvstun_crds::v1alpha1::{RealServer, VirtualService};
use lvstun_crds::validate::{self, Kind};
use serde::Deserialize;

use crate::error::Error;

/// The objects of one configuration file.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Every `VirtualService`.
    pub virtual_services: Vec<VirtualService>,
    /// Every `RealServer`.
    pub real_servers: Vec<RealServer>,
}

/// The group/version this file format accepts.
const API_VERSION: &str = "lvstun.io/v1alpha1";

/// Parses a multi-document YAML file. Empty documents are skipped; a document of another kind
/// or version is refused (rather than ignored: a typo in `kind` must not silently remove a VIP).
pub fn parse(text: &str) -> Result<Objects, Error> {
    let mut objects = Objects::default();
    for (n, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let document = n + 1;
        let value = serde_norway::Value::deserialize(doc)
            .map_err(|source| Error::Document { document, source })?;
        if value.is_null() {
            continue;
        }
        let field = |key: &str| {
            value
                .get(key)
                .and_then(serde_norway::Value::as_str)
                .unwrap_or("")
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        if api_version != API_VERSION {
            return Err(Error::Unexpected {
                document,
                field: "apiVersion",
                found: api_version.to_owned(),
                expected: API_VERSION,
            });
        }
        let (kind, which): (&'static str, Kind) = match kind {
            "VirtualService" => ("VirtualService", Kind::VirtualService),
            "RealServer" => ("RealServer", Kind::RealServer),
            other => {
                return Err(Error::Unexpected {
                    document,
                    field: "kind",
                    found: other.to_owned(),
                    expected: "VirtualService or RealServer",
                });
            }
        };
        // The API's own schema and CEL rules, as the API server applies them: unknown fields,
        // ranges, addresses that can never work. Then the defaults it would fill in.
        let json: serde_json::Value =
            serde_norway::from_value(value).map_err(|source| Error::Object {
                document,
                kind,
                source,
            })?;
        let name = json
            .pointer("/metadata/name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let defaulted = validate::object(which, &json).map_err(|refusals| Error::Refused {
            document,
            kind,
            name: name.clone(),
            refusals,
        })?;
        let typed = |e: serde_json::Error| Error::Refused {
            document,
            kind,
            name: name.clone(),
            refusals: vec![validate::FieldError {
                field: "<object>".into(),
                detail: e.to_string(),
            }],
        };
        match which {
            Kind::VirtualService => objects
                .virtual_services
                .push(serde_json::from_value(defaulted).map_err(typed)?),
            Kind::RealServer => objects
                .real_servers
                .push(serde_json::from_value(defaulted).map_err(typed)?),
        }
    }
    if objects.virtual_services.is_empty() && objects.real_servers.is_empty() {
        // An empty file is more likely a file caught while being rewritten (or truncated by
        // mistake) than a wish to undo everything: refused, so the host keeps what it has.
        // `lvstun-node web cleanup` is the way to undo everything.
        return Err(Error::NoObjects);
    }
    Ok(objects)
}

/// Reads and parses the file at `path`.
pub fn load(path: &str) -> Result<Objects, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::File {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    parse(&text).map_err(|source| Error::FileContent {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_examples_parse() {
        let vs = include_str!("../../../deploy/examples/virtualservice.yaml");
        let rs = include_str!("../../../deploy/examples/realservers.yaml");
        let objects = parse(&format!("{vs}\n---\n{rs}")).unwrap();
        assert_eq!(objects.virtual_services.len(), 1);
        assert_eq!(objects.real_servers.len(), 2);
        assert_eq!(objects.virtual_services[0].spec.vip, "192.0.2.100");
        assert_eq!(objects.real_servers[1].spec.address, "198.51.100.130");
    }

    #[test]
    fn unknown_kinds_and_versions_are_refused() {
        let doc = "apiVersion: lvstun.io/v1alpha1\nkind: RealSever\nmetadata: {name: x}\nspec: {address: 198.51.100.1}\n";
        let err = parse(doc).unwrap_err();
        assert!(
            matches!(&err, Error::Unexpected { document: 1, field: "kind", found, .. } if found == "RealSever"),
            "{err:?}"
        );
        assert!(err.to_string().contains("RealSever"));
        let doc = "apiVersion: lvstun.io/v1\nkind: RealServer\nmetadata: {name: x}\nspec: {address: 198.51.100.1}\n";
        let err = parse(doc).unwrap_err();
        assert!(
            matches!(&err, Error::Unexpected { field: "apiVersion", found, .. } if found == "lvstun.io/v1"),
            "{err:?}"
        );
        let doc =
            "apiVersion: lvstun.io/v1alpha1\nkind: RealServer\nmetadata: {name: x}\nspec: {}\n";
        let err = parse(doc).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Refused {
                    document: 1,
                    kind: "RealServer",
                    refusals,
                    ..
                } if refusals.len() == 1 && refusals[0].field == "spec.address"
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "document 1 (RealServer \"x\"): spec.address: Required value"
        );
        assert!(matches!(
            parse("a: [unclosed"),
            Err(Error::Document { document: 1, .. })
        ));
    }

    /// The cases the issue tried by hand: each refused with the field named, instead of the
    /// object being programmed without it (or dropped, which withdrew the live service).
    #[test]
    fn a_file_is_as_strict_as_the_api() {
        let vs = include_str!("../../../deploy/examples/virtualservice.yaml");
        let cases = [
            (
                "a VIP that is not an IP",
                vs.replace("vip: 192.0.2.100", "vip: 192.0.2.1000"),
                "spec.vip: Invalid value: \"192.0.2.1000\": spec.vip must be an IPv4 address such as 192.0.2.100 (IPv6 is not supported yet)",
            ),
            (
                "a duplicated port",
                vs.replace(
                    "    - port: 80\n      protocol: TCP\n",
                    "    - port: 80\n      protocol: TCP\n    - port: 80\n",
                ),
                "spec.ports: Invalid value: spec.ports: each port/protocol pair may appear only once; remove the duplicate entry",
            ),
            (
                "a misspelled field",
                vs.replace("scheduler: mh", "sheduler: mh"),
                "spec.sheduler: unknown field \"spec.sheduler\"",
            ),
            (
                "a loopback VIP",
                vs.replace("vip: 192.0.2.100", "vip: 127.0.0.1"),
                "spec.vip: Invalid value: \"127.0.0.1\": spec.vip 127.0.0.1 is a loopback address: a VIP must be a unicast address, such as 192.0.2.100",
            ),
        ];
        for (name, text, want) in cases {
            let err = parse(&text).unwrap_err();
            let Error::Refused { refusals, .. } = &err else {
                panic!("{name}: {err:?}");
            };
            let got: Vec<String> = refusals.iter().map(ToString::to_string).collect();
            assert_eq!(got, [want], "{name}");
        }
        let rs = "apiVersion: lvstun.io/v1alpha1\nkind: RealServer\nmetadata: {name: web1}\nspec: {address: 198.51.100.10, weigth: 70000}\n";
        let err = parse(rs).unwrap_err();
        assert!(
            err.to_string().contains("spec.weigth: unknown field"),
            "{err}"
        );
        let rs = "apiVersion: lvstun.io/v1alpha1\nkind: RealServer\nmetadata: {name: web1}\nspec: {address: 198.51.100.10, weight: 70000}\n";
        let err = parse(rs).unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.weight: Invalid value: 70000: spec.weight in body should be less than or equal to 65535"),
            "{err}"
        );
    }

    #[test]
    fn empty_documents_are_skipped_but_an_empty_file_is_refused() {
        assert!(matches!(parse("---\n---\n"), Err(Error::NoObjects)));
        let rs = "---\napiVersion: lvstun.io/v1alpha1\nkind: RealServer\nmetadata: {name: x}\nspec: {address: 198.51.100.1}\n---\n";
        assert_eq!(parse(rs).unwrap().real_servers.len(), 1);
    }
}
