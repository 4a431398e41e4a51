//! One pod on the node: its images pulled, its containers run one after
//! another in kiln's sandbox, its status reported after every change.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_builder::ready::{self, ReadyImage};
use kiln_oci::{Client, ClientOptions, CredentialSource};
use kiln_rootfs::sandbox::{BindMount, Killer, OutputLine, OutputRoute, RunSpec, User};
use serde_json::{Value, json};

use crate::downward::FieldRefError;
use crate::pull::Keyring;
use crate::volumes::{self, FetchError, HostVolume, Source};
use crate::{ApiError, Images, Shared, downward, log_path, now_rfc3339, strings};

/// Why a container's image could not be pulled: its waiting message.
#[derive(Debug, thiserror::Error)]
enum PullError {
    /// Pulling or unpacking the image failed.
    #[error("{0}")]
    Ready(ready::ReadyError),
    /// No registry client could be made with a pull secret's credentials.
    #[error("cannot pull image {reference}: {source}")]
    Client {
        /// The image.
        reference: String,
        /// Why.
        source: kiln_oci::RegistryError,
    },
}

/// Why a container's environment could not be read from the API: its
/// waiting message (CreateContainerConfigError).
#[derive(Debug, thiserror::Error)]
enum EnvError {
    /// Reading a ConfigMap or Secret failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A ConfigMap or Secret that is not `optional` does not exist.
    #[error("{} {name:?} not found", kind.noun())]
    NotFound {
        /// A ConfigMap or a Secret.
        kind: Source,
        /// Its name.
        name: String,
    },
    /// A `fieldRef` the agent does not resolve.
    #[error(transparent)]
    Field(#[from] FieldRefError),
    /// A key that is not `optional` is missing from its ConfigMap or Secret.
    #[error("couldn't find key {key} in {} {namespace}/{name}", kind.noun())]
    MissingKey {
        /// The key.
        key: String,
        /// A ConfigMap or a Secret.
        kind: Source,
        /// The pod's namespace.
        namespace: String,
        /// The object's name.
        name: String,
    },
}

/// Why a container's sandbox run could not be set up: its waiting message
/// (CreateContainerError).
#[derive(Debug, thiserror::Error)]
enum SpecError {
    /// Neither `command`/`args` nor the image's entrypoint/cmd give one.
    #[error("neither the container nor its image names a command")]
    NoCommand,
    /// `runAsUser` does not fit a uid.
    #[error("runAsUser {uid} is too large")]
    RunAsUser {
        /// The value given.
        uid: u64,
    },
    /// The image's user is not in its `/etc/passwd` (nor numeric).
    #[error("image user {user:?}: {source}")]
    ImageUser {
        /// The image's user.
        user: String,
        /// Why.
        source: Box<kiln_rootfs::sandbox::SandboxError>,
    },
    /// The container's scratch directories could not be created.
    #[error("creating {}: {source}", path.display())]
    Scratch {
        /// The scratch directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A volume mount names a volume the pod does not have.
    #[error("no volume {volume:?} in the pod")]
    NoVolume {
        /// The volume named.
        volume: String,
    },
}

/// Why a container did not run to an exit code (ContainerCannotRun).
#[derive(Debug, thiserror::Error)]
enum RunError {
    /// The log file or its directory could not be created.
    #[error("creating {}: {source}", path.display())]
    Log {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The sandbox did not start the process.
    #[error("{0}")]
    Spawn(kiln_rootfs::sandbox::SandboxError),
    /// Waiting for the process failed.
    #[error("the sandbox failed: {0}")]
    Wait(kiln_rootfs::sandbox::SandboxError),
    /// The blocking thread that ran the container panicked or was cancelled.
    #[error("the container thread failed: {0}")]
    Thread(tokio::task::JoinError),
}

/// The agent's handle on a pod's worker task.
pub(crate) struct Worker {
    state: Arc<WorkerState>,
}

#[derive(Default)]
struct WorkerState {
    /// The running container's killer and host pid (also its process
    /// group: the sandbox starts each run in a group of its own), while
    /// one runs.
    killer: Mutex<Option<(Killer, u32)>>,
    /// When a deleted pod's grace period ends (set on the first request).
    deadline: Mutex<Option<Instant>>,
    /// SIGTERM has been sent to the running container.
    termed: AtomicBool,
    /// Set once the pod is to stop: no further container starts.
    killed: AtomicBool,
    /// Set when the worker has finished (no process of the pod is left).
    done: AtomicBool,
}

impl Worker {
    /// Starts working on `pod` (a pod object as listed).
    pub(crate) fn start(shared: Arc<Shared>, pod: Value) -> Worker {
        let state = Arc::new(WorkerState::default());
        let task_state = Arc::clone(&state);
        tokio::spawn(async move {
            let mut pod = PodRun::new(shared, pod, Arc::clone(&task_state));
            if let Err(e) = pod.run().await {
                eprintln!("kiln-node-agent: pod {}/{}: {e}", pod.ns, pod.name);
            }
            // Whatever the way out (finished, deleted): the pod's overlays
            // and emptyDir volumes go, as no container of it will run again.
            let _ = std::fs::remove_dir_all(pod.scratch_dir());
            task_state.done.store(true, Ordering::SeqCst);
        });
        Worker { state }
    }

    /// Kills the running container, if any, and starts no other.
    pub(crate) fn kill(&self) {
        self.state.killed.store(true, Ordering::SeqCst);
        if let Ok(killer) = self.state.killer.lock()
            && let Some((killer, _)) = killer.as_ref()
            && let Err(e) = killer.kill()
        {
            eprintln!("kiln-node-agent: killing a container: {e}");
        }
    }

    /// Stops the pod as a deletion with `grace` asks: SIGTERM to the
    /// running container's processes at once, so a program can clean up,
    /// and SIGKILL once `grace` has passed. Called on every sync pass while
    /// the pod is being deleted; a shorter grace period later wins.
    pub(crate) fn terminate(&self, grace: Duration) {
        self.state.killed.store(true, Ordering::SeqCst);
        let now = Instant::now();
        let deadline = match self.state.deadline.lock() {
            Ok(mut slot) => {
                let deadline = slot.map_or(now + grace, |d| d.min(now + grace));
                *slot = Some(deadline);
                deadline
            }
            Err(_) => now,
        };
        if now >= deadline {
            return self.kill();
        }
        if !self.state.termed.load(Ordering::SeqCst)
            && let Ok(slot) = self.state.killer.lock()
            && let Some((_, pid)) = slot.as_ref()
        {
            self.state.termed.store(true, Ordering::SeqCst);
            // The whole group: the program runs under the sandbox's own
            // processes, which pass no signal on.
            let group = i32::try_from(*pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(group) = group
                && let Err(e) =
                    rustix::process::kill_process_group(group, rustix::process::Signal::TERM)
            {
                eprintln!("kiln-node-agent: SIGTERM to process group {pid}: {e}");
            }
        }
    }

    /// The worker has finished and its processes are gone.
    pub(crate) fn done(&self) -> bool {
        self.state.done.load(Ordering::SeqCst)
    }
}

/// `reference` pulled through `client` into the agent's image cache.
async fn ready_with(
    im: &Images,
    client: &Client,
    reference: &str,
) -> Result<ReadyImage, PullError> {
    ready::ready(
        client,
        &im.store,
        &im.roots,
        reference,
        &im.platform,
        &im.unpack,
    )
    .await
    .map_err(PullError::Ready)
}

struct PodRun {
    shared: Arc<Shared>,
    /// Shared with the agent's [`Worker`]: whether to stop.
    state: Arc<WorkerState>,
    pod: Value,
    ns: String,
    name: String,
    uid: String,
    start_time: String,
    /// The status of each container, in spec order.
    statuses: Vec<Value>,
    /// The pod's volumes, once ready.
    volumes: HashMap<String, HostVolume>,
    /// The last warning about the pod's pull secrets, said once.
    pull_warning: String,
}

impl PodRun {
    fn new(shared: Arc<Shared>, pod: Value, state: Arc<WorkerState>) -> PodRun {
        let field = |k: &str| pod["metadata"][k].as_str().unwrap_or_default().to_string();
        let (ns, name, uid) = (field("namespace"), field("name"), field("uid"));
        let statuses = containers(&pod)
            .iter()
            .map(|c| container_status(c, json!({"waiting": {"reason": "ContainerCreating"}})))
            .collect();
        PodRun {
            shared,
            state,
            pod,
            ns,
            name,
            uid,
            start_time: now_rfc3339(),
            statuses,
            volumes: HashMap::new(),
            pull_warning: String::new(),
        }
    }

    /// Reports the pod's phase and its containers' states, retrying while
    /// the API server does not answer (it may be restarting): a lost report
    /// would leave the pod's last state, e.g. Running, for good. Gives up
    /// when the pod is gone or is being deleted.
    async fn report(&self, phase: &str) -> Result<(), ApiError> {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.report_once(phase).await {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.status(), Some(404)) => return Err(e),
                Err(e) => {
                    eprintln!(
                        "kiln-node-agent: pod {}/{}: reporting {phase} (retrying in {backoff:?}): {e}",
                        self.ns, self.name
                    );
                    if !pause(&self.state, backoff).await {
                        return Err(e);
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn report_once(&self, phase: &str) -> Result<(), ApiError> {
        // The whole list is replaced: PodScheduled, set by the binding,
        // is kept.
        let running = if phase == "Running" { "True" } else { "False" };
        let now = now_rfc3339();
        let condition = |kind: &str, status: &str| json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
        let patch = json!({"status": {
            "phase": phase,
            "conditions": [
                condition("PodScheduled", "True"),
                condition("Initialized", "True"),
                condition("ContainersReady", running),
                condition("Ready", running),
            ],
            "startTime": self.start_time,
            "hostIP": downward::POD_IP,
            // Containers share the host's network: the pod's IP is the
            // host's, as for a hostNetwork pod.
            "podIP": downward::POD_IP,
            "podIPs": [{"ip": downward::POD_IP}],
            "containerStatuses": self.statuses,
        }});
        let path = format!("/api/v1/namespaces/{}/pods/{}/status", self.ns, self.name);
        self.shared.api.merge_patch(&path, &patch).await?;
        Ok(())
    }

    async fn run(&mut self) -> Result<(), ApiError> {
        let specs = containers(&self.pod);
        if specs.is_empty() {
            return self.report("Failed").await;
        }
        self.report("Pending").await?;
        if !self.mount_volumes().await {
            return Ok(());
        }
        let Some(images) = self.pull_images(&specs).await? else {
            return Ok(());
        };
        let mut phase = "Succeeded";
        for (i, (c, ready)) in specs.iter().zip(&images).enumerate() {
            match self.run_one(i, c, ready).await? {
                ContainerEnd::Succeeded => {}
                ContainerEnd::Failed => {
                    phase = "Failed";
                    break;
                }
                ContainerEnd::Stopped => return Ok(()),
            }
        }
        self.report(phase).await
    }

    /// Every image before any container starts: a pod whose image cannot
    /// be pulled stays Pending, as on a kubelet. `None` when the pod is to
    /// stop first.
    async fn pull_images(&mut self, specs: &[Value]) -> Result<Option<Vec<ReadyImage>>, ApiError> {
        let mut images = Vec::new();
        for (i, c) in specs.iter().enumerate() {
            match self.pull_until_ready(i, c).await? {
                Some(ready) => images.push(ready),
                None => return Ok(None),
            }
        }
        Ok(Some(images))
    }

    /// Retries container `c`'s image until it is pulled, its waiting state
    /// saying why not, as the kubelet does: the first failure is
    /// ErrImagePull, the retries after a growing pause (1 s, 2 s, 4 s, ...
    /// 10 s) ImagePullBackOff. `None` when the pod is to stop first.
    async fn pull_until_ready(
        &mut self,
        i: usize,
        c: &Value,
    ) -> Result<Option<ReadyImage>, ApiError> {
        let reference = c["image"].as_str().unwrap_or_default();
        let mut backoff = Duration::from_secs(1);
        let mut reason = "ErrImagePull";
        loop {
            match self.pull(reference).await {
                Ok(ready) => return Ok(Some(ready)),
                Err(e) => {
                    self.waiting(i, c, reason, &e.to_string()).await?;
                    if !pause(&self.state, backoff).await {
                        return Ok(None);
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    reason = "ImagePullBackOff";
                }
            }
        }
    }

    /// Reports container `i` as waiting for `reason` and the pod Pending.
    async fn waiting(
        &mut self,
        i: usize,
        c: &Value,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        self.statuses[i] = container_status(
            c,
            json!({"waiting": {"reason": reason, "message": message}}),
        );
        self.report("Pending").await
    }

    /// Runs container `i` (`c`, its image `ready`) to its end, its states
    /// reported on the way, and says how the pod goes on.
    async fn run_one(
        &mut self,
        i: usize,
        c: &Value,
        ready: &ReadyImage,
    ) -> Result<ContainerEnd, ApiError> {
        if self.killed() {
            return Ok(ContainerEnd::Stopped);
        }
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let Some(env) = self.env_when_ready(i, c).await? else {
            return Ok(ContainerEnd::Stopped);
        };
        let spec = match self.spec(c, ready, &name, env) {
            Ok(spec) => spec,
            Err(e) => {
                self.waiting(i, c, "CreateContainerError", &e.to_string())
                    .await?;
                return Ok(ContainerEnd::Stopped);
            }
        };
        let started = now_rfc3339();
        let run = self.launch(spec, &name).await;
        self.statuses[i] = container_status(c, json!({"running": {"startedAt": started}}));
        self.statuses[i]["started"] = json!(true);
        self.statuses[i]["ready"] = json!(true);
        if !self.killed() {
            self.report("Running").await?;
        }
        let outcome = run.await.unwrap_or_else(|e| Err(RunError::Thread(e)));
        if let Ok(mut slot) = self.state.killer.lock() {
            *slot = None;
        }
        if self.killed() {
            // The pod is being deleted: its status no longer matters.
            return Ok(ContainerEnd::Stopped);
        }
        let (terminated, failed) = terminated(outcome, &started);
        self.statuses[i] = container_status(c, json!({"terminated": terminated}));
        Ok(if failed {
            ContainerEnd::Failed
        } else {
            ContainerEnd::Succeeded
        })
    }

    /// Container `c`'s environment from the API. A missing ConfigMap or
    /// Secret may yet be created: the kubelet keeps retrying, and so does
    /// the agent, until the pod goes (`None`).
    async fn env_when_ready(
        &mut self,
        i: usize,
        c: &Value,
    ) -> Result<Option<Vec<(String, String)>>, ApiError> {
        loop {
            match self.api_env(c).await {
                Ok(env) => return Ok(Some(env)),
                Err(e) => {
                    if self.killed() {
                        return Ok(None);
                    }
                    self.waiting(i, c, "CreateContainerConfigError", &e.to_string())
                        .await?;
                    if !pause(&self.state, Duration::from_secs(1)).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Starts container `name` from `spec`. The sandbox is synchronous: it
    /// runs on a blocking thread, which hands the killer over as soon as
    /// the process exists, for [`Worker::kill`] and [`Worker::terminate`]
    /// to find.
    async fn launch(
        &self,
        spec: RunSpec,
        name: &str,
    ) -> tokio::task::JoinHandle<Result<i32, RunError>> {
        let state = self.state.as_ref();
        let log = log_path(&self.shared.config.state_dir, &self.ns, &self.name, name);
        let shared = Arc::clone(&self.shared);
        let (killer_tx, killer_rx) = tokio::sync::oneshot::channel();
        let run =
            tokio::task::spawn_blocking(move || run_container(&shared, &spec, &log, killer_tx));
        if let Ok(killer) = killer_rx.await
            && let Ok(mut slot) = state.killer.lock()
        {
            *slot = Some(killer);
        }
        // Deleted while starting: [`Worker::kill`] found no killer yet.
        if self.killed()
            && let Ok(slot) = state.killer.lock()
            && let Some((k, _)) = slot.as_ref()
        {
            let _ = k.kill();
        }
        run
    }

    /// Whether the pod is to stop, read afresh at every check: a deletion
    /// may come during any wait.
    fn killed(&self) -> bool {
        self.state.killed.load(Ordering::SeqCst)
    }

    /// Pulls and unpacks `reference` as the kubelet does: with the
    /// credentials of the pod's pull secrets that match its registry, the
    /// most specific first, until one works; without any when none
    /// matches. The error is the last pull's.
    async fn pull(&mut self, reference: &str) -> Result<ReadyImage, PullError> {
        let candidates = self.pull_keyring().await.lookup(reference);
        let im = self.shared.images.lock().await;
        let mut last = None;
        for credentials in candidates {
            // A client of its own: explicit credentials are sent to
            // whichever registry the client talks to, and this one talks
            // to the image's only.
            let client = Client::new(ClientOptions {
                credentials: CredentialSource {
                    explicit: Some(credentials),
                    ..CredentialSource::default()
                },
                ca_certs: im.registry_cas.clone(),
                ..ClientOptions::default()
            })
            .map_err(|source| PullError::Client {
                reference: reference.into(),
                source,
            })?;
            match ready_with(&im, &client, reference).await {
                Ok(image) => return Ok(image),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e),
            // No pull secret matches: the agent's own client.
            None => ready_with(&im, &im.client, reference).await,
        }
    }

    /// The pod's pull secrets, read afresh for every pull: one created
    /// after the pod counts on the next try, as on a kubelet. A missing or
    /// unusable one is skipped, the pull going on without it, with a
    /// warning (logged and posted as an event once per new reason).
    async fn pull_keyring(&mut self) -> Keyring {
        let mut keyring = Keyring::default();
        let mut problems = Vec::new();
        let names: Vec<String> = self.pod["spec"]["imagePullSecrets"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|r| r["name"].as_str().map(String::from))
            .collect();
        for name in names {
            let path = format!("/api/v1/namespaces/{}/secrets/{name}", self.ns);
            match self.shared.api.get(&path).await {
                Ok(secret) => {
                    if let Err(e) = keyring.add_secret(&name, &secret) {
                        problems.push(e.to_string());
                    }
                }
                Err(e) if e.status() == Some(404) => {
                    problems.push(format!("image pull secret {name} not found"));
                }
                Err(e) => problems.push(format!("reading image pull secret {name}: {e}")),
            }
        }
        if !problems.is_empty() {
            let message = format!(
                "{}; attempting to pull the image may not succeed",
                problems.join("; ")
            );
            if message != self.pull_warning {
                eprintln!("kiln-node-agent: pod {}/{}: {message}", self.ns, self.name);
                self.event("Warning", "FailedToRetrieveImagePullSecret", &message)
                    .await;
                self.pull_warning = message;
            }
        }
        keyring
    }

    fn scratch_dir(&self) -> std::path::PathBuf {
        self.shared.config.state_dir.join("pods").join(&self.uid)
    }

    /// Container `c`'s own environment, in Kubernetes' order: `envFrom`
    /// sources first, then `env` entries, a later one replacing an earlier
    /// one. ConfigMaps and Secrets are read through the API when the
    /// container starts, as the kubelet does; `fieldRef`s are the pod's own
    /// fields ([`downward`]). The error (a missing source or key that is
    /// not `optional`, an unsupported field) is the waiting message.
    async fn api_env(&self, c: &Value) -> Result<Vec<(String, String)>, EnvError> {
        let mut env: Vec<(String, String)> = Vec::new();
        let mut set = |key: String, value: String| {
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        };
        for from in c["envFrom"].as_array().map_or(&[][..], Vec::as_slice) {
            let prefix = from["prefix"].as_str().unwrap_or_default();
            for (kind, r) in [
                (Source::ConfigMap, &from["configMapRef"]),
                (Source::Secret, &from["secretRef"]),
            ] {
                let Some(name) = r["name"].as_str() else {
                    continue;
                };
                match self.source(kind, name).await? {
                    Some(data) => {
                        for (k, v) in data {
                            set(format!("{prefix}{k}"), v);
                        }
                    }
                    None if r["optional"] == json!(true) => {}
                    None => {
                        return Err(EnvError::NotFound {
                            kind,
                            name: name.into(),
                        });
                    }
                }
            }
        }
        for e in c["env"].as_array().map_or(&[][..], Vec::as_slice) {
            let Some(key) = e["name"].as_str() else {
                continue;
            };
            let from = &e["valueFrom"];
            if from.is_null() {
                set(
                    key.to_string(),
                    e["value"].as_str().unwrap_or_default().to_string(),
                );
                continue;
            }
            // The downward API; resource references (`resourceFieldRef`)
            // are not supported and left unset.
            if let Some(field_path) = from["fieldRef"]["fieldPath"].as_str() {
                set(key.to_string(), downward::field(&self.pod, field_path)?);
                continue;
            }
            for (kind, r) in [
                (Source::ConfigMap, &from["configMapKeyRef"]),
                (Source::Secret, &from["secretKeyRef"]),
            ] {
                let (Some(name), Some(wanted)) = (r["name"].as_str(), r["key"].as_str()) else {
                    continue;
                };
                let optional = r["optional"] == json!(true);
                let value = match self.source(kind, name).await? {
                    Some(data) => data.into_iter().find(|(k, _)| k == wanted).map(|(_, v)| v),
                    None if optional => None,
                    None => {
                        return Err(EnvError::NotFound {
                            kind,
                            name: name.into(),
                        });
                    }
                };
                match value {
                    Some(v) => set(key.to_string(), v),
                    None if optional => {}
                    None => {
                        return Err(EnvError::MissingKey {
                            key: wanted.into(),
                            kind,
                            namespace: self.ns.clone(),
                            name: name.into(),
                        });
                    }
                }
            }
        }
        Ok(env)
    }

    /// The data of a ConfigMap or Secret in the pod's namespace as text
    /// (environment values), or `None` when it does not exist.
    async fn source(
        &self,
        kind: Source,
        name: &str,
    ) -> Result<Option<Vec<(String, String)>>, FetchError> {
        let data = volumes::fetch(&self.shared.api, &self.ns, kind, name).await?;
        Ok(data.map(|data| {
            data.into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect()
        }))
    }

    /// Makes the pod's volumes ready, as the kubelet does before it pulls
    /// images: until then the containers stay ContainerCreating. A missing
    /// Secret or ConfigMap may yet be created, so the agent retries (every
    /// second) as the kubelet does, in this pod's own task: other pods go
    /// on. Each new reason is logged and posted as a `FailedMount` event,
    /// where `kubectl describe pod` shows it. False when the pod is to stop.
    async fn mount_volumes(&mut self) -> bool {
        let dir = self.scratch_dir().join("volumes");
        let mut last = String::new();
        loop {
            match volumes::prepare(&self.shared.api, &self.pod, &dir).await {
                Ok(ready) => {
                    self.volumes = ready;
                    return true;
                }
                Err(e) => {
                    let message = e.to_string();
                    if message != last {
                        eprintln!("kiln-node-agent: pod {}/{}: {message}", self.ns, self.name);
                        self.event("Warning", "FailedMount", &message).await;
                        last = message;
                    }
                    if !pause(&self.state, Duration::from_secs(1)).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Posts an event about the pod, as the kubelet reports it (best
    /// effort: a lost event loses only an explanation).
    async fn event(&self, kind: &str, reason: &str, message: &str) {
        let now = now_rfc3339();
        let node = &self.shared.config.node;
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{}.", self.name), "namespace": self.ns},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": self.ns,
                "name": self.name,
                "uid": self.uid,
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": node},
            "reportingComponent": "kubelet",
            "reportingInstance": node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let path = format!("/api/v1/namespaces/{}/events", self.ns);
        if let Err(e) = self.shared.api.post(&path, &event).await {
            eprintln!("kiln-node-agent: event for {}/{}: {e}", self.ns, self.name);
        }
    }

    /// The sandbox run of container `c`: command and args as Kubernetes
    /// combines them with the image's entrypoint and cmd, env, working
    /// directory and user, on a private overlay over the shared root.
    fn spec(
        &self,
        c: &Value,
        image: &ReadyImage,
        name: &str,
        pod_env: Vec<(String, String)>,
    ) -> Result<RunSpec, SpecError> {
        let argv = argv(
            strings(&c["command"]),
            strings(&c["args"]),
            &image.entrypoint,
            &image.cmd,
        );
        if argv.is_empty() {
            return Err(SpecError::NoCommand);
        }
        // As the kubelet: the image's variables give way to the API
        // server's, and those to the container's own.
        let mut env = image.env.clone();
        for (key, value) in self.shared.service_env.iter().cloned().chain(pod_env) {
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        }
        let user = match c["securityContext"]["runAsUser"].as_u64() {
            Some(uid) => {
                let uid = u32::try_from(uid).map_err(|_| SpecError::RunAsUser { uid })?;
                User { uid, gid: uid }
            }
            None if image.user.is_empty() => User::ROOT,
            None => User::resolve_in_root(&image.rootfs, &image.user).map_err(|source| {
                SpecError::ImageUser {
                    user: image.user.clone(),
                    source: Box::new(source),
                }
            })?,
        };
        let scratch = self.scratch_dir().join(name);
        for dir in ["upper", "work"] {
            std::fs::create_dir_all(scratch.join(dir)).map_err(|source| SpecError::Scratch {
                path: scratch.clone(),
                source,
            })?;
        }
        let mut spec = RunSpec::new(&image.rootfs, argv);
        for (k, v) in env {
            spec = spec.env(k, v);
        }
        spec.user = user;
        spec.workdir = c["workingDir"]
            .as_str()
            .filter(|w| w.starts_with('/'))
            .unwrap_or(&image.workdir)
            .to_string();
        spec.hostname = self.name.chars().take(63).collect();
        for m in c["volumeMounts"].as_array().map_or(&[][..], Vec::as_slice) {
            let (Some(volume), Some(mount_path)) = (m["name"].as_str(), m["mountPath"].as_str())
            else {
                continue;
            };
            let Some(source) = self.volumes.get(volume) else {
                // A volume the agent does not mount (see `volumes`).
                if !self.pod["spec"]["volumes"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v["name"] == volume))
                {
                    return Err(SpecError::NoVolume {
                        volume: volume.into(),
                    });
                }
                continue;
            };
            let path = source.path.clone();
            spec = spec.mount(if source.read_only || m["readOnly"] == json!(true) {
                BindMount::read_only(path, mount_path)
            } else {
                BindMount::read_write(path, mount_path)
            });
        }
        Ok(spec.writable_overlay(scratch.join("upper"), scratch.join("work")))
    }
}

/// Waits `how_long` before a retry, in short steps so that a deleted pod
/// is let go at once; false when the pod is to stop.
async fn pause(state: &WorkerState, how_long: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + how_long;
    while tokio::time::Instant::now() < deadline {
        if state.killed.load(Ordering::SeqCst) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    !state.killed.load(Ordering::SeqCst)
}

/// Runs one container to its end, its output lines into `log`; sends the
/// killer as soon as the process runs. The error is a sentence.
fn run_container(
    shared: &Shared,
    spec: &RunSpec,
    log: &Path,
    killer_tx: tokio::sync::oneshot::Sender<(Killer, u32)>,
) -> Result<i32, RunError> {
    // Followers of this log (`kubectl logs -f`) keep reading while it is
    // live, until the writer below is done.
    let _live = shared.live_logs.hold(log);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|source| RunError::Log {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let file = File::create(log).map_err(|source| RunError::Log {
        path: log.to_path_buf(),
        source,
    })?;
    let (tx, rx) = mpsc::channel::<OutputLine>();
    let mut running = shared
        .sandbox
        .spawn(spec, OutputRoute::Lines(tx))
        .map_err(RunError::Spawn)?;
    if let Ok(killer) = running.killer() {
        let _ = killer_tx.send((killer, running.pid()));
    }
    let writer = std::thread::spawn(move || {
        let mut out = BufWriter::new(file);
        for line in rx {
            let _ = writeln!(out, "{}", line.line);
            // Each line reaches the file at once, for `logs -f`.
            let _ = out.flush();
        }
    });
    let code = running.wait().map_err(RunError::Wait);
    drop(running);
    let _ = writer.join();
    code
}

/// A container's program and arguments, as Kubernetes combines them with
/// the image's: `command` replaces the entrypoint and drops the image's
/// cmd; `args` replaces the cmd.
fn argv(
    command: Vec<String>,
    args: Vec<String>,
    entrypoint: &[String],
    cmd: &[String],
) -> Vec<String> {
    let image_args = command.is_empty() && args.is_empty();
    let mut argv = if command.is_empty() {
        entrypoint.to_vec()
    } else {
        command
    };
    if image_args {
        argv.extend_from_slice(cmd);
    } else {
        argv.extend(args);
    }
    argv
}

/// The pod's containers (init and ephemeral containers are not run).
fn containers(pod: &Value) -> Vec<Value> {
    pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A `ContainerStatus` with the given state.
fn container_status(c: &Value, state: Value) -> Value {
    json!({
        "name": c["name"],
        "image": c["image"],
        "imageID": "",
        "ready": false,
        "started": false,
        "restartCount": 0,
        "state": state,
    })
}

/// How one container's run leaves the pod.
enum ContainerEnd {
    /// The next container may start.
    Succeeded,
    /// The pod has failed: no further container starts.
    Failed,
    /// The pod is to stop here, its status reported already or of no
    /// matter any more (it is being deleted).
    Stopped,
}

/// A container's `terminated` state from how its run ended, and whether it
/// failed; a run that could not start counts as exit code 128
/// (ContainerCannotRun).
fn terminated(outcome: Result<i32, RunError>, started: &str) -> (Value, bool) {
    let mut terminated = match outcome {
        Ok(0) => json!({"exitCode": 0, "reason": "Completed"}),
        Ok(code) => json!({"exitCode": code, "reason": "Error"}),
        Err(e) => {
            json!({"exitCode": 128, "reason": "ContainerCannotRun", "message": e.to_string()})
        }
    };
    let failed = terminated["exitCode"] != json!(0);
    terminated["startedAt"] = json!(started);
    terminated["finishedAt"] = json!(now_rfc3339());
    (terminated, failed)
}

#[cfg(test)]
mod tests {
    use super::argv;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_combine_with_the_image_as_in_kubernetes() {
        let (ep, cmd) = (v(&["/ep"]), v(&["c1", "c2"]));
        assert_eq!(argv(v(&[]), v(&[]), &ep, &cmd), v(&["/ep", "c1", "c2"]));
        assert_eq!(argv(v(&["sh"]), v(&[]), &ep, &cmd), v(&["sh"]));
        assert_eq!(argv(v(&[]), v(&["a"]), &ep, &cmd), v(&["/ep", "a"]));
        assert_eq!(
            argv(v(&["sh"]), v(&["-c", "x"]), &ep, &cmd),
            v(&["sh", "-c", "x"])
        );
        assert_eq!(argv(v(&[]), v(&[]), &[], &cmd), v(&["c1", "c2"]));
    }
}
