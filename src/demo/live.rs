//! The live display: an indicatif spinner with two status lines on a terminal, refreshed by the
//! demo about every second; without a terminal (piped, CI) a status line every few seconds.
//! Messages for the operator go to stdout above the spinner.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the status is printed when there is no terminal to redraw.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Live {
    bar: ProgressBar,
    terminal: bool,
    last_plain: Mutex<Option<Instant>>,
}

impl Live {
    pub fn new() -> Live {
        let terminal = std::io::stderr().is_terminal();
        let bar = if terminal {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed}] {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Live {
            bar,
            terminal,
            last_plain: Mutex::new(None),
        }
    }

    /// Prints a line for the operator (above the spinner).
    pub fn say(&self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }

    /// Prints a problem on stderr (above the spinner).
    pub fn warn(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Replaces the status lines.
    pub fn status(&self, text: String) {
        if self.terminal {
            self.bar.set_message(text);
            return;
        }
        let mut last = self.last_plain.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            *last = Some(Instant::now());
            println!("{}", text.replace('\n', " · "));
        }
    }

    /// Removes the spinner.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}
