//! Empty on purpose: this library target lets `galmanhae-agent` name the crate as a
//! build-dependency, so cargo rebuilds the agent when the programs change.
#![no_std]
