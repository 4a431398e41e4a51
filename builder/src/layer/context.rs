//! The code layer's input: a build context walked with `.dockerignore`
//! applied, then written as a deterministic tar (sorted paths, fixed mtime
//! and owner, normalized permissions) under a destination directory.
//!
//! Nothing about the machine leaks into the tar: not the context's absolute
//! path, not mtimes, owners, umask or directory order, so the same sources
//! give the same diffID everywhere.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::archive::TarWriter;
use super::dockerignore::DockerIgnore;
use super::{IoContext as _, LayerError};

/// Contexts bigger than this with no `.dockerignore` get a warning: usually
/// data or a virtualenv is being baked into the image by accident.
pub const LARGE_CONTEXT_BYTES: u64 = 50 * 1024 * 1024;

/// The ignore file looked for at the context root.
pub const DOCKERIGNORE: &str = ".dockerignore";

/// Something the user should hear about that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextWarning {
    /// A socket, FIFO or device file: not representable in an image layer
    /// built without privileges, so left out.
    SpecialFileSkipped {
        /// Path relative to the context root.
        path: PathBuf,
    },
    /// The context is large and nothing is ignored.
    LargeContextWithoutDockerignore {
        /// Bytes of regular files in the context.
        bytes: u64,
    },
}

impl fmt::Display for ContextWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SpecialFileSkipped { path } => write!(
                f,
                "skipped {}: sockets, FIFOs and devices are not copied into images",
                path.display()
            ),
            Self::LargeContextWithoutDockerignore { bytes } => write!(
                f,
                "the build context holds {} MiB and has no {DOCKERIGNORE}; add one to keep data, \
                 virtualenvs and caches out of the image",
                bytes / (1024 * 1024)
            ),
        }
    }
}

/// How the tar is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarOptions {
    /// Directory in the image the context lands in (`/app`); its parents
    /// are emitted as entries too. `/` puts the context at the root.
    pub dest: String,
    /// Every entry's mtime: the caller passes `SOURCE_DATE_EPOCH` when it is
    /// set, else 0, so rebuilds are byte-identical.
    pub mtime: u64,
    /// Owner uid of every entry (Docker's `COPY --chown`); default root.
    pub uid: u64,
    /// Owner gid of every entry.
    pub gid: u64,
}

impl Default for TarOptions {
    fn default() -> Self {
        Self {
            dest: "/".to_owned(),
            mtime: 0,
            uid: 0,
            gid: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// A walked build context: what goes into the layer, in tar order.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    /// Relative path bytes (no trailing `/`) -> kind; a BTreeMap so the
    /// order is byte-wise.
    entries: BTreeMap<Vec<u8>, Kind>,
    file_bytes: u64,
    warnings: Vec<ContextWarning>,
}

impl Context {
    /// Walks `root`, applying `root/.dockerignore` (or `ignore_file` when
    /// given, e.g. ZenML's `dockerignore` setting). `.gitignore` files and
    /// hidden files get no special treatment, as in Docker. Symlinks are
    /// recorded, never followed.
    pub fn scan(root: &Path, ignore_file: Option<&Path>) -> Result<Self, LayerError> {
        let default_ignore = root.join(DOCKERIGNORE);
        let (ignore_path, required) = match ignore_file {
            Some(p) => (p.to_path_buf(), true),
            None => (default_ignore, false),
        };
        let ignore = match fs::read(&ignore_path) {
            Ok(bytes) => Some(
                DockerIgnore::parse(&String::from_utf8_lossy(&bytes)).map_err(|e| {
                    LayerError::BadPattern {
                        file: ignore_path.clone(),
                        line: e.line,
                        pattern: e.pattern,
                        reason: e.reason.to_string(),
                    }
                })?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => None,
            Err(e) => return Err(e).at("reading", &ignore_path),
        };
        let has_ignore_file = ignore.is_some();
        let ignore = Arc::new(ignore.unwrap_or_default());

        let walk_root = root.to_path_buf();
        let filter = Arc::clone(&ignore);
        let walker = ignore::WalkBuilder::new(root)
            .standard_filters(false)
            .follow_links(false)
            .filter_entry(move |entry| {
                let Some(rel) = relative(&walk_root, entry.path()) else {
                    return true;
                };
                let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
                // Excluded directories are still entered when a `!` pattern
                // may re-include something below them.
                !filter.is_excluded(&rel) || (is_dir && filter.may_include_under(&rel))
            })
            .build();

        let mut context = Self {
            root: root.to_path_buf(),
            entries: BTreeMap::new(),
            file_bytes: 0,
            warnings: Vec::new(),
        };
        for item in walker {
            let entry = item.map_err(|source| LayerError::Walk { source })?;
            if entry.depth() == 0 {
                continue;
            }
            let path = entry.path();
            let rel_path = path.strip_prefix(root).unwrap_or(path);
            let meta = fs::symlink_metadata(path).at("reading metadata of", path)?;
            let file_type = meta.file_type();
            let kind = if file_type.is_dir() {
                // A directory walked only for its re-included contents
                // appears when one of them does.
                let rel = rel_path.to_string_lossy();
                if ignore.is_excluded(&rel) {
                    continue;
                }
                Kind::Dir
            } else if file_type.is_file() {
                context.file_bytes += meta.len();
                Kind::File
            } else if file_type.is_symlink() {
                Kind::Symlink
            } else {
                context.warnings.push(ContextWarning::SpecialFileSkipped {
                    path: rel_path.to_path_buf(),
                });
                continue;
            };
            context.add(rel_path.as_os_str().as_bytes(), kind);
        }
        if !has_ignore_file && context.file_bytes > LARGE_CONTEXT_BYTES {
            context
                .warnings
                .push(ContextWarning::LargeContextWithoutDockerignore {
                    bytes: context.file_bytes,
                });
        }
        Ok(context)
    }

    /// Adds an entry and the parent directories it needs.
    fn add(&mut self, rel: &[u8], kind: Kind) {
        for (i, b) in rel.iter().enumerate() {
            if *b == b'/'
                && let Some(parent) = rel.get(..i)
            {
                self.entries.entry(parent.to_vec()).or_insert(Kind::Dir);
            }
        }
        self.entries.insert(rel.to_vec(), kind);
    }

    /// Paths that go into the layer, relative to the context root, in tar
    /// order (for `kiln build --explain` and tests).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.entries
            .keys()
            .map(|k| Path::new(std::ffi::OsStr::from_bytes(k)))
    }

    /// Bytes of regular files included.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Warnings for the user (special files skipped, a large context).
    pub fn warnings(&self) -> &[ContextWarning] {
        &self.warnings
    }

    /// Writes the tar stream to `out` and returns it. File contents are
    /// streamed, never held whole; a file whose size changes while it is
    /// read fails the layer rather than producing a corrupt tar.
    pub fn write_tar<W: Write>(&self, out: W, opts: &TarOptions) -> Result<W, LayerError> {
        let dest = dest_prefix(&opts.dest)?;
        let mut tar = TarWriter::new(out, opts);
        let mut prefix = String::new();
        for component in &dest {
            prefix.push_str(component);
            prefix.push('/');
            tar.dir(Path::new(&prefix), 0o755, &self.root)?;
        }

        for (rel, kind) in &self.entries {
            let mut name = prefix.as_bytes().to_vec();
            name.extend_from_slice(rel);
            let source = self.root.join(std::ffi::OsStr::from_bytes(rel));
            match kind {
                Kind::Dir => {
                    name.push(b'/');
                    tar.dir(&path_of(name), 0o755, &source)?;
                }
                Kind::Symlink => {
                    let target = fs::read_link(&source).at("reading link", &source)?;
                    tar.symlink(&path_of(name), &target, &source)?;
                }
                Kind::File => tar.file(&path_of(name), &source, None)?,
            }
        }
        tar.finish(&self.root)
    }
}

fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

/// `/app` -> `["app"]`; `/` -> `[]`. `..` is refused: the layer must not
/// write outside the image root.
fn dest_prefix(dest: &str) -> Result<Vec<String>, LayerError> {
    let mut parts = Vec::new();
    for part in dest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(LayerError::BadDestination {
                    dest: dest.to_owned(),
                    reason: "it must not contain \"..\"",
                });
            }
            _ => parts.push(part.to_owned()),
        }
    }
    Ok(parts)
}

/// `path` relative to `root` as a `/`-separated string for matching.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    if rel.as_os_str().is_empty() {
        return None;
    }
    Some(rel.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Read as _;
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    fn write(root: &Path, rel: &str, content: &[u8]) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn tar_of(root: &Path, opts: &TarOptions) -> Vec<u8> {
        Context::scan(root, None)
            .unwrap()
            .write_tar(Vec::new(), opts)
            .unwrap()
    }

    struct Item {
        path: String,
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        uname: Vec<u8>,
        link: Option<String>,
        content: Vec<u8>,
    }

    fn read_back(bytes: &[u8]) -> Vec<Item> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                Item {
                    path: e.path().unwrap().to_string_lossy().into_owned(),
                    kind: h.entry_type(),
                    mode: h.mode().unwrap(),
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    mtime: h.mtime().unwrap(),
                    uname: h.username_bytes().unwrap_or_default().to_vec(),
                    link: e
                        .link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    content,
                }
            })
            .collect()
    }

    fn names(bytes: &[u8]) -> Vec<String> {
        read_back(bytes).into_iter().map(|i| i.path).collect()
    }

    fn sample(root: &Path) {
        write(root, "main.py", b"print('hi')\n");
        write(root, "pkg/__init__.py", b"");
        write(root, "pkg/util.py", b"x = 1\n");
        write(root, ".env", b"SECRET=1\n");
        write(root, "run.sh", b"#!/bin/sh\n");
        let mut perms = fs::metadata(root.join("run.sh")).unwrap().permissions();
        perms.set_mode(0o700);
        fs::set_permissions(root.join("run.sh"), perms).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
    }

    #[test]
    fn same_context_at_two_paths_gives_identical_tars() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        sample(a.path());
        // Written in another order, with other mtimes and modes that
        // normalize to the same thing.
        write(b.path(), "run.sh", b"#!/bin/sh\n");
        let mut perms = fs::metadata(b.path().join("run.sh")).unwrap().permissions();
        perms.set_mode(0o775);
        fs::set_permissions(b.path().join("run.sh"), perms).unwrap();
        fs::create_dir_all(b.path().join("empty")).unwrap();
        write(b.path(), "pkg/util.py", b"x = 1\n");
        write(b.path(), ".env", b"SECRET=1\n");
        write(b.path(), "pkg/__init__.py", b"");
        write(b.path(), "main.py", b"print('hi')\n");
        let file = File::options()
            .append(true)
            .open(b.path().join("main.py"))
            .unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        let mut perms = fs::metadata(b.path().join("main.py"))
            .unwrap()
            .permissions();
        perms.set_mode(0o600);
        fs::set_permissions(b.path().join("main.py"), perms).unwrap();

        let opts = TarOptions {
            dest: "/app".into(),
            ..TarOptions::default()
        };
        let ta = tar_of(a.path(), &opts);
        let tb = tar_of(b.path(), &opts);
        assert!(ta == tb, "tars differ");
    }

    #[test]
    fn entries_are_sorted_under_dest_with_parents() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let opts = TarOptions {
            dest: "/opt/app/".into(),
            ..TarOptions::default()
        };
        assert_eq!(
            names(&tar_of(dir.path(), &opts)),
            [
                "opt/",
                "opt/app/",
                "opt/app/.env",
                "opt/app/empty/",
                "opt/app/main.py",
                "opt/app/pkg/",
                "opt/app/pkg/__init__.py",
                "opt/app/pkg/util.py",
                "opt/app/run.sh",
            ]
        );
        // At the root: no entry for "/" itself.
        assert_eq!(
            names(&tar_of(dir.path(), &TarOptions::default()))[0],
            ".env"
        );
    }

    #[test]
    fn metadata_is_normalized() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let opts = TarOptions {
            dest: "app".into(),
            mtime: 1_700_000_000,
            uid: 1000,
            gid: 1001,
        };
        for item in read_back(&tar_of(dir.path(), &opts)) {
            assert_eq!(item.mtime, 1_700_000_000, "{}", item.path);
            assert_eq!((item.uid, item.gid), (1000, 1001), "{}", item.path);
            assert!(item.uname.is_empty(), "{}", item.path);
            let expected = match item.path.as_str() {
                p if p.ends_with('/') => 0o755,
                "app/run.sh" => 0o755,
                _ => 0o644,
            };
            assert_eq!(item.mode, expected, "{}", item.path);
        }
    }

    #[test]
    fn symlinks_are_stored_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "real.txt", b"real");
        symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        symlink("real.txt", dir.path().join("alias")).unwrap();
        symlink("/etc", dir.path().join("etc")).unwrap();
        let items = read_back(&tar_of(dir.path(), &TarOptions::default()));
        let paths: Vec<_> = items.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["alias", "etc", "passwd", "real.txt"]);
        let passwd = &items[2];
        assert_eq!(passwd.kind, tar::EntryType::Symlink);
        assert_eq!(passwd.link.as_deref(), Some("/etc/passwd"));
        assert!(passwd.content.is_empty(), "the target must not be read");
        assert_eq!(items[1].kind, tar::EntryType::Symlink, "no walk into /etc");
        assert_eq!(items[0].link.as_deref(), Some("real.txt"));
    }

    #[test]
    fn dockerignore_excludes_dirs_and_re_includes() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            ".dockerignore",
            b"data/\n*.pyc\n!keep.pyc\n.git\nlogs\n!logs/important.log\n",
        );
        write(dir.path(), "data/raw.csv", b"1,2\n");
        write(dir.path(), "data/deep/more.csv", b"3,4\n");
        write(dir.path(), "a.pyc", b"");
        write(dir.path(), "keep.pyc", b"");
        write(dir.path(), "pkg/b.pyc", b"");
        write(dir.path(), ".git/HEAD", b"ref\n");
        write(dir.path(), "logs/debug.log", b"");
        write(dir.path(), "logs/important.log", b"!");
        write(dir.path(), ".gitignore", b"pkg/\n");
        let context = Context::scan(dir.path(), None).unwrap();
        let paths: Vec<_> = context
            .paths()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            paths,
            [
                ".dockerignore",
                ".gitignore",
                "keep.pyc",
                "logs",
                "logs/important.log",
                "pkg",
                "pkg/b.pyc",
            ]
        );
    }

    #[test]
    fn excluded_dirs_are_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".dockerignore", b"venv\n");
        write(dir.path(), "app.py", b"");
        write(dir.path(), "venv/lib/x.py", b"");
        // A special file inside would warn if the walk went in.
        let socket = std::os::unix::net::UnixListener::bind(dir.path().join("venv/sock")).unwrap();
        let context = Context::scan(dir.path(), None).unwrap();
        drop(socket);
        assert!(context.warnings().is_empty(), "{:?}", context.warnings());
        assert_eq!(
            context.paths().collect::<Vec<_>>(),
            [Path::new(".dockerignore"), Path::new("app.py")]
        );
    }

    #[test]
    fn context_root_may_be_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "real/src/a.py", b"");
        symlink(dir.path().join("real"), dir.path().join("ctx")).unwrap();
        let context = Context::scan(&dir.path().join("ctx"), None).unwrap();
        assert_eq!(
            context.paths().collect::<Vec<_>>(),
            [Path::new("src"), Path::new("src/a.py")]
        );
    }

    #[test]
    fn dockerignore_can_exclude_itself() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".dockerignore", b".dockerignore\n");
        write(dir.path(), "a", b"");
        let context = Context::scan(dir.path(), None).unwrap();
        assert_eq!(context.paths().collect::<Vec<_>>(), [Path::new("a")]);
    }

    #[test]
    fn bad_dockerignore_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".dockerignore", b"ok\n[oops\n");
        match Context::scan(dir.path(), None) {
            Err(LayerError::BadPattern { line, pattern, .. }) => {
                assert_eq!(line, 2);
                assert_eq!(pattern, "[oops");
            }
            other => panic!("expected a pattern error, got {other:?}"),
        }
    }

    #[test]
    fn special_files_are_skipped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a", b"");
        let socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let context = Context::scan(dir.path(), None).unwrap();
        drop(socket);
        assert_eq!(context.paths().collect::<Vec<_>>(), [Path::new("a")]);
        assert_eq!(
            context.warnings(),
            [ContextWarning::SpecialFileSkipped {
                path: PathBuf::from("sock")
            }]
        );
    }

    #[test]
    fn large_context_without_dockerignore_warns() {
        let dir = tempfile::tempdir().unwrap();
        let big = File::create(dir.path().join("big.bin")).unwrap();
        big.set_len(LARGE_CONTEXT_BYTES + 1).unwrap(); // sparse: cheap
        let context = Context::scan(dir.path(), None).unwrap();
        assert!(matches!(
            context.warnings(),
            [ContextWarning::LargeContextWithoutDockerignore { .. }]
        ));
        write(dir.path(), ".dockerignore", b"# nothing\n");
        assert!(
            Context::scan(dir.path(), None)
                .unwrap()
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn long_names_survive() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}/{}.py", "d".repeat(120), "f".repeat(150));
        write(dir.path(), &long, b"x");
        symlink("t".repeat(200), dir.path().join("link")).unwrap();
        let items = read_back(&tar_of(
            dir.path(),
            &TarOptions {
                dest: "/app".into(),
                ..TarOptions::default()
            },
        ));
        assert!(
            items
                .iter()
                .any(|i| i.path == format!("app/{long}") && i.content == b"x")
        );
        let link = items.iter().find(|i| i.path == "app/link").unwrap();
        assert_eq!(link.link.as_deref(), Some("t".repeat(200).as_str()));
    }

    #[test]
    fn destination_may_not_climb_out() {
        let dir = tempfile::tempdir().unwrap();
        let context = Context::scan(dir.path(), None).unwrap();
        let opts = TarOptions {
            dest: "/app/../../etc".into(),
            ..TarOptions::default()
        };
        assert!(matches!(
            context.write_tar(Vec::new(), &opts),
            Err(LayerError::BadDestination { .. })
        ));
    }
}
