//! A node agent for kiln's test cluster (test support only, never shipped in
//! the `kiln` binary): it registers a Ready Node, binds the pods no
//! scheduler will (the test cluster runs none) when they fit as
//! kube-scheduler would judge it (module `fit`), and runs each pod bound to
//! it with kiln's rootless sandbox, reporting their status as a kubelet
//! would, so the Kubernetes backend is tested against real pod lifecycles.
//! As a kubelet it mounts the service-account token and other API-data
//! volumes (module `volumes`) and sets the API server's address and the
//! downward API in containers' environment, so a pod can itself use the
//! API in-cluster.
//!
//! Errors talking to the API server are logged and retried: a restart of
//! the API server leaves running containers alone, and what happened
//! meanwhile is reported once it answers again.
//!
//! This first version polls the API server every 500 ms instead of
//! watching: a list of all pods is cheap on a test cluster, and polling has
//! no watch bookkeeping (resource versions, reconnects) to get wrong.
//! Container logs are written to files ([`log_path`]) and served to the API
//! server's log proxy (`kubectl logs [-f]`) by the kubelet log endpoint
//! ([`logs`]), whose port the Node's status announces.

// A test reads best as one list of steps; the 120-line limit is for the
// product's code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod api;
mod downward;
mod fit;
pub mod logs;
mod pod;
mod pull;
pub mod quantity;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_builder::registry::TargetPlatform;
use kiln_builder::store::Store;
use kiln_oci::{Client, ClientOptions};
use kiln_rootfs::sandbox::Sandbox;
use kiln_rootfs::unpack::{RootCache, UnpackOptions};
use serde_json::{Value, json};

pub use api::{Api, ApiError};
use pod::Worker;

/// How often the pods are listed.
const POLL: Duration = Duration::from_millis(500);
/// How often the Node's Ready condition is renewed.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Why the agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The API server refused or did not answer.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The image store, root cache, registry client or the node's offer
    /// cannot be set up.
    #[error("setting up {what}: {detail}")]
    Setup {
        /// What.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

/// What the agent offers and where it keeps its files.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Node's name.
    pub node: String,
    /// Allocatable CPU (a Kubernetes quantity).
    pub cpu: String,
    /// Allocatable memory (a Kubernetes quantity).
    pub memory: String,
    /// Allocatable pod count.
    pub pods: u32,
    /// Allocatable `nvidia.com/gpu` (advertised only: no GPU is handed to
    /// containers).
    pub gpus: u32,
    /// Image cache, per-container scratch and logs.
    pub state_dir: PathBuf,
    /// The kubelet endpoint (container logs) on 127.0.0.1: its port (0: any
    /// free one) and its certificate and key files (PEM); without them no
    /// endpoint is served and `kubectl logs` cannot reach the node.
    pub kubelet: Option<KubeletEndpoint>,
    /// Extra CA certificates (PEM files) trusted for registries, as a
    /// node's container runtime is configured for a registry with a
    /// private CA.
    pub registry_cas: Vec<PathBuf>,
}

/// Where and how the kubelet endpoint is served.
#[derive(Debug, Clone)]
pub struct KubeletEndpoint {
    /// The port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// The serving certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// Where the output (stdout and stderr, line by line) of a container is
/// kept: `<state>/logs/<namespace>/<pod>/<container>.log`.
pub fn log_path(state_dir: &Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join(namespace)
        .join(pod)
        .join(format!("{container}.log"))
}

/// What every pod worker shares: the API, the sandbox and the image cache.
pub(crate) struct Shared {
    pub(crate) api: Api,
    pub(crate) config: Config,
    pub(crate) sandbox: Sandbox,
    /// Pulls run one at a time: the root cache unpacks each chain once.
    pub(crate) images: tokio::sync::Mutex<Images>,
    /// The logs whose container runs, for the log endpoint's followers.
    pub(crate) live_logs: Arc<logs::LiveLogs>,
    /// The variables a kubelet gives every container for the API server
    /// (`KUBERNETES_SERVICE_HOST`, ...), see [`service_env`].
    pub(crate) service_env: Vec<(String, String)>,
}

pub(crate) struct Images {
    /// Pulls without a pod's pull secret: anonymous (or the agent's own
    /// docker config, as a kubelet's node-wide one).
    pub(crate) client: Client,
    /// What a client for a pod's pull secret credentials trusts besides.
    pub(crate) registry_cas: Vec<PathBuf>,
    pub(crate) store: Store,
    pub(crate) roots: RootCache,
    pub(crate) platform: TargetPlatform,
    pub(crate) unpack: UnpackOptions,
}

/// The running agent.
pub struct Agent {
    shared: Arc<Shared>,
    /// What the node offers to pods, for the fit before binding.
    offer: fit::Offer,
    workers: HashMap<String, Worker>,
    started: String,
    /// The kubelet endpoint's port, once it listens.
    kubelet_port: Option<u16>,
}

impl Agent {
    /// An agent with its image cache under the state directory.
    pub fn new(api: Api, config: Config, sandbox: Sandbox) -> Result<Agent, AgentError> {
        let setup = |what| {
            move |e: &dyn std::fmt::Display| AgentError::Setup {
                what,
                detail: e.to_string(),
            }
        };
        let cache = config.state_dir.join("cache");
        let store = Store::new(&cache).map_err(|e| setup("the image store")(&e))?;
        let roots = RootCache::new(cache.join("roots")).map_err(|e| setup("the root cache")(&e))?;
        let client = Client::new(ClientOptions {
            ca_certs: config.registry_cas.clone(),
            ..ClientOptions::default()
        })
        .map_err(|e| setup("the registry client")(&e))?;
        let images = Images {
            client,
            registry_cas: config.registry_cas.clone(),
            store,
            roots,
            platform: TargetPlatform::default(),
            unpack: UnpackOptions::mapped(sandbox.id_map().clone()),
        };
        let offer = offer(&config).map_err(|e| setup("the node's resources")(&e))?;
        let service_env =
            service_env(api.server()).map_err(|e| setup("the API server's address")(&e))?;
        Ok(Agent {
            shared: Arc::new(Shared {
                api,
                config,
                sandbox,
                images: tokio::sync::Mutex::new(images),
                live_logs: Arc::default(),
                service_env,
            }),
            offer,
            workers: HashMap::new(),
            started: now_rfc3339(),
            kubelet_port: None,
        })
    }

    /// Registers the Node, then heartbeats and syncs pods until the process
    /// ends. Errors after registration are printed and retried.
    pub async fn run(mut self) -> Result<(), AgentError> {
        self.serve_logs().await?;
        self.register().await?;
        // Test harnesses wait for this line.
        eprintln!(
            "kiln-node-agent: node {} registered",
            self.shared.config.node
        );
        let mut beat = Instant::now();
        loop {
            if beat.elapsed() >= HEARTBEAT {
                if let Err(e) = self.report_node().await {
                    eprintln!("kiln-node-agent: heartbeat: {e}");
                }
                beat = Instant::now();
            }
            if let Err(e) = self.sync().await {
                eprintln!("kiln-node-agent: {e}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts the kubelet log endpoint, when configured, before the Node
    /// announces its port.
    async fn serve_logs(&mut self) -> Result<(), AgentError> {
        let Some(endpoint) = self.shared.config.kubelet.clone() else {
            return Ok(());
        };
        let setup = |detail: String| AgentError::Setup {
            what: "the kubelet log endpoint",
            detail,
        };
        let acceptor =
            logs::tls_acceptor(&endpoint.cert, &endpoint.key).map_err(|e| setup(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", endpoint.port))
            .await
            .map_err(|e| setup(format!("listening on 127.0.0.1:{}: {e}", endpoint.port)))?;
        let port = listener
            .local_addr()
            .map_err(|e| setup(e.to_string()))?
            .port();
        eprintln!("kiln-node-agent: kubelet log endpoint on https://127.0.0.1:{port}");
        tokio::spawn(logs::serve(
            listener,
            acceptor,
            self.shared.config.state_dir.clone(),
            Arc::clone(&self.shared.live_logs),
        ));
        self.kubelet_port = Some(port);
        Ok(())
    }

    async fn register(&self) -> Result<(), AgentError> {
        let c = &self.shared.config;
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": c.node, "labels": node_labels(c)},
        });
        match self.shared.api.post("/api/v1/nodes", &node).await {
            Ok(_) => {}
            // Left by an earlier agent: its status is replaced below.
            Err(e) if e.status() == Some(409) => {}
            Err(e) => return Err(e.into()),
        }
        self.report_node().await
    }

    /// Replaces the Node's status: resources, addresses and a fresh Ready
    /// condition (also the heartbeat).
    async fn report_node(&self) -> Result<(), AgentError> {
        let c = &self.shared.config;
        let resources = json!({
            "cpu": c.cpu,
            "memory": c.memory,
            "pods": c.pods.to_string(),
            "nvidia.com/gpu": c.gpus.to_string(),
        });
        let mut status = json!({"status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kiln-node-agent is running",
                "lastHeartbeatTime": now_rfc3339(),
                "lastTransitionTime": self.started,
            }],
            // InternalIP only: the API server's log proxy tries a Hostname
            // address first (--kubelet-preferred-address-types), and the
            // node's name resolves nowhere.
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
            ],
            "nodeInfo": {
                "kubeletVersion": "kiln-node-agent",
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH,
                "containerRuntimeVersion": "kiln-sandbox",
            },
        }});
        if let Some(port) = self.kubelet_port {
            status["status"]["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": port}});
        }
        let path = format!("/api/v1/nodes/{}/status", c.node);
        self.shared.api.merge_patch(&path, &status).await?;
        Ok(())
    }

    /// One pass over all pods: bind (when they fit), start, kill and
    /// remove.
    async fn sync(&mut self) -> Result<(), AgentError> {
        let list = self.shared.api.get("/api/v1/pods").await?;
        let empty = Vec::new();
        let items = list["items"].as_array().unwrap_or(&empty);
        let mut seen = HashSet::new();
        let mut unbound = Vec::new();
        for pod in items {
            let meta = &pod["metadata"];
            let (Some(ns), Some(name), Some(uid)) = (
                meta["namespace"].as_str(),
                meta["name"].as_str(),
                meta["uid"].as_str(),
            ) else {
                continue;
            };
            let deleting = !meta["deletionTimestamp"].is_null();
            let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
            if node.is_empty() {
                let scheduler = pod["spec"]["schedulerName"]
                    .as_str()
                    .unwrap_or("default-scheduler");
                if !deleting && scheduler == "default-scheduler" {
                    unbound.push(pod);
                }
                continue;
            }
            if node != self.shared.config.node {
                continue;
            }
            seen.insert(uid.to_string());
            if deleting {
                let gone = match self.workers.get(uid) {
                    Some(worker) => {
                        // The API server's default when unset is 30 s.
                        let grace = meta["deletionGracePeriodSeconds"].as_u64().unwrap_or(30);
                        worker.terminate(std::time::Duration::from_secs(grace));
                        worker.done()
                    }
                    None => true,
                };
                if gone {
                    self.remove(ns, name, uid).await;
                }
                continue;
            }
            let phase = pod["status"]["phase"].as_str().unwrap_or_default();
            if !self.workers.contains_key(uid) && phase != "Succeeded" && phase != "Failed" {
                let worker = Worker::start(Arc::clone(&self.shared), pod.clone());
                self.workers.insert(uid.to_string(), worker);
            }
        }
        self.schedule(items, unbound).await;
        // A pod removed behind the agent's back (forced deletion) is killed;
        // a worker is forgotten once its pod is gone and its process ended.
        self.workers.retain(|uid, worker| {
            if seen.contains(uid) {
                return true;
            }
            worker.kill();
            !worker.done()
        });
        Ok(())
    }

    /// The scheduler's part, done here because the test cluster runs no
    /// kube-scheduler: each unbound pod, oldest first, is bound when it
    /// fits in what the node has left, and otherwise marked Unschedulable
    /// with kube-scheduler's reason. Run on every pass, so a pod is bound
    /// as soon as others finish and free their resources.
    async fn schedule(&self, items: &[Value], mut unbound: Vec<&Value>) {
        let mut used = fit::Usage::default();
        for pod in items.iter().filter(|p| self.holds(p)) {
            // The API server validated these quantities: one it could not
            // have accepted counts as nothing rather than stopping the node.
            used.add(&fit::pod_requests(&pod["spec"]).unwrap_or_default());
        }
        unbound.sort_by_key(|p| {
            let meta = &p["metadata"];
            (
                meta["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                meta["namespace"].as_str().unwrap_or_default().to_string(),
                meta["name"].as_str().unwrap_or_default().to_string(),
            )
        });
        for pod in unbound {
            let requests = fit::pod_requests(&pod["spec"]);
            let verdict = match &requests {
                Ok(requests) => {
                    fit::fit(&self.offer, &used, requests, &pod["spec"]["nodeSelector"])
                        .map_err(|unfit| unfit.message())
                }
                Err(e) => Err(e.to_string()),
            };
            match verdict {
                Ok(()) => {
                    if self.bind(pod).await {
                        used.add(&requests.unwrap_or_default());
                    }
                }
                Err(message) => self.mark_unschedulable(pod, &message).await,
            }
        }
    }

    /// The pod is bound to this node and takes its resources: not finished
    /// (kube-scheduler leaves Succeeded and Failed pods out), deleted or not.
    fn holds(&self, pod: &Value) -> bool {
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        pod["spec"]["nodeName"].as_str() == Some(self.shared.config.node.as_str())
            && phase != "Succeeded"
            && phase != "Failed"
    }

    /// Sets the pod's `PodScheduled` condition to False, Unschedulable,
    /// with `message`, unless it says that already: the pod is looked at on
    /// every pass, and a write each time would be a stream of updates for
    /// its watchers.
    async fn mark_unschedulable(&self, pod: &Value, message: &str) {
        let current = pod["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"));
        if current.is_some_and(|c| {
            c["status"] == "False" && c["reason"] == "Unschedulable" && c["message"] == message
        }) {
            return;
        }
        let (ns, name) = names(pod);
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": now_rfc3339(),
        }]}});
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}/status");
        match self.shared.api.merge_patch(&path, &patch).await {
            Ok(_) => eprintln!("kiln-node-agent: pod {ns}/{name} unschedulable: {message}"),
            Err(e) => eprintln!("kiln-node-agent: marking {ns}/{name} unschedulable: {e}"),
        }
    }

    /// Binds a pod to this node; false when the API server refused.
    async fn bind(&self, pod: &Value) -> bool {
        let (ns, name) = names(pod);
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.shared.config.node},
        });
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}/binding");
        match self.shared.api.post(&path, &binding).await {
            Ok(_) => true,
            Err(e) => {
                eprintln!("kiln-node-agent: binding {ns}/{name}: {e}");
                false
            }
        }
    }

    /// Removes a deleted pod once its process is gone, as the kubelet does
    /// (grace period 0, only this incarnation of the pod).
    async fn remove(&self, ns: &str, name: &str, uid: &str) {
        let options = json!({
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        });
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        match self.shared.api.delete(&path, &options).await {
            Ok(_) => {}
            Err(e) if matches!(e.status(), Some(404 | 409)) => {}
            Err(e) => eprintln!("kiln-node-agent: removing {ns}/{name}: {e}"),
        }
    }
}

/// A pod's namespace and name (empty when missing).
fn names(pod: &Value) -> (&str, &str) {
    let meta = &pod["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default(),
    )
}

/// The Node's labels, as a kubelet sets them: also what `nodeSelector`s
/// are matched against.
fn node_labels(c: &Config) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", c.node.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", std::env::consts::ARCH),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// What the node offers, from its configuration.
fn offer(c: &Config) -> Result<fit::Offer, quantity::QuantityError> {
    let allocatable = [
        ("cpu", quantity::parse_milli(&c.cpu)?),
        ("memory", quantity::parse_milli(&c.memory)?),
        ("nvidia.com/gpu", u128::from(c.gpus) * 1000),
    ];
    Ok(fit::Offer {
        allocatable: allocatable
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        pods: u64::from(c.pods),
        labels: node_labels(c),
    })
}

/// Why the API server's address cannot be told to containers.
#[derive(Debug, thiserror::Error)]
#[error("server URL {url:?}: {why}")]
pub struct ServerUrlError {
    url: String,
    why: String,
}

/// The variables a kubelet sets in every container so that in-cluster
/// clients (kube-rs `Config::incluster`, client-go) find the API server:
/// those of the `kubernetes` Service, as docker links name them. They point
/// at the API server as this node reaches it (the kubeconfig's server, e.g.
/// 127.0.0.1:6443), not at the Service's cluster IP: nothing routes
/// 10.96.0.1 here, and containers share the host's network.
pub fn service_env(server: &str) -> Result<Vec<(String, String)>, ServerUrlError> {
    let fail = |why: String| ServerUrlError {
        url: server.to_string(),
        why,
    };
    let url = reqwest::Url::parse(server).map_err(|e| fail(e.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| fail("no host".to_string()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| fail("no port".to_string()))?;
    let address = if host.contains(':') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    };
    let prefix = format!("KUBERNETES_PORT_{port}_TCP");
    Ok(vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), address.clone()),
        (prefix.clone(), address),
        (format!("{prefix}_PROTO"), "tcp".into()),
        (format!("{prefix}_PORT"), port.to_string()),
        (format!("{prefix}_ADDR"), host),
    ])
}

pub(crate) use kiln_pipeline::time::now_rfc3339;

pub(crate) use kiln_builder::image::strings;

#[cfg(test)]
mod tests {
    use super::service_env;

    #[test]
    fn containers_are_told_the_api_server_as_the_node_reaches_it() {
        let env = service_env("https://127.0.0.1:6443").expect("a URL");
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("127.0.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("6443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://127.0.0.1:6443"));
        assert_eq!(get("KUBERNETES_PORT_6443_TCP_ADDR"), Some("127.0.0.1"));
        let default_port = service_env("https://api.example").expect("a URL");
        assert!(default_port.contains(&("KUBERNETES_SERVICE_PORT".into(), "443".into())));
        let v6 = service_env("https://[::1]:6443").expect("a URL");
        assert!(v6.contains(&("KUBERNETES_SERVICE_HOST".into(), "::1".into())));
        assert!(v6.contains(&("KUBERNETES_PORT".into(), "tcp://[::1]:6443".into())));
        assert!(service_env("not a url").is_err());
    }
}
