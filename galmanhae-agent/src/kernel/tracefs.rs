//! Tracepoint record layouts, from tracefs `format` files.
//!
//! The layout of a tracepoint record is not ABI: `tcp_retransmit_skb` gained `state` (4.16),
//! `family` (5.12) and `err` (6.17). The offsets are read here and handed to the programs.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use galmanhae_common::offsets::{
    ABSENT, KfreeSkbFields, RetransmitSkbFields, RetransmitSynackFields,
};

/// Where tracefs is normally mounted.
pub(crate) const DEFAULT_TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub(crate) enum FormatError {
    #[error("tracepoint {tracepoint} is not in this kernel ({path}: {source})")]
    Missing {
        tracepoint: String,
        path: String,
        source: std::io::Error,
    },
    #[error("tracepoint {tracepoint}: required field `{field}` is not in its format")]
    NoField {
        tracepoint: String,
        field: &'static str,
    },
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) offset: u32,
    pub(crate) size: u32,
}

/// The parsed `format` file of one tracepoint.
#[derive(Clone, Debug)]
pub(crate) struct Format {
    pub(crate) tracepoint: String,
    fields: HashMap<String, Field>,
    print_fmt: Option<String>,
}

impl Format {
    /// Reads `<tracefs>/events/<category>/<name>/format`.
    pub(crate) fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self, FormatError> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| FormatError::Missing {
            tracepoint: format!("{category}:{name}"),
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse(&format!("{category}:{name}"), &text))
    }

    /// Parses lines like `field:__u16 sport; offset:28; size:2; signed:0;` (tab-separated).
    pub(crate) fn parse(tracepoint: &str, text: &str) -> Self {
        let fields = text
            .lines()
            .filter_map(|line| {
                let mut decl = None;
                let mut offset = None;
                let mut size = None;
                for part in line.trim().split(';') {
                    let part = part.trim();
                    if let Some(d) = part.strip_prefix("field:") {
                        decl = Some(d);
                    } else if let Some(o) = part.strip_prefix("offset:") {
                        offset = o.parse().ok();
                    } else if let Some(s) = part.strip_prefix("size:") {
                        size = s.parse().ok();
                    }
                }
                let name = field_name(decl?)?;
                Some((
                    name.to_owned(),
                    Field {
                        offset: offset?,
                        size: size?,
                    },
                ))
            })
            .collect();
        let print_fmt = text
            .lines()
            .find_map(|l| l.strip_prefix("print fmt: "))
            .map(str::to_owned);
        Self {
            tracepoint: tracepoint.to_owned(),
            fields,
            print_fmt,
        }
    }

    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        self.fields.get(name)
    }

    fn required(&self, name: &'static str) -> Result<u32, FormatError> {
        self.field(name)
            .map(|f| f.offset)
            .ok_or_else(|| FormatError::NoField {
                tracepoint: self.tracepoint.clone(),
                field: name,
            })
    }

    fn optional(&self, name: &str) -> u32 {
        self.field(name).map_or(ABSENT, |f| f.offset)
    }

    pub(crate) fn retransmit_skb(&self) -> Result<RetransmitSkbFields, FormatError> {
        Ok(RetransmitSkbFields {
            skbaddr: self.required("skbaddr")?,
            skaddr: self.required("skaddr")?,
            state: self.optional("state"),
            sport: self.required("sport")?,
            dport: self.required("dport")?,
            family: self.optional("family"),
            saddr_v6: self.required("saddr_v6")?,
            daddr_v6: self.required("daddr_v6")?,
            err: self.optional("err"),
        })
    }

    pub(crate) fn kfree_skb(&self) -> Result<KfreeSkbFields, FormatError> {
        Ok(KfreeSkbFields {
            skbaddr: self.required("skbaddr")?,
            location: self.required("location")?,
            protocol: self.required("protocol")?,
            reason: self.optional("reason"),
            rx_sk: self.optional("rx_sk"),
        })
    }

    /// The `{ value, "NAME" }` pairs of `__print_symbolic(REC->field, ...)` in the print format:
    /// how the kernel itself names enum values in its trace output.
    pub(crate) fn symbols(&self, field: &str) -> Vec<(u32, String)> {
        let Some(print_fmt) = &self.print_fmt else {
            return Vec::new();
        };
        let marker = format!("__print_symbolic(REC->{field},");
        let Some(start) = print_fmt.find(&marker) else {
            return Vec::new();
        };
        let body = &print_fmt[start + marker.len()..];
        let body = body.split(')').next().unwrap_or_default();
        body.split('}')
            .filter_map(|pair| {
                let pair = pair.trim_start_matches([',', ' ', '{']);
                let (value, name) = pair.split_once(',')?;
                let value = value.trim().parse().ok()?;
                Some((value, name.trim().trim_matches('"').to_owned()))
            })
            .collect()
    }

    pub(crate) fn retransmit_synack(&self) -> Result<RetransmitSynackFields, FormatError> {
        Ok(RetransmitSynackFields {
            skaddr: self.required("skaddr")?,
            sport: self.required("sport")?,
            dport: self.required("dport")?,
            family: self.optional("family"),
            saddr_v6: self.required("saddr_v6")?,
            daddr_v6: self.required("daddr_v6")?,
        })
    }
}

/// `__u8 saddr_v6[16]` -> `saddr_v6`; `const void * skaddr` -> `skaddr`.
fn field_name(decl: &str) -> Option<&str> {
    let last = decl.split_whitespace().last()?;
    let name = last.split('[').next()?.trim_start_matches('*');
    (!name.is_empty()).then_some(name)
}

/// The tracefs mount point: the given one, else the first tracefs in /proc/self/mounts, else
/// the default path (which [`super::prereq`] mounts when it is empty).
pub(crate) fn locate(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    super::mounts::mount_point("tracefs").unwrap_or_else(|| PathBuf::from(DEFAULT_TRACEFS))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format of this tracepoint on 6.18 (with `err`, since 6.17).
    const RETRANSMIT_SKB_6_18: &str = "name: tcp_retransmit_skb
ID: 2281
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;
\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;

print fmt: \"skbaddr=%p\", REC->skbaddr
";

    /// The same tracepoint on 4.15: no state, no family, no err.
    const RETRANSMIT_SKB_4_15: &str = "format:
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:36;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:52;\tsize:16;\tsigned:0;
";

    #[test]
    fn parses_6_18_layout_with_err() {
        let f = Format::parse("tcp:tcp_retransmit_skb", RETRANSMIT_SKB_6_18)
            .retransmit_skb()
            .unwrap();
        assert_eq!(
            f,
            RetransmitSkbFields {
                skbaddr: 8,
                skaddr: 16,
                state: 24,
                sport: 28,
                dport: 30,
                family: 32,
                saddr_v6: 42,
                daddr_v6: 58,
                err: 76,
            }
        );
    }

    #[test]
    fn old_layout_marks_missing_fields_absent() {
        let f = Format::parse("tcp:tcp_retransmit_skb", RETRANSMIT_SKB_4_15)
            .retransmit_skb()
            .unwrap();
        assert_eq!((f.state, f.family, f.err), (ABSENT, ABSENT, ABSENT));
        assert_eq!((f.sport, f.saddr_v6, f.daddr_v6), (24, 36, 52));
    }

    #[test]
    fn missing_required_field_is_an_error() {
        let err = Format::parse(
            "tcp:x",
            "\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;\n",
        )
        .retransmit_synack()
        .unwrap_err();
        assert!(err.to_string().contains("skaddr"), "{err}");
    }

    /// `skb:kfree_skb` on 6.18, its reason table shortened.
    const KFREE_SKB_6_18: &str = "name: kfree_skb
format:
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: \"skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s\", REC->skbaddr, REC->rx_sk, \
REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, \"NOT_SPECIFIED\" }, \
{ 12, \"NETFILTER_DROP\" }, { 93, \"PKT_TOO_BIG\" }, { 128, \"MAX\" })
";

    #[test]
    fn kfree_skb_fields_and_reason_names() {
        let format = Format::parse("skb:kfree_skb", KFREE_SKB_6_18);
        let fields = format.kfree_skb().unwrap();
        assert_eq!(
            (
                fields.skbaddr,
                fields.location,
                fields.protocol,
                fields.reason
            ),
            (8, 16, 32, 36)
        );
        assert_eq!(
            format.symbols("reason"),
            vec![
                (2, "NOT_SPECIFIED".to_owned()),
                (12, "NETFILTER_DROP".to_owned()),
                (93, "PKT_TOO_BIG".to_owned()),
                (128, "MAX".to_owned()),
            ]
        );
        assert!(format.symbols("protocol").is_empty());
    }
}
