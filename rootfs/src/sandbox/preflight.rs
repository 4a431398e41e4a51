//! Preflight checks: before anything runs, find out whether this machine can
//! give us a user namespace, and if not say exactly what to change.

use std::path::{Path, PathBuf};

use super::error::{Result, SandboxError};

/// Set to `1` to make the preflight behave as if the kernel had user
/// namespaces disabled. A test hook: it lets tests check that kiln fails with
/// a clear message instead of a panic on such machines.
pub const FORCE_NO_USERNS_ENV: &str = "KILN_SANDBOX_FORCE_NO_USERNS";

/// Where the sandbox looks for host programs, and the `PATH` they run with:
/// fixed so that a user's PATH cannot swap them.
pub(crate) const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the sandbox gets its user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsernsMode {
    /// Create one per run with `unshare --map-root-user --map-auto`: uid 0
    /// inside is the invoking user, uids 1.. are the user's subordinate ids
    /// (newuidmap/newgidmap). Used as root too, so that both take one path.
    Create,
    /// This process already is root inside a user namespace (kiln re-executed
    /// itself there, see [`reexec_in_user_namespace`](super::reexec_in_user_namespace)):
    /// the sandbox only adds mount, pid, uts and ipc namespaces.
    Inherit,
}

/// The facts about this machine the checks look at; gathered by
/// [`HostFacts::gather`], checked by [`check`] (pure, so it is tested with
/// made-up machines).
#[derive(Debug, Clone, Default)]
pub(crate) struct HostFacts {
    pub euid: u32,
    pub user_name: Option<String>,
    pub force_no_userns: bool,
    pub max_user_namespaces: Option<u64>,
    pub unprivileged_userns_clone: Option<u64>,
    pub apparmor_restrict_userns: Option<u64>,
    pub in_initial_userns: bool,
    pub subuid: Option<String>,
    pub subgid: Option<String>,
    pub missing_tools: Vec<(&'static str, &'static str)>,
}

/// Programs every mode needs, with the Debian package shipping them.
const BASE_TOOLS: &[(&str, &str)] = &[("unshare", "util-linux"), ("setpriv", "util-linux")];

/// Programs needed to create a user namespace with subordinate ids.
const USERNS_TOOLS: &[(&str, &str)] = &[("newuidmap", "uidmap"), ("newgidmap", "uidmap")];

impl HostFacts {
    pub(crate) fn gather() -> HostFacts {
        let euid = rustix::process::geteuid().as_raw();
        let read_num = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let in_initial_userns = std::fs::read_to_string("/proc/self/uid_map")
            .map(|s| is_initial_map(&s))
            .unwrap_or(true);
        let missing_tools = BASE_TOOLS
            .iter()
            .chain(USERNS_TOOLS)
            .filter(|(tool, _)| find_tool(tool).is_none())
            .copied()
            .collect();
        HostFacts {
            euid,
            user_name: user_name(euid),
            force_no_userns: std::env::var(FORCE_NO_USERNS_ENV).is_ok_and(|v| v == "1"),
            max_user_namespaces: read_num("/proc/sys/user/max_user_namespaces"),
            unprivileged_userns_clone: read_num("/proc/sys/kernel/unprivileged_userns_clone"),
            apparmor_restrict_userns: read_num(
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            ),
            in_initial_userns,
            subuid: std::fs::read_to_string("/etc/subuid").ok(),
            subgid: std::fs::read_to_string("/etc/subgid").ok(),
            missing_tools,
        }
    }
}

/// Runs the preflight checks for this machine and says which way the sandbox
/// will get its user namespace. Cheap (reads a few files); call it early to
/// fail before any work is done.
pub fn preflight() -> Result<UsernsMode> {
    check(&HostFacts::gather())
}

/// The checks themselves, on gathered facts.
pub(crate) fn check(f: &HostFacts) -> Result<UsernsMode> {
    if f.force_no_userns {
        return Err(SandboxError::UserNamespacesDisabled {
            reason: format!("{FORCE_NO_USERNS_ENV}=1 is set (test hook)"),
            fix: format!("unset {FORCE_NO_USERNS_ENV}"),
        });
    }
    for (tool, package) in &f.missing_tools {
        if BASE_TOOLS.iter().any(|(t, _)| t == tool) {
            return Err(SandboxError::MissingTool { tool, package });
        }
    }
    // Already root inside a user namespace: nothing more to create.
    if f.euid == 0 && !f.in_initial_userns {
        return Ok(UsernsMode::Inherit);
    }
    if f.max_user_namespaces == Some(0) {
        return Err(SandboxError::UserNamespacesDisabled {
            reason: "/proc/sys/user/max_user_namespaces is 0".into(),
            fix:
                "sysctl -w user.max_user_namespaces=28633 (and set it in /etc/sysctl.d/ to keep it)"
                    .into(),
        });
    }
    if f.euid != 0 {
        if f.unprivileged_userns_clone == Some(0) {
            return Err(SandboxError::UserNamespacesDisabled {
                reason: "kernel.unprivileged_userns_clone is 0".into(),
                fix: "sysctl -w kernel.unprivileged_userns_clone=1 (and set it in /etc/sysctl.d/ to keep it)"
                    .into(),
            });
        }
        if f.apparmor_restrict_userns == Some(1) {
            return Err(SandboxError::UserNamespacesDisabled {
                reason: "kernel.apparmor_restrict_unprivileged_userns is 1".into(),
                fix: "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or give kiln an AppArmor profile with `userns,`"
                    .into(),
            });
        }
    }
    if let Some((tool, package)) = f.missing_tools.first() {
        return Err(SandboxError::MissingTool { tool, package });
    }
    let user = f.user_name.clone().unwrap_or_else(|| f.euid.to_string());
    for (kind, file, text) in [
        ("uid", "/etc/subuid", &f.subuid),
        ("gid", "/etc/subgid", &f.subgid),
    ] {
        let text = text.as_deref().unwrap_or("");
        if subordinate_count(text, &user, f.euid) == 0 {
            let start = next_free_start(text);
            let last = start.saturating_add(65535);
            return Err(SandboxError::NoSubordinateIds {
                kind,
                user: user.clone(),
                uid: f.euid,
                file: PathBuf::from(file),
                suggested_line: format!("{user}:{start}:65536"),
                suggested_range: format!("{start}-{last}"),
            });
        }
    }
    Ok(UsernsMode::Create)
}

/// Whether a `uid_map` text is the initial namespace's (`0 0 4294967295`).
fn is_initial_map(text: &str) -> bool {
    let fields: Vec<&str> = text.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// How many subordinate ids `/etc/subuid`-style `text` grants `user` (by
/// name or number).
pub(crate) fn subordinate_count(text: &str, user: &str, uid: u32) -> u64 {
    let uid = uid.to_string();
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().split(':');
            let (name, _start, count) = (it.next()?, it.next()?, it.next()?);
            (name == user || name == uid).then(|| count.trim().parse::<u64>().ok())?
        })
        .sum()
}

/// The first subordinate range (`start`, `count`) `/etc/subuid`-style
/// `text` grants `user` (by name or number).
pub(crate) fn subordinate_range(text: &str, user: &str, uid: u32) -> Option<(u64, u64)> {
    let uid = uid.to_string();
    text.lines().find_map(|l| {
        let mut it = l.trim().split(':');
        let (name, start, count) = (it.next()?, it.next()?, it.next()?);
        if name != user && name != uid {
            return None;
        }
        let (start, count) = (start.trim().parse().ok()?, count.trim().parse().ok()?);
        (count > 0).then_some((start, count))
    })
}

/// The first id above every range in `text` (at least 100000), where a new
/// range may start without overlapping anyone's.
fn next_free_start(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut it = l.trim().split(':').skip(1);
            let start = it.next()?.trim().parse::<u64>().ok()?;
            let count = it.next()?.trim().parse::<u64>().ok()?;
            Some(start + count)
        })
        .fold(100_000, u64::max)
}

/// The login name of `uid` from /etc/passwd.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let uid = uid.to_string();
    passwd.lines().find_map(|l| {
        let mut it = l.split(':');
        let (name, _pw, id) = (it.next()?, it.next()?, it.next()?);
        (id == uid).then(|| name.to_string())
    })
}

/// The absolute path of host program `name` on [`HOST_PATH`].
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    HOST_PATH
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> HostFacts {
        HostFacts {
            euid: 1001,
            user_name: Some("kilntest".into()),
            max_user_namespaces: Some(1000),
            in_initial_userns: true,
            subuid: Some("root:100000:65536\nkilntest:165536:65536\n".into()),
            subgid: Some("root:100000:65536\n1001:165536:65536\n".into()),
            ..HostFacts::default()
        }
    }

    #[test]
    fn the_subordinate_range_of_a_user_is_found_by_name_or_uid() {
        let text = "kilntest:165536:65536\n0:100000:65536\nroot:1:0\n";
        assert_eq!(subordinate_range(text, "root", 0), Some((100000, 65536)));
        assert_eq!(
            subordinate_range(text, "kilntest", 1001),
            Some((165536, 65536))
        );
        assert_eq!(subordinate_range(text, "nobody", 65534), None);
    }

    #[test]
    fn a_well_set_up_machine_creates_a_user_namespace() {
        assert_eq!(check(&machine()).unwrap(), UsernsMode::Create);
    }

    #[test]
    fn root_inside_a_user_namespace_inherits_it() {
        let f = HostFacts {
            euid: 0,
            in_initial_userns: false,
            subuid: None,
            missing_tools: vec![("newuidmap", "uidmap")],
            ..machine()
        };
        assert_eq!(check(&f).unwrap(), UsernsMode::Inherit);
    }

    #[test]
    fn the_test_hook_reports_user_namespaces_disabled() {
        let f = HostFacts {
            force_no_userns: true,
            ..machine()
        };
        let e = check(&f).unwrap_err().to_string();
        assert!(e.contains("user namespaces are not available"), "{e}");
        assert!(e.contains(FORCE_NO_USERNS_ENV), "{e}");
    }

    #[test]
    fn disabled_user_namespaces_name_the_sysctl() {
        let f = HostFacts {
            max_user_namespaces: Some(0),
            ..machine()
        };
        let e = check(&f).unwrap_err().to_string();
        assert!(e.contains("user.max_user_namespaces"), "{e}");
        let f = HostFacts {
            unprivileged_userns_clone: Some(0),
            ..machine()
        };
        let e = check(&f).unwrap_err().to_string();
        assert!(e.contains("kernel.unprivileged_userns_clone=1"), "{e}");
        // Root may create user namespaces regardless of that knob.
        let f = HostFacts {
            euid: 0,
            user_name: Some("root".into()),
            unprivileged_userns_clone: Some(0),
            ..machine()
        };
        assert_eq!(check(&f).unwrap(), UsernsMode::Create);
    }

    #[test]
    fn missing_subordinate_ids_show_the_line_to_add() {
        let f = HostFacts {
            subuid: Some("root:100000:65536\nalice:165536:65536\n".into()),
            ..machine()
        };
        let e = check(&f).unwrap_err().to_string();
        assert!(
            e.contains("user `kilntest` (uid 1001) in /etc/subuid"),
            "{e}"
        );
        assert!(e.contains("kilntest:231072:65536"), "{e}");
        assert!(
            e.contains("usermod --add-subuids 231072-296607 kilntest"),
            "{e}"
        );
    }

    #[test]
    fn missing_newuidmap_names_the_uidmap_package() {
        let f = HostFacts {
            missing_tools: vec![("newuidmap", "uidmap")],
            ..machine()
        };
        let e = check(&f).unwrap_err().to_string();
        assert!(e.contains("apt-get install uidmap"), "{e}");
    }

    #[test]
    fn subordinate_ranges_match_by_name_or_uid() {
        let t = "a:1:5\n7:10:3\nbad line\na:20:2\n";
        assert_eq!(subordinate_count(t, "a", 99), 7);
        assert_eq!(subordinate_count(t, "b", 7), 3);
        assert_eq!(subordinate_count(t, "c", 8), 0);
        assert_eq!(next_free_start(t), 100_000);
        assert_eq!(next_free_start("x:200000:10"), 200_010);
    }
}
