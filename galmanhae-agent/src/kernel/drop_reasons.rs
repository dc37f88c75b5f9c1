//! Names of the kernel's drop reasons. The numbers shift between kernels and backports, so
//! they come from the running kernel: its BTF, else the tracepoint's print format.

use std::collections::HashMap;

use super::{btf::KernelBtf, tracefs::Format};

/// Names of `enum skb_drop_reason` values. The numbers shift between kernels and backports,
/// so they come from the running kernel: its BTF, else the tracepoint's print format.
#[derive(Clone, Debug, Default)]
pub(crate) struct DropReasons {
    names: HashMap<u32, String>,
    /// Where the names came from, for the report.
    pub(crate) source: &'static str,
}

/// `include/net/dropreason.h`: the upper 16 bits of a reason name a subsystem.
const SUBSYS_SHIFT: u32 = 16;

impl DropReasons {
    pub(crate) fn resolve(btf: &KernelBtf, format: Option<&Format>) -> Self {
        if let Ok(values) = btf.enum_values("skb_drop_reason") {
            let names = values
                .into_iter()
                .map(|(value, name)| {
                    let short = name
                        .strip_prefix("SKB_DROP_REASON_")
                        .or_else(|| name.strip_prefix("SKB_"))
                        .unwrap_or(&name)
                        .to_owned();
                    (value, short)
                })
                .collect();
            return Self {
                names,
                source: "kernel BTF (enum skb_drop_reason)",
            };
        }
        let names: HashMap<u32, String> = format
            .map(|f| f.symbols("reason").into_iter().collect())
            .unwrap_or_default();
        if names.is_empty() {
            Self {
                names,
                source: "none: reasons are shown as numbers",
            }
        } else {
            Self {
                names,
                source: "tracepoint print format",
            }
        }
    }

    pub(crate) fn name(&self, reason: u32) -> String {
        if let Some(name) = self.names.get(&reason) {
            return name.clone();
        }
        match reason >> SUBSYS_SHIFT {
            0 if reason == 0 => "UNKNOWN".to_owned(),
            0 => format!("REASON_{reason}"),
            subsys => format!("SUBSYS_{subsys}_{}", reason & 0xffff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_subsystem_reasons_are_named_by_number() {
        let reasons = DropReasons {
            names: HashMap::from([(12, "NETFILTER_DROP".to_owned())]),
            source: "test",
        };
        assert_eq!(reasons.name(12), "NETFILTER_DROP");
        assert_eq!(reasons.name(0), "UNKNOWN");
        assert_eq!(reasons.name(500), "REASON_500");
        assert_eq!(reasons.name((2 << 16) | 3), "SUBSYS_2_3");
    }
}
