//! `tether-load`: a load generator for WebSocket servers.

fn main() {}
