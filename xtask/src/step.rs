//! Long steps (installs, builds) as one line each on screen: what, why, how long. Their full
//! output goes to a log file the first line names; a failing step prints its last lines.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::workspace_root;

/// How many of a failing step's last lines are shown.
const TAIL_LINES: usize = 25;

/// The steps of one task, logging to `target/xtask/<task>.log`.
pub(crate) struct Steps {
    task: &'static str,
    log: PathBuf,
    announced: std::cell::Cell<bool>,
}

impl Steps {
    pub(crate) fn new(task: &'static str) -> anyhow::Result<Self> {
        let dir = workspace_root().join("target/xtask");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join(format!("{task}.log"));
        File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        Ok(Self {
            task,
            log,
            announced: std::cell::Cell::new(false),
        })
    }

    /// Runs `program args` with `envs`, its output to the log; one line on screen.
    pub(crate) fn run(
        &self,
        what: &str,
        why: &str,
        program: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        if !self.announced.replace(true) {
            eprintln!(
                "xtask: {}: full output in {}",
                self.task,
                self.log.display()
            );
        }
        eprint!("xtask: {}: {what} ({why}) ... ", self.task);
        let mut log = OpenOptions::new()
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(log, "\n=== {what}: {program} {}", args.join(" "))?;
        let start_of_step = log.stream_position()?;
        let started = Instant::now();
        let status = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status();
        let took = format_duration(started.elapsed());
        match status {
            Ok(s) if s.success() => {
                eprintln!("done in {took}");
                Ok(())
            }
            outcome => {
                eprintln!("FAILED after {took}");
                let tail = self.tail_since(start_of_step).unwrap_or_default();
                eprintln!("{tail}");
                let outcome = outcome.map_or_else(|e| e.to_string(), |s| s.to_string());
                anyhow::bail!(
                    "{what}: `{program} {}` failed ({outcome}); its last lines are above, the \
                     whole output is in {}",
                    args.join(" "),
                    self.log.display()
                )
            }
        }
    }

    /// Notes a step that needed nothing, on one line.
    pub(crate) fn present(&self, what: &str) {
        eprintln!("xtask: {}: {what}", self.task);
    }

    /// The last lines the log got since `offset`, indented.
    fn tail_since(&self, offset: u64) -> anyhow::Result<String> {
        let mut file = File::open(&self.log)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(last_lines(&text, TAIL_LINES))
    }
}

/// The last `n` lines of `text`, each indented by two spaces.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `1m 32s`, `4.2s`.
pub(crate) fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m {:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(format_duration(Duration::from_millis(4_240)), "4.2s");
        assert_eq!(format_duration(Duration::from_secs(92)), "1m 32s");
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "  | b\n  | c");
        assert_eq!(last_lines("a", 5), "  | a");
        assert_eq!(last_lines("", 5), "");
    }
}
