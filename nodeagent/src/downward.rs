//! The downward API's `fieldRef`s: what a container may learn about its own
//! pod through its environment or a `downwardAPI` volume file, as the
//! kubelet resolves them (kiln's step pods read their name, namespace and
//! node this way).

use serde_json::Value;

/// The pod's IP and its host's: containers share the host's network.
pub(crate) const POD_IP: &str = "127.0.0.1";

/// A `fieldPath` the agent does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported fieldRef fieldPath {field_path:?}")]
pub(crate) struct FieldRefError {
    /// The path as the pod names it.
    pub(crate) field_path: String,
}

/// The value of `fieldPath` for `pod` (a pod object as listed), or why
/// there is none. Missing fields are empty, as the kubelet makes them; a
/// label or annotation that is not set is empty too.
pub(crate) fn field(pod: &Value, field_path: &str) -> Result<String, FieldRefError> {
    let meta = &pod["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if let Some(key) = subscript(field_path, "metadata.labels") {
        return Ok(text(&meta["labels"][key]));
    }
    if let Some(key) = subscript(field_path, "metadata.annotations") {
        return Ok(text(&meta["annotations"][key]));
    }
    Ok(match field_path {
        "metadata.name" => text(&meta["name"]),
        "metadata.namespace" => text(&meta["namespace"]),
        "metadata.uid" => text(&meta["uid"]),
        "metadata.labels" => lines(&meta["labels"]),
        "metadata.annotations" => lines(&meta["annotations"]),
        "spec.nodeName" => text(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => text(&pod["spec"]["serviceAccountName"]),
        "status.podIP" | "status.podIPs" | "status.hostIP" => POD_IP.to_string(),
        _ => {
            return Err(FieldRefError {
                field_path: field_path.into(),
            });
        }
    })
}

/// The key of `<map>['<key>']` (also `"<key>"`), when `path` is one.
fn subscript<'a>(path: &'a str, map: &str) -> Option<&'a str> {
    let rest = path
        .strip_prefix(map)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    rest.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
}

/// A map as a downwardAPI volume file shows it: `key="value"` lines,
/// sorted by key, values quoted.
fn lines(map: &Value) -> String {
    let mut entries: Vec<(&String, &Value)> = map.as_object().into_iter().flatten().collect();
    entries.sort_by_key(|(k, _)| *k);
    entries
        .into_iter()
        .map(|(k, v)| format!("{k}={}\n", Value::from(v.as_str().unwrap_or_default())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::field;
    use serde_json::json;

    fn pod() -> serde_json::Value {
        json!({
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u-1",
                "labels": {"x": "lx", "a": "la"},
                "annotations": {"x": "ax"},
            },
            "spec": {"nodeName": "kiln-node", "serviceAccountName": "default"},
        })
    }

    #[test]
    fn fields_resolve_as_the_kubelet_resolves_them() {
        let p = pod();
        let cases = [
            ("metadata.name", "p"),
            ("metadata.namespace", "ns"),
            ("metadata.uid", "u-1"),
            ("spec.nodeName", "kiln-node"),
            ("spec.serviceAccountName", "default"),
            ("status.podIP", "127.0.0.1"),
            ("status.hostIP", "127.0.0.1"),
            ("metadata.labels['x']", "lx"),
            ("metadata.annotations['x']", "ax"),
            ("metadata.labels['absent']", ""),
            ("metadata.labels", "a=\"la\"\nx=\"lx\"\n"),
        ];
        for (path, want) in cases {
            assert_eq!(field(&p, path).as_deref(), Ok(want), "{path}");
        }
    }

    #[test]
    fn unknown_paths_are_errors() {
        for path in ["spec.hostname", "metadata.labels[x", "status.phase"] {
            assert!(field(&pod(), path).is_err(), "{path}");
        }
    }
}
