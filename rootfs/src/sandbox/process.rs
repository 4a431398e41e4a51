//! The handle of a running sandbox: output, exit code, and the guarantee
//! that every process of the run is gone when the handle is dropped.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ChildStderr, ChildStdout, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use super::chain::{SETUP_LOG, SETUP_OK};
use super::error::{Result, SandboxError};
use super::prepare::Cleanup;
use super::spec::{OutputLine, OutputRoute, Stream};

/// A command running in the sandbox. Dropping it kills every process of the
/// run (SIGKILL to the pid namespace's init), waits for them and removes the
/// mount points the sandbox created. If kiln itself dies (Ctrl-C, crash), the
/// kernel kills the run too (`PR_SET_PDEATHSIG`, then `--kill-child`).
#[derive(Debug)]
pub struct Running {
    pid: u32,
    pidfd: OwnedFd,
    status: Receiver<std::io::Result<ExitStatus>>,
    supervisor: Option<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    cleanup: Cleanup,
    rundir: Option<tempfile::TempDir>,
    exit: Option<i32>,
    setup_failure: Option<String>,
}

/// Kills one run from any thread; see [`Running::killer`]. Refers to the
/// process by pidfd, so it can never hit a recycled pid.
#[derive(Debug)]
pub struct Killer {
    pidfd: OwnedFd,
}

impl Killer {
    /// Kills every process of the run (SIGKILL); a run that has already
    /// ended is not an error.
    pub fn kill(&self) -> Result<()> {
        kill_pidfd(&self.pidfd)
    }
}

fn kill_pidfd(pidfd: &OwnedFd) -> Result<()> {
    match rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(SandboxError::io("killing the sandbox", e.into())),
    }
}

impl Running {
    /// Starts `cmd` from a dedicated thread that lives until the process is
    /// reaped: the parent-death signal is tied to the *thread* that forked,
    /// so a short-lived caller thread (a tokio blocking thread) must not be
    /// the parent.
    pub(crate) fn start(
        mut cmd: Command,
        plan: Vec<u8>,
        output: OutputRoute,
        cleanup: Cleanup,
        rundir: tempfile::TempDir,
    ) -> Result<Running> {
        let (lines, piped) = match output {
            OutputRoute::Inherit => (None, false),
            OutputRoute::Null => {
                cmd.stdout(std::process::Stdio::null());
                cmd.stderr(std::process::Stdio::null());
                (None, false)
            }
            OutputRoute::Piped => (None, true),
            OutputRoute::Lines(tx) => (Some(tx), true),
        };
        if piped {
            cmd.stdout(std::process::Stdio::piped());
            cmd.stderr(std::process::Stdio::piped());
        }
        // The init reads its plan from stdin; the command gets /dev/null.
        cmd.stdin(std::process::Stdio::piped());
        let (started_tx, started_rx) = mpsc::channel::<Started>();
        let (status_tx, status_rx) = mpsc::channel();
        let supervisor = std::thread::Builder::new()
            .name("kiln-sandbox".into())
            .spawn(move || supervise(cmd, plan, started_tx, status_tx))
            .map_err(|e| SandboxError::io("starting the sandbox supervisor thread", e))?;
        let (pid, pidfd, stdout, stderr) = match started_rx.recv() {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = supervisor.join();
                return Err(SandboxError::io(
                    "starting the sandbox (setpriv/unshare)",
                    e,
                ));
            }
            Err(_) => {
                let _ = supervisor.join();
                return Err(SandboxError::io(
                    "starting the sandbox",
                    std::io::Error::other("supervisor thread ended early"),
                ));
            }
        };
        let mut running = Running {
            pid,
            pidfd,
            status: status_rx,
            supervisor: Some(supervisor),
            readers: Vec::new(),
            stdout,
            stderr,
            cleanup,
            rundir: Some(rundir),
            exit: None,
            setup_failure: None,
        };
        if let Some(tx) = lines {
            if let Some(out) = running.stdout.take() {
                running
                    .readers
                    .push(spawn_reader(out, Stream::Stdout, tx.clone()));
            }
            if let Some(err) = running.stderr.take() {
                running.readers.push(spawn_reader(err, Stream::Stderr, tx));
            }
        }
        Ok(running)
    }

    /// Host pid of the sandbox's outermost process (its handle).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command's stdout, with [`OutputRoute::Piped`] (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// The command's stderr, with [`OutputRoute::Piped`] (once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// Kills every process of the run now (SIGKILL); [`wait`](Self::wait)
    /// then returns 137.
    pub fn kill(&self) -> Result<()> {
        kill_pidfd(&self.pidfd)
    }

    /// A handle that kills this run from another thread while the owner
    /// blocks in [`wait`](Self::wait) (a runner cancelling a step).
    pub fn killer(&self) -> Result<Killer> {
        let pidfd = self
            .pidfd
            .try_clone()
            .map_err(|e| SandboxError::io("duplicating the sandbox's pidfd", e))?;
        Ok(Killer { pidfd })
    }

    /// Waits for the command and returns its exit code; a command killed by
    /// signal N gives 128+N (as shells report it). Fails with
    /// [`SandboxError::SetupFailed`] when the namespaces or mounts could not be set
    /// up (the command never ran). All captured lines have been delivered and
    /// the created mount points removed when this returns.
    pub fn wait(&mut self) -> Result<i32> {
        if let Some(code) = self.exit {
            return match &self.setup_failure {
                Some(log) => Err(SandboxError::SetupFailed {
                    code,
                    log: log.clone(),
                }),
                None => Ok(code),
            };
        }
        let status = self.status.recv().map_err(|_| {
            SandboxError::io(
                "waiting for the sandbox",
                std::io::Error::other("supervisor thread ended without a status"),
            )
        })?;
        self.finish();
        let status = status.map_err(|e| SandboxError::io("waiting for the sandbox", e))?;
        let code = match (status.code(), status.signal()) {
            (Some(c), _) => c,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 255,
        };
        if let Some(dir) = &self.rundir
            && std::fs::metadata(dir.path().join(SETUP_OK)).map_or(true, |m| m.len() == 0)
        {
            let log = std::fs::read_to_string(dir.path().join(SETUP_LOG)).unwrap_or_default();
            let log = if log.trim().is_empty() {
                "creating the namespaces failed (see the sandbox's stderr)".to_string()
            } else {
                log.trim().to_string()
            };
            self.exit = Some(code);
            self.setup_failure = Some(log.clone());
            return Err(SandboxError::SetupFailed { code, log });
        }
        self.exit = Some(code);
        Ok(code)
    }

    /// The exit code if the command has ended, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<i32>> {
        if self.exit.is_some() {
            return self.wait().map(Some);
        }
        match self.status.try_recv() {
            Ok(status) => {
                // Put the status back into the normal path.
                let (tx, rx) = mpsc::channel();
                let _ = tx.send(status);
                self.status = rx;
                self.wait().map(Some)
            }
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => self.wait().map(Some),
        }
    }

    /// Joins the helper threads and undoes the set-up's traces in the root.
    fn finish(&mut self) {
        if let Some(s) = self.supervisor.take() {
            let _ = s.join();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.cleanup.run();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.kill();
            let _ = self.status.recv();
            self.finish();
        }
    }
}

/// What the supervisor thread reports once the process is started.
type Started = std::io::Result<(u32, OwnedFd, Option<ChildStdout>, Option<ChildStderr>)>;

fn supervise(
    mut cmd: Command,
    plan: Vec<u8>,
    started: Sender<Started>,
    status: Sender<std::io::Result<ExitStatus>>,
) {
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    // A pidfd taken before anyone can reap the child: kill() can never hit a
    // recycled pid.
    let pidfd = match rustix::process::pidfd_open(
        rustix::process::Pid::from_child(&child),
        rustix::process::PidfdFlags::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = started.send(Err(e.into()));
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // An init that died early closes the pipe; its status tells why.
        let _ = std::io::Write::write_all(&mut stdin, &plan);
    }
    let out = child.stdout.take();
    let err = child.stderr.take();
    if started.send(Ok((child.id(), pidfd, out, err))).is_err() {
        let _ = child.kill();
    }
    let _ = status.send(child.wait());
}

fn spawn_reader<R: Read + Send + 'static>(
    reader: R,
    stream: Stream,
    tx: Sender<OutputLine>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    // A receiver that went away just stops the capture; the
                    // pipe is still drained so the command never blocks.
                    let _ = tx.send(OutputLine { stream, line });
                }
            }
        }
    })
}
