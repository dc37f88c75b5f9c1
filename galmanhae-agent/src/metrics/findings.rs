//! Findings in the daemon: the rules `diagnose` runs, evaluated after every pass over the
//! findings window, served as `galmanhae_finding{id, severity, workload}` = 1 while they hold
//! and as `/findings`, the same JSON objects as `diagnose --json`'s `findings`.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use serde::Serialize;

use super::{Exporter, family};
use crate::{findings::Finding, model::Evidence};

/// `/findings`'s schema.
pub(crate) const SCHEMA: &str = "galmanhae.findings/v1";

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct FindingLabels {
    pub(crate) id: &'static str,
    pub(crate) severity: &'static str,
    pub(crate) workload: String,
}

/// The body of `/findings`.
#[derive(Debug, Serialize)]
pub(crate) struct FindingsDocument<'a> {
    pub(crate) schema: &'static str,
    /// How far back the findings look, seconds.
    pub(crate) window_s: u64,
    pub(crate) findings: &'a [Finding],
}

impl Exporter {
    /// Evaluates the rules over the window's evidence; each finding's series is set, one that
    /// cleared goes after the grace period.
    pub(super) fn fold_findings(&mut self, window: &Evidence, now: Instant) {
        self.findings = crate::findings::evaluate(window);
        let held: Vec<FindingLabels> = self
            .findings
            .iter()
            .map(|f| FindingLabels {
                id: f.id,
                severity: f.severity.as_str(),
                workload: f.workload.clone(),
            })
            .collect();
        for labels in held {
            if self.admit(&labels.workload, family::FINDING, now) {
                self.series.findings.set(labels, 1, now);
            }
        }
    }

    /// The findings of the last pass as `/findings` serves them.
    pub(crate) fn findings_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(&FindingsDocument {
            schema: SCHEMA,
            window_s: self.passes.findings_window().as_secs(),
            findings: &self.findings,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        findings::Severity,
        metrics::{Families, Lifecycle as _, encode::render_families},
    };

    #[test]
    fn a_finding_is_a_series_of_one_until_its_grace_period_ends() {
        let mut families = Families::default();
        let start = Instant::now();
        let labels = FindingLabels {
            id: "local_drops",
            severity: "high",
            workload: "app".to_owned(),
        };
        families.findings.set(labels, 1, start);
        let text = render_families(Arc::new(families), false).expect("renders");
        let line = "galmanhae_finding{id=\"local_drops\",severity=\"high\",workload=\"app\"} 1";
        assert!(text.contains(line), "no `{line}` in:\n{text}");

        let mut families = Families::default();
        let grace = std::time::Duration::from_secs(30);
        families.findings.set(
            FindingLabels {
                id: "rto_stalls",
                severity: "medium",
                workload: "app".to_owned(),
            },
            1,
            start,
        );
        assert_eq!(
            families.expire(start + grace, grace),
            0,
            "held within the grace"
        );
        let later = start + grace + std::time::Duration::from_secs(1);
        assert_eq!(families.expire(later, grace), 1, "gone after it");
    }

    #[test]
    fn findings_are_served_as_diagnose_reports_them() {
        let finding = Finding {
            id: "local_drops",
            severity: Severity::High,
            workload: "app".to_owned(),
            flows: vec!["tcp 198.18.100.2:41000 -> 198.19.0.2:5432".to_owned()],
            summary: "7 packets of container `app` were dropped".to_owned(),
            evidence: vec!["7 packets dropped in host".to_owned()],
            advice: "Remove the rule.".to_owned(),
        };
        let findings = [finding];
        let document = serde_json::to_value(FindingsDocument {
            schema: SCHEMA,
            window_s: 300,
            findings: &findings,
        })
        .expect("encodes");
        assert_eq!(document["schema"], "galmanhae.findings/v1");
        assert_eq!(document["window_s"], 300);
        assert_eq!(
            document["findings"][0],
            serde_json::to_value(&findings[0]).expect("encodes"),
            "the same object as diagnose --json's"
        );
        let keys: Vec<&str> = document["findings"][0]
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "advice", "evidence", "flows", "id", "severity", "summary", "workload"
            ]
        );
    }
}
