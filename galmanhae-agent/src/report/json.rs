//! `diagnose --json`: the report as one JSON document (schema `galmanhae.diagnose/v1`).

use super::DiagnoseReport;

pub(crate) fn render(report: &DiagnoseReport) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(report)
}
