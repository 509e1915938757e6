//! Free loopback ports for the processes a test starts, shared by the test binaries.
//!
//! A port the kernel hands out for `bind(":0")` is an ephemeral one: once the probe closes
//! it, any outgoing connection (kube-apiserver, etcd, curl) may take it before the process
//! the test starts binds it, and that process then fails with "Address already in use".
//! These are picked below Linux's ephemeral range (32768–60999 by default), where only
//! explicit binds land, at random (as scripts/kube-cluster does, so parallel tests rarely
//! meet), never twice in one test binary, and only if nothing holds them now.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::sync::Mutex;

/// The ports this test binary has handed out.
static PICKED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port below the ephemeral range that nothing holds, not handed out before.
pub fn free_port() -> u16 {
    let random = std::collections::hash_map::RandomState::new();
    let mut picked = PICKED.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 0u32..10_000 {
        let mut h = random.build_hasher();
        h.write_u32(attempt);
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if picked.contains(&port) {
            continue;
        }
        // Binding the loopback address fails too when something holds the port on every
        // address.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            picked.insert(port);
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_repeat() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        assert!(
            ports.iter().all(|p| (20_000..32_000).contains(p)),
            "{ports:?}"
        );
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice");
    }
}
