//! `boundary`: run a command in a jail whose only way to the network is the policy proxy.
fn main() {}
