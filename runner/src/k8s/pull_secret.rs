//! Image pull secrets (`kiln run --on kubernetes --image-pull-secret`): the
//! cluster's nodes pull the run's images from the registries kiln pushed
//! them to, and a node has no credentials of its own for a private one. So,
//! when asked, kiln hands its own credentials for each registry the run
//! uses to the cluster as a Secret of type `kubernetes.io/dockerconfigjson`
//! in the run's namespace, and names it in every pod's `imagePullSecrets`.
//!
//! The manifest is pure (unit tested); [`apply_pull_secret`] creates it or
//! updates the one kiln made before. The password goes into the Secret's
//! data and nowhere else: no message here holds it, and a
//! [`PullSecretError`] names only secrets, registries and namespaces.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kiln_oci::Credentials;
use kiln_pipeline::{KubernetesSettings, spanned};
use kube::api::Api;
use serde_json::json;

pub use super::apply::Applied;
use super::apply::{ApplyError, create_or_replace};
use super::names::dns_label;
use super::pod::{LABEL_MANAGED_BY, MANAGED_BY_KILN};

/// The Secret type the kubelet reads a docker config from.
pub const SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// The key of that type's docker config.
pub const DATA_KEY: &str = ".dockerconfigjson";
/// Every kiln pull secret's name starts so.
pub const NAME_PREFIX: &str = "kiln-pull-";
/// Why a pull secret could not be applied. Never holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum PullSecretError {
    /// A Secret of that name exists and kiln did not make it: it may hold
    /// someone else's credentials, which kiln does not overwrite.
    #[error(
        "Secret {name} in namespace {namespace} was not made by kiln (it lacks the label {LABEL_MANAGED_BY}={MANAGED_BY_KILN}); kiln leaves it alone: delete it, or run without --image-pull-secret and list your own in pod_settings.image_pull_secrets"
    )]
    NotKiln {
        /// The Secret's name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// The Secret kept being deleted and created by someone else while
    /// kiln tried to write it.
    #[error(
        "Secret {name} in namespace {namespace} kept being deleted while kiln wrote it; try again"
    )]
    Vanished {
        /// The Secret's name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// The Secret handed to [`apply_pull_secret`] has no name.
    #[error("the image pull secret has no name")]
    Unnamed,
    /// The API server refused or could not be reached.
    #[error("{what}: {source}")]
    Api {
        /// What kiln was doing.
        what: String,
        /// The API's answer (boxed: it is large, and errors are rare).
        #[source]
        source: Box<kube::Error>,
    },
}

/// The pull secret of `registry` (`host[:port]`): `kiln-pull-HOST-PORT`,
/// a valid Secret name whatever the host.
pub fn secret_name(registry: &str) -> String {
    format!(
        "{NAME_PREFIX}{}",
        dns_label(registry, 63 - NAME_PREFIX.len())
    )
}

/// How a docker config keys `registry`: as written, except Docker Hub,
/// which the kubelet (like docker) knows as `https://index.docker.io/v1/`.
fn config_key(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    }
}

/// The pull secrets for `credentials` (registry `host[:port]` and what
/// kiln uses there), by name: one per registry, except that registries
/// whose names sanitize alike share one Secret (its docker config lists
/// each), so none overwrites another's.
pub fn pull_secrets(namespace: &str, credentials: &[(String, Credentials)]) -> Vec<Secret> {
    let mut by_name: BTreeMap<String, Vec<&(String, Credentials)>> = BTreeMap::new();
    for entry in credentials {
        by_name
            .entry(secret_name(&entry.0))
            .or_default()
            .push(entry);
    }
    by_name
        .into_iter()
        .map(|(name, entries)| {
            let auths: serde_json::Map<String, serde_json::Value> = entries
                .iter()
                .map(|(registry, c)| {
                    let auth = base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{}", c.username, c.secret));
                    (
                        config_key(registry).to_string(),
                        json!({"username": c.username, "password": c.secret, "auth": auth}),
                    )
                })
                .collect();
            let config = json!({ "auths": auths }).to_string();
            Secret {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(namespace.to_string()),
                    labels: Some(
                        [(LABEL_MANAGED_BY.to_string(), MANAGED_BY_KILN.to_string())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                type_: Some(SECRET_TYPE.to_string()),
                data: Some([(DATA_KEY.to_string(), ByteString(config.into_bytes()))].into()),
                ..Secret::default()
            }
        })
        .collect()
}

/// Adds `names` to the pod settings' `image_pull_secrets`, after the
/// user's own (which stay) and without repeating one: how the orchestrator
/// pod and every step pod of a run get the run's pull secrets.
pub fn attach(settings: &mut KubernetesSettings, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let pod = settings.pod_settings.get_or_insert_with(Default::default);
    let list = pod.image_pull_secrets.get_or_insert_with(Vec::new);
    for name in names {
        if !list.iter().any(|s| s.value == *name) {
            list.push(spanned(name.clone()));
        }
    }
}

/// Creates `secret` in `namespace`, or, when kiln's Secret of that name is
/// there already (an earlier run), replaces its data: the credentials may
/// have changed since. A Secret of that name kiln did not make is left
/// alone ([`PullSecretError::NotKiln`]).
pub async fn apply_pull_secret(
    client: &kube::Client,
    namespace: &str,
    secret: &Secret,
) -> Result<Applied, PullSecretError> {
    let name = secret
        .metadata
        .name
        .clone()
        .ok_or(PullSecretError::Unnamed)?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let update = |mut existing: Secret| {
        existing.data.clone_from(&secret.data);
        existing
    };
    create_or_replace(&api, &name, secret, update)
        .await
        .map_err(|e| {
            let (name, namespace) = (name.clone(), namespace.to_string());
            match e {
                ApplyError::NotKiln => PullSecretError::NotKiln { name, namespace },
                ApplyError::Vanished => PullSecretError::Vanished { name, namespace },
                ApplyError::Api { doing, source } => PullSecretError::Api {
                    what: format!("{doing} Secret {name} in namespace {namespace}"),
                    source: Box::new(source),
                },
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, secret: &str) -> Credentials {
        Credentials {
            username: user.into(),
            secret: secret.into(),
        }
    }

    fn config(secret: &Secret) -> serde_json::Value {
        let data = secret.data.as_ref().expect("data");
        serde_json::from_slice(&data[DATA_KEY].0).expect("JSON")
    }

    #[test]
    fn names_are_valid_secret_names_from_the_registry() {
        assert_eq!(secret_name("127.0.0.1:5443"), "kiln-pull-127-0-0-1-5443");
        assert_eq!(
            secret_name("Registry.Example.org"),
            "kiln-pull-registry-example-org"
        );
        let long = secret_name(&format!("{}.example:5000", "x".repeat(80)));
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn the_secret_is_a_docker_config_of_kilns() {
        let secrets = pull_secrets(
            "ml",
            &[("127.0.0.1:5443".into(), creds("kiln", "s3cret:with-colon"))],
        );
        assert_eq!(secrets.len(), 1);
        let s = &secrets[0];
        assert_eq!(s.metadata.name.as_deref(), Some("kiln-pull-127-0-0-1-5443"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ml"));
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        assert_eq!(
            s.metadata.labels.as_ref().expect("labels")[LABEL_MANAGED_BY],
            "kiln"
        );
        let entry = &config(s)["auths"]["127.0.0.1:5443"];
        assert_eq!(entry["username"], "kiln");
        assert_eq!(entry["password"], "s3cret:with-colon");
        let auth = base64::engine::general_purpose::STANDARD
            .decode(entry["auth"].as_str().expect("auth"))
            .expect("base64");
        assert_eq!(auth, b"kiln:s3cret:with-colon");
        // As the API server receives it: data base64-encoded.
        let wire = serde_json::to_value(s).expect("JSON");
        assert!(wire["data"][DATA_KEY].is_string(), "{wire}");
        assert_eq!(wire["type"], SECRET_TYPE);
    }

    #[test]
    fn registries_that_sanitize_alike_share_one_secret_and_docker_hub_is_keyed_as_docker_does() {
        let secrets = pull_secrets(
            "ml",
            &[
                ("a.b:5000".into(), creds("u1", "p1")),
                ("a-b:5000".into(), creds("u2", "p2")),
                ("docker.io".into(), creds("u3", "p3")),
            ],
        );
        let names: Vec<_> = secrets
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["kiln-pull-a-b-5000", "kiln-pull-docker-io"]);
        let shared = config(&secrets[0]);
        assert_eq!(shared["auths"]["a.b:5000"]["username"], "u1");
        assert_eq!(shared["auths"]["a-b:5000"]["username"], "u2");
        let hub = config(&secrets[1]);
        assert_eq!(
            hub["auths"]["https://index.docker.io/v1/"]["password"],
            "p3"
        );
    }

    #[test]
    fn attaching_keeps_the_users_secrets_and_repeats_none() {
        let mut s = KubernetesSettings::default();
        attach(&mut s, &[]);
        assert!(s.pod_settings.is_none(), "nothing to attach, nothing set");
        s.pod_settings = Some(kiln_pipeline::PodSettings {
            image_pull_secrets: Some(vec![spanned("regcred".to_string())]),
            ..Default::default()
        });
        let ours = ["kiln-pull-x".to_string(), "regcred".to_string()];
        attach(&mut s, &ours);
        attach(&mut s, &ours);
        let names: Vec<String> = s
            .pod_settings
            .and_then(|p| p.image_pull_secrets)
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.value)
            .collect();
        assert_eq!(names, ["regcred", "kiln-pull-x"]);
    }
}
