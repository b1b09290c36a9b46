//! Caps on concurrent connections, in total and per client address, so one
//! client (or a flood) cannot take every file descriptor.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex, PoisonError},
};

use tether_proto::handshake::HandshakeError;

/// Counts open connections; [`try_acquire`](Self::try_acquire) hands out a
/// permit per connection, given back when the permit is dropped.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl ConnectionLimiter {
    /// At most `max_total` connections, and `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            counts: Mutex::default(),
        })
    }

    /// A permit for one more connection from `ip`, or the `503` refusal
    /// saying which limit was hit. An IPv4 address mapped into IPv6 (from a
    /// dual-stack listener) counts as the IPv4 address it is.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, HandshakeError> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.max_total {
            return Err(HandshakeError::Refused {
                status: 503,
                reason: format!(
                    "the server is at its limit of {} connections",
                    self.max_total
                ),
            });
        }
        let from_ip = counts.per_ip.entry(ip).or_default();
        if *from_ip >= self.max_per_ip {
            return Err(HandshakeError::Refused {
                status: 503,
                reason: format!("too many connections from {ip} (limit {})", self.max_per_ip),
            });
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(ConnectionPermit {
            limiter: self.clone(),
            ip: match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            },
        })
    }

    /// Connections currently open.
    pub fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One open connection's place under the limits; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    /// The client's address, IPv4 mapped into IPv6: 16 bytes where an
    /// `IpAddr` takes 17 and pads the permit to 32. Servers keep a permit
    /// per connection, idle ones included.
    ip: Ipv6Addr,
}

impl ConnectionPermit {
    /// The address the permit counts against (IPv4 for a mapped one).
    pub fn ip(&self) -> IpAddr {
        IpAddr::V6(self.ip).to_canonical()
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        let ip = self.ip();
        if let Some(from_ip) = counts.per_ip.get_mut(&ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_in_total_and_frees_on_drop() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = limiter.try_acquire(a).unwrap();
        let _second = limiter.try_acquire(a).unwrap();
        let refusal = limiter.try_acquire(a).unwrap_err();
        assert_eq!(refusal.http_status(), 503);
        assert!(refusal.to_string().contains("127.0.0.1"), "{refusal}");
        let _third = limiter.try_acquire(b).unwrap();
        let refusal = limiter.try_acquire(b).unwrap_err();
        assert!(refusal.to_string().contains("limit of 3"), "{refusal}");
        drop(first);
        assert_eq!(limiter.open(), 2);
        assert!(limiter.try_acquire(a).is_ok());
    }

    #[test]
    fn a_mapped_ipv4_address_counts_as_the_ipv4_one_and_is_given_back() {
        let limiter = ConnectionLimiter::new(10, 2);
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let first = limiter.try_acquire(mapped).unwrap();
        assert_eq!(first.ip(), v4);
        let second = limiter.try_acquire(v4).unwrap();
        assert!(
            limiter.try_acquire(mapped).is_err(),
            "one address, two forms"
        );
        let third = limiter.try_acquire(v6).unwrap();
        assert_eq!(third.ip(), v6);
        assert_eq!(size_of::<ConnectionPermit>(), 24);
        drop((first, second, third));
        assert_eq!(limiter.open(), 0);
        let counts = limiter.counts.lock().unwrap();
        assert!(counts.per_ip.is_empty(), "{:?}", counts.per_ip);
    }
}
