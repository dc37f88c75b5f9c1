//! A namespace's TCP counters as the kernel keeps them (`/proc/PID/net/snmp`), read
//! independently of galmanhae: what the tests and the bench hold its counts against.

use anyhow::Context as _;

/// A namespace's `Tcp:` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snmp {
    pub retrans_segs: u64,
    pub out_segs: u64,
}

impl Snmp {
    /// What the counters grew by since `earlier`, a reading of the same namespace.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            retrans_segs: self.retrans_segs - earlier.retrans_segs,
            out_segs: self.out_segs - earlier.out_segs,
        }
    }
}

/// The counters of the network namespace of `pid`.
pub fn read(pid: u32) -> anyhow::Result<Snmp> {
    let path = format!("/proc/{pid}/net/snmp");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse(&text).with_context(|| format!("no Tcp: RetransSegs/OutSegs in {path}"))
}

fn parse(text: &str) -> Option<Snmp> {
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let value = |name: &str| -> Option<u64> {
        let column = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(column)?.parse().ok()
    };
    Some(Snmp {
        retrans_segs: value("RetransSegs")?,
        out_segs: value("OutSegs")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_snmp() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n\
                    Tcp: 1 200 120000 -1 64 0 0 0 64 1000 95182 4636 0 64 0\n\
                    Udp: InDatagrams\nUdp: 0\n";
        assert_eq!(
            parse(text),
            Some(Snmp {
                retrans_segs: 4636,
                out_segs: 95_182
            })
        );
        assert_eq!(parse("Ip: 1\n"), None);
    }
}
