//! Whether a pod fits on the node, as kube-scheduler's filters decide it
//! (NodeResourcesFit, then NodeAffinity's `nodeSelector`): the test cluster
//! runs no scheduler, and a pod that asks for more than the node has must
//! stay Pending with kube-scheduler's reason instead of being run anyway.
//!
//! Checked: the pod count, `cpu`, `memory` and extended resources (a name
//! with a domain, e.g. `nvidia.com/gpu`), the node's allocatable minus
//! what its bound, unfinished pods request. Not checked, as the node
//! advertises none of them: `ephemeral-storage`, `hugepages-*`; nor node
//! affinity terms, taints and host ports.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::{QuantityError, parse_milli};

/// Resource amounts by name, in milli-units ([`parse_milli`]).
pub(crate) type Resources = BTreeMap<String, u128>;

/// What the node offers to pods.
#[derive(Debug, Clone, Default)]
pub(crate) struct Offer {
    /// Allocatable resources (milli-units), `pods` excluded.
    pub(crate) allocatable: Resources,
    /// Allocatable pod count.
    pub(crate) pods: u64,
    /// The Node's labels, for `nodeSelector`.
    pub(crate) labels: BTreeMap<String, String>,
}

/// What the pods bound to the node and not yet finished take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Their summed requests.
    pub(crate) requests: Resources,
    /// How many there are.
    pub(crate) pods: u64,
}

impl Usage {
    /// Counts one more pod with `requests`.
    pub(crate) fn add(&mut self, requests: &Resources) {
        self.pods += 1;
        for (name, amount) in requests {
            let total = self.requests.entry(name.clone()).or_default();
            *total = total.saturating_add(*amount);
        }
    }
}

/// Why a pod does not fit: kube-scheduler's reasons for the one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unfit {
    reasons: Vec<String>,
}

impl Unfit {
    /// The `PodScheduled` condition's message, worded as kube-scheduler's
    /// (`0/1 nodes are available: 1 Insufficient nvidia.com/gpu.`), so that
    /// whoever reads it (kiln, a person) sees what a real cluster says.
    pub(crate) fn message(&self) -> String {
        let mut reasons: Vec<String> = self.reasons.iter().map(|r| format!("1 {r}")).collect();
        reasons.sort();
        format!("0/1 nodes are available: {}.", reasons.join(", "))
    }
}

/// The resources a pod requests, as kube-scheduler adds them up: the sum
/// over its containers, or the largest init container's when that is more,
/// plus the pod's overhead. A container's limit stands in for a missing
/// request (the API server defaults requests to limits the same way).
pub(crate) fn pod_requests(spec: &Value) -> Result<Resources, QuantityError> {
    let mut total = Resources::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        for (name, amount) in container_requests(c)? {
            let sum = total.entry(name).or_default();
            *sum = sum.saturating_add(amount);
        }
    }
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        for (name, amount) in container_requests(c)? {
            let max = total.entry(name).or_default();
            *max = (*max).max(amount);
        }
    }
    for (name, amount) in quantities(&spec["overhead"])? {
        let sum = total.entry(name).or_default();
        *sum = sum.saturating_add(amount);
    }
    Ok(total)
}

/// One container's requests, its limits filling in the missing ones.
fn container_requests(c: &Value) -> Result<Resources, QuantityError> {
    let mut requests = quantities(&c["resources"]["limits"])?;
    requests.extend(quantities(&c["resources"]["requests"])?);
    Ok(requests)
}

/// A resource list (`{"cpu": "500m", ...}`) in milli-units.
fn quantities(list: &Value) -> Result<Resources, QuantityError> {
    let mut out = Resources::new();
    for (name, amount) in list.as_object().into_iter().flatten() {
        let text = match amount {
            Value::String(s) => s.clone(),
            // Numbers are accepted by the API server's JSON decoding.
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        out.insert(name.clone(), parse_milli(&text)?);
    }
    Ok(out)
}

/// Whether a resource is one the fit checks (see the module docs).
fn checked(name: &str) -> bool {
    name == "cpu" || name == "memory" || (name.contains('/') && !name.contains("kubernetes.io/"))
}

/// Whether a pod with `requests` and `node_selector` fits on the node that
/// offers `offer` and of which `used` is taken: kube-scheduler's resource
/// filter first (all its reasons at once), then the node selector.
pub(crate) fn fit(
    offer: &Offer,
    used: &Usage,
    requests: &Resources,
    node_selector: &Value,
) -> Result<(), Unfit> {
    let mut reasons = Vec::new();
    if used.pods.saturating_add(1) > offer.pods {
        reasons.push("Too many pods".to_string());
    }
    for (name, wanted) in requests.iter().filter(|(name, _)| checked(name)) {
        if *wanted == 0 {
            continue;
        }
        let offered = offer.allocatable.get(name).copied().unwrap_or(0);
        let taken = used.requests.get(name).copied().unwrap_or(0);
        if *wanted > offered.saturating_sub(taken) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() && !selects(node_selector, &offer.labels) {
        reasons.push("node(s) didn't match node selector".to_string());
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Unfit { reasons })
    }
}

/// Every `key: value` of the selector is one of the labels.
fn selects(node_selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    node_selector
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| value.as_str() == labels.get(key).map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn offer() -> Offer {
        Offer {
            allocatable: [
                ("cpu".to_string(), 4000),
                ("memory".to_string(), 8 * 1024 * 1024 * 1024 * 1000),
                ("nvidia.com/gpu".to_string(), 1000),
            ]
            .into(),
            pods: 3,
            labels: [("kubernetes.io/os".to_string(), "linux".to_string())].into(),
        }
    }

    fn requests(spec: Value) -> Resources {
        pod_requests(&spec).expect("valid quantities")
    }

    #[test]
    fn requests_sum_containers_and_take_the_largest_init_container() {
        let spec = json!({
            "containers": [
                {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"resources": {"requests": {"cpu": "250m"}, "limits": {"nvidia.com/gpu": 2}}},
                {},
            ],
            "initContainers": [
                {"resources": {"requests": {"cpu": "2"}}},
                {"resources": {"requests": {"memory": "10Mi"}}},
            ],
            "overhead": {"cpu": "10m"},
        });
        let r = requests(spec);
        assert_eq!(r["cpu"], 2010);
        assert_eq!(r["memory"], 1024 * 1024 * 1024 * 1000);
        assert_eq!(r["nvidia.com/gpu"], 2000);
    }

    #[test]
    fn a_request_wins_over_its_limit() {
        let spec = json!({"containers": [{"resources": {
            "requests": {"cpu": "100m"}, "limits": {"cpu": "2", "memory": "1Ki"},
        }}]});
        let r = requests(spec);
        assert_eq!((r["cpu"], r["memory"]), (100, 1_024_000));
    }

    #[test]
    fn a_pod_that_fits_fits() {
        let r =
            requests(json!({"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}));
        assert_eq!(fit(&offer(), &Usage::default(), &r, &json!(null)), Ok(()));
        let sel = json!({"kubernetes.io/os": "linux"});
        assert_eq!(fit(&offer(), &Usage::default(), &r, &sel), Ok(()));
    }

    #[test]
    fn eight_gpus_are_insufficient_with_the_schedulers_message() {
        let r =
            requests(json!({"containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}]}));
        let unfit = fit(&offer(), &Usage::default(), &r, &json!({})).expect_err("does not fit");
        assert_eq!(
            unfit.message(),
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        );
    }

    #[test]
    fn what_bound_pods_use_is_taken_from_the_offer() {
        let one_gpu =
            requests(json!({"containers": [{"resources": {"requests": {"nvidia.com/gpu": "1"}}}]}));
        let mut used = Usage::default();
        assert_eq!(fit(&offer(), &used, &one_gpu, &json!({})), Ok(()));
        used.add(&one_gpu);
        assert!(fit(&offer(), &used, &one_gpu, &json!({})).is_err());
        let cpu = requests(json!({"containers": [{"resources": {"requests": {"cpu": "3.5"}}}]}));
        used.add(&cpu);
        let more_cpu =
            requests(json!({"containers": [{"resources": {"requests": {"cpu": "600m"}}}]}));
        let unfit = fit(&offer(), &used, &more_cpu, &json!({})).expect_err("cpu");
        assert_eq!(
            unfit.message(),
            "0/1 nodes are available: 1 Insufficient cpu."
        );
        let small = requests(json!({"containers": [{"resources": {"requests": {"cpu": "500m"}}}]}));
        assert_eq!(fit(&offer(), &used, &small, &json!({})), Ok(()));
    }

    #[test]
    fn all_resource_reasons_are_given_sorted() {
        let mut used = Usage::default();
        used.add(&Resources::new());
        used.add(&Resources::new());
        used.add(&Resources::new());
        let r = requests(json!({"containers": [{"resources": {"requests": {
            "nvidia.com/gpu": "2", "cpu": "5", "example.com/foo": "1",
        }}}]}));
        let unfit = fit(&offer(), &used, &r, &json!({"no": "match"})).expect_err("unfit");
        assert_eq!(
            unfit.message(),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient example.com/foo, \
             1 Insufficient nvidia.com/gpu, 1 Too many pods."
        );
    }

    #[test]
    fn a_node_selector_must_match_the_labels() {
        let none = Resources::new();
        let sel = json!({"kubernetes.io/os": "windows"});
        let unfit = fit(&offer(), &Usage::default(), &none, &sel).expect_err("no match");
        assert_eq!(
            unfit.message(),
            "0/1 nodes are available: 1 node(s) didn't match node selector."
        );
        let missing = json!({"gpu": "yes"});
        assert!(fit(&offer(), &Usage::default(), &none, &missing).is_err());
    }

    #[test]
    fn unchecked_resources_do_not_block() {
        let r = requests(json!({"containers": [{"resources": {"requests": {
            "ephemeral-storage": "1Gi", "hugepages-2Mi": "2Mi",
        }}}]}));
        assert_eq!(fit(&offer(), &Usage::default(), &r, &json!({})), Ok(()));
    }

    #[test]
    fn a_bad_quantity_is_an_error() {
        let spec = json!({"containers": [{"resources": {"requests": {"cpu": "lots"}}}]});
        assert!(pod_requests(&spec).is_err());
    }
}
