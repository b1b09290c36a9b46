//! `tether-load`'s library: what the load generator reads from the
//! operating system about itself and about the server it loads ([`sys`]),
//! shared with the side-by-side benchmarks in `benches/`, whose own load
//! generators and runner read the same figures.
//!
//! What it does not do: generate load. The load generator is the
//! `tether-load` binary; this library is the small part of it that other
//! measuring programs need, and is not published on its own.

pub mod sys;
