//! Progress of the CLI's long operations on stderr: a download's bytes
//! (`snapshot save`, `log export`) and a new member's catch-up (`member add`,
//! `member promote`). On a terminal it is an `indicatif` bar redrawn in place; off
//! a terminal (a log file, a pipe, a test) it is plain whole lines — a download's
//! every MiB or second, a catch-up's every change — so nothing there holds escape
//! codes or carriage returns.
//!
//! Owns the drawing only. Must not depend on the API or the client: callers say
//! what moved, and pass the plain line they want shown off a terminal.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub const MIB: u64 = 1 << 20;
/// Off a terminal, a download prints a line after this many bytes ...
const LINE_EVERY_BYTES: u64 = MIB;
/// ... or this long, whichever comes first.
const LINE_EVERY: Duration = Duration::from_secs(1);
/// How often a bar on a terminal is redrawn at most.
const DRAWS_PER_SECOND: u8 = 10;

const BYTES_STYLE: &str = "{spinner} {binary_bytes} received ({binary_bytes_per_sec}, {elapsed})";
const BYTES_OF_STYLE: &str =
    "[{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, eta {eta})";
const ENTRIES_STYLE: &str = "{prefix} [{bar:30}] {pos}/{len} entries, {msg}";

/// One operation's progress: a bar, or the plain lines' state.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: Mutex<Plain>,
}

/// What the plain lines last showed.
struct Plain {
    bytes: u64,
    at: Instant,
    line: Option<String>,
}

/// Where the progress goes: stderr's bar when it is a terminal, else lines.
fn stderr_target() -> Option<ProgressDrawTarget> {
    std::io::stderr()
        .is_terminal()
        .then(|| ProgressDrawTarget::stderr_with_hz(DRAWS_PER_SECOND))
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("a valid progress template")
        .progress_chars("=> ")
}

impl Progress {
    /// A download of `total` bytes, when the answer said how many.
    pub fn bytes(total: Option<u64>) -> Progress {
        Progress::bytes_to(total, stderr_target())
    }

    /// Node `id` catching up with the leader's log.
    pub fn entries(id: u64) -> Progress {
        Progress::entries_to(id, stderr_target())
    }

    fn bytes_to(total: Option<u64>, target: Option<ProgressDrawTarget>) -> Progress {
        let bar = target.map(|target| {
            let bar = match total {
                Some(total) => ProgressBar::with_draw_target(Some(total), target)
                    .with_style(style(BYTES_OF_STYLE)),
                None => ProgressBar::with_draw_target(None, target).with_style(style(BYTES_STYLE)),
            };
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress::with(bar)
    }

    fn entries_to(id: u64, target: Option<ProgressDrawTarget>) -> Progress {
        let bar = target.map(|target| {
            ProgressBar::with_draw_target(Some(0), target)
                .with_style(style(ENTRIES_STYLE))
                .with_prefix(format!("node {id}"))
        });
        Progress::with(bar)
    }

    fn with(bar: Option<ProgressBar>) -> Progress {
        Progress {
            bar,
            plain: Mutex::new(Plain {
                bytes: 0,
                at: Instant::now(),
                line: None,
            }),
        }
    }

    /// The download has `bytes` so far.
    pub fn received(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            return;
        }
        let mut plain = self.plain.lock().expect("progress lock");
        if bytes - plain.bytes >= LINE_EVERY_BYTES || plain.at.elapsed() >= LINE_EVERY {
            eprintln!("{}", received_line(bytes));
            (plain.bytes, plain.at) = (bytes, Instant::now());
        }
    }

    /// The node matches `matched` of the leader's `target` entries and has `role`;
    /// `line` is what a plain line says of it (printed when it changes).
    pub fn caught_up(&self, matched: u64, target: u64, role: &str, line: String) {
        if let Some(bar) = &self.bar {
            bar.set_length(target.max(matched));
            bar.set_position(matched);
            bar.set_message(role.to_string());
            return;
        }
        let mut plain = self.plain.lock().expect("progress lock");
        if plain.line.as_ref() != Some(&line) {
            eprintln!("{line}");
            plain.line = Some(line);
        }
    }

    /// A line printed above the bar (or as a plain line), such as a retried step.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Ends it: the bar is replaced by `line`, or `line` is printed.
    pub fn finish(&self, line: &str) {
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.finish_and_clear();
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A bar left unfinished (an error, a refusal) is cleared, not left half-drawn.
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}

/// The plain line after `bytes` of a download.
pub fn received_line(bytes: u64) -> String {
    format!("... {:.1} MiB received", bytes as f64 / MIB as f64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use indicatif::TermLike;

    use super::*;

    /// A terminal that records what was drawn on it.
    #[derive(Debug, Default, Clone)]
    struct Screen(Arc<Mutex<String>>);

    impl Screen {
        fn text(&self) -> String {
            self.0.lock().unwrap().clone()
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, line: &str) -> std::io::Result<()> {
            let mut text = self.0.lock().unwrap();
            text.push_str(line);
            text.push('\n');
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn on(screen: &Screen) -> Option<ProgressDrawTarget> {
        Some(ProgressDrawTarget::term_like(Box::new(screen.clone())))
    }

    #[test]
    fn a_catch_up_draws_a_bar_of_entries_with_the_role() {
        let screen = Screen::default();
        let progress = Progress::entries_to(4, on(&screen));
        progress.caught_up(1_200, 5_000, "learner", "unused on a terminal".into());
        progress.finish("caught up");
        let text = screen.text();
        assert!(text.contains("node 4 ["), "{text}");
        assert!(text.contains("1200/5000 entries"), "{text}");
        assert!(!text.contains("unused on a terminal"), "{text}");
    }

    #[test]
    fn a_download_of_known_size_draws_bytes_of_the_total() {
        let screen = Screen::default();
        let progress = Progress::bytes_to(Some(4 * MIB), on(&screen));
        progress.received(MIB);
        progress.finish("received 4 MiB");
        let text = screen.text();
        assert!(text.contains("1.00 MiB/4.00 MiB"), "{text}");
        assert!(text.contains("received 4 MiB\n"), "{text}");
    }

    #[test]
    fn a_note_is_printed_above_the_bar() {
        let screen = Screen::default();
        let progress = Progress::entries_to(2, on(&screen));
        progress.note("node 2: no leader; trying again");
        assert!(screen.text().contains("node 2: no leader; trying again\n"));
    }

    #[test]
    fn plain_lines_are_in_mebibytes() {
        assert_eq!(received_line(3 * MIB / 2), "... 1.5 MiB received");
    }

    #[test]
    fn off_a_terminal_a_catch_up_line_is_remembered_until_it_changes() {
        let progress = Progress::entries_to(3, None);
        progress.caught_up(1, 10, "learner", "node 3: 1/10 entries, learner".into());
        let shown = progress.plain.lock().unwrap().line.clone();
        assert_eq!(shown.as_deref(), Some("node 3: 1/10 entries, learner"));
    }
}
