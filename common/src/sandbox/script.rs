//! Turns a prepared run (resolved host paths, mounts, env, argv) into the
//! host command line that builds the namespaces and mounts and starts the
//! command; pure, so the generated shell is unit-tested.
//!
//! The chain, each step `exec`ing the next so one host process is the handle:
//!
//! ```text
//! setpriv --pdeathsig KILL            # dies with kiln (Ctrl-C, crash)
//!  unshare [--user --map-root-user --map-auto] --mount --uts --ipc
//!   sh -c SETUP                       # mount points, /dev, binds, hostname
//!    unshare --pid --fork --kill-child --mount-proc=ROOT/proc
//!     └ pid 1: sh -c 'exec 3>&2 2>/dev/null; sh -c ... "$@"; exit $?'
//!        │     # init: waits, maps signals to 128+n; its own stderr (where
//!        │     # it would print "Killed") is /dev/null
//!        └ pid 2: sh -c 'exec 2>&3 3>&-; exec env -i -- "$@"'
//!             → env -i -- VARS unshare --root=ROOT --wd=DIR --setgid G --setuid U -- ARGV
//! ```
//!
//! Killing the host process kills pid 1 (`--kill-child`), and with it every
//! process of the pid namespace.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::preflight::UsernsMode;
use super::spec::User;

/// Devices bind-mounted from the host into the sandbox's `/dev` tmpfs.
pub(crate) const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// A mount point (or working directory) the setup creates inside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Create {
    /// Host path.
    pub path: PathBuf,
    /// Directory (else an empty file).
    pub dir: bool,
}

/// A bind mount with resolved host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bind {
    pub source: PathBuf,
    /// Host path of the target (inside the root, symlink-free).
    pub target: PathBuf,
    pub read_only: bool,
}

/// Everything the generated command needs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub mode: UsernsMode,
    pub root: PathBuf,
    /// Upper and work directories of an overlay mounted over the root.
    pub overlay: Option<(PathBuf, PathBuf)>,
    /// Host directory for the set-up log and success marker.
    pub rundir: PathBuf,
    pub create: Vec<Create>,
    /// Host path of the root's `/dev` and `/proc`.
    pub dev: PathBuf,
    pub proc: PathBuf,
    pub binds: Vec<Bind>,
    pub hostname: String,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub user: User,
    pub argv: Vec<String>,
}

/// The name of the marker file the set-up writes into the run directory when
/// everything is mounted, just before starting the command.
pub(crate) const SETUP_OK: &str = "setup-ok";
/// The set-up stage's error log in the run directory.
pub(crate) const SETUP_LOG: &str = "setup.log";

impl Plan {
    /// Program and arguments of the host command (program first).
    pub(crate) fn command(&self, setpriv: &Path, unshare: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            setpriv.into(),
            "--pdeathsig".into(),
            "KILL".into(),
            "--".into(),
            unshare.into(),
        ];
        if self.mode == UsernsMode::Create {
            args.extend(["--user", "--map-root-user", "--map-auto"].map(OsString::from));
        }
        args.extend(
            [
                "--mount",
                "--uts",
                "--ipc",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
            ]
            .map(OsString::from),
        );
        args.push(OsString::from_vec(self.setup_script(unshare)));
        args.push("kiln-sandbox-setup".into());
        // Positional parameters of the script: the init's command line.
        for (k, v) in &self.env {
            args.push(format!("{k}={v}").into());
        }
        args.push(unshare.into());
        let mut root = OsString::from("--root=");
        root.push(&self.root);
        args.push(root);
        args.push(format!("--wd={}", self.workdir).into());
        args.extend(
            [
                "--setgid".to_string(),
                self.user.gid.to_string(),
                "--setuid".to_string(),
                self.user.uid.to_string(),
                "--".to_string(),
            ]
            .map(OsString::from),
        );
        args.extend(self.argv.iter().map(OsString::from));
        args
    }

    /// The set-up shell script (run by the host's `/bin/sh` inside the new
    /// mount namespace, before the pid namespace exists).
    fn setup_script(&self, unshare: &Path) -> Vec<u8> {
        let mut s: Vec<u8> = Vec::new();
        let log = self.rundir.join(SETUP_LOG);
        let ok = self.rundir.join(SETUP_OK);
        s.extend_from_slice(b"set -u\nlog=");
        s.extend(quote(&log));
        s.extend_from_slice(
            b"\nfail() { printf 'kiln-sandbox: %s\\n' \"$*\" >>\"$log\"; exit 125; }\n\
              r() { \"$@\" 2>>\"$log\" || fail \"failed: $*\"; }\n",
        );
        if let Some((upper, work)) = &self.overlay {
            // First, so mount points and the workdir are made in the upper
            // directory and the shared root stays as it was.
            s.extend_from_slice(b"r mount -t overlay -o ");
            let mut opts = OsString::from("lowerdir=");
            opts.push(&self.root);
            opts.push(",upperdir=");
            opts.push(upper);
            opts.push(",workdir=");
            opts.push(work);
            s.extend(quote(Path::new(&opts)));
            s.extend_from_slice(b" kiln-overlay ");
            s.extend(quote(&self.root));
            s.push(b'\n');
        }
        for c in &self.create {
            s.extend_from_slice(if c.dir {
                b"r mkdir -- "
            } else {
                b"r touch -- "
            });
            s.extend(quote(&c.path));
            s.push(b'\n');
        }
        let dev = |name: &str| self.dev.join(name);
        s.extend_from_slice(b"r mount -t tmpfs -o nosuid,noexec,mode=755,size=65536k kiln-dev ");
        s.extend(quote(&self.dev));
        s.push(b'\n');
        for d in DEVICES {
            s.extend_from_slice(b"r touch -- ");
            s.extend(quote(&dev(d)));
            s.extend_from_slice(format!("\nr mount --bind /dev/{d} ").as_bytes());
            s.extend(quote(&dev(d)));
            s.push(b'\n');
        }
        s.extend_from_slice(b"r mkdir -- ");
        s.extend(quote(&dev("shm")));
        s.push(b' ');
        s.extend(quote(&dev("pts")));
        s.extend_from_slice(b"\nr mount -t tmpfs -o nosuid,nodev,mode=1777,size=65536k shm ");
        s.extend(quote(&dev("shm")));
        // /dev/pts is best effort: not every kernel lets a user namespace
        // mount a new devpts instance.
        s.extend_from_slice(b"\nmount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts ");
        s.extend(quote(&dev("pts")));
        s.extend_from_slice(b" 2>/dev/null && r ln -s pts/ptmx ");
        s.extend(quote(&dev("ptmx")));
        s.push(b'\n');
        for (link, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            s.extend_from_slice(format!("r ln -s {to} ").as_bytes());
            s.extend(quote(&dev(link)));
            s.push(b'\n');
        }
        for b in &self.binds {
            s.extend_from_slice(if b.read_only {
                b"r mount --bind -o ro -- ".as_slice()
            } else {
                b"r mount --bind -- ".as_slice()
            });
            s.extend(quote(&b.source));
            s.push(b' ');
            s.extend(quote(&b.target));
            s.push(b'\n');
        }
        // sethostname(2) needs CAP_SYS_ADMIN over the new uts namespace only;
        // writing /proc/sys/kernel/hostname would need global root.
        s.extend_from_slice(b"r hostname ");
        s.extend(quote(Path::new(&self.hostname)));
        s.push(b'\n');
        s.extend_from_slice(b"r touch -- ");
        s.extend(quote(&ok));
        s.extend_from_slice(b"\nexec ");
        s.extend(quote(unshare));
        s.extend_from_slice(b" --pid --fork --kill-child=SIGKILL --mount-proc=");
        s.extend(quote(&self.proc));
        s.extend_from_slice(b" -- /bin/sh -c 'exec 3>&2 2>/dev/null; /bin/sh -c \"exec 2>&3 3>&-; exec env -i -- \\\"\\$@\\\"\" kiln-cmd \"$@\"; exit $?' kiln-init \"$@\"\n");
        s
    }
}

/// `path` as one single-quoted shell word (any byte but NUL is safe inside).
pub(crate) fn quote(path: &Path) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &b in path.as_os_str().as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            mode: UsernsMode::Create,
            root: "/r o'ot".into(),
            overlay: None,
            rundir: "/run/k".into(),
            create: vec![Create {
                path: "/r o'ot/run/secrets".into(),
                dir: true,
            }],
            dev: "/r o'ot/dev".into(),
            proc: "/r o'ot/proc".into(),
            binds: vec![Bind {
                source: "/host/s".into(),
                target: "/r o'ot/run/secrets/s".into(),
                read_only: true,
            }],
            hostname: "h".into(),
            env: vec![("A".into(), "x y".into())],
            workdir: "/w".into(),
            user: User { uid: 5, gid: 6 },
            argv: vec!["sh".into(), "-c".into(), "echo $A".into()],
        }
    }

    #[test]
    fn quotes_any_path() {
        assert_eq!(quote(Path::new("a'b c")), b"'a'\\''b c'".to_vec());
    }

    #[test]
    fn builds_the_namespace_chain() {
        let p = plan();
        let cmd = p.command(Path::new("/usr/bin/setpriv"), Path::new("/usr/bin/unshare"));
        let strs: Vec<String> = cmd
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            strs[..5],
            [
                "/usr/bin/setpriv",
                "--pdeathsig",
                "KILL",
                "--",
                "/usr/bin/unshare"
            ]
        );
        assert!(strs.contains(&"--map-auto".to_string()));
        let tail = strs.iter().position(|s| s == "kiln-sandbox-setup").unwrap();
        assert_eq!(
            strs[tail + 1..],
            [
                "A=x y",
                "/usr/bin/unshare",
                "--root=/r o'ot",
                "--wd=/w",
                "--setgid",
                "6",
                "--setuid",
                "5",
                "--",
                "sh",
                "-c",
                "echo $A"
            ]
        );
        let script = &strs[tail - 1];
        assert!(
            script.contains("r mkdir -- '/r o'\\''ot/run/secrets'"),
            "{script}"
        );
        assert!(
            script.contains("r mount --bind -o ro -- '/host/s' '/r o'\\''ot/run/secrets/s'"),
            "{script}"
        );
        assert!(
            script.contains("--mount-proc='/r o'\\''ot/proc'"),
            "{script}"
        );
        assert!(script.ends_with("kiln-init \"$@\"\n"), "{script}");
        // Inside kiln's own user namespace no new one is created.
        let inherit = Plan {
            mode: UsernsMode::Inherit,
            ..p
        };
        let cmd = inherit.command(Path::new("setpriv"), Path::new("unshare"));
        assert!(!cmd.iter().any(|a| a == "--user"));
    }

    #[test]
    fn an_overlay_is_mounted_over_the_root_before_anything_is_created() {
        let p = Plan {
            overlay: Some(("/up".into(), "/wk".into())),
            ..plan()
        };
        let script = String::from_utf8(p.setup_script(Path::new("unshare"))).unwrap();
        let mount = script
            .find("r mount -t overlay -o 'lowerdir=/r o'\\''ot,upperdir=/up,workdir=/wk' kiln-overlay '/r o'\\''ot'")
            .unwrap_or_else(|| panic!("{script}"));
        let mkdir = script.find("r mkdir").unwrap_or_else(|| panic!("{script}"));
        assert!(mount < mkdir, "{script}");
        assert!(
            !plan()
                .setup_script(Path::new("unshare"))
                .windows(7)
                .any(|w| w == b"overlay")
        );
    }
}
