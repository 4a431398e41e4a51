//! Kubernetes names and label values from kiln's (step names may hold `_`,
//! pipeline names may be long): what `kubectl get pods -l step=NAME` and
//! the API server's validation accept.

/// A label value: at most 63 of `[A-Za-z0-9._-]`, starting and ending with
/// an alphanumeric; other characters become `-`. Empty stays empty (a valid
/// label value).
pub fn label_value(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut out: String = trimmed.chars().take(63).collect();
    while out.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.pop();
    }
    out
}

/// A DNS-1123 label (pod and container names): lower case alphanumerics and
/// `-`, at most `max` long, alphanumeric at both ends.
pub fn dns_label(text: &str, max: usize) -> String {
    let mapped: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut out: String = mapped.trim_matches('-').chars().take(max).collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { "kiln".into() } else { out }
}

/// The pod of one attempt of one step: `PREFIX-STEP-RUN-aATTEMPT`, cut so
/// the whole stays within 63 characters while the run id and attempt,
/// which make it unique, are always kept.
pub fn pod_name(prefix: &str, step: &str, run: &str, attempt: u32) -> String {
    let tail = format!("-{}-a{attempt}", dns_label(run, 20));
    let room = 63 - tail.len();
    let head = dns_label(&format!("{prefix}-{step}"), room);
    format!("{head}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_follow_the_rules() {
        assert_eq!(label_value("train_model"), "train_model");
        assert_eq!(label_value("my pipeline/v2"), "my-pipeline-v2");
        assert_eq!(label_value("_x_"), "x");
        assert_eq!(label_value(""), "");
        let long = label_value(&"a".repeat(70));
        assert_eq!(long.len(), 63);
        // Cut at 63 must not leave a trailing separator.
        let cut = label_value(&format!("{}-b", "a".repeat(62)));
        assert_eq!(cut, "a".repeat(62));
    }

    #[test]
    fn pod_names_are_dns_labels_that_keep_run_and_attempt() {
        assert_eq!(
            pod_name("kiln", "train_model", "c1cc3b6f", 2),
            "kiln-train-model-c1cc3b6f-a2"
        );
        let long = pod_name("kiln", &"Step".repeat(30), "c1cc3b6f", 12);
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with("-c1cc3b6f-a12"), "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
