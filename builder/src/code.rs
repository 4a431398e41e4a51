//! The code layer of a pipeline image: [`build_code_layer`] (hashed first,
//! compressed only on a cache miss) with what `kiln build` records about
//! it: the history line, the cache key and per-file inputs for `--explain`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::image::{self, AddedLayer};
use crate::layer::{CodeLayerOptions, LayerError, TarOptions, build_code_layer};
use crate::options::BuildOptions;
use crate::progress::LayerStatus;
use crate::record::LayerRecord;
use crate::report::BuiltLayer;
use crate::store::Store;

/// Builds (or finds in the cache) the code layer of `root` at `workdir`,
/// owned by `owner`.
pub(crate) fn code_layer(
    store: &Store,
    root: &Path,
    ignore: Option<&Path>,
    workdir: &str,
    owner: (u64, u64),
    opts: &BuildOptions,
    previous: Option<&LayerRecord>,
) -> Result<(BuiltLayer, LayerStatus), LayerError> {
    let code_opts = CodeLayerOptions {
        tar: TarOptions {
            dest: workdir.to_string(),
            mtime: opts.source_date_epoch,
            uid: owner.0,
            gid: owner.1,
        },
        ignore_file: ignore.map(Path::to_path_buf),
        compression: opts.compression,
    };
    let layer = build_code_layer(store, root, &code_opts)?;
    let status = if layer.reused {
        LayerStatus::Reused
    } else {
        LayerStatus::Built
    };
    let created_by = format!(
        "COPY {} {workdir} # kiln code layer",
        root.file_name()
            .map_or(".".into(), |n| n.to_string_lossy().into_owned())
    );
    // Inputs for --explain: carried over when the layer is unchanged, else
    // one hash per file.
    let inputs = match previous {
        Some(p) if p.key == layer.key => p.inputs.clone(),
        _ => file_inputs(root, &layer.paths),
    };
    Ok((
        BuiltLayer {
            added: AddedLayer {
                blob: layer.descriptor.blob(),
                diff_id: layer.descriptor.diff_id.to_string(),
                created_by,
            },
            record: LayerRecord {
                label: "code".into(),
                key: layer.key,
                inputs,
            },
        },
        status,
    ))
}

/// A short hash of each regular file among `paths` (relative to `root`).
fn file_inputs(root: &Path, paths: &[PathBuf]) -> BTreeMap<String, String> {
    let mut inputs = BTreeMap::new();
    for rel in paths {
        let path = root.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            // Streamed: a code layer may hold gigabyte files.
            let mut hasher = Sha256::new();
            let hashed = std::fs::File::open(&path).and_then(|mut f| io::copy(&mut f, &mut hasher));
            if hashed.is_ok() {
                inputs.insert(
                    rel.to_string_lossy().into_owned(),
                    image::hex(&hasher.finalize())[..16].to_string(),
                );
            }
        }
    }
    inputs
}
