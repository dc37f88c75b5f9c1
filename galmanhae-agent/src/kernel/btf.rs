//! Struct member offsets of the running kernel, from `/sys/kernel/btf/vmlinux`.
//!
//! aya-ebpf has no CO-RE relocations (aya#349), so the programs receive offsets as globals.

use std::path::Path;

use btfparse::{Offset, Readable, TypeInformation};
use galmanhae_common::offsets::{ABSENT, BitField, StructOffsets};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse kernel BTF: {0}")]
    Parse(String),
    #[error("kernel BTF has no type `{0}`")]
    NoType(String),
    #[error("kernel BTF: `{ty}.{path}`: {reason}")]
    Member {
        ty: String,
        path: String,
        reason: String,
    },
}

struct Bytes(Vec<u8>);

impl Readable for Bytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).ok();
        let slice = start.and_then(|s| self.0.get(s..s.checked_add(buffer.len())?));
        match slice {
            Some(slice) => {
                buffer.copy_from_slice(slice);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::IOError,
                "read past the end of the BTF blob",
            )),
        }
    }
}

/// The kernel's types, parsed once at start-up.
pub struct KernelBtf {
    types: TypeInformation,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, BtfError> {
        let types =
            TypeInformation::new(&Bytes(bytes)).map_err(|e| BtfError::Parse(format!("{e:?}")))?;
        Ok(Self { types })
    }

    /// Byte offset of `path` (dotted, through anonymous members) inside struct `ty`.
    pub fn offset_of(&self, ty: &str, path: &str) -> Result<u32, BtfError> {
        match self.member(ty, path)? {
            Offset::ByteOffset(bytes) => Ok(bytes),
            Offset::BitOffsetAndSize(..) => Err(self.member_error(ty, path, "is a bitfield")),
        }
    }

    /// A bitfield member (or a one-byte plain member) as byte, shift and mask.
    pub fn bitfield(&self, ty: &str, path: &str) -> Result<BitField, BtfError> {
        let (bit_offset, bits) = match self.member(ty, path)? {
            Offset::BitOffsetAndSize(offset, size) => (offset, size),
            Offset::ByteOffset(bytes) => (bytes * 8, 8),
        };
        let shift = bit_offset % 8;
        if bits == 0 || shift + bits > 8 {
            return Err(self.member_error(ty, path, "bitfield spans more than one byte"));
        }
        Ok(BitField {
            byte: bit_offset / 8,
            shift: u8::try_from(shift).unwrap_or(0),
            mask: u8::try_from((1u32 << bits) - 1).unwrap_or(u8::MAX),
            padding: [0; 2],
        })
    }

    /// Whether the kernel has a type of this name.
    pub fn has_type(&self, ty: &str) -> bool {
        self.types.id_of(ty).is_some()
    }

    fn member(&self, ty: &str, path: &str) -> Result<Offset, BtfError> {
        let id = self
            .types
            .id_of(ty)
            .ok_or_else(|| BtfError::NoType(ty.to_owned()))?;
        self.types
            .offset_of(id, path)
            .map(|(_, offset)| offset)
            .map_err(|e| self.member_error(ty, path, &format!("{e:?}")))
    }

    #[expect(clippy::unused_self, reason = "keeps the call sites uniform")]
    fn member_error(&self, ty: &str, path: &str, reason: &str) -> BtfError {
        BtfError::Member {
            ty: ty.to_owned(),
            path: path.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// The socket, skb and cgroup offsets the retransmit programs read.
///
/// Members the programs can live without (the cgroup, the congestion state) come back as
/// [`ABSENT`] with a note; the namespace is required.
pub fn struct_offsets(btf: &KernelBtf) -> Result<(StructOffsets, Vec<String>), BtfError> {
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
    Ok((
        StructOffsets {
            sock_net,
            net_inum,
            sock_cgroup,
            cgroup_kn,
            kernfs_node_id,
            skb_tcp_gso_segs,
            icsk_ca_state,
        },
        notes,
    ))
}
