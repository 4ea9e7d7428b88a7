//! The standalone configuration file: the same `VirtualService` and `RealServer` objects the
//! cluster holds, as a multi-document YAML file (what `kubectl get -o yaml` or the examples in
//! `deploy/examples/` look like). Parsing is pure; [`load`] only reads the file.

use lvstun_crds::v1alpha1::{RealServer, VirtualService};
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
        let object = |kind: &'static str| {
            move |source| Error::Object {
                document,
                kind,
                source,
            }
        };
        match kind {
            "VirtualService" => objects
                .virtual_services
                .push(serde_norway::from_value(value).map_err(object("VirtualService"))?),
            "RealServer" => objects
                .real_servers
                .push(serde_norway::from_value(value).map_err(object("RealServer"))?),
            other => {
                return Err(Error::Unexpected {
                    document,
                    field: "kind",
                    found: other.to_owned(),
                    expected: "VirtualService or RealServer",
                });
            }
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
                Error::Object {
                    document: 1,
                    kind: "RealServer",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("address"));
        // The cause is kept: serde_norway's error, not only its text.
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("address")));
        assert!(matches!(
            parse("a: [unclosed"),
            Err(Error::Document { document: 1, .. })
        ));
    }

    #[test]
    fn empty_documents_are_skipped_but_an_empty_file_is_refused() {
        assert!(matches!(parse("---\n---\n"), Err(Error::NoObjects)));
        let rs = "---\napiVersion: lvstun.io/v1alpha1\nkind: RealServer\nmetadata: {name: x}\nspec: {address: 198.51.100.1}\n---\n";
        assert_eq!(parse(rs).unwrap().real_servers.len(), 1);
    }
}
