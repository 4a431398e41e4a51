//! The test cluster itself: what kiln's Kubernetes backend tests will rely on.
//! API level only (kubectl and kube-rs): no node agent runs here, so no pod ever runs (see the
//! `kiln-node-agent` package's tests for pods that do).

use std::time::Duration;

use kiln_testsupport::cluster::Cluster;
use kiln_testsupport::wait_for;
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn the_api_server_is_ready_and_is_1_20() {
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let out = cluster.kubectl_ok(&["get", "--raw", "/readyz"]);
    assert_eq!(out.stdout.trim(), "ok");
    let out = cluster.kubectl_ok(&["version", "-o", "json"]);
    let server = &json(&out.stdout)["serverVersion"];
    assert_eq!(server["major"], "1", "{server}");
    assert_eq!(server["minor"], "20", "{server}");
    assert_eq!(server["gitVersion"].as_str(), Some(cluster.version()));
    assert!(cluster.version().starts_with("v1.20."));
    assert_eq!(cluster.server(), "https://127.0.0.1:6443");
    assert_eq!(cluster.context(), "kiln-test");
}

#[test]
fn a_service_account_bound_to_edit_can_create_pods_only_in_its_namespace() {
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let a = cluster.fresh_namespace("rbac-a");
    let b = cluster.fresh_namespace("rbac-b");
    cluster.kubectl_ok(&["create", "serviceaccount", "sa", "-n", &a]);
    cluster.kubectl_ok(&[
        "create",
        "rolebinding",
        "sa-edit",
        "--clusterrole=edit",
        &format!("--serviceaccount={a}:sa"),
        "-n",
        &a,
    ]);
    let who = format!("--as=system:serviceaccount:{a}:sa");
    // `auth can-i` exits 0 for yes and 1 for no.
    let here = cluster.kubectl(&["auth", "can-i", "create", "pods", "-n", &a, &who]);
    assert_eq!((here.code, here.stdout.trim()), (0, "yes"), "{here:?}");
    let there = cluster.kubectl(&["auth", "can-i", "create", "pods", "-n", &b, &who]);
    assert_eq!((there.code, there.stdout.trim()), (1, "no"), "{there:?}");
    // Without the binding's subject it is a no in A too.
    let other = format!("--as=system:serviceaccount:{a}:default");
    let out = cluster.kubectl(&["auth", "can-i", "create", "pods", "-n", &a, &other]);
    assert_eq!(out.stdout.trim(), "no", "{out:?}");
    cluster.delete_namespace(&a);
    cluster.delete_namespace(&b);
}

#[test]
fn the_controller_manager_creates_the_pod_of_a_batch_v1_job() {
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.fresh_namespace("job");
    let manifest = r#"{
  "apiVersion": "batch/v1",
  "kind": "Job",
  "metadata": {"name": "hello"},
  "spec": {
    "backoffLimit": 0,
    "template": {
      "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "127.0.0.1:5000/base/busybox:latest", "command": ["echo", "hi"]}]
      }
    }
  }
}"#;
    cluster.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], manifest);
    // Defaulted by the server.
    let job = json(
        &cluster
            .kubectl_ok(&["get", "job.v1.batch", "hello", "-n", &ns, "-o", "json"])
            .stdout,
    );
    assert_eq!(job["spec"]["completions"], 1, "{job}");
    let pod = wait_for(
        Duration::from_secs(30),
        "the Job's pod (label job-name=hello)",
        || {
            let out = cluster.kubectl_ok(&[
                "get",
                "pods",
                "-n",
                &ns,
                "-l",
                "job-name=hello",
                "-o",
                "json",
            ]);
            json(&out.stdout)["items"].as_array()?.first().cloned()
        },
    );
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    assert!(
        pod["spec"]["nodeName"].is_null(),
        "no scheduler, and no node agent in this test: {pod}"
    );
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"]),
        (&"Job".into(), &"hello".into())
    );
    cluster.delete_namespace(&ns);
}

#[test]
fn slow_a_batch_v1_cronjob_creates_a_job_within_a_minute() {
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let versions = cluster.kubectl_ok(&["api-versions"]).stdout;
    assert!(versions.lines().any(|l| l == "batch/v1"), "{versions}");
    let resources = cluster.kubectl_ok(&["api-resources", "--api-group=batch", "-o", "name"]);
    assert!(
        resources.stdout.lines().any(|l| l == "cronjobs.batch"),
        "{}",
        resources.stdout
    );
    let ns = cluster.fresh_namespace("cron");
    let manifest = r#"{
  "apiVersion": "batch/v1",
  "kind": "CronJob",
  "metadata": {"name": "tick"},
  "spec": {
    "schedule": "* * * * *",
    "jobTemplate": {
      "spec": {
        "backoffLimit": 0,
        "template": {
          "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "127.0.0.1:5000/base/busybox:latest", "command": ["date"]}]
          }
        }
      }
    }
  }
}"#;
    cluster.kubectl_stdin_ok(&["apply", "-n", &ns, "-f", "-"], manifest);
    // Served and defaulted as batch/v1.
    let cron = json(
        &cluster
            .kubectl_ok(&["get", "cronjobs.v1.batch", "tick", "-n", &ns, "-o", "json"])
            .stdout,
    );
    assert_eq!(cron["apiVersion"], "batch/v1", "{cron}");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Allow", "{cron}");
    assert_eq!(cron["spec"]["suspend"], false, "{cron}");
    // The controller-manager runs a CronJob once a minute, checking every 10 s.
    let job = wait_for(
        Duration::from_secs(80),
        "a Job created by CronJob tick",
        || {
            let out = cluster.kubectl_ok(&["get", "jobs.v1.batch", "-n", &ns, "-o", "json"]);
            json(&out.stdout)["items"].as_array()?.first().cloned()
        },
    );
    let owner = &job["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"]),
        (&"CronJob".into(), &"tick".into())
    );
    assert!(
        job["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("tick-")),
        "{job}"
    );
    cluster.delete_namespace(&ns);
}

/// kube-rs (with k8s-openapi's v1_32 types) against the 1.20 server: create,
/// read and list objects the way kiln's Kubernetes backend will, and see the
/// result with kubectl.
#[test]
fn a_kube_rs_client_creates_and_reads_objects() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::api::{Api, ListParams, PostParams};

    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.fresh_namespace("kube");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = cluster.client().await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let names: Vec<String> = namespaces
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert!(names.contains(&ns), "{ns} not in {names:?}");
        let maps: Api<ConfigMap> = Api::namespaced(client, &ns);
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "from-kube-rs", "labels": {"run": "abc"}},
            "data": {"k": "v"},
        }))
        .unwrap();
        maps.create(&PostParams::default(), &cm).await.unwrap();
        let back = maps.get("from-kube-rs").await.unwrap();
        assert_eq!(back.data.unwrap()["k"], "v");
        let listed = maps
            .list(&ListParams::default().labels("run=abc"))
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 1);
    });
    let out = cluster.kubectl_ok(&["get", "configmap", "from-kube-rs", "-n", &ns, "-o", "json"]);
    assert_eq!(json(&out.stdout)["data"]["k"], "v");
    cluster.delete_namespace(&ns);
}
