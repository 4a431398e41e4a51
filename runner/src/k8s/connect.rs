//! Reaching the cluster: the kubeconfig context (`KUBECONFIG` honoured) or
//! the pod's own service account, a namespace that must exist, and the
//! service account kiln's pods run as.

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// The service account kiln creates when `service_account_name` is unset.
pub const SERVICE_ACCOUNT: &str = "kiln-service-account";
/// The ClusterRole it is bound to in the run's namespace: pods, Jobs and
/// their logs there, nothing cluster-wide.
pub const CLUSTER_ROLE: &str = "edit";

/// Where and how to connect.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Use the pod's service account (`incluster`).
    pub incluster: bool,
    /// kubeconfig context; `None` is the current one.
    pub context: Option<String>,
    /// The namespace of the run.
    pub namespace: String,
}

/// Why kiln cannot use the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No kubeconfig, or not the context asked for.
    #[error("reading the kubeconfig{}: {source}", context.as_ref().map(|c| format!(" (context {c:?})")).unwrap_or_default())]
    Kubeconfig {
        /// The context asked for.
        context: Option<String>,
        /// What kube-rs said.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Not in a pod, or its service account is not mounted.
    #[error("reading the in-cluster configuration (incluster: true): {0}")]
    InCluster(#[from] kube::config::InClusterError),
    /// The client could not be built (TLS, proxy).
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The namespace does not exist.
    #[error(
        "namespace {0:?} does not exist; create it (kubectl create namespace {0}) or set orchestrator.kubernetes.kubernetes_namespace"
    )]
    NoNamespace(String),
    /// The API server refused or could not be reached.
    #[error("{what}: {source}")]
    Api {
        /// What kiln was doing.
        what: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
}

/// A client for `target`, checked against the API server: the namespace
/// exists (a forbidden read is no proof it does not, so that passes).
pub async fn connect(target: &Target) -> Result<kube::Client, ConnectError> {
    let client = client(target).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.get_opt(&target.namespace).await {
        Ok(Some(_)) => Ok(client),
        Ok(None) => Err(ConnectError::NoNamespace(target.namespace.clone())),
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(client),
        Err(source) => Err(ConnectError::Api {
            what: format!("checking namespace {:?}", target.namespace),
            source,
        }),
    }
}

/// A client for `target`'s cluster, without asking the API server
/// anything: for commands about runs already submitted, whose namespace
/// may be gone (that only means their Job is).
pub async fn client(target: &Target) -> Result<kube::Client, ConnectError> {
    let config = if target.incluster {
        kube::Config::incluster()?
    } else {
        let kubeconfig = Kubeconfig::read().map_err(|source| ConnectError::Kubeconfig {
            context: target.context.clone(),
            source,
        })?;
        let options = KubeConfigOptions {
            context: target.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|source| ConnectError::Kubeconfig {
                context: target.context.clone(),
                source,
            })?
    };
    kube::Client::try_from(config).map_err(ConnectError::Client)
}

/// Creates [`SERVICE_ACCOUNT`] in `namespace` and binds it to
/// [`CLUSTER_ROLE`] there; both may exist already.
pub async fn ensure_service_account(
    client: &kube::Client,
    namespace: &str,
) -> Result<(), ConnectError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": SERVICE_ACCOUNT, "labels": {"app.kubernetes.io/managed-by": "kiln"}},
    }))
    .map_err(|e| ConnectError::Client(kube::Error::SerdeError(e)))?;
    create_or_keep(accounts.create(&PostParams::default(), &account).await).map_err(|source| {
        ConnectError::Api {
            what: format!("creating service account {SERVICE_ACCOUNT} in {namespace}"),
            source,
        }
    })?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{SERVICE_ACCOUNT}-{CLUSTER_ROLE}"),
            "labels": {"app.kubernetes.io/managed-by": "kiln"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}],
    }))
    .map_err(|e| ConnectError::Client(kube::Error::SerdeError(e)))?;
    create_or_keep(bindings.create(&PostParams::default(), &binding).await).map_err(|source| {
        ConnectError::Api {
            what: format!("binding {SERVICE_ACCOUNT} to ClusterRole {CLUSTER_ROLE} in {namespace}"),
            source,
        }
    })
}

/// A create whose 409 (already there) is success.
fn create_or_keep<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
