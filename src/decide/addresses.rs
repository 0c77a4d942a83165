//! Worker addresses: the `proxmox.vm.ipPool` ranges and the next address nobody uses.
//!
//! The runbook numbers workers `10.0.20.10n`, which a `{n}` template cannot carry past node9
//! (the 10th worker got `10.0.20.1010`). A pool of ranges can, and it skips what is taken: the
//! Nodes' InternalIPs and the `ipconfig0` of every VM in Proxmox, hand-made ones included.

use core::net::Ipv4Addr;
use std::{collections::BTreeSet, ops::RangeInclusive};

/// The configured ranges, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpPool(Vec<RangeInclusive<u32>>);

impl IpPool {
    /// Parses `["10.0.20.107-10.0.20.199", "10.0.21.5"]`; the error names the bad entry.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let ip = |s: &str, entry: &str| {
            s.trim()
                .parse::<Ipv4Addr>()
                .map(u32::from)
                .map_err(|_| format!("{entry:?}: not an IPv4 address or range like 10.0.20.107-10.0.20.199"))
        };
        let ranges = entries
            .iter()
            .map(|entry| {
                let (first, last) = entry.split_once('-').unwrap_or((entry, entry));
                let (first, last) = (ip(first, entry)?, ip(last, entry)?);
                if first > last {
                    return Err(format!("{entry:?}: the range ends before it starts"));
                }
                Ok(first..=last)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(ranges))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.iter().any(|r| r.contains(&u32::from(ip)))
    }

    /// The first address of the pool that is not `taken`, in the order the ranges are given.
    pub fn next_free(&self, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.0
            .iter()
            .flat_map(|r| r.clone())
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(ip))
    }
}

/// The address of a PVE `ipconfig0` value (`ip=10.0.20.107/22,gw=10.0.20.1`); none for `dhcp`.
pub fn ipconfig_address(ipconfig: &str) -> Option<Ipv4Addr> {
    ipconfig
        .split(',')
        .find_map(|part| part.trim().strip_prefix("ip="))
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_next_free_address_skips_what_is_taken_range_by_range() {
        let pool = IpPool::parse(&["10.0.20.107-10.0.20.109".into(), "10.0.21.5".into()]).unwrap();
        let taken = |list: &[&str]| list.iter().map(|s| ip(s)).collect::<BTreeSet<_>>();
        // (taken, next)
        let rows: [(&[&str], Option<&str>); 5] = [
            (&[], Some("10.0.20.107")),
            (&["10.0.20.107"], Some("10.0.20.108")),
            (&["10.0.20.107", "10.0.20.108"], Some("10.0.20.109")),
            (&["10.0.20.107", "10.0.20.108", "10.0.20.109"], Some("10.0.21.5")),
            (&["10.0.20.107", "10.0.20.108", "10.0.20.109", "10.0.21.5"], None),
        ];
        for (t, want) in rows {
            assert_eq!(pool.next_free(&taken(t)), want.map(ip), "{t:?}");
        }
        assert!(pool.contains(ip("10.0.20.108")) && !pool.contains(ip("10.0.20.110")));
    }

    #[test]
    fn bad_entries_are_named() {
        for (entry, want) in [
            ("10.0.20.300", "not an IPv4"),
            ("10.0.20.9-10.0.20.1", "ends before it starts"),
            ("10.0.20.1-", "not an IPv4"),
            ("fd00::1", "not an IPv4"),
        ] {
            let err = IpPool::parse(&[entry.into()]).unwrap_err();
            assert!(err.contains(entry) && err.contains(want), "{entry}: {err}");
        }
    }

    #[test]
    fn the_address_of_an_ipconfig() {
        for (text, want) in [
            ("ip=10.0.20.107/22,gw=10.0.20.1", Some("10.0.20.107")),
            ("gw=10.0.20.1, ip=10.0.20.5/24", Some("10.0.20.5")),
            ("ip=dhcp", None),
            ("ip6=auto", None),
        ] {
            assert_eq!(ipconfig_address(text), want.map(ip), "{text}");
        }
    }
}
