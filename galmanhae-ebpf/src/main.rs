//! galmanhae's eBPF programs. One line per program: the hook and the module that handles it.
//!
//! The programs only count into maps; the agent reads, attributes and reports.
#![no_std]
#![no_main]
// The BPF target has no atomic read-modify-write types; the intrinsic lowers to `lock xadd`.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core::intrinsics::atomic_xadd, see stall.rs"
)]
#![expect(
    clippy::inline_always,
    reason = "BPF: helpers are inlined into each program so no BPF-to-BPF calls are made"
)]

mod conntrack;
mod drop;
mod health;
mod kernel;
mod leak;
mod maps;
mod packet;
mod retransmit;
mod stall;
mod stores;
mod tasks;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{btf_tracepoint, classifier, fentry, kprobe, raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, TcContext,
        TracePointContext,
    },
};

/// `tcp_retransmit_skb` as a BTF tracepoint: every retransmit attempt of a data or SYN
/// segment, read with plain loads (the cheap path; the agent's first choice).
#[btf_tracepoint(function = "tcp_retransmit_skb")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's macro fixes the signature"
)]
pub fn tcp_rtx_skb_btf(ctx: BtfTracePointContext) -> i32 {
    retransmit::on_retransmit_skb_btf(&ctx);
    0
}

/// `tcp:tcp_retransmit_skb` as a classic tracepoint: the same, where `tp_btf` is refused.
#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's macro fixes the signature"
)]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    retransmit::on_retransmit_skb(&ctx);
    0
}

/// `tcp:tcp_retransmit_synack`: a listener re-sending a SYN-ACK (not seen by the one above).
#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's macro fixes the signature"
)]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    retransmit::on_retransmit_synack(&ctx);
    0
}

/// `tcp_cong_state_set` as a BTF tracepoint: RTO recoveries begin and end (time lost).
#[btf_tracepoint(function = "tcp_cong_state_set")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's macro fixes the signature"
)]
pub fn tcp_cong_state_set(ctx: BtfTracePointContext) -> i32 {
    stall::on_cong_state_set(&ctx);
    0
}

/// `inet_sock_set_state` as a BTF tracepoint: a timed-out handshake or recovery ends.
#[btf_tracepoint(function = "inet_sock_set_state")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's macro fixes the signature"
)]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    stall::on_inet_sock_set_state(&ctx);
    0
}

/// `kfree_skb` as a BTF tracepoint: a packet dropped, with the kernel's reason (5.17+) and
/// location (the cheap path; the agent's first choice).
#[btf_tracepoint(function = "kfree_skb")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's macro fixes the signature"
)]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    drop::on_kfree_skb_btf(&ctx);
    0
}

/// `skb:kfree_skb` as a classic tracepoint: the same, where `tp_btf` is refused.
#[tracepoint(category = "skb", name = "kfree_skb")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's macro fixes the signature"
)]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    drop::on_kfree_skb(&ctx);
    0
}

/// tc egress (TCX) on the host's Ethernet uplinks: packets leaving with an untranslated
/// source from a MASQUERADE subnet. It only observes: `TC_ACT_UNSPEC` lets the next program,
/// or the default, decide.
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's macro fixes the signature"
)]
pub fn nat_leak_egress(ctx: TcContext) -> i32 {
    leak::on_ethernet_egress(&ctx);
    TC_ACT_UNSPEC
}

/// The same on uplinks of any other link type (`WireGuard`, tun: no MAC header).
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's macro fixes the signature"
)]
pub fn nat_leak_other(ctx: TcContext) -> i32 {
    leak::on_egress(&ctx);
    TC_ACT_UNSPEC
}

/// Empty programs, never loaded by the agent: the bench attaches them to the same hooks to
/// measure what any program there costs (the floor its per-run figures are read against).
/// One per hook, so that `bpftool` names which is which.
macro_rules! floor_btf {
    ($($name:ident: $hook:literal),+) => {
        $(
            #[doc = concat!("The floor of `", $hook, "` (bench only).")]
            #[btf_tracepoint(function = $hook)]
            pub fn $name(_ctx: BtfTracePointContext) -> i32 {
                0
            }
        )+
    };
}
floor_btf!(
    floor_rtx: "tcp_retransmit_skb",
    floor_drop: "kfree_skb",
    floor_cong: "tcp_cong_state_set",
    floor_state: "inet_sock_set_state"
);

/// The floor of tc egress (bench only).
#[classifier]
pub fn floor_tc(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// `iter/task`: every process's network namespace and cgroup, read by the agent each pass.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn task_namespaces(ctx: *const tasks::IterTaskContext) -> i32 {
    tasks::on_task(ctx);
    0
}

/// Run by the agent (`BPF_PROG_TEST_RUN`, never attached) with up to twelve `TIME_LOST` keys
/// (6.7+): ends the recoveries the kernel ended, before each reading of the map.
#[raw_tracepoint(tracepoint = "time_lost_settle")]
#[expect(
    clippy::needless_pass_by_value,
    reason = "aya's macro fixes the signature"
)]
pub fn time_lost_settle(ctx: RawTracePointContext) -> i32 {
    stall::on_settle(&ctx);
    0
}

/// Optional kprobe on `__nf_conntrack_confirm` (kernels with `CONFIG_KPROBES`).
#[kprobe]
pub fn conntrack_confirm_kprobe(_ctx: ProbeContext) -> u32 {
    conntrack::on_confirm();
    0
}

/// The same as an fentry program, where the kernel allows BPF trampolines.
#[fentry(function = "__nf_conntrack_confirm")]
pub fn conntrack_confirm_fentry(_ctx: FEntryContext) -> u32 {
    conntrack::on_confirm();
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
