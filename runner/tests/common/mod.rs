//! Helpers the `kiln logs --follow` tests share: a follower's lines as they
//! come, and its end.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use std::io::{BufRead as _, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The lines a child writes, as they come.
pub(crate) fn lines_of(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits until `follower` exits, and checks it succeeded; after `timeout`
/// it is killed and the test fails: a follower must end with its run.
pub(crate) fn wait_for_exit(follower: &mut Child, timeout: Duration) {
    let start = Instant::now();
    while follower.try_wait().unwrap().is_none() {
        if start.elapsed() > timeout {
            follower.kill().unwrap();
            panic!("kiln logs --follow did not exit within {timeout:?} after the run ended");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(follower.wait().unwrap().success());
}
