//! Shows build events: progress bars on a terminal, plain lines otherwise
//! (CI logs), nothing when `--json` asks for one document at the end.

use std::io::IsTerminal as _;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use kiln_builder::progress::{BlobStatus, Event, LayerStatus, Progress};

/// How events are shown.
pub(crate) enum Display {
    /// A spinner per image, layer lines printed above it.
    Terminal(Mutex<Option<ProgressBar>>),
    /// One line per event, for logs.
    Lines,
    /// Nothing (the caller prints JSON at the end).
    Quiet,
}

impl Display {
    /// Terminal when stderr is one and `json` is off.
    pub(crate) fn choose(json: bool) -> Self {
        if json {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            Display::Terminal(Mutex::new(None))
        } else {
            Display::Lines
        }
    }

    fn line(&self, text: String) {
        match self {
            Display::Terminal(bar) => match bar.lock().ok().and_then(|b| b.clone()) {
                Some(bar) => bar.println(text),
                None => eprintln!("{text}"),
            },
            Display::Lines => eprintln!("{text}"),
            Display::Quiet => {}
        }
    }
}

/// `sha256:0123456789ab…` shortened for humans.
pub(crate) fn short(digest: &str) -> &str {
    let end = digest.find(':').map_or(12, |i| i + 13);
    digest.get(..end).unwrap_or(digest)
}

/// Sizes in human units.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl Progress for Display {
    fn event(&self, event: Event) {
        if matches!(self, Display::Quiet) {
            return;
        }
        match event {
            Event::ImageStarted { image, layers } => {
                if let Display::Terminal(slot) = self {
                    let bar = ProgressBar::new_spinner()
                        .with_message(format!("building {image} ({layers} layers)"));
                    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
                        bar.set_style(style);
                    }
                    bar.enable_steady_tick(std::time::Duration::from_millis(100));
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(bar);
                    }
                } else {
                    self.line(format!("[{image}] building, {layers} layers"));
                }
            }
            Event::Layer {
                image,
                label,
                status,
                digest,
                size,
                reason,
            } => {
                let what = match status {
                    LayerStatus::Reused => "reused",
                    LayerStatus::Built => "built",
                    LayerStatus::Parent => "parent",
                };
                let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
                self.line(format!(
                    "[{image}] {label}: {what} {} {}{why}",
                    short(&digest),
                    human_size(size)
                ));
            }
            Event::Blob {
                image,
                digest,
                size,
                status,
            } => {
                if status == BlobStatus::Uploaded || status == BlobStatus::Mounted {
                    let how = if status == BlobStatus::Uploaded {
                        "uploaded"
                    } else {
                        "mounted"
                    };
                    self.line(format!(
                        "[{image}] {how} {} {}",
                        short(&digest),
                        human_size(size)
                    ));
                }
            }
            Event::ImageDone {
                image,
                reference,
                digest,
            } => {
                if let Display::Terminal(slot) = self
                    && let Some(bar) = slot.lock().ok().and_then(|mut s| s.take())
                {
                    bar.finish_and_clear();
                }
                self.line(format!("[{image}] {reference}@{digest}"));
            }
            Event::Output { image, layer, line } => {
                self.line(format!("[{image}] {layer} | {line}"))
            }
            Event::Warning { message } => self.line(format!("warning: {message}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortens_and_sizes() {
        assert_eq!(short("sha256:0123456789abcdef0123"), "sha256:0123456789ab");
        assert_eq!(short("abc"), "abc");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_400_000), "1.4 MB");
    }
}
