//! The steps that write files without running anything: COPY and ADD (a
//! layer from the context, a stage or an image), and the directories
//! WORKDIR and VOLUME create. Each is placed against a [`Listing`] of the
//! stage as it stands (see [`crate::listing`]), so a cache hit needs
//! neither a listing nor an unpacked root.

use std::io::{self, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;

use kiln_rootfs::sandbox::User;

use super::{Builder, Built, absolute, workdir};
use crate::copy::{self, Kind, Placed, Planned, SourceMeta, Stamp, Tree};
use crate::dockerfile::{CopyFrom, InlineFile, Step, StepKind};
use crate::error::BuildError;
use crate::keys;
use crate::layer::LayerWriter;
use crate::listing::{self, LayerListing, Listing};
use crate::registry::Registry;
use crate::store::{self, Check, LayerDescriptor};

/// The diffID of a tar with no entries: a WORKDIR or VOLUME whose
/// directories the image has already adds no layer.
fn is_empty_layer(desc: &LayerDescriptor) -> bool {
    let empty = store::Digest::of(&[0u8; 1024]);
    desc.diff_id == empty
}

/// What a COPY layer is written from, once its sources are planned.
struct CopyEntries<'a> {
    /// Every source entry, sorted by destination.
    planned: Vec<Planned>,
    /// The source stage's listing, for what it recorded of its entries.
    source: Option<Arc<Listing>>,
    dest: &'a str,
    chown: Option<&'a str>,
    chmod: Option<u32>,
    add: bool,
}

// The private steps return the builder's one error type, as build.rs does.
#[allow(clippy::result_large_err)]
impl Builder<'_> {
    /// COPY or ADD: planned from its sources, keyed by their content (or
    /// the source stage's key), written against the stage's listing.
    pub(super) async fn copy_step<R: Registry>(
        &mut self,
        index: usize,
        built: &mut Built,
        step: &Step,
        registry: &R,
    ) -> Result<(), BuildError> {
        let StepKind::Copy {
            sources,
            dest,
            from,
            chown,
            chmod,
            add,
            parents,
            exclude,
            inline,
            checksum,
            link: _,
        } = &step.kind
        else {
            return Err(self.dferr(step, "internal: not a COPY"));
        };
        // An image reads as the stage resolved for it.
        let from = &self.source_stage(step, from)?.map(CopyFrom::Stage);
        let dest = absolute(&workdir(&built.config), dest);
        let (urls, locals): (Vec<String>, Vec<String>) = sources
            .iter()
            .cloned()
            .partition(|s| *add && crate::fetch::is_http(s));
        let exclude = self.copy_excludes(step, exclude)?;
        let plan_opts = copy::PlanOptions {
            dir: locals.len() + urls.len() + inline.len() > 1,
            parents: *parents,
            exclude: exclude.as_ref(),
        };
        // Heredoc files and downloads are sources too, each set in a
        // scratch tree of its own; their content is in the key (heredocs
        // through the resolved text, downloads by digest, or by
        // `--checksum` before any download).
        let mut extra = self
            .inline_sources(index, step, inline, &dest, &plan_opts)
            .map_err(|e| self.dferr(step, e))?;
        let (url_keys, pending, fetched) = self
            .url_sources(index, step, &urls, checksum.as_deref(), &dest, &plan_opts)
            .await?;
        extra.extend(fetched);
        let (planned, source_key) = self.keyed_sources(step, from, &locals, &dest, &plan_opts)?;
        let source_key = format!("{source_key}\n{}", url_keys.join("\n"));
        let key = keys::dockerfile_copy(&built.chain, &step.resolved, &source_key);
        if let Some(d) = self.store.lookup(&key, Check::Full)? {
            return self.add_layer(index, built, step, &d, true, key);
        }
        for url in &pending {
            let fetched = self
                .download(index, step, url, checksum.as_deref(), &dest, &plan_opts)
                .await?;
            extra.extend(fetched.1);
        }
        let (mut planned, source) = match (planned, from) {
            (Some(p), _) => (p, None),
            (None, Some(CopyFrom::Stage(i))) => {
                self.stage_sources(*i, step, &locals, &dest, &plan_opts, registry)
                    .await?
            }
            (None, _) => (Vec::new(), None),
        };
        planned.extend(extra);
        planned.sort_by(|a, b| a.dest.cmp(&b.dest));
        let entries = CopyEntries {
            planned,
            source,
            dest: &dest,
            chown: chown.as_deref(),
            chmod: *chmod,
            add: *add,
        };
        let d = self
            .write_copy(index, built, step, &entries, registry)
            .await?;
        self.store.insert(&key, &d)?;
        self.add_layer(index, built, step, &d, false, key)
    }

    /// `--exclude`'s patterns, read as a .dockerignore's are.
    fn copy_excludes(
        &self,
        step: &Step,
        exclude: &[String],
    ) -> Result<Option<crate::layer::DockerIgnore>, BuildError> {
        if exclude.is_empty() {
            return Ok(None);
        }
        crate::layer::DockerIgnore::parse(&exclude.join("\n"))
            .map(Some)
            .map_err(|e| self.dferr(step, format!("--exclude: bad pattern {:?}", e.pattern)))
    }

    /// The local sources' part of the key, which covers their content:
    /// the context's files are hashed (cheap), and come back planned;
    /// another stage's files are named by that stage's own chained key,
    /// so a cache hit needs no unpacked root.
    fn keyed_sources(
        &mut self,
        step: &Step,
        from: &Option<CopyFrom>,
        locals: &[String],
        dest: &str,
        plan_opts: &copy::PlanOptions<'_>,
    ) -> Result<(Option<Vec<Planned>>, String), BuildError> {
        if let Some(CopyFrom::Stage(i)) = from {
            let chain = self
                .done
                .get(i)
                .map(|b| b.chain.clone())
                .unwrap_or_default();
            return Ok((None, format!("stage:{chain}")));
        }
        let tree = self.context()?;
        let planned = match locals.is_empty() {
            true => Vec::new(),
            false => {
                copy::plan_with(&tree, locals, dest, plan_opts).map_err(|e| self.dferr(step, e))?
            }
        };
        let content = copy::content_key(&planned).map_err(|e| self.dferr(step, e))?;
        Ok((Some(planned), content))
    }

    /// The COPY layer, written against the stage's listing, which the
    /// destination's existing directories and `--chown`'s names are
    /// looked up in.
    async fn write_copy<R: Registry>(
        &mut self,
        index: usize,
        built: &Built,
        step: &Step,
        entries: &CopyEntries<'_>,
        registry: &R,
    ) -> Result<LayerDescriptor, BuildError> {
        let CopyEntries {
            planned,
            source,
            dest,
            chown,
            chmod,
            add,
        } = entries;
        let image = self.listing(index, built, registry).await?;
        let chown = match chown {
            Some(spec) => Some(owner(spec, &image).map_err(|e| self.dferr(step, e))?),
            None => None,
        };
        let stamp = Stamp {
            chown,
            chmod: *chmod,
            mtime: self.opts.source_date_epoch,
        };
        // A stage's entries keep what the stage recorded (owner, mode,
        // xattrs); the context's are root's, with their own modes.
        let meta_of = |p: &Planned| -> Result<SourceMeta, copy::CopyError> {
            match source.as_ref().and_then(|l| l.get(&p.origin)) {
                Some(m) => Ok(SourceMeta {
                    mode: m.mode,
                    uid: m.uid,
                    gid: m.gid,
                    xattrs: m.xattrs.clone(),
                }),
                None => copy::context_meta(p),
            }
        };
        self.write_layer(|w| write_entries(planned, dest, &image, &stamp, *add, &meta_of, w))
            .map_err(|e| self.dferr(step, e))
    }

    /// ADD's URLs: each one's key part (`URL@digest`, or `URL@checksum`
    /// when `--checksum` names it, which needs no download yet), the URLs
    /// left to download on a miss, and the plans of those downloaded.
    async fn url_sources(
        &self,
        index: usize,
        step: &Step,
        urls: &[String],
        checksum: Option<&str>,
        dest: &str,
        opts: &copy::PlanOptions<'_>,
    ) -> Result<(Vec<String>, Vec<String>, Vec<Planned>), BuildError> {
        let (mut keys, mut pending, mut planned) = (Vec::new(), Vec::new(), Vec::new());
        for url in urls {
            match checksum {
                Some(c) => {
                    keys.push(format!("{url}@{c}"));
                    pending.push(url.clone());
                }
                None => {
                    let (digest, p) = self.download(index, step, url, None, dest, opts).await?;
                    keys.push(format!("{url}@{digest}"));
                    planned.extend(p);
                }
            }
        }
        Ok((keys, pending, planned))
    }

    /// A COPY --from's sources: planned in the stage's unpacked root, with
    /// the stage's listing for what it recorded of them.
    async fn stage_sources<R: Registry>(
        &mut self,
        i: usize,
        step: &Step,
        sources: &[String],
        dest: &str,
        opts: &copy::PlanOptions<'_>,
        registry: &R,
    ) -> Result<(Vec<Planned>, Option<Arc<Listing>>), BuildError> {
        let root = self.root_of(i, registry).await?;
        let tree = Tree::walk(&root, &format!("stage {i}"), |_, _| false)
            .map_err(|e| self.dferr(step, e))?;
        let planned =
            copy::plan_with(&tree, sources, dest, opts).map_err(|e| self.dferr(step, e))?;
        let listing = match self.done.get(&i).cloned() {
            Some(b) => Some(self.listing(i, &b, registry).await?),
            None => None,
        };
        Ok((planned, listing))
    }

    /// COPY's heredoc files, written (0644) into a scratch tree of their
    /// own and planned like context files.
    fn inline_sources(
        &self,
        index: usize,
        step: &Step,
        inline: &[InlineFile],
        dest: &str,
        opts: &copy::PlanOptions,
    ) -> Result<Vec<Planned>, String> {
        if inline.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self
            .work
            .path()
            .join(format!("inline-{index}-{}", step.line));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut names = Vec::new();
        for f in inline {
            if f.name.is_empty() || f.name.contains('/') || f.name == "." || f.name == ".." {
                return Err(format!("heredoc name {:?} cannot name a file", f.name));
            }
            let path = dir.join(&f.name);
            std::fs::write(&path, &f.content).map_err(|e| format!("{}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            names.push(f.name.clone());
        }
        let tree = Tree::walk(&dir, "the heredocs", |_, _| false).map_err(|e| e.to_string())?;
        let mut planned = copy::plan_with(&tree, &names, dest, opts).map_err(|e| e.to_string())?;
        for p in &mut planned {
            p.direct = false; // never extracted by ADD
        }
        Ok(planned)
    }

    /// `ADD <url>`: downloaded into a scratch tree of its own (mode 0600,
    /// as Docker leaves it), named by the URL's last path segment; its
    /// digest and its plan.
    async fn download(
        &self,
        index: usize,
        step: &Step,
        url: &str,
        checksum: Option<&str>,
        dest: &str,
        opts: &copy::PlanOptions<'_>,
    ) -> Result<(String, Vec<Planned>), BuildError> {
        let dir = self
            .work
            .path()
            .join(format!("download-{index}-{}", step.line));
        std::fs::create_dir_all(&dir)
            .map_err(|e| self.dferr(step, format!("{}: {e}", dir.display())))?;
        let fetched = crate::fetch::fetch(
            url,
            &dir,
            checksum,
            kiln_rootfs::unpack::max_bytes_from_env(),
        )
        .await
        .map_err(|e| self.dferr(step, e))?;
        // A name that is no file name (`..`, `.`) cannot name the file.
        let name = if fetched.name.is_empty() || fetched.name == "." || fetched.name == ".." {
            "download".to_string()
        } else {
            fetched.name.clone()
        };
        let named = dir.join(format!(
            "{}-{name}",
            fetched.digest.trim_start_matches("sha256:")
        ));
        let tree_dir = named.with_extension("d");
        let err = |e: std::io::Error| self.dferr(step, format!("{}: {e}", tree_dir.display()));
        std::fs::create_dir_all(&tree_dir).map_err(err)?;
        let file = tree_dir.join(&name);
        std::fs::rename(&fetched.path, &file).map_err(err)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        let tree =
            Tree::walk(&tree_dir, "the download", |_, _| false).map_err(|e| self.dferr(step, e))?;
        let mut planned =
            copy::plan_with(&tree, &[name], dest, opts).map_err(|e| self.dferr(step, e))?;
        for p in &mut planned {
            p.direct = false; // a downloaded archive is not extracted
        }
        Ok((fetched.digest, planned))
    }

    /// The directories WORKDIR or VOLUME name, created where the image
    /// lacks them (0755, root's), as one layer; none when all exist.
    pub(super) async fn mkdir_step<R: Registry>(
        &mut self,
        index: usize,
        built: &mut Built,
        step: &Step,
        dirs: &[String],
        registry: &R,
    ) -> Result<(), BuildError> {
        let key = keys::dockerfile_mkdir(&built.chain, dirs);
        let desc = match self.store.lookup(&key, Check::Full)? {
            Some(d) => Some((d, true)),
            None => {
                let image = self.listing(index, built, registry).await?;
                let stamp = Stamp {
                    mtime: self.opts.source_date_epoch,
                    ..Stamp::default()
                };
                let mut placed: Vec<Placed> = Vec::new();
                for dir in dirs {
                    let more =
                        copy::place(&[], &format!("{dir}/"), &image, &stamp, &copy::context_meta)
                            .map_err(|e| self.dferr(step, e))?;
                    for p in more {
                        if !placed.iter().any(|q| q.path == p.path) {
                            placed.push(p);
                        }
                    }
                }
                placed.sort_by(|a, b| a.path.cmp(&b.path));
                let d = self
                    .write_layer(|w| {
                        copy::write_placed(&placed, stamp.mtime, w)?
                            .into_inner()
                            .map(|_| ())
                            .map_err(|source| copy::CopyError::Io {
                                action: "archiving",
                                path: dirs.first().map(Into::into).unwrap_or_default(),
                                source,
                            })
                    })
                    .map_err(|e| self.dferr(step, e))?;
                self.store.insert(&key, &d)?;
                Some((d, false))
            }
        };
        match desc {
            Some((d, _)) if is_empty_layer(&d) => {
                built.chain = key;
                Ok(())
            }
            Some((d, reused)) => self.add_layer(index, built, step, &d, reused, key),
            None => Ok(()),
        }
    }

    /// The listing of a stage as built so far: its base's layers and its
    /// own, each read once (from the store's cache when it was read
    /// before, downloading a base layer only when it was not).
    pub(super) async fn listing<R: Registry>(
        &mut self,
        stage: usize,
        built: &Built,
        registry: &R,
    ) -> Result<Arc<Listing>, BuildError> {
        if let Some(l) = self.listings.get(&stage) {
            return Ok(Arc::clone(l));
        }
        let mut out = Listing::default();
        let diff_ids = crate::config::ConfigView::new(&built.base.config).diff_ids();
        for (layer, diff_id) in built.base.layers.iter().zip(diff_ids) {
            let cached = listing::cache_path(self.store.root(), &diff_id);
            if !cached.exists() {
                self.fetch_base_layer(built, layer, registry).await?;
            }
            let digest = store::Digest::from_str(layer.digest().as_ref())?;
            let l = self
                .layer_listing(&digest, layer.media_type().as_ref(), &diff_id)
                .map_err(|e| BuildError::Dockerfile {
                    file: self.req.dockerfile.clone(),
                    message: format!("reading base layer {}: {e}", layer.digest()),
                })?;
            out.apply(&l);
        }
        for added in &built.added {
            let digest = store::Digest::from_str(added.blob.digest().as_ref())?;
            let l = self
                .layer_listing(&digest, added.blob.media_type().as_ref(), &added.diff_id)
                .map_err(|e| BuildError::Dockerfile {
                    file: self.req.dockerfile.clone(),
                    message: format!("reading layer {}: {e}", added.created_by),
                })?;
            out.apply(&l);
        }
        let out = Arc::new(out);
        self.listings.insert(stage, Arc::clone(&out));
        Ok(out)
    }

    /// One layer's listing, cached in the store by diffID.
    pub(super) fn layer_listing(
        &self,
        digest: &store::Digest,
        media_type: &str,
        diff_id: &str,
    ) -> io::Result<LayerListing> {
        LayerListing::of_blob(
            &self.store.path(digest),
            Some(media_type),
            Some(&listing::cache_path(self.store.root(), diff_id)),
        )
    }

    /// A layer written by `write` into the store; a failed one leaves no
    /// blob behind.
    fn write_layer<E: std::fmt::Display>(
        &self,
        write: impl FnOnce(&mut LayerWriter) -> Result<(), E>,
    ) -> Result<LayerDescriptor, String> {
        let mut writer =
            LayerWriter::new(self.store, self.opts.compression).map_err(|e| e.to_string())?;
        if let Err(e) = write(&mut writer) {
            let _ = writer.abort();
            return Err(e.to_string());
        }
        writer.finish().map_err(|e| e.to_string())
    }
}

/// `--chown`: numeric ids as given (a lone uid is also the gid); names
/// from the stage's /etc/passwd and /etc/group.
fn owner(spec: &str, image: &Listing) -> Result<(u64, u64), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if let (Ok(u), None) = (user.parse::<u64>(), group) {
        return Ok((u, u));
    }
    if let (Ok(u), Some(Ok(g))) = (user.parse::<u64>(), group.map(str::parse::<u64>)) {
        return Ok((u, g));
    }
    let u = User::resolve_in(image.passwd(), image.group(), spec)
        .map_err(|e| format!("--chown={spec}: {e}"))?;
    Ok((u64::from(u.uid), u64::from(u.gid)))
}

/// The layer's entries: COPY's placed files; for ADD, the local archives
/// named as sources are extracted into the destination instead (a
/// compressed file that holds no tar, or an archive inside a directory
/// source, is copied as a file, as Docker does).
fn write_entries<W: io::Write>(
    planned: &[Planned],
    dest: &str,
    image: &Listing,
    stamp: &Stamp,
    add: bool,
    meta_of: &dyn Fn(&Planned) -> Result<SourceMeta, copy::CopyError>,
    out: W,
) -> Result<(), String> {
    let (archives, files): (Vec<&Planned>, Vec<&Planned>) = planned
        .iter()
        .partition(|p| add && p.direct && p.kind == Kind::File && is_archive(&p.source));
    let files: Vec<Planned> = files.into_iter().cloned().collect();
    let mut placed = copy::place(&files, dest, image, stamp, meta_of).map_err(|e| e.to_string())?;
    if !archives.is_empty() {
        // The extraction target must exist even when only archives are
        // added.
        let dir = format!("{}/", dest.trim_end_matches('/'));
        for p in copy::place(&[], &dir, image, stamp, meta_of).map_err(|e| e.to_string())? {
            if !placed.iter().any(|q| q.path == p.path) {
                placed.push(p);
            }
        }
        placed.sort_by(|a, b| a.path.cmp(&b.path));
    }
    let mut out = copy::write_placed(&placed, stamp.mtime, out).map_err(|e| e.to_string())?;
    let prefix = image.resolve(dest.trim_start_matches('/'), true);
    for a in archives {
        let reader = crate::add::open_archive(&a.source)
            .map_err(|e| format!("{}: {e}", a.source.display()))?;
        crate::add::append_archive(&a.source, reader, &prefix, &mut out)
            .map_err(|e| e.to_string())?;
    }
    out.into_inner().map(|_| ()).map_err(|e| e.to_string())
}

/// Whether ADD extracts the file: plain or compressed (gzip, bzip2, xz,
/// zstd), what it holds must start with a valid tar header (any variant:
/// v7, old GNU, ustar, PAX). Docker's test, not the file name's.
fn is_archive(path: &Path) -> bool {
    let Ok(mut reader) = crate::add::open_archive(path) else {
        return false;
    };
    let mut block = [0u8; 512];
    let mut n = 0;
    while n < block.len() {
        match reader.read(&mut block[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    n == block.len() && tar_header_checks(&block)
}

/// A tar header's checksum: the sum of its bytes with the checksum field
/// read as spaces, stored as octal in that field (signed sums accepted, as
/// old tars wrote them).
fn tar_header_checks(block: &[u8; 512]) -> bool {
    if block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .skip_while(|b| **b == b' ')
        .map(|b| *b as char)
        .collect();
    let text = text.trim();
    let Ok(stored) = u32::from_str_radix(text, 8) else {
        return false;
    };
    let mut unsigned: u32 = 0;
    let mut signed: i32 = 0;
    for (i, b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    stored == unsigned || i64::from(stored) == i64::from(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_block(name: &str, gnu: bool) -> [u8; 512] {
        let mut h = if gnu {
            tar::Header::new_old()
        } else {
            tar::Header::new_ustar()
        };
        h.set_path(name).unwrap();
        h.set_size(0);
        h.set_cksum();
        let mut out = [0u8; 512];
        out.copy_from_slice(h.as_bytes());
        out
    }

    #[test]
    fn a_tar_header_is_told_from_other_bytes() {
        assert!(tar_header_checks(&header_block("a", false)));
        assert!(tar_header_checks(&header_block("a", true)));
        let mut broken = header_block("a", false);
        broken[0] = b'b';
        assert!(!tar_header_checks(&broken));
        assert!(!tar_header_checks(&[0u8; 512]));
        let mut text = [b'x'; 512];
        text[..5].copy_from_slice(b"hello");
        assert!(!tar_header_checks(&text));
    }

    #[test]
    fn owners_by_id_or_by_name_from_the_listings_databases() {
        let mut l = Listing::default();
        l.apply(&LayerListing {
            passwd: Some("app:x:1234:1235::/home/app:/bin/sh\n".into()),
            group: Some("staff:x:50:\n".into()),
            ..LayerListing::default()
        });
        assert_eq!(owner("7", &l).unwrap(), (7, 7));
        assert_eq!(owner("7:8", &l).unwrap(), (7, 8));
        assert_eq!(owner("app", &l).unwrap(), (1234, 1235));
        assert_eq!(owner("app:staff", &l).unwrap(), (1234, 50));
        assert!(owner("nobody", &l).unwrap_err().contains("--chown=nobody"));
    }
}
