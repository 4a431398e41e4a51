//! Create-or-update of an object kiln owns (a schedule's CronJob, an image
//! pull secret): created when missing; when there, updated only if kiln
//! made it (its managed-by label), since a namespace is shared with other
//! tools and their objects are not kiln's to overwrite. Written once so
//! both kinds keep the same conflict handling.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use super::pod::{LABEL_MANAGED_BY, MANAGED_BY_KILN};

/// How often [`create_or_replace`] tries again when the object changes or
/// goes between its read and its write (another kiln, a `kubectl edit`).
const APPLY_ATTEMPTS: usize = 3;

/// What [`create_or_replace`] did, so kiln can say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// There was no such object: it was created.
    Created,
    /// kiln's object was there: it was updated.
    Updated,
}

/// Why [`create_or_replace`] did not apply the object; the caller names
/// the object in its own error.
#[derive(Debug)]
pub enum ApplyError {
    /// An object of that name is there, and kiln did not make it.
    NotKiln,
    /// The object kept being deleted between kiln's create and its read.
    Vanished,
    /// The API server refused or could not be reached while `doing`.
    Api {
        /// `creating`, `reading` or `replacing`.
        doing: &'static str,
        /// The API's answer.
        source: kube::Error,
    },
}

/// Whether kiln made the object (it carries kiln's managed-by label).
pub fn is_kiln(metadata: &ObjectMeta) -> bool {
    metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .is_some_and(|v| v == MANAGED_BY_KILN)
}

/// Creates `object` (named `name`) through `api`, or, when kiln's object
/// of that name is there already, replaces it with `update(existing)`.
/// The read's resourceVersion goes with the write: a change made in
/// between makes it a 409, and the whole apply is tried again.
pub async fn create_or_replace<K>(
    api: &Api<K>,
    name: &str,
    object: &K,
    update: impl Fn(K) -> K,
) -> Result<Applied, ApplyError>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= APPLY_ATTEMPTS;
        match api.create(&PostParams::default(), object).await {
            Ok(_) => return Ok(Applied::Created),
            Err(e) if status(&e) == Some(409) => {}
            Err(source) => {
                return Err(ApplyError::Api {
                    doing: "creating",
                    source,
                });
            }
        }
        let existing = api.get_opt(name).await.map_err(|source| ApplyError::Api {
            doing: "reading",
            source,
        })?;
        let Some(existing) = existing else {
            // Deleted since the create found it: create it again.
            if last {
                return Err(ApplyError::Vanished);
            }
            continue;
        };
        if !is_kiln(existing.meta()) {
            return Err(ApplyError::NotKiln);
        }
        match api
            .replace(name, &PostParams::default(), &update(existing))
            .await
        {
            Ok(_) => return Ok(Applied::Updated),
            Err(e) if status(&e) == Some(409) && !last => {}
            Err(source) => {
                return Err(ApplyError::Api {
                    doing: "replacing",
                    source,
                });
            }
        }
    }
}

/// The HTTP status of an API error (409 conflict, 404 not found).
pub fn status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(response) => Some(response.code),
        _ => None,
    }
}
