//! A submitted Kubernetes run, from outside the cluster: asking its
//! orchestrator to stop, and reading its logs through the API server (the
//! pods' logs live on their nodes, not on this machine).
//!
//! The whole run's log is its orchestrator pod's: the orchestrator copies
//! every step's lines into it, prefixed with the step's name. A step's log
//! is its latest attempt pod's container `main`. Following goes on across
//! pods: a restarted orchestrator (a new pod of the same Job) and a step's
//! next attempt are followed in turn, until the run is over.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use futures_util::{AsyncBufRead, AsyncBufReadExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use serde_json::json;

use super::job::ROLE_ORCHESTRATOR;
use super::names::label_value;
use super::observe::attempt_of;
use super::pod::{CONTAINER, LABEL_RUN, LABEL_STEP};
use super::records::job_finished;
use super::status::{ANNOTATION_STATUS, ANNOTATION_STOP, STOP_FORCE, STOP_GRACEFUL, is_final};
use crate::records::ClusterRun;

/// How often a follower looks again for new pods and the run's end.
const POLL: Duration = Duration::from_secs(1);

/// The label the Job controller puts on its pods.
const LABEL_JOB_NAME: &str = "job-name";

/// Why a command on a Kubernetes run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterRunError {
    /// The API server refused or could not be reached.
    #[error("{what}: {source}")]
    Api {
        /// What kiln was doing.
        what: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The run's orchestrator Job does not exist (any more).
    #[error("the run's orchestrator Job {namespace}/{job} is gone")]
    JobGone {
        /// Its namespace.
        namespace: String,
        /// Its name.
        job: String,
    },
    /// A log stream broke off.
    #[error("{what}: {source}")]
    LogStream {
        /// Whose log.
        what: String,
        /// What broke.
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed (a closed pipe among others).
    #[error("writing the log: {0}")]
    Output(#[from] std::io::Error),
}

/// Asks the run's orchestrator to stop, by the `kiln.dev/stop` annotation
/// on its Job (`force`: running step pods are deleted; else running steps
/// finish and nothing new starts). The orchestrator watches its Job and
/// acts on it; this only writes the request.
pub async fn request_stop(
    client: &kube::Client,
    at: &ClusterRun,
    force: bool,
) -> Result<(), ClusterRunError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &at.namespace);
    let mode = if force { STOP_FORCE } else { STOP_GRACEFUL };
    let patch = json!({"metadata": {"annotations": {ANNOTATION_STOP: mode}}});
    match jobs
        .patch(&at.job, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(ClusterRunError::JobGone {
            namespace: at.namespace.clone(),
            job: at.job.clone(),
        }),
        Err(source) => Err(ClusterRunError::Api {
            what: format!(
                "annotating Job {}/{} with {ANNOTATION_STOP}",
                at.namespace, at.job
            ),
            source,
        }),
    }
}

/// Whose log [`print_logs`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource<'a> {
    /// The whole run: the orchestrator pod's.
    Run,
    /// One step: its latest attempt's pod.
    Step(&'a str),
}

/// How [`print_logs`] ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEnd {
    /// The log was printed (to the run's end, when following).
    Printed,
    /// There is no pod to read (not created yet, or cleaned up).
    NoPod,
    /// The pod's container has not started, so it has no log yet.
    NotStarted {
        /// The pod.
        pod: String,
        /// What the API server said.
        why: String,
    },
}

/// Prints the log of `source` in run `run` (which lives where `at` says)
/// to `out`. Without `follow`, what the latest pod has logged so far;
/// with it, new lines as they come, then the next pod's (a restarted
/// orchestrator, a step's next attempt), until the run's status
/// annotation is final (or its Job is gone) and the last pod has ended.
pub async fn print_logs(
    client: &kube::Client,
    run: &str,
    at: &ClusterRun,
    source: LogSource<'_>,
    follow: bool,
    out: &mut dyn Write,
) -> Result<LogEnd, ClusterRunError> {
    let logs = Logs {
        pods: Api::namespaced(client.clone(), &at.namespace),
        jobs: Api::namespaced(client.clone(), &at.namespace),
        run,
        at,
        source,
    };
    let mut done: HashSet<String> = HashSet::new();
    loop {
        let latest = logs.latest().await?;
        match latest {
            Some(pod) if !done.contains(&pod.uid) => {
                match (source, pod.attempt) {
                    (LogSource::Step(step), Some(n)) if n > 1 => {
                        writeln!(out, "== {step} attempt {n} ==")?;
                    }
                    (LogSource::Run, _) if !done.is_empty() => {
                        writeln!(out, "== orchestrator restarted: pod {} ==", pod.name)?;
                    }
                    _ => {}
                }
                if !follow {
                    let mut printed = 0;
                    return match logs.read(&pod.name, false, true, &mut printed, out).await? {
                        Read::NotStarted(why) => Ok(LogEnd::NotStarted { pod: pod.name, why }),
                        Read::Gone => Ok(LogEnd::NoPod),
                        Read::Done => Ok(LogEnd::Printed),
                    };
                }
                logs.follow(&pod, out).await?;
                done.insert(pod.uid);
            }
            _ if !follow => return Ok(LogEnd::NoPod),
            _ if logs.run_over().await? => return Ok(LogEnd::Printed),
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

/// A pod whose log is read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    name: String,
    uid: String,
    /// The step attempt it runs; `None` for the orchestrator.
    attempt: Option<u32>,
}

/// How one read of a pod's log ended.
enum Read {
    /// The stream ended.
    Done,
    /// The container has not started (the API said why).
    NotStarted(String),
    /// The pod is gone.
    Gone,
}

struct Logs<'a> {
    pods: Api<Pod>,
    jobs: Api<Job>,
    run: &'a str,
    at: &'a ClusterRun,
    source: LogSource<'a>,
}

impl Logs<'_> {
    fn container(&self) -> &'static str {
        match self.source {
            LogSource::Run => ROLE_ORCHESTRATOR,
            LogSource::Step(_) => CONTAINER,
        }
    }

    /// The pod whose log stands for the source now.
    async fn latest(&self) -> Result<Option<Candidate>, ClusterRunError> {
        let selector = match self.source {
            LogSource::Run => format!("{LABEL_JOB_NAME}={}", self.at.job),
            LogSource::Step(step) => format!(
                "{LABEL_RUN}={},{LABEL_STEP}={}",
                label_value(self.run),
                label_value(step)
            ),
        };
        let list = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| ClusterRunError::Api {
                what: format!("listing pods {selector} in {}", self.at.namespace),
                source,
            })?;
        let chosen = match self.source {
            LogSource::Run => latest_orchestrator_pod(&list.items).map(|p| (p, None)),
            LogSource::Step(step) => {
                latest_attempt_pod(&list.items, self.run, step).map(|(p, n)| (p, Some(n)))
            }
        };
        Ok(chosen.map(|(pod, attempt)| Candidate {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            attempt,
        }))
    }

    /// Follows `pod`'s log until the pod has ended (or is gone, or a newer
    /// pod stands for the source, or the run is over), then prints what is
    /// left. A stream that ends early (the container has not started, the
    /// connection dropped) is opened again, and the lines already printed
    /// are skipped.
    async fn follow(&self, pod: &Candidate, out: &mut dyn Write) -> Result<(), ClusterRunError> {
        let mut printed = 0;
        loop {
            if let Read::Gone = self.read(&pod.name, true, false, &mut printed, out).await? {
                return Ok(());
            }
            let now =
                self.pods
                    .get_opt(&pod.name)
                    .await
                    .map_err(|source| ClusterRunError::Api {
                        what: format!("reading pod {}/{}", self.at.namespace, pod.name),
                        source,
                    })?;
            let ended = match &now {
                None => return Ok(()),
                Some(p) if p.metadata.uid.as_deref() != Some(&pod.uid) => return Ok(()),
                Some(p) => pod_ended(p),
            };
            if ended
                || self.latest().await?.is_some_and(|l| l.uid != pod.uid)
                || self.run_over().await?
            {
                self.read(&pod.name, false, true, &mut printed, out).await?;
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the run is over: its status annotation is final, its Job
    /// has finished, or its Job is gone.
    async fn run_over(&self) -> Result<bool, ClusterRunError> {
        let job = self
            .jobs
            .get_opt(&self.at.job)
            .await
            .map_err(|source| ClusterRunError::Api {
                what: format!("reading Job {}/{}", self.at.namespace, self.at.job),
                source,
            })?;
        Ok(job.is_none_or(|job| {
            let status = job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_STATUS))
                .map_or("", String::as_str);
            is_final(status) || job_finished(&job).is_some()
        }))
    }

    /// Reads `pod`'s log once (following it while it runs, with `follow`)
    /// and prints the lines past the first `printed`, counting them. Unless
    /// `last`, a line without its newline yet is left for the next read.
    async fn read(
        &self,
        pod: &str,
        follow: bool,
        last: bool,
        printed: &mut usize,
        out: &mut dyn Write,
    ) -> Result<Read, ClusterRunError> {
        let params = LogParams {
            container: Some(self.container().to_owned()),
            follow,
            ..LogParams::default()
        };
        let stream = match self.pods.log_stream(pod, &params).await {
            Ok(stream) => stream,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Read::Gone),
            // The container is waiting to start: no log yet.
            Err(kube::Error::Api(e)) if e.code == 400 => return Ok(Read::NotStarted(e.message)),
            Err(source) => {
                return Err(ClusterRunError::Api {
                    what: format!("reading the log of pod {}/{pod}", self.at.namespace),
                    source,
                });
            }
        };
        match copy_lines(stream, printed, last, out).await {
            Ok(()) => Ok(Read::Done),
            Err(CopyError::Output(e)) => Err(e.into()),
            // A dropped stream while following is read again.
            Err(CopyError::Input(_)) if follow => Ok(Read::Done),
            Err(CopyError::Input(source)) => Err(ClusterRunError::LogStream {
                what: format!("reading the log of pod {}/{pod}", self.at.namespace),
                source,
            }),
        }
    }
}

enum CopyError {
    /// Reading the stream failed.
    Input(std::io::Error),
    /// Writing the output failed.
    Output(std::io::Error),
}

/// Copies the lines of `log` past the first `printed` to `out`, counting
/// them in `printed`; a last line without its newline goes out only when
/// `last` (else it is left, uncounted, for the next read).
async fn copy_lines(
    log: impl AsyncBufRead,
    printed: &mut usize,
    last: bool,
    out: &mut dyn Write,
) -> Result<(), CopyError> {
    let mut log = Box::pin(log);
    let mut seen = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = log
            .read_until(b'\n', &mut line)
            .await
            .map_err(CopyError::Input)?;
        let complete = line.ends_with(b"\n");
        if n == 0 || (!complete && !last) {
            break;
        }
        seen += 1;
        if seen <= *printed {
            continue;
        }
        *printed = seen;
        out.write_all(&line).map_err(CopyError::Output)?;
        if !complete {
            out.write_all(b"\n").map_err(CopyError::Output)?;
        }
    }
    out.flush().map_err(CopyError::Output)
}

/// The Job's newest pod: a restarted orchestrator runs in a new one.
pub fn latest_orchestrator_pod(pods: &[Pod]) -> Option<&Pod> {
    pods.iter().max_by(|a, b| {
        let key = |p: &Pod| {
            (
                p.metadata.creation_timestamp.clone(),
                p.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    })
}

/// The pod of `step`'s latest attempt in run `run` (by the pods'
/// annotations, as labels are abridged), with its attempt number.
pub fn latest_attempt_pod<'p>(pods: &'p [Pod], run: &str, step: &str) -> Option<(&'p Pod, u32)> {
    pods.iter()
        .filter_map(|p| {
            let (r, s, n) = attempt_of(p)?;
            (r == run && s == step).then_some((p, n))
        })
        .max_by(|(a, n), (b, m)| {
            (n, &a.metadata.creation_timestamp).cmp(&(m, &b.metadata.creation_timestamp))
        })
}

/// Whether the pod has ended (its phase is final): its log is complete.
pub fn pod_ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, created: &str, annotations: serde_json::Value, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created, "annotations": annotations},
            "status": {"phase": phase},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn attempt(run: &str, step: &str, n: u32) -> serde_json::Value {
        json!({"kiln.dev/run-id": run, "kiln.dev/step": step, "kiln.dev/attempt": n.to_string()})
    }

    fn name(p: Option<&Pod>) -> Option<&str> {
        p.and_then(|p| p.metadata.name.as_deref())
    }

    #[test]
    fn the_newest_orchestrator_pod_stands_for_the_run() {
        let pods = [
            pod("job-b", "2026-01-01T00:00:05Z", json!({}), "Failed"),
            pod("job-c", "2026-01-01T00:01:00Z", json!({}), "Running"),
            pod("job-a", "2026-01-01T00:00:00Z", json!({}), "Failed"),
        ];
        assert_eq!(name(latest_orchestrator_pod(&pods)), Some("job-c"));
        assert_eq!(name(latest_orchestrator_pod(&[])), None);
    }

    #[test]
    fn the_latest_attempt_of_the_step_in_this_run_stands_for_the_step() {
        let pods: Vec<Pod> = [
            ("t-a1", "00:00", ("c1", "train", 1), "Failed"),
            ("t-a2", "01:00", ("c1", "train", 2), "Running"),
            ("t-a3-other", "02:00", ("c10", "train", 3), "Running"),
            ("l-a4", "02:00", ("c1", "load", 4), "Running"),
        ]
        .into_iter()
        .map(|(name, minute, (run, step, n), phase)| {
            let created = format!("2026-01-01T00:{minute}Z");
            pod(name, &created, attempt(run, step, n), phase)
        })
        .chain([pod(
            "orchestrator",
            "2026-01-01T00:03:00Z",
            json!({"kiln.dev/run-id": "c1"}),
            "Running",
        )])
        .collect();
        let latest = latest_attempt_pod(&pods, "c1", "train");
        assert_eq!(name(latest.map(|(p, _)| p)), Some("t-a2"));
        assert_eq!(latest.map(|(_, n)| n), Some(2));
        assert!(latest_attempt_pod(&pods, "c1", "eval").is_none());
    }

    #[test]
    fn a_pod_has_ended_when_its_phase_is_final() {
        let p = |phase| pod("p", "2026-01-01T00:00:00Z", json!({}), phase);
        assert!(pod_ended(&p("Succeeded")));
        assert!(pod_ended(&p("Failed")));
        assert!(!pod_ended(&p("Running")));
        assert!(!pod_ended(&p("Pending")));
    }

    fn copy(text: &str, printed: &mut usize, last: bool) -> String {
        let mut out = Vec::new();
        let reader = futures_util::io::Cursor::new(text.as_bytes().to_vec());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        if runtime
            .block_on(copy_lines(reader, printed, last, &mut out))
            .is_err()
        {
            panic!("copying failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn a_log_read_again_prints_only_its_new_lines() {
        let mut printed = 0;
        assert_eq!(copy("a\nb\npart", &mut printed, false), "a\nb\n");
        assert_eq!(printed, 2, "the partial line waits");
        assert_eq!(copy("a\nb\npartial\nc", &mut printed, false), "partial\n");
        assert_eq!(copy("a\nb\npartial\nc", &mut printed, true), "c\n");
        assert_eq!(printed, 4);
        assert_eq!(copy("a\nb\npartial\nc", &mut printed, true), "");
    }
}
