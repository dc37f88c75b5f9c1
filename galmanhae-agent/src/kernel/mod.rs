//! Everything that knows the running kernel: BTF, tracefs, prerequisites, load and attach.
//! Only this module knows offsets.

pub(crate) mod btf;
pub(crate) mod clsact;
pub(crate) mod drop_reasons;
pub(crate) mod iter;
pub(crate) mod kallsyms;
pub(crate) mod leak_watch;
pub(crate) mod mounts;
pub(crate) mod prereq;
pub(crate) mod privileges;
pub(crate) mod probes;
pub(crate) mod prog_info;
pub(crate) mod settle;
pub(crate) mod task_iter;
pub(crate) mod tracefs;
