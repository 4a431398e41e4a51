//! The code layer: the build context as a deterministic tar, hashed first
//! (cheap) and compressed only on a cache miss.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::image::{self, AddedLayer};
use crate::layer::{CodeLayerOptions, Context, LayerError, LayerWriter, TarOptions};
use crate::options::BuildOptions;
use crate::progress::LayerStatus;
use crate::record::LayerRecord;
use crate::report::BuiltLayer;
use crate::store::{Check, HashingWriter, Store};

/// Builds (or finds in the cache) the code layer. The tar is hashed first,
/// which is cheap; compression only runs on a cache miss.
pub(crate) fn code_layer(
    store: &Store,
    root: &Path,
    ignore: Option<&Path>,
    workdir: &str,
    owner: (u64, u64),
    opts: &BuildOptions,
    previous: Option<&LayerRecord>,
) -> Result<(BuiltLayer, LayerStatus), LayerError> {
    let context = Context::scan(root, ignore)?;
    let tar = TarOptions {
        dest: workdir.to_string(),
        mtime: opts.source_date_epoch,
        uid: owner.0,
        gid: owner.1,
    };
    let hashed = context.write_tar(HashingWriter::new(io::sink()), &tar)?;
    let (_, diff_id, _) = hashed.finish();
    let key = crate::keys::code_layer(diff_id.as_str(), opts.compression);
    let created_by = format!(
        "COPY {} {workdir} # kiln code layer",
        root.file_name()
            .map_or(".".into(), |n| n.to_string_lossy().into_owned())
    );
    let cached = store.lookup(&key, Check::Full)?;
    let (descriptor, status) = match cached {
        Some(d) => (d, LayerStatus::Reused),
        None => {
            let code_opts = CodeLayerOptions {
                tar: tar.clone(),
                ignore_file: ignore.map(Path::to_path_buf),
                compression: opts.compression,
            };
            let mut writer = LayerWriter::new(store, code_opts.compression)?;
            if let Err(e) = context.write_tar(&mut writer, &tar) {
                return Err(writer.abort().unwrap_or(e));
            }
            let d = writer.finish()?;
            store.insert(&key, &d)?;
            (d, LayerStatus::Built)
        }
    };
    // Inputs for --explain: carried over when the layer is unchanged, else
    // one hash per file.
    let inputs = match previous {
        Some(p) if p.key == key => p.inputs.clone(),
        _ => file_inputs(root, &context),
    };
    Ok((
        BuiltLayer {
            added: AddedLayer {
                blob: descriptor.blob(),
                diff_id: descriptor.diff_id.to_string(),
                created_by,
            },
            record: LayerRecord {
                label: "code".into(),
                key,
                inputs,
            },
        },
        status,
    ))
}

fn file_inputs(root: &Path, context: &Context) -> BTreeMap<String, String> {
    let mut inputs = BTreeMap::new();
    for rel in context.paths() {
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
