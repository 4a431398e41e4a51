//! Getting blobs where they must be: pushing an image's blobs to the target
//! repository (HEAD first, mounts for the parent's layers, uploads in
//! parallel) and fetching registry blobs into the content store.

use std::str::FromStr as _;

use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};

use crate::error::BuildError;
use crate::image::{AddedLayer, Descriptor};
use crate::progress::{BlobStatus, Event, Progress};
use crate::registry::{Registry, RegistryFailure, ResolvedImage, registry_of};
use crate::store::{self, Store};

/// Pushes every blob the manifest needs: parent layers (HEAD, then mount
/// from the parent's repository on the same registry, else copy), kiln's
/// layers and the config (HEAD, then upload), concurrently.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn push<R: Registry>(
    registry: &R,
    store: &Store,
    image: &str,
    repo: &str,
    parent: &ResolvedImage,
    added: &[AddedLayer],
    config: (&Descriptor, &[u8]),
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<usize, BuildError> {
    enum Source<'a> {
        Parent(&'a Descriptor),
        Added(&'a Descriptor),
    }
    let jobs: Vec<Source<'_>> = parent
        .layers
        .iter()
        .map(Source::Parent)
        .chain(added.iter().map(|a| Source::Added(&a.blob)))
        .collect();
    let same_registry = registry_of(&parent.repository) == registry_of(repo);
    let results: Vec<bool> = stream::iter(jobs.into_iter().map(|job| async move {
        let desc = match &job {
            Source::Parent(d) | Source::Added(d) => *d,
        };
        let fail = |action: &str| {
            let action = format!("{action} {} in {repo}", desc.digest());
            move |source| BuildError::Registry {
                image: image.to_string(),
                action,
                source,
            }
        };
        let report = |status| {
            progress.event(Event::Blob {
                image: image.into(),
                digest: desc.digest().to_string(),
                size: desc.size(),
                status,
            });
        };
        if registry
            .blob_exists(repo, desc.digest().as_ref())
            .await
            .map_err(fail("checking blob"))?
        {
            report(BlobStatus::Present);
            return Ok(false);
        }
        if let Source::Parent(_) = job
            && same_registry
            && registry
                .mount_blob(repo, &parent.repository, desc.digest().as_ref())
                .await
                .map_err(fail("mounting blob"))?
        {
            report(BlobStatus::Mounted);
            return Ok(false);
        }
        let digest = store::Digest::from_str(desc.digest().as_ref()).map_err(BuildError::Store)?;
        let path = store.path(&digest);
        if let Source::Parent(_) = job {
            fetch_blob(registry, store, &parent.repository, desc)
                .await
                .map_err(fail("downloading parent blob"))?;
        }
        registry
            .push_blob_file(repo, desc, &path)
            .await
            .map_err(fail("uploading blob"))?;
        report(BlobStatus::Uploaded);
        Ok::<bool, BuildError>(true)
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await?;
    let mut uploaded = results.into_iter().filter(|u| *u).count();
    let (config_desc, config_bytes) = config;
    let fail = |source| BuildError::Registry {
        image: image.to_string(),
        action: format!("uploading the config to {repo}"),
        source,
    };
    if !registry
        .blob_exists(repo, config_desc.digest().as_ref())
        .await
        .map_err(fail)?
    {
        registry
            .push_blob_bytes(repo, config_desc.digest().as_ref(), config_bytes)
            .await
            .map_err(|source| BuildError::Registry {
                image: image.to_string(),
                action: format!("uploading the config to {repo}"),
                source,
            })?;
        uploaded += 1;
    }
    Ok(uploaded)
}

/// Makes sure a registry blob is in the store: downloaded to a temporary
/// file and renamed, so an interrupted download never looks complete.
pub(crate) async fn fetch_blob<R: Registry>(
    registry: &R,
    store: &Store,
    repository: &str,
    desc: &Descriptor,
) -> Result<(), RegistryFailure> {
    let digest = store::Digest::from_str(desc.digest().as_ref())?;
    if store.contains(&digest) {
        return Ok(());
    }
    let path = store.path(&digest);
    let tmp = path.with_file_name(format!(".tmp-pull-{}-{}", digest.hex(), std::process::id()));
    registry.pull_blob_to_file(repository, desc, &tmp).await?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}
