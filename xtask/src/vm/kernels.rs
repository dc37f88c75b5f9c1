//! The README's table of kernels the agent was run on and what each hook does there, written
//! from the runs themselves: the guest's report after a passing vm-test, and the host's own
//! hooks. Rows of other kernels stay; a kernel's rows are replaced by its latest run.

use serde_json::Value;

const BEGIN: &str = "<!-- kernels: written by cargo xtask vm-test; do not edit -->";
const END: &str = "<!-- kernels: end -->";
const HEADER: &str =
    "| kernel | run by | hook | kind | status | what it does there |\n|---|---|---|---|---|---|";

/// One table row per hook of `report` (a `diagnose --json` report) on `release`.
pub(crate) fn rows(release: &str, run_by: &str, report: &Value) -> Vec<String> {
    let hooks = report["hooks"].as_array().map_or(&[][..], Vec::as_slice);
    hooks
        .iter()
        .map(|h| {
            let cell = |k: &str| h[k].as_str().unwrap_or("?").replace('|', "\\|");
            format!(
                "| {release} | {run_by} | `{}` | {} | {} | {} |",
                cell("name"),
                cell("kind"),
                cell("status"),
                cell("detail")
            )
        })
        .collect()
}

/// `readme` with the rows of `release` replaced by `new` (the block is appended when the
/// README has none yet).
pub(crate) fn update(readme: &str, release: &str, new: &[String]) -> String {
    let (before, old, after) = match (readme.find(BEGIN), readme.find(END)) {
        (Some(b), Some(e)) if b < e => (
            &readme[..b],
            &readme[b + BEGIN.len()..e],
            &readme[e + END.len()..],
        ),
        _ => (readme, "", ""),
    };
    let prefix = format!("| {release} |");
    let mut kept: Vec<String> = old
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| kernel |"))
        .filter(|l| !l.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    kept.extend_from_slice(new);
    // Newest kernels last; a kernel's hooks in the order the run listed them.
    kept.sort_by_key(|row| release_of(row));
    let separator = if before.is_empty() || before.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    format!(
        "{before}{separator}{BEGIN}\n{HEADER}\n{}\n{END}{}",
        kept.join("\n"),
        if after.is_empty() { "\n" } else { after }
    )
}

/// The kernel cell, as numbers where it has them (6.1.0 before 6.18.2).
fn release_of(row: &str) -> Vec<u64> {
    let release = row.trim_start_matches("| ").split(' ').next().unwrap_or("");
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(kind: &str) -> Value {
        json!({"hooks": [
            {"name": "tcp:tcp_retransmit_skb", "kind": kind, "status": "attached",
             "detail": "no `err` field | old"},
            {"name": "__nf_conntrack_confirm", "kind": "kprobe", "status": "unavailable",
             "detail": "kprobes off"}
        ]})
    }

    #[test]
    fn rows_escape_pipes() {
        let rows = rows("6.1.0-57-cloud-amd64", "qemu", &report("tp_btf"));
        assert_eq!(
            rows[0],
            "| 6.1.0-57-cloud-amd64 | qemu | `tcp:tcp_retransmit_skb` | tp_btf | attached | no `err` field \\| old |"
        );
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn a_kernel_rows_are_replaced_and_others_kept_in_order() {
        let readme = "# x\n\n## Kernels\n\ntext\n";
        let once = update(readme, "6.18.2", &rows("6.18.2", "host", &report("tp_btf")));
        assert!(once.starts_with("# x\n\n## Kernels\n\ntext\n<!-- kernels:"));
        let twice = update(
            &once,
            "6.1.0-57",
            &rows("6.1.0-57", "qemu", &report("tp_btf")),
        );
        let again = update(
            &twice,
            "6.1.0-57",
            &rows("6.1.0-57", "qemu", &report("tracepoint")),
        );
        let table: Vec<&str> = again.lines().filter(|l| l.starts_with("| 6.")).collect();
        assert_eq!(table.len(), 4, "{again}");
        assert!(table[0].starts_with("| 6.1.0-57 | qemu | `tcp:tcp_retransmit_skb` | tracepoint"));
        assert!(table[2].starts_with("| 6.18.2 |"));
        assert_eq!(again.matches(HEADER).count(), 1);
        assert!(again.ends_with(&format!("{END}\n")));
        assert_eq!(
            update(
                &again,
                "6.1.0-57",
                &rows("6.1.0-57", "qemu", &report("tracepoint"))
            ),
            again
        );
    }
}
