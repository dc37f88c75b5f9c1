//! Struct member offsets of the running kernel, from `/sys/kernel/btf/vmlinux`.
//!
//! aya-ebpf has no CO-RE relocations (aya#349), so the programs receive offsets as globals.

use std::path::Path;

use btf_rs::{Backend, Btf, Member, Struct, Type};
use galmanhae_common::{
    offsets::{ABSENT, BitField, SockOffsets, StructOffsets},
    task::TaskOffsets,
};

/// Where the kernel exposes its own BTF.
pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub(crate) enum BtfError {
    #[error(
        "kernel BTF is absent: {path} does not exist (the kernel was built without \
         CONFIG_DEBUG_INFO_BTF=y; galmanhae needs it to find struct offsets)"
    )]
    Absent { path: String },
    #[error("cannot read kernel BTF at {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("kernel BTF has no struct `{0}`")]
    NoType(String),
    #[error("kernel BTF: `{ty}.{path}`: {reason}")]
    Member {
        ty: String,
        path: String,
        reason: String,
    },
}

/// The kernel's types. Memory-mapped and parsed on demand: materialising all of vmlinux's
/// BTF would cost ~70 MB of RSS for a dozen lookups.
pub(crate) struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Maps `path`; where the kernel refuses to mmap it (sysfs BTF is mappable only since
    /// Linux 6.16: older kernels answer ENODEV), copies it into a memfd and maps that, which
    /// costs its size (~6 MB) in shared memory instead of a full parse's ~70 MB.
    pub(crate) fn load(path: &Path) -> Result<Self, BtfError> {
        let read_error = |e: &dyn std::fmt::Display| BtfError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if !path.exists() {
            return Err(BtfError::Absent {
                path: path.display().to_string(),
            });
        }
        let btf = match Btf::from_file_with_backend(path, Backend::Mmap) {
            Ok(btf) => btf,
            Err(mapped) => {
                log::debug!(
                    "{}: mmap refused ({mapped}); mapping a copy",
                    path.display()
                );
                return Self::load_copy(path)
                    .map_err(|e| read_error(&format!("mmap: {mapped}; reading it instead: {e}")));
            }
        };
        Ok(Self { btf })
    }

    /// [`KernelBtf::load`]'s fallback: `path` read into a memfd, and that mapped.
    fn load_copy(path: &Path) -> Result<Self, String> {
        let copy = copy_to_memfd(path).map_err(|e| e.to_string())?;
        let btf = Btf::from_file_with_backend(&copy, Backend::Mmap).map_err(|e| e.to_string())?;
        Ok(Self { btf })
    }
    /// Byte offset of `path` (dotted, through anonymous members) inside struct `ty`.
    pub(crate) fn offset_of(&self, ty: &str, path: &str) -> Result<u32, BtfError> {
        match self.member(ty, path)? {
            (bits, None) if bits % 8 == 0 => Ok(bits / 8),
            _ => Err(member_error(ty, path, "is a bitfield")),
        }
    }

    /// A bitfield member (or a one-byte plain member) as byte, shift and mask.
    pub(crate) fn bitfield(&self, ty: &str, path: &str) -> Result<BitField, BtfError> {
        let (bit_offset, bits) = match self.member(ty, path)? {
            (offset, Some(size)) => (offset, size),
            (offset, None) => (offset, 8),
        };
        let shift = bit_offset % 8;
        if bits == 0 || shift + bits > 8 {
            return Err(member_error(ty, path, "bitfield spans more than one byte"));
        }
        Ok(BitField {
            byte: bit_offset / 8,
            shift: u8::try_from(shift).unwrap_or(0),
            mask: u8::try_from((1u32 << bits) - 1).unwrap_or(u8::MAX),
            padding: [0; 2],
        })
    }

    /// Bit offset and bitfield size (`None` for a plain member) of a dotted member path.
    fn member(&self, ty: &str, path: &str) -> Result<(u32, Option<u32>), BtfError> {
        let error = |reason: &str| member_error(ty, path, reason);
        let mut current = self.named_struct(ty)?;
        let mut offset = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (member_offset, member) = self
                .find(&current, part)
                .ok_or_else(|| error(&format!("no member `{part}`")))?;
            offset += member_offset;
            if parts.peek().is_none() {
                return Ok((offset, member.bitfield_size().filter(|bits| *bits > 0)));
            }
            current = self
                .composite(&member)
                .ok_or_else(|| error(&format!("`{part}` is not a struct or union")))?;
        }
        Err(error("empty path"))
    }

    /// The type id of the struct `name` (with members: not a forward declaration).
    pub(crate) fn struct_id(&self, name: &str) -> Option<u32> {
        self.id_of(
            name,
            |t| matches!(t, Type::Struct(s) if !s.members.is_empty()),
        )
    }

    /// The type id of the function `name`: a kfunc, where the kernel has it.
    pub(crate) fn function_id(&self, name: &str) -> Option<u32> {
        self.id_of(name, |t| matches!(t, Type::Func(_)))
    }

    fn id_of(&self, name: &str, kind: impl Fn(&Type) -> bool) -> Option<u32> {
        self.btf
            .resolve_ids_by_name(name)
            .unwrap_or_default()
            .into_iter()
            .find(|id| self.btf.resolve_type_by_id(*id).is_ok_and(|t| kind(&t)))
    }

    /// Values and names of an enum (`enum skb_drop_reason`, ...), as the running kernel has them.
    pub(crate) fn enum_values(&self, name: &str) -> Result<Vec<(u32, String)>, BtfError> {
        let found = self
            .btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .into_iter()
            .find_map(|t| match t {
                Type::Enum(e) => Some(e),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoType(format!("enum {name}")))?;
        Ok(found
            .members
            .iter()
            .filter_map(|m| Some((m.val(), self.btf.resolve_name(m).ok()?)))
            .collect())
    }

    fn named_struct(&self, name: &str) -> Result<Struct, BtfError> {
        self.btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoType(name.to_owned()))
    }

    /// A member by name, looking inside anonymous structs and unions; its bit offset.
    fn find(&self, within: &Struct, name: &str) -> Option<(u32, Member)> {
        within.members.iter().find_map(|member| {
            let member_name = self.btf.resolve_name(member).unwrap_or_default();
            if member_name == name {
                return Some((member.bit_offset(), member.clone()));
            }
            if member_name.is_empty() {
                let inner = self.composite(member)?;
                let (offset, found) = self.find(&inner, name)?;
                return Some((member.bit_offset() + offset, found));
            }
            None
        })
    }

    /// The struct or union a member is, through typedefs and qualifiers.
    fn composite(&self, member: &Member) -> Option<Struct> {
        let mut current = self.btf.resolve_chained_type(member).ok()?;
        for _ in 0..16 {
            current = match current {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(t) => self.btf.resolve_chained_type(&t).ok()?,
                Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(&t).ok()?
                }
                Type::TypeTag(t) => self.btf.resolve_chained_type(&t).ok()?,
                _ => return None,
            };
        }
        None
    }
}

/// The kind of a type aya looks a BTF program's attach point up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttachKind {
    /// `btf_trace_NAME`, for a `tp_btf` program.
    Typedef,
    /// A kernel function (fentry) or `bpf_iter_NAME` (an iterator).
    Func,
}

impl AttachKind {
    /// `BTF_KIND_*` (`include/uapi/linux/btf.h`).
    const fn btf_kind(self) -> u32 {
        match self {
            Self::Typedef => 8,
            Self::Func => 12,
        }
    }
}

/// `BTF_KIND_PTR`: `void *`, the filler of the ids an attach-point BTF does not name.
const BTF_KIND_PTR: u32 = 2;

impl KernelBtf {
    /// The kernel's id of the first type of `kind` named `name`, the one aya's lookup finds.
    fn first_id(&self, name: &str, kind: AttachKind) -> Option<u32> {
        let ids = self.btf.resolve_ids_by_name(name).ok()?;
        ids.into_iter().find(|id| {
            matches!(
                (kind, self.btf.resolve_type_by_id(*id)),
                (AttachKind::Typedef, Ok(Type::Typedef(_))) | (AttachKind::Func, Ok(Type::Func(_)))
            )
        })
    }

    /// A BTF blob that names `wanted` at their kernel ids, every other id up to the last of
    /// them a `void *`: all aya reads of the kernel's BTF to load a `tp_btf`, fentry or
    /// iterator program is the id of its attach point, and parsing the whole of vmlinux's
    /// BTF for that costs ~19 MB at start-up, this a few. A name the kernel lacks is left
    /// out, so aya reports it missing as it would with the full BTF.
    pub(crate) fn attach_points(&self, wanted: &[(String, AttachKind)]) -> Vec<u8> {
        let mut found: Vec<(u32, &str, AttachKind)> = wanted
            .iter()
            .filter_map(|(name, kind)| Some((self.first_id(name, *kind)?, name.as_str(), *kind)))
            .collect();
        found.sort_unstable_by_key(|(id, _, _)| *id);
        found.dedup_by_key(|(id, _, _)| *id);
        attach_point_blob(&found)
    }
}

/// Header, types and strings of a BTF with `named` (id, name, kind; sorted by id) at their ids.
fn attach_point_blob(named: &[(u32, &str, AttachKind)]) -> Vec<u8> {
    const HEADER_LEN: usize = 24;
    const RECORD_LEN: usize = 12;
    let last = named.last().map_or(0, |(id, _, _)| *id);
    let mut strings = vec![0u8];
    let mut blob = vec![0u8; HEADER_LEN];
    blob.reserve(last as usize * RECORD_LEN + named.len() * 32);
    let mut next = named.iter().peekable();
    for id in 1..=last {
        let record = match next.next_if(|(named_id, _, _)| *named_id == id) {
            Some((_, name, kind)) => {
                let offset = u32::try_from(strings.len()).unwrap_or(u32::MAX);
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
                [offset, kind.btf_kind() << 24, 0]
            }
            None => [0, BTF_KIND_PTR << 24, 0],
        };
        blob.extend(record.iter().flat_map(|word| word.to_ne_bytes()));
    }
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_ne_bytes();
    let types_len = blob.len() - HEADER_LEN;
    blob.extend_from_slice(&strings);
    // magic, version 1, flags 0, hdr_len, type_off, type_len, str_off, str_len.
    let header = [
        &0xeb9f_u16.to_ne_bytes()[..],
        &[1, 0],
        &len(HEADER_LEN),
        &len(0),
        &len(types_len),
        &len(types_len),
        &len(strings.len()),
    ]
    .concat();
    blob[..HEADER_LEN].copy_from_slice(&header);
    blob
}

/// A sealed-size anonymous copy of `path`, as a `/proc/self/fd/N` path that stays valid while
/// the returned file is open (the mapping made from it outlives the file).
fn copy_to_memfd(path: &Path) -> std::io::Result<MemfdPath> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: the name is a NUL-terminated literal; the flags are valid.
    let fd = unsafe { libc::memfd_create(c"galmanhae-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    std::io::copy(&mut std::fs::File::open(path)?, &mut file)?;
    Ok(MemfdPath {
        path: std::path::PathBuf::from(format!("/proc/self/fd/{fd}")),
        _file: file,
    })
}

struct MemfdPath {
    path: std::path::PathBuf,
    _file: std::fs::File,
}

impl AsRef<Path> for MemfdPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

fn member_error(ty: &str, path: &str, reason: &str) -> BtfError {
    BtfError::Member {
        ty: ty.to_owned(),
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The `sock_common` members the retransmit programs build a flow from, as the tracepoint
/// record would. <https://elixir.bootlin.com/linux/v6.18/source/include/net/sock.h>
pub(crate) fn sock_offsets(btf: &KernelBtf) -> Result<SockOffsets, BtfError> {
    let member = |path: &str| btf.offset_of("sock", &format!("__sk_common.{path}"));
    Ok(SockOffsets {
        family: member("skc_family")?,
        state: member("skc_state")?,
        num: member("skc_num")?,
        dport: member("skc_dport")?,
        rcv_saddr: member("skc_rcv_saddr")?,
        daddr: member("skc_daddr")?,
        // CONFIG_IPV6
        v6_rcv_saddr: member("skc_v6_rcv_saddr").unwrap_or(ABSENT),
        v6_daddr: member("skc_v6_daddr").unwrap_or(ABSENT),
        // Without it every event asks the helper.
        cookie: member("skc_cookie").unwrap_or(ABSENT),
    })
}

/// The `task_struct` members the task iterator reads (namespace and cgroup of a process).
/// <https://elixir.bootlin.com/linux/v6.18/source/include/linux/sched.h>
pub(crate) fn task_offsets(btf: &KernelBtf) -> Result<TaskOffsets, BtfError> {
    Ok(TaskOffsets {
        pid: btf.offset_of("task_struct", "pid")?,
        tgid: btf.offset_of("task_struct", "tgid")?,
        nsproxy: btf.offset_of("task_struct", "nsproxy")?,
        nsproxy_net_ns: btf.offset_of("nsproxy", "net_ns")?,
        // CONFIG_CGROUPS: without it every record's cgroup is 0.
        cgroups: btf.offset_of("task_struct", "cgroups").unwrap_or(ABSENT),
        css_set_dfl_cgrp: btf.offset_of("css_set", "dfl_cgrp").unwrap_or(ABSENT),
    })
}

/// The socket, skb and cgroup offsets the retransmit programs read.
///
/// Members the programs can live without (the cgroup, the congestion state) come back as
/// [`ABSENT`] with a note; the namespace is required.
pub(crate) fn struct_offsets(btf: &KernelBtf) -> Result<(StructOffsets, Vec<String>), BtfError> {
    let mut notes = Vec::new();
    let mut optional = |result: Result<u32, BtfError>| {
        result.unwrap_or_else(|e| {
            notes.push(e.to_string());
            ABSENT
        })
    };
    // https://elixir.bootlin.com/linux/v6.18/source/include/net/sock.h (struct sock_common)
    let sock_net = btf.offset_of("sock", "__sk_common.skc_net.net")?;
    let net_inum = btf.offset_of("net", "ns.inum")?;
    // CONFIG_SOCK_CGROUP_DATA: https://elixir.bootlin.com/linux/v6.18/source/include/linux/cgroup-defs.h
    let sock_cgroup = optional(btf.offset_of("sock", "sk_cgrp_data.cgroup"));
    let cgroup_kn = optional(btf.offset_of("cgroup", "kn"));
    let kernfs_node_id = optional(btf.offset_of("kernfs_node", "id"));
    // The drop program's reads: https://elixir.bootlin.com/linux/v6.18/source/include/linux/skbuff.h
    let mut skb_member = |member: &str| optional(btf.offset_of("sk_buff", member));
    let skb_len = skb_member("len");
    let skb_dev = skb_member("dev");
    let skb_sk = skb_member("sk");
    let skb_head = skb_member("head");
    let skb_network_header = skb_member("network_header");
    let net_device_net = optional(btf.offset_of("net_device", "nd_net.net"));
    // Drops after NAT carry the original (pre-NAT) source in their conntrack entry:
    // https://elixir.bootlin.com/linux/v6.18/source/include/net/netfilter/nf_conntrack.h
    let skb_nfct = optional(btf.offset_of("sk_buff", "_nfct"));
    let mut orig_src = |member: &str| match (
        btf.offset_of("nf_conn", "tuplehash"),
        btf.offset_of("nf_conntrack_tuple_hash", &format!("tuple.src.{member}")),
    ) {
        // tuplehash[0] is IP_CT_DIR_ORIGINAL.
        (Ok(hash), Ok(field)) => hash + field,
        (Err(e), _) | (_, Err(e)) => optional(Err(e)),
    };
    let ct_orig_src_addr = orig_src("u3");
    let ct_orig_src_port = orig_src("u.all");
    let ct_orig_l3num = orig_src("l3num");
    // https://elixir.bootlin.com/linux/v6.18/source/include/linux/tcp.h (struct tcp_sock)
    let tcp_total_retrans = optional(btf.offset_of("tcp_sock", "total_retrans"));
    let tcp_retrans_stamp = optional(btf.offset_of("tcp_sock", "retrans_stamp"));
    let [
        tcp_total_rto,
        tcp_total_rto_recoveries,
        tcp_total_rto_time,
        tcp_rto_stamp,
    ] = rto_counters(btf);
    // tcp_skb_pcount(): TCP_SKB_CB(skb)->tcp_gso_segs, skb->cb holds struct tcp_skb_cb.
    let skb_tcp_gso_segs = match (
        btf.offset_of("sk_buff", "cb"),
        btf.offset_of("tcp_skb_cb", "tcp_gso_segs"),
    ) {
        (Ok(cb), Ok(segs)) => cb + segs,
        (Err(e), _) | (_, Err(e)) => {
            notes.push(format!("{e}: every retransmit counts as one segment"));
            ABSENT
        }
    };
    let icsk_ca_state = btf
        .bitfield("inet_connection_sock", "icsk_ca_state")
        .unwrap_or_else(|e| {
            notes.push(format!(
                "{e}: RTO and fast retransmits cannot be told apart"
            ));
            BitField::ABSENT
        });
    let sock_kern_sock = btf.bitfield("sock", "sk_kern_sock").unwrap_or_else(|e| {
        notes.push(format!(
            "{e}: drops of packets from the kernel's own sockets are attributed by address"
        ));
        BitField::ABSENT
    });
    Ok((
        StructOffsets {
            sock_net,
            net_inum,
            sock_cgroup,
            cgroup_kn,
            kernfs_node_id,
            skb_tcp_gso_segs,
            icsk_ca_state,
            sock_kern_sock,
            skb_len,
            skb_dev,
            skb_sk,
            skb_head,
            skb_network_header,
            net_device_net,
            skb_nfct,
            ct_orig_src_addr,
            ct_orig_src_port,
            ct_orig_l3num,
            tcp_total_retrans,
            tcp_retrans_stamp,
            tcp_total_rto,
            tcp_total_rto_recoveries,
            tcp_total_rto_time,
            tcp_rto_stamp,
            tcp_sock_type: btf.struct_id("tcp_sock").unwrap_or(0),
            iphdr_type: btf.struct_id("iphdr").unwrap_or(0),
            udphdr_type: btf.struct_id("udphdr").unwrap_or(0),
            nf_conn_type: btf.struct_id("nf_conn").unwrap_or(0),
        },
        notes,
    ))
}

/// `struct tcp_sock` -> `total_rto`, `total_rto_recoveries`, `total_rto_time`, `rto_stamp`:
/// the kernel's own RTO counters (6.7+, commit 3868ab0f1925), all or none.
fn rto_counters(btf: &KernelBtf) -> [u32; 4] {
    let rto = [
        "total_rto",
        "total_rto_recoveries",
        "total_rto_time",
        "rto_stamp",
    ]
    .map(|member| btf.offset_of("tcp_sock", member).ok());
    if rto.iter().all(Option::is_some) {
        rto.map(|o| o.unwrap_or(ABSENT))
    } else {
        [ABSENT; 4]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_in_a_memfd_reads_like_the_mapped_file() {
        let path = Path::new(VMLINUX_BTF);
        let mapped = KernelBtf::load(path).unwrap();
        let copied = KernelBtf::load_copy(path).unwrap();
        for (ty, member) in [("sock_common", "skc_family"), ("sk_buff", "len")] {
            assert_eq!(
                mapped.offset_of(ty, member).unwrap(),
                copied.offset_of(ty, member).unwrap(),
                "{ty}.{member}"
            );
        }
    }

    #[test]
    fn attach_points_have_the_ids_aya_finds_in_the_whole_btf() {
        let wanted = [
            (
                "btf_trace_kfree_skb",
                AttachKind::Typedef,
                aya_obj::btf::BtfKind::Typedef,
            ),
            (
                "btf_trace_tcp_retransmit_skb",
                AttachKind::Typedef,
                aya_obj::btf::BtfKind::Typedef,
            ),
            // A struct of that name comes first: only the function may be found.
            (
                "bpf_iter_task",
                AttachKind::Func,
                aya_obj::btf::BtfKind::Func,
            ),
            ("tcp_v4_rcv", AttachKind::Func, aya_obj::btf::BtfKind::Func),
            (
                "no_such_function_here",
                AttachKind::Func,
                aya_obj::btf::BtfKind::Func,
            ),
        ];
        let names: Vec<(String, AttachKind)> = wanted
            .iter()
            .map(|(name, kind, _)| ((*name).to_owned(), *kind))
            .collect();
        let blob = KernelBtf::load(Path::new(VMLINUX_BTF))
            .unwrap()
            .attach_points(&names);
        let subset = aya::Btf::parse(&blob, aya::Endianness::default()).unwrap();
        let whole = aya::Btf::from_sys_fs().unwrap();
        for (name, _, kind) in wanted {
            assert_eq!(
                subset.id_by_type_name_kind(name, kind).ok(),
                whole.id_by_type_name_kind(name, kind).ok(),
                "{name}"
            );
        }
        assert!(
            subset
                .id_by_type_name_kind("tcp_v4_rcv", aya_obj::btf::BtfKind::Func)
                .is_ok()
        );
    }

    #[test]
    fn absent_btf_names_the_kernel_config() {
        let error = KernelBtf::load(Path::new("/nonexistent/btf/vmlinux"))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("CONFIG_DEBUG_INFO_BTF=y"), "{error}");
        assert!(error.contains("does not exist"), "{error}");
    }
}
