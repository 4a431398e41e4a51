//! Turns a prepared run into the host command line that creates the
//! namespaces and starts kiln's init inside them; pure, so the chain is
//! unit-tested.
//!
//! The chain, each step `exec`ing the next so one host process is the handle:
//!
//! ```text
//! setpriv --pdeathsig KILL             # dies with kiln (Ctrl-C, crash)
//!  unshare [USERNS] --mount --uts --ipc --pid [--net] --fork --kill-child
//!   └ pid 1: INIT __kiln-sandbox-init ROOT  # reads the plan on stdin, mounts,
//!        │                             # pivot_root, drops to the run's root,
//!        │                             # locks down, reaps (sandbox/init.rs)
//!        └ ARGV                        # the command, in the image root
//! ```
//!
//! `USERNS` is empty when kiln already runs as root of its own user
//! namespace (rootless kiln re-executed itself there); otherwise it is
//! `--map-users`/`--map-groups` onto the invoking user's subordinate range
//! (uid 0 inside = the range's first id), or, for an unprivileged caller
//! without re-execution and for the host-root opt-out, `--map-root-user
//! --map-auto`.
//!
//! Killing the host process kills pid 1 (`--kill-child`), and with it every
//! process of the pid namespace.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::init::{INIT_ARG, InitPlan};
use super::preflight::UsernsMode;
use super::spec::Network;

/// The name of the marker file the init writes into the run directory once
/// the root is switched, just before starting the command.
pub(crate) const SETUP_OK: &str = "setup-ok";
/// The init's error log in the run directory.
pub(crate) const SETUP_LOG: &str = "setup.log";

/// How the run's user namespace is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UsernsArgs {
    /// None: this process is root of the namespace already.
    Inherit,
    /// uid/gid 0 inside = the invoking user, 1.. its subordinate ids.
    RootIsCaller,
    /// uid/gid 0.. inside = `start`.. outside (a subordinate range).
    Range { uid: (u64, u64), gid: (u64, u64) },
}

impl UsernsArgs {
    /// The arguments `unshare` gets for it.
    pub(crate) fn args(&self) -> Vec<String> {
        match self {
            UsernsArgs::Inherit => Vec::new(),
            UsernsArgs::RootIsCaller => ["--user", "--map-root-user", "--map-auto"]
                .map(String::from)
                .to_vec(),
            // The caller (host root) is not mapped: after exec it is
            // nobody of the namespace, so its capabilities there are kept
            // explicitly for the init, which becomes uid 0 of the range
            // itself before the command starts.
            UsernsArgs::Range { uid, gid } => vec![
                "--user".into(),
                format!("--map-users={},0,{}", uid.0, uid.1),
                format!("--map-groups={},0,{}", gid.0, gid.1),
                "--keep-caps".into(),
            ],
        }
    }

    /// Whether a namespace is created per run.
    pub(crate) fn mode(&self) -> UsernsMode {
        match self {
            UsernsArgs::Inherit => UsernsMode::Inherit,
            _ => UsernsMode::Create,
        }
    }
}

/// Everything the host command needs.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    pub userns: UsernsArgs,
    pub network: Network,
    pub init: PathBuf,
    /// What the init does (sent on its stdin).
    pub plan: InitPlan,
}

impl Chain {
    /// Program and arguments of the host command (program first).
    pub(crate) fn command(&self, setpriv: &Path, unshare: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            setpriv.into(),
            "--pdeathsig".into(),
            "KILL".into(),
            "--".into(),
            unshare.into(),
        ];
        args.extend(self.userns.args().into_iter().map(OsString::from));
        args.extend(["--mount", "--uts", "--ipc", "--pid"].map(OsString::from));
        if self.network == Network::None {
            args.push("--net".into());
        }
        args.extend(
            [
                "--fork",
                "--kill-child=SIGKILL",
                "--propagation",
                "private",
                "--",
            ]
            .map(OsString::from),
        );
        args.push(self.init.clone().into());
        args.push(INIT_ARG.into());
        // Not read by the init: names the run's root in `ps`.
        args.push(self.plan.root.clone().into());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(userns: UsernsArgs, network: Network) -> Vec<String> {
        let c = Chain {
            userns,
            network,
            init: "/usr/bin/kiln".into(),
            plan: InitPlan {
                root: "/cache/roots/r1".into(),
                ..InitPlan::default()
            },
        };
        c.command(Path::new("/usr/bin/setpriv"), Path::new("/usr/bin/unshare"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn root_maps_onto_its_subordinate_range_not_onto_host_root() {
        let args = chain(
            UsernsArgs::Range {
                uid: (100000, 65536),
                gid: (200000, 1000),
            },
            Network::Host,
        );
        assert_eq!(
            args,
            [
                "/usr/bin/setpriv",
                "--pdeathsig",
                "KILL",
                "--",
                "/usr/bin/unshare",
                "--user",
                "--map-users=100000,0,65536",
                "--map-groups=200000,0,1000",
                "--keep-caps",
                "--mount",
                "--uts",
                "--ipc",
                "--pid",
                "--fork",
                "--kill-child=SIGKILL",
                "--propagation",
                "private",
                "--",
                "/usr/bin/kiln",
                INIT_ARG,
                "/cache/roots/r1",
            ]
        );
    }

    #[test]
    fn network_none_adds_a_network_namespace_and_inherit_no_user_namespace() {
        let args = chain(UsernsArgs::Inherit, Network::None);
        assert!(args.contains(&"--net".to_string()), "{args:?}");
        assert!(!args.iter().any(|a| a == "--user"), "{args:?}");
        assert!(!chain(UsernsArgs::RootIsCaller, Network::Host).contains(&"--net".to_string()));
        assert!(chain(UsernsArgs::RootIsCaller, Network::Host).contains(&"--map-auto".to_string()));
    }
}
