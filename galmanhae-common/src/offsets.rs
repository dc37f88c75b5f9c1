//! Kernel layout facts the programs receive at load time as a read-only global.
//!
//! Nothing here is known at compile time: the agent reads tracepoint field offsets from
//! tracefs `format` files and struct member offsets from `/sys/kernel/btf/vmlinux`, then
//! writes them into [`KernelOffsets`] before the programs are loaded.

/// An offset the running kernel does not have (a field or member that is absent).
pub const ABSENT: u32 = u32::MAX;

/// Field offsets inside the `tcp:tcp_retransmit_skb` tracepoint record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitSkbFields {
    pub skbaddr: u32,
    pub skaddr: u32,
    /// `int state`, added in 4.16; [`ABSENT`] before.
    pub state: u32,
    pub sport: u32,
    pub dport: u32,
    /// `__u16 family`, added in 5.12; [`ABSENT`] before (then the v4-mapped v6 addresses tell).
    pub family: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
    /// `int err`, added in 6.17 together with firing on failed attempts; [`ABSENT`] before.
    pub err: u32,
}

/// Field offsets inside the `tcp:tcp_retransmit_synack` tracepoint record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitSynackFields {
    pub skaddr: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
}

/// Field offsets inside the `skb:kfree_skb` tracepoint record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KfreeSkbFields {
    pub skbaddr: u32,
    pub location: u32,
    /// `unsigned short protocol`: the ethertype, host order.
    pub protocol: u32,
    /// `enum skb_drop_reason reason`, added in 5.17; [`ABSENT`] before.
    pub reason: u32,
    /// `void *rx_sk`, the receiving socket, added in 6.12; [`ABSENT`] before.
    pub rx_sk: u32,
}

/// A bitfield member: the byte that holds it, then shift and mask within that byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitField {
    pub byte: u32,
    pub shift: u8,
    pub mask: u8,
    pub padding: [u8; 2],
}

impl BitField {
    pub const ABSENT: Self = Self {
        byte: ABSENT,
        shift: 0,
        mask: 0,
        padding: [0; 2],
    };
}

/// Struct member offsets, resolved from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructOffsets {
    /// `struct sock` -> `__sk_common.skc_net.net` (a `struct net *`).
    pub sock_net: u32,
    /// `struct net` -> `ns.inum`: the inode number `ls -l /proc/PID/ns/net` shows.
    pub net_inum: u32,
    /// `struct sock` -> `sk_cgrp_data.cgroup` (a `struct cgroup *`); [`ABSENT`] without
    /// `CONFIG_SOCK_CGROUP_DATA`.
    pub sock_cgroup: u32,
    /// `struct cgroup` -> `kn` (a `struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `struct kernfs_node` -> `id`: the cgroup id, equal to the cgroup2 directory's inode.
    pub kernfs_node_id: u32,
    /// `struct sk_buff` -> `cb` plus `struct tcp_skb_cb` -> `tcp_gso_segs`: what
    /// `tcp_skb_pcount()` returns and the kernel adds to `RetransSegs`.
    pub skb_tcp_gso_segs: u32,
    /// `struct inet_connection_sock` -> `icsk_ca_state` (a 5-bit bitfield).
    pub icsk_ca_state: BitField,
    /// `struct sock` -> `sk_kern_sock` (1 bit): the kernel's own sockets (ICMP, resets), which
    /// belong to no workload.
    pub sock_kern_sock: BitField,
    /// `struct sk_buff` -> `len`.
    pub skb_len: u32,
    /// `struct sk_buff` -> `dev` (a `struct net_device *`).
    pub skb_dev: u32,
    /// `struct sk_buff` -> `sk` (a `struct sock *`).
    pub skb_sk: u32,
    /// `struct sk_buff` -> `head` (the start of the buffer).
    pub skb_head: u32,
    /// `struct sk_buff` -> `network_header` (a `u16` offset from `head`).
    pub skb_network_header: u32,
    /// `struct net_device` -> `nd_net.net` (a `struct net *`).
    pub net_device_net: u32,
    /// `struct sk_buff` -> `_nfct`: the packet's conntrack entry, `ctinfo` in the low 3 bits.
    pub skb_nfct: u32,
    /// `struct nf_conn` -> `tuplehash[IP_CT_DIR_ORIGINAL].tuple.src.u3`: the connection's
    /// source address before NAT (`union nf_inet_addr`, 16 bytes).
    pub ct_orig_src_addr: u32,
    /// ... `.tuple.src.u.all`: its source port (big-endian).
    pub ct_orig_src_port: u32,
    /// ... `.tuple.src.l3num`: its address family.
    pub ct_orig_l3num: u32,
    /// `struct tcp_sock` -> `total_retrans`: the kernel adds to it exactly the segments it adds
    /// to `RetransSegs`, in the same statement.
    pub tcp_total_retrans: u32,
    /// `struct tcp_sock` -> `retrans_stamp`: in `SYN_SENT`, when the first SYN was sent
    /// (`tcp_time_stamp`, milliseconds of the monotonic clock).
    pub tcp_retrans_stamp: u32,
    /// `struct tcp_sock` (6.7+) -> `total_rto` (u16: every RTO), `total_rto_recoveries` (u16:
    /// RTOs that began a recovery), `total_rto_time` (u32 ms of recoveries that ended) and
    /// `rto_stamp` (u32 ms, when the running recovery began; 0 when none is). All [`ABSENT`]
    /// before 6.7, or when the agent times recoveries from `tcp_cong_state_set` instead: the
    /// programs read their presence as "time recoveries with the kernel's counters".
    pub tcp_total_rto: u32,
    pub tcp_total_rto_recoveries: u32,
    pub tcp_total_rto_time: u32,
    pub tcp_rto_stamp: u32,
    /// BTF type ids in vmlinux of what `bpf_rdonly_cast` casts to (see the agent's
    /// `casts.rs`): `struct tcp_sock`, `struct iphdr`, `struct udphdr` (whose ports sit where
    /// TCP's do) and `struct nf_conn` (absent where conntrack is a module). All 0 where the
    /// kernel has no such kfunc (before 6.2): the programs then read through helpers.
    pub tcp_sock_type: u32,
    pub iphdr_type: u32,
    pub udphdr_type: u32,
    pub nf_conn_type: u32,
}

/// `struct sock` -> `__sk_common` members: what the `tcp:tcp_retransmit_skb` record copies
/// out of the socket; the retransmit programs read them from the socket itself.
/// <https://elixir.bootlin.com/linux/v6.18/source/include/net/sock.h> (`struct sock_common`)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOffsets {
    /// `skc_family` (`unsigned short`).
    pub family: u32,
    /// `skc_state` (`volatile unsigned char`).
    pub state: u32,
    /// `skc_num`: the local port, host order.
    pub num: u32,
    /// `skc_dport`: the remote port, network order.
    pub dport: u32,
    /// `skc_rcv_saddr`, `skc_daddr`: IPv4 addresses.
    pub rcv_saddr: u32,
    pub daddr: u32,
    /// `skc_v6_rcv_saddr`, `skc_v6_daddr`; [`ABSENT`] without `CONFIG_IPV6`.
    pub v6_rcv_saddr: u32,
    pub v6_daddr: u32,
    /// `skc_cookie` (`atomic64_t`): the socket's cookie once anything asked for it, else 0.
    pub cookie: u32,
}

/// Everything the programs need to know about the running kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub retransmit_skb: RetransmitSkbFields,
    pub retransmit_synack: RetransmitSynackFields,
    pub kfree_skb: KfreeSkbFields,
    pub structs: StructOffsets,
    pub sock: SockOffsets,
    pub task: crate::task::TaskOffsets,
}

impl KernelOffsets {
    /// All offsets absent: the programs count nothing and report read errors.
    pub const UNRESOLVED: Self = Self {
        retransmit_skb: RetransmitSkbFields {
            skbaddr: ABSENT,
            skaddr: ABSENT,
            state: ABSENT,
            sport: ABSENT,
            dport: ABSENT,
            family: ABSENT,
            saddr_v6: ABSENT,
            daddr_v6: ABSENT,
            err: ABSENT,
        },
        retransmit_synack: RetransmitSynackFields {
            skaddr: ABSENT,
            sport: ABSENT,
            dport: ABSENT,
            family: ABSENT,
            saddr_v6: ABSENT,
            daddr_v6: ABSENT,
        },
        kfree_skb: KfreeSkbFields {
            skbaddr: ABSENT,
            location: ABSENT,
            protocol: ABSENT,
            reason: ABSENT,
            rx_sk: ABSENT,
        },
        structs: StructOffsets {
            sock_net: ABSENT,
            net_inum: ABSENT,
            sock_cgroup: ABSENT,
            cgroup_kn: ABSENT,
            kernfs_node_id: ABSENT,
            skb_tcp_gso_segs: ABSENT,
            icsk_ca_state: BitField::ABSENT,
            sock_kern_sock: BitField::ABSENT,
            skb_len: ABSENT,
            skb_dev: ABSENT,
            skb_sk: ABSENT,
            skb_head: ABSENT,
            skb_network_header: ABSENT,
            net_device_net: ABSENT,
            skb_nfct: ABSENT,
            ct_orig_src_addr: ABSENT,
            ct_orig_src_port: ABSENT,
            ct_orig_l3num: ABSENT,
            tcp_total_retrans: ABSENT,
            tcp_retrans_stamp: ABSENT,
            tcp_total_rto: ABSENT,
            tcp_total_rto_recoveries: ABSENT,
            tcp_total_rto_time: ABSENT,
            tcp_rto_stamp: ABSENT,
            tcp_sock_type: 0,
            iphdr_type: 0,
            udphdr_type: 0,
            nf_conn_type: 0,
        },
        sock: SockOffsets {
            family: ABSENT,
            state: ABSENT,
            num: ABSENT,
            dport: ABSENT,
            rcv_saddr: ABSENT,
            daddr: ABSENT,
            v6_rcv_saddr: ABSENT,
            v6_daddr: ABSENT,
            cookie: ABSENT,
        },
        task: crate::task::TaskOffsets::UNRESOLVED,
    };
}

const _: () = assert!(size_of::<KernelOffsets>() == 36 + 24 + 20 + 120 + 36 + 24);

crate::impl_pod!(KernelOffsets);
