//! Both sides of a NAT translation: a container's flow as its socket sees it (pre-NAT) and as
//! it leaves the host (post-NAT), from the host namespace's conntrack table. A packet seen in
//! the host namespace with the post-NAT tuple belongs to the container that owns the original.

use std::net::SocketAddr;

use hashbrown::HashMap;

/// One conntrack entry whose reply tuple is not the mirror of its original: it is translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) protocol: u8,
    /// The original sender's view: its own address and the remote it connected to.
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    /// The same flow after translation, as the remote sees it.
    pub(crate) nat_local: SocketAddr,
    pub(crate) nat_remote: SocketAddr,
}

/// Which side of a flow a packet travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Direction {
    /// From the workload towards its remote.
    Egress,
    /// From the remote back to the workload.
    Ingress,
}

/// Lookups over the bindings of one conntrack dump.
#[derive(Clone, Debug, Default)]
pub(crate) struct NatIndex {
    by_original: HashMap<(u8, SocketAddr, SocketAddr), Binding>,
    by_translated: HashMap<(u8, SocketAddr, SocketAddr), Binding>,
}

impl NatIndex {
    pub(crate) fn new(bindings: impl IntoIterator<Item = Binding>) -> Self {
        let bindings = bindings.into_iter();
        let most = bindings.size_hint().1.unwrap_or(0);
        let mut index = Self {
            by_original: HashMap::with_capacity(most),
            by_translated: HashMap::with_capacity(most),
        };
        for b in bindings {
            index.by_original.insert((b.protocol, b.local, b.remote), b);
            index
                .by_translated
                .insert((b.protocol, b.nat_local, b.nat_remote), b);
        }
        index
    }

    pub(crate) fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.by_original.values()
    }

    /// The translation of a flow that a workload's socket sees as `local -> remote`.
    pub(crate) fn translate(
        &self,
        protocol: u8,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<Binding> {
        self.by_original.get(&(protocol, local, remote)).copied()
    }

    /// The binding a packet `src -> dst` belongs to, in either direction and on either side of
    /// the translation, and which way it was going.
    pub(crate) fn packet(
        &self,
        protocol: u8,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<(Binding, Direction)> {
        let find = |map: &HashMap<_, Binding>, a, b| map.get(&(protocol, a, b)).copied();
        find(&self.by_original, src, dst)
            .or_else(|| find(&self.by_translated, src, dst))
            .map(|b| (b, Direction::Egress))
            .or_else(|| {
                find(&self.by_original, dst, src)
                    .or_else(|| find(&self.by_translated, dst, src))
                    .map(|b| (b, Direction::Ingress))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        Binding {
            protocol: 6,
            local: a("198.18.100.2:41000"),
            remote: a("198.19.0.2:5432"),
            nat_local: a("198.19.0.1:41000"),
            nat_remote: a("198.19.0.2:5432"),
        }
    }

    #[test]
    fn packets_on_both_sides_find_their_binding() {
        let b = binding();
        let index = NatIndex::new([b]);
        assert_eq!(index.translate(6, b.local, b.remote), Some(b));
        assert_eq!(
            index.packet(6, b.nat_local, b.nat_remote),
            Some((b, Direction::Egress))
        );
        assert_eq!(
            index.packet(6, b.nat_remote, b.nat_local),
            Some((b, Direction::Ingress))
        );
        assert_eq!(
            index.packet(6, b.remote, b.local),
            Some((b, Direction::Ingress))
        );
        assert_eq!(index.packet(17, b.nat_local, b.nat_remote), None);
    }
}
