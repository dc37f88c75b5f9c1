//! Everything that knows the running kernel: BTF, tracefs, prerequisites, load and attach.
//! Only this module knows offsets.

pub mod btf;
pub(crate) mod clsact;
pub mod drop_reasons;
pub mod kallsyms;
pub(crate) mod leak_watch;
pub mod mounts;
pub mod prereq;
pub mod privileges;
pub mod probes;
pub mod prog_info;
pub mod task_iter;
pub mod tracefs;
