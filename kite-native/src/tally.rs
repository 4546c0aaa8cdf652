//! Counting what peers hold against a budget in total and per remote address: the HTTP server's
//! connections, the SockJS server's sessions and websockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only addresses holding something: an entry goes when its count drops to zero.
    per_ip: HashMap<IpAddr, usize>,
}

/// A count of held things, in total and per remote address. Cloning shares the count.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally(Arc<Mutex<Counts>>);

/// The address as counted: an IPv4 peer of a dual-stack socket (`::ffff:a.b.c.d`) is the same
/// peer as `a.b.c.d`.
fn key(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl Tally {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more from `ip` (unknown: counted in the total only), unless that would exceed
    /// `max_total` or `max_per_ip`. The returned [`Held`] gives it back when dropped.
    pub(crate) fn take(
        &self,
        ip: Option<IpAddr>,
        max_total: usize,
        max_per_ip: usize,
    ) -> Option<Held> {
        let ip = ip.map(key);
        let mut c = self.lock();
        if c.total >= max_total {
            return None;
        }
        if let Some(ip) = ip {
            let n = c.per_ip.entry(ip).or_insert(0);
            if *n >= max_per_ip {
                if *n == 0 {
                    c.per_ip.remove(&ip);
                }
                return None;
            }
            *n += 1;
        }
        c.total += 1;
        Some(Held {
            tally: self.clone(),
            ip,
        })
    }

    /// How many are held now.
    pub(crate) fn total(&self) -> usize {
        self.lock().total
    }

    /// How many `ip` holds now.
    pub(crate) fn from(&self, ip: IpAddr) -> usize {
        self.lock().per_ip.get(&key(ip)).copied().unwrap_or(0)
    }
}

/// One counted thing; dropping it gives it back.
#[derive(Debug)]
pub(crate) struct Held {
    tally: Tally,
    ip: Option<IpAddr>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut c = self.tally.lock();
        c.total -= 1;
        if let Some(ip) = self.ip
            && let Some(n) = c.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_in_total_and_per_address_and_given_back() {
        let t = Tally::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = t.take(Some(a), 3, 2).unwrap();
        let a2 = t.take(Some(a), 3, 2).unwrap();
        assert!(t.take(Some(a), 3, 2).is_none(), "per-address budget");
        // The mapped form of an IPv4 address is the same peer.
        assert!(
            t.take(Some("::ffff:10.0.0.1".parse().unwrap()), 3, 2)
                .is_none()
        );
        let b1 = t.take(Some(b), 3, 2).unwrap();
        assert!(t.take(None, 3, 2).is_none(), "total budget");
        assert_eq!((t.total(), t.from(a), t.from(b)), (3, 2, 1));
        drop(a1);
        let a3 = t.take(Some(a), 3, 2).unwrap();
        drop((a2, a3, b1));
        assert_eq!((t.total(), t.from(a)), (0, 0));
        assert!(
            t.lock().per_ip.is_empty(),
            "no entry left for gone addresses"
        );
    }
}
