//! What became of each kernel hook, and what the kernel says of its program's runs.

/// One kernel hook and what became of it.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Hook {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) status: HookStatus,
    /// Whether a core count is missing without it (the retransmit, SYN-ACK and drop hooks,
    /// the NAT-leak watch where there is something to watch); an optional hook only adds
    /// precision or a field, and its absence is no fault of the host.
    pub(crate) required: bool,
    pub(crate) detail: String,
    /// The program's name in the object (and in `bpftool prog`).
    #[serde(skip)]
    pub(crate) program: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HookStatus {
    Attached,
    /// The kernel does not have it (or lacks a field it needs).
    Unavailable,
    /// It exists but loading or attaching failed.
    Failed,
    /// Not used here: turned off by configuration, or nothing for it to watch.
    Off,
}

impl HookStatus {
    /// The value of the `status` label.
    #[must_use]
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Attached => "attached",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
            Self::Off => "off",
        }
    }
}

/// What the kernel says of a program's runs, cumulative since it was loaded.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RunStats {
    pub(crate) runs: u64,
    pub(crate) run_time: std::time::Duration,
    /// Runs skipped because another tracing program was running on the CPU (`None` before
    /// Linux 5.12): events lost to every map.
    pub(crate) missed: Option<u64>,
}

impl RunStats {
    #[must_use]
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        Self {
            runs: self.runs.saturating_sub(earlier.runs),
            run_time: self.run_time.saturating_sub(earlier.run_time),
            missed: self
                .missed
                .zip(earlier.missed)
                .map(|(now, then)| now.saturating_sub(then)),
        }
    }
}

/// An error and its sources on one line, for a hook's detail.
pub(in crate::kernel) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
