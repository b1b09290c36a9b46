//! `tetherd`: the Tether gateway.

fn main() {}
