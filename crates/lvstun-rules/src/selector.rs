//! Label-selector matching, as the API server matches: the operator uses it to find a
//! VirtualService's RealServers and balancer nodes, the daemons to find their own.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `sel` selects an object with `labels` (matchLabels AND matchExpressions; an empty
/// selector selects everything). Matches in place, without building a parsed selector, because
/// the operator runs this for every RealServer against every VirtualService of a namespace. A
/// selector with an operator the API server would have refused selects nothing rather than
/// guess (the operator reports such a VirtualService as invalid).
pub fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selects_matches_like_the_api_server() {
        let sel = LabelSelector {
            match_labels: Some(l(&[("app", "www")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["a", "b"]),
                expr("zone", "NotIn", &["x"]),
                expr("role", "Exists", &[]),
                expr("old", "DoesNotExist", &[]),
            ]),
        };
        assert!(selects(
            &sel,
            &l(&[("app", "www"), ("tier", "a"), ("role", "")])
        ));
        assert!(selects(
            &sel,
            &l(&[("app", "www"), ("tier", "b"), ("role", "r"), ("zone", "y")])
        ));
        assert!(!selects(
            &sel,
            &l(&[("app", "db"), ("tier", "a"), ("role", "")])
        ));
        assert!(!selects(
            &sel,
            &l(&[("app", "www"), ("tier", "c"), ("role", "")])
        ));
        assert!(!selects(
            &sel,
            &l(&[("app", "www"), ("tier", "a"), ("role", ""), ("zone", "x")])
        ));
        assert!(!selects(&sel, &l(&[("app", "www"), ("tier", "a")])));
        assert!(!selects(
            &sel,
            &l(&[("app", "www"), ("tier", "a"), ("role", ""), ("old", "1")])
        ));
        assert!(
            selects(&LabelSelector::default(), &BTreeMap::new()),
            "empty selects everything"
        );
        let bad = LabelSelector {
            match_expressions: Some(vec![expr("k", "Gt", &["1"])]),
            ..Default::default()
        };
        assert!(!selects(&bad, &l(&[("k", "2")])));
    }

    #[test]
    fn selector_operators() {
        let labels = l(&[("app", "www")]);
        let sel = |json: serde_json::Value| serde_json::from_value::<LabelSelector>(json).unwrap();
        assert!(selects(&sel(serde_json::json!({})), &labels));
        assert!(selects(
            &sel(serde_json::json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]})),
            &labels
        ));
        assert!(!selects(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]})
            ),
            &labels
        ));
        assert!(selects(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]})
            ),
            &labels
        ));
        assert!(!selects(
            &sel(serde_json::json!({"matchLabels": {"app": "x"}})),
            &labels
        ));
        assert!(!selects(
            &sel(serde_json::json!({"matchExpressions": [{"key": "app", "operator": "Bogus"}]})),
            &labels
        ));
    }
}
