//! A pod's volumes, made ready on the host before its containers start, as
//! the kubelet mounts them: `emptyDir` and `hostPath` directories, and the
//! API-data volumes (`secret`, `configMap`, `downwardAPI`, `projected`)
//! written out as files under the pod's scratch directory.
//!
//! The API-data volumes matter because in-cluster clients read their
//! credentials from one: the ServiceAccount admission plugin of a 1.20 API
//! server mounts the `<sa>-token-xxxxx` secret at
//! `/var/run/secrets/kubernetes.io/serviceaccount` (`token`, `ca.crt`,
//! `namespace`), and newer ones a projected volume of a
//! `serviceAccountToken`, the `kube-root-ca.crt` ConfigMap and the
//! namespace. Files are written once, when the pod starts: later changes
//! of a Secret or ConfigMap and token expiry are not followed (pods here
//! are short).
//!
//! Other volume kinds (persistentVolumeClaim, ...) are not mounted.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::downward::FieldRefError;
use crate::{Api, ApiError, downward};

/// Why a ConfigMap's or Secret's data could not be had (a sentence).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The API server refused or did not answer.
    #[error("{0}")]
    Api(Box<ApiError>),
    /// A value of the object is not base64.
    #[error("{} {name:?} key {key}: {source}", kind.noun())]
    Decode {
        /// A ConfigMap or a Secret.
        kind: Source,
        /// The object's name.
        name: String,
        /// The key whose value does not decode.
        key: String,
        /// Why.
        source: base64::DecodeError,
    },
}

/// Why one volume could not be made ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VolumeError {
    /// Reading the ConfigMap or Secret failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A directory could not be created.
    #[error("creating {}: {source}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Removing, writing or setting the mode of a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `projected` source of a kind the agent does not project.
    #[error("projected source {projection} is not supported")]
    UnsupportedProjection {
        /// The source as the pod gives it.
        projection: Value,
    },
    /// The ConfigMap or Secret does not exist and the volume is not optional.
    #[error("{} {name:?} not found", kind.noun())]
    NotFound {
        /// A ConfigMap or a Secret.
        kind: Source,
        /// The object's name.
        name: String,
    },
    /// An `items` entry names a key the object lacks.
    #[error("{} references non-existent {} key: {key}", kind.noun(), kind.key_noun())]
    MissingKey {
        /// A ConfigMap or a Secret.
        kind: Source,
        /// The key named.
        key: String,
    },
    /// A `downwardAPI` item other than a `fieldRef`.
    #[error("downward API item {item} is not supported")]
    UnsupportedItem {
        /// The item as the pod gives it.
        item: Value,
    },
    /// A `fieldRef` the agent does not resolve.
    #[error(transparent)]
    Field(#[from] FieldRefError),
    /// The TokenRequest for the pod's service account failed.
    #[error("requesting a token for service account {namespace}/{account}: {source}")]
    TokenRequest {
        /// The pod's namespace.
        namespace: String,
        /// The service account.
        account: String,
        /// Why.
        source: Box<ApiError>,
    },
    /// The TokenRequest's answer has no `status.token`.
    #[error("the token request for {namespace}/{account} returned no token")]
    NoToken {
        /// The pod's namespace.
        namespace: String,
        /// The service account.
        account: String,
    },
    /// A `mode` or `defaultMode` that is not a number from 0 to 0777.
    #[error(transparent)]
    Mode(#[from] ModeError),
    /// A file path that is empty, absolute or has `..`.
    #[error("volume file path {path:?} is not a plain relative path")]
    Path {
        /// The path as the pod gives it.
        path: String,
    },
}

/// A `mode` or `defaultMode` that is not a number from 0 to 0777.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("file mode {value} is not between 0 and 0777")]
pub(crate) struct ModeError {
    /// The value as the pod gives it.
    value: Value,
}

/// A volume that could not be made ready: the kubelet's `FailedMount`
/// message.
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume {name:?} : {source}")]
pub(crate) struct MountError {
    /// The volume's name.
    pub(crate) name: String,
    /// Why.
    pub(crate) source: VolumeError,
}

/// The mode of a volume file without one of its own (0644).
const DEFAULT_MODE: u32 = 0o644;
/// A `serviceAccountToken` projection's lifetime when the pod names none,
/// the kubelet's default.
const TOKEN_SECONDS: u64 = 3600;

/// A volume as it is mounted into containers.
#[derive(Debug, Clone)]
pub(crate) struct HostVolume {
    /// The host path bound into the container.
    pub(crate) path: PathBuf,
    /// Mounted read-only whatever the mount asks: the kubelet mounts
    /// API-data volumes so, the files are the API's, not the container's.
    pub(crate) read_only: bool,
}

/// Where a file's content comes from: a ConfigMap or a Secret.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    /// A ConfigMap (`data` as is, `binaryData` decoded).
    ConfigMap,
    /// A Secret (`data` decoded).
    Secret,
}

impl Source {
    fn resource(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmaps",
            Source::Secret => "secrets",
        }
    }

    /// As the kubelet's messages name it.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Source::ConfigMap => "configmap",
            Source::Secret => "secret",
        }
    }

    /// As the kubelet's messages name one of its keys.
    fn key_noun(self) -> &'static str {
        match self {
            Source::ConfigMap => "config",
            Source::Secret => "secret",
        }
    }
}

/// The data of a ConfigMap or Secret in namespace `ns`, keys with their
/// raw bytes, or `None` when it does not exist. The error is a sentence.
pub(crate) async fn fetch(
    api: &Api,
    ns: &str,
    kind: Source,
    name: &str,
) -> Result<Option<Vec<(String, Vec<u8>)>>, FetchError> {
    let path = format!("/api/v1/namespaces/{ns}/{}/{name}", kind.resource());
    let object = match api.get(&path).await {
        Ok(object) => object,
        Err(e) if e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(FetchError::Api(Box::new(e))),
    };
    let decode = |k: &str, v: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|source| FetchError::Decode {
                kind,
                name: name.into(),
                key: k.into(),
                source,
            })
    };
    let mut data = Vec::new();
    for (k, v) in object["data"].as_object().into_iter().flatten() {
        let Some(v) = v.as_str() else { continue };
        let bytes = match kind {
            Source::ConfigMap => v.as_bytes().to_vec(),
            Source::Secret => decode(k, v)?,
        };
        data.push((k.clone(), bytes));
    }
    if let Source::ConfigMap = kind {
        for (k, v) in object["binaryData"].as_object().into_iter().flatten() {
            if let Some(v) = v.as_str() {
                data.push((k.clone(), decode(k, v)?));
            }
        }
    }
    Ok(Some(data))
}

/// One file of an API-data volume.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VolumeFile {
    /// Relative to the volume's root.
    path: PathBuf,
    content: Vec<u8>,
    mode: u32,
}

/// Makes every volume of `pod` ready under `dir` (the pod's volume
/// directory) and says where each is; a volume of a kind not supported is
/// left out. The error, a sentence naming the volume, is the kubelet's
/// `FailedMount` message: the caller retries, as a missing Secret may yet
/// be created.
pub(crate) async fn prepare(
    api: &Api,
    pod: &Value,
    dir: &Path,
) -> Result<HashMap<String, HostVolume>, MountError> {
    let mut ready = HashMap::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(name) = v["name"].as_str() else {
            continue;
        };
        let fail = |source| MountError {
            name: name.into(),
            source,
        };
        if let Some(volume) = prepare_one(api, pod, v, &dir.join(name))
            .await
            .map_err(fail)?
        {
            ready.insert(name.to_string(), volume);
        }
    }
    Ok(ready)
}

async fn prepare_one(
    api: &Api,
    pod: &Value,
    v: &Value,
    dir: &Path,
) -> Result<Option<HostVolume>, VolumeError> {
    if v.get("emptyDir").is_some() {
        // World-writable like the kubelet's, for any runAsUser.
        create_dir(dir, 0o777)?;
        return Ok(Some(HostVolume {
            path: dir.to_path_buf(),
            read_only: false,
        }));
    }
    if let Some(path) = v["hostPath"]["path"].as_str() {
        let path = PathBuf::from(path);
        if v["hostPath"]["type"] == "DirectoryOrCreate" {
            std::fs::create_dir_all(&path).map_err(|source| VolumeError::Create {
                path: path.clone(),
                source,
            })?;
        }
        return Ok(Some(HostVolume {
            path,
            read_only: false,
        }));
    }
    let files = if let Some(s) = v.get("secret") {
        let name = s["secretName"].as_str().unwrap_or_default();
        from_object(api, pod, Source::Secret, name, s, mode(&s["defaultMode"])?).await?
    } else if let Some(c) = v.get("configMap") {
        let name = c["name"].as_str().unwrap_or_default();
        from_object(
            api,
            pod,
            Source::ConfigMap,
            name,
            c,
            mode(&c["defaultMode"])?,
        )
        .await?
    } else if let Some(d) = v.get("downwardAPI") {
        from_fields(pod, &d["items"], mode(&d["defaultMode"])?)?
    } else if let Some(p) = v.get("projected") {
        projected(api, pod, p).await?
    } else {
        return Ok(None);
    };
    write_volume(dir, &files)?;
    Ok(Some(HostVolume {
        path: dir.to_path_buf(),
        read_only: true,
    }))
}

/// The files of a `projected` volume: each source's, in order.
async fn projected(api: &Api, pod: &Value, p: &Value) -> Result<Vec<VolumeFile>, VolumeError> {
    let default_mode = mode(&p["defaultMode"])?;
    let mut files = Vec::new();
    for source in p["sources"].as_array().into_iter().flatten() {
        if let Some(s) = source.get("secret") {
            let name = s["name"].as_str().unwrap_or_default();
            files.extend(from_object(api, pod, Source::Secret, name, s, default_mode).await?);
        } else if let Some(c) = source.get("configMap") {
            let name = c["name"].as_str().unwrap_or_default();
            files.extend(from_object(api, pod, Source::ConfigMap, name, c, default_mode).await?);
        } else if let Some(d) = source.get("downwardAPI") {
            files.extend(from_fields(pod, &d["items"], default_mode)?);
        } else if let Some(t) = source.get("serviceAccountToken") {
            files.push(token_file(api, pod, t, default_mode).await?);
        } else {
            return Err(VolumeError::UnsupportedProjection {
                projection: source.clone(),
            });
        }
    }
    Ok(files)
}

/// The files of a Secret or ConfigMap (`source` is the volume or projection
/// entry: `items`, `optional`).
async fn from_object(
    api: &Api,
    pod: &Value,
    kind: Source,
    name: &str,
    source: &Value,
    default_mode: u32,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let optional = source["optional"] == json!(true);
    match fetch(api, ns, kind, name).await? {
        Some(data) => project(kind, data, &source["items"], default_mode, optional),
        None if optional => Ok(Vec::new()),
        None => Err(VolumeError::NotFound {
            kind,
            name: name.into(),
        }),
    }
}

/// The object's keys as files: all of them at their own names, or only
/// `items` (`key`, `path`, `mode`) when given. A key of `items` that the
/// object lacks is an error unless the source is optional.
fn project(
    kind: Source,
    data: Vec<(String, Vec<u8>)>,
    items: &Value,
    default_mode: u32,
    optional: bool,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let Some(items) = items.as_array().filter(|i| !i.is_empty()) else {
        return data
            .into_iter()
            .map(|(key, content)| {
                Ok(VolumeFile {
                    path: relative(&key)?,
                    content,
                    mode: default_mode,
                })
            })
            .collect();
    };
    let mut files = Vec::new();
    for item in items {
        let key = item["key"].as_str().unwrap_or_default();
        let Some((_, content)) = data.iter().find(|(k, _)| k == key) else {
            if optional {
                continue;
            }
            return Err(VolumeError::MissingKey {
                kind,
                key: key.into(),
            });
        };
        files.push(VolumeFile {
            path: relative(item["path"].as_str().unwrap_or(key))?,
            content: content.clone(),
            mode: item_mode(item, default_mode)?,
        });
    }
    Ok(files)
}

/// The files of a `downwardAPI` volume or projection: `fieldRef` items
/// (`resourceFieldRef` ones are not supported).
fn from_fields(
    pod: &Value,
    items: &Value,
    default_mode: u32,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let mut files = Vec::new();
    for item in items.as_array().into_iter().flatten() {
        let Some(field_path) = item["fieldRef"]["fieldPath"].as_str() else {
            return Err(VolumeError::UnsupportedItem { item: item.clone() });
        };
        files.push(VolumeFile {
            path: relative(item["path"].as_str().unwrap_or_default())?,
            content: downward::field(pod, field_path)?.into_bytes(),
            mode: item_mode(item, default_mode)?,
        });
    }
    Ok(files)
}

/// A `serviceAccountToken` projection: a token for the pod's service
/// account, bound to the pod, from the TokenRequest API as the kubelet
/// asks for it.
async fn token_file(
    api: &Api,
    pod: &Value,
    t: &Value,
    default_mode: u32,
) -> Result<VolumeFile, VolumeError> {
    let meta = &pod["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or_default();
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let mut spec = json!({
        "expirationSeconds": t["expirationSeconds"].as_u64().unwrap_or(TOKEN_SECONDS),
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
    });
    // Without an audience the API server's own audiences apply.
    if let Some(audience) = t["audience"].as_str().filter(|a| !a.is_empty()) {
        spec["audiences"] = json!([audience]);
    }
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": spec,
    });
    let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
    let answer = api
        .post(&path, &request)
        .await
        .map_err(|source| VolumeError::TokenRequest {
            namespace: ns.into(),
            account: sa.into(),
            source: Box::new(source),
        })?;
    let token = answer["status"]["token"]
        .as_str()
        .ok_or_else(|| VolumeError::NoToken {
            namespace: ns.into(),
            account: sa.into(),
        })?;
    Ok(VolumeFile {
        path: relative(t["path"].as_str().unwrap_or_default())?,
        content: token.as_bytes().to_vec(),
        mode: default_mode,
    })
}

/// A file mode from the API (a number, 0 to 0777); `null` is the default.
fn mode(value: &Value) -> Result<u32, ModeError> {
    if value.is_null() {
        return Ok(DEFAULT_MODE);
    }
    value
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| ModeError {
            value: value.clone(),
        })
}

/// An item's own `mode`, or the volume's default.
fn item_mode(item: &Value, default_mode: u32) -> Result<u32, ModeError> {
    if item["mode"].is_null() {
        Ok(default_mode)
    } else {
        mode(&item["mode"])
    }
}

/// A file path inside a volume: relative, without `..`, not empty (the
/// API server validates this too; the agent does not trust it to).
fn relative(path: &str) -> Result<PathBuf, VolumeError> {
    let p = Path::new(path);
    let plain = p.components().all(|c| matches!(c, Component::Normal(_)));
    if path.is_empty() || !plain {
        return Err(VolumeError::Path { path: path.into() });
    }
    Ok(p.to_path_buf())
}

/// Writes an API-data volume afresh: `dir` holds exactly `files`.
fn write_volume(dir: &Path, files: &[VolumeFile]) -> Result<(), VolumeError> {
    let io = |what: &Path, source: std::io::Error| VolumeError::Io {
        path: what.to_path_buf(),
        source,
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    create_dir(dir, 0o755)?;
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&path, &f.content).map_err(|e| io(&path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// Creates `dir` (and its parents) with `mode`.
fn create_dir(dir: &Path, mode: u32) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(|source| VolumeError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        VolumeError::Io {
            path: dir.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Vec<(String, Vec<u8>)> {
        vec![("a".into(), b"one".to_vec()), ("b".into(), b"two".to_vec())]
    }

    #[test]
    fn without_items_every_key_is_a_file_with_the_default_mode() {
        let files = project(Source::Secret, data(), &Value::Null, 0o600, false).expect("files");
        let names: Vec<_> = files.iter().map(|f| (f.path.clone(), f.mode)).collect();
        assert_eq!(
            names,
            [(PathBuf::from("a"), 0o600), (PathBuf::from("b"), 0o600)]
        );
    }

    #[test]
    fn items_pick_keys_paths_and_modes() {
        let items = json!([{"key": "b", "path": "sub/bee", "mode": 0o400}]);
        let files = project(Source::ConfigMap, data(), &items, 0o644, false).expect("files");
        assert_eq!(
            files,
            [VolumeFile {
                path: "sub/bee".into(),
                content: b"two".to_vec(),
                mode: 0o400
            }]
        );
    }

    #[test]
    fn a_missing_item_key_fails_unless_optional() {
        let items = json!([{"key": "zz", "path": "z"}]);
        let err = project(Source::ConfigMap, data(), &items, 0o644, false)
            .expect_err("missing")
            .to_string();
        assert_eq!(err, "configmap references non-existent config key: zz");
        let none = project(Source::ConfigMap, data(), &items, 0o644, true).expect("optional");
        assert!(none.is_empty());
    }

    #[test]
    fn paths_must_stay_inside_the_volume() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
        assert!(relative("a/b").is_ok());
    }

    #[test]
    fn modes_default_to_0644_and_stay_below_0777() {
        assert_eq!(mode(&Value::Null), Ok(0o644));
        assert_eq!(mode(&json!(420)), Ok(0o644));
        assert!(mode(&json!(0o1777)).is_err());
        assert!(mode(&json!(-1)).is_err());
    }

    #[test]
    fn a_volume_is_written_afresh() {
        let dir = tempfile_dir();
        let vol = dir.join("v");
        std::fs::create_dir_all(&vol).expect("dir");
        std::fs::write(vol.join("stale"), "old").expect("stale file");
        let files = [VolumeFile {
            path: "x/y".into(),
            content: b"hi".to_vec(),
            mode: 0o640,
        }];
        write_volume(&vol, &files).expect("written");
        assert!(!vol.join("stale").exists());
        assert_eq!(std::fs::read(vol.join("x/y")).expect("file"), b"hi");
        let mode = std::fs::metadata(vol.join("x/y"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kiln-agent-volumes-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
