//! `cargo xtask lab up|down|fault ...`

use clap::{Args, Subcommand};
use galmanhae_lab::{
    fault::{self, Target},
    traffic,
};

#[derive(Args)]
pub struct LabArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Start dockerd (bridge 198.18.100.0/24), the db namespace and the app/web containers.
    Up,
    /// Remove everything the lab created (safe to run any time).
    Down,
    /// Inject or clear a fault on the path to the db.
    Fault {
        #[command(subcommand)]
        fault: Fault,
    },
}

#[derive(Subcommand)]
enum Fault {
    /// Drop a share of the segments that go to the db.
    Loss {
        /// Share of segments dropped, in percent (0 < P < 100).
        #[arg(long)]
        percent: f64,
        /// Only this container's segments (default: everything that reaches the db).
        #[arg(long, conflicts_with = "port")]
        container: Option<String>,
        /// Only segments to this db port (host clients use 5433).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Drop every SYN: a container's on this host, or a db port's at the db (a remote black hole).
    SynBlackhole {
        #[arg(long, conflicts_with = "port")]
        container: Option<String>,
        #[arg(long)]
        port: Option<u16>,
    },
    /// Lower the host's egress MTU towards the db (containers keep 1500).
    Mtu {
        #[arg(long, default_value_t = 1400)]
        mtu: u32,
        /// Also drop the ICMP "fragmentation needed" the host sends: a PMTU black hole.
        #[arg(long)]
        block_icmp: bool,
    },
    /// Shrink the conntrack table (`net.netfilter.nf_conntrack_max`); `clear` restores it.
    ConntrackMax {
        #[arg(long)]
        entries: u64,
    },
    /// Fill the host's conntrack table with synthetic entries (a zone of their own, never
    /// matched by traffic), as on a NAT gateway or a busy node; `clear` deletes them.
    ConntrackFill {
        #[arg(long)]
        entries: u32,
    },
    /// Race two containers for one SNAT tuple: each round both connect from the same source
    /// port to the db at the same instant, one per CPU (`snat_collision`).
    SnatRace {
        /// The two containers, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        containers: Vec<String>,
        #[arg(long, default_value_t = 300)]
        rounds: u16,
    },
    /// Send TCP segments with SYN and FIN set from a container: conntrack marks them INVALID,
    /// NAT skips them and they leave with the bridge address (`nat_leak`).
    InvalidSegments {
        #[arg(long)]
        container: String,
        #[arg(long, default_value_t = 100)]
        count: u32,
    },
    /// Remove every fault.
    Clear,
}

pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    match &args.action {
        Action::Up => {
            galmanhae_lab::up()?;
            eprintln!(
                "lab is up: containers {:?} stream to db {}:{} across docker0 and MASQUERADE",
                galmanhae_lab::LAB_CONTAINERS,
                galmanhae_lab::DB_V4,
                galmanhae_lab::DB_PORT
            );
            Ok(())
        }
        Action::Down => galmanhae_lab::down(),
        Action::Fault {
            fault: Fault::Clear,
        } => fault::clear_all(false),
        Action::Fault {
            fault:
                Fault::Loss {
                    percent,
                    container,
                    port,
                },
        } => fault::loss(*percent, &target(container.as_ref(), *port)),
        Action::Fault {
            fault: Fault::SynBlackhole { container, port },
        } => fault::syn_blackhole(&target(container.as_ref(), *port)),
        Action::Fault {
            fault: Fault::Mtu { mtu, block_icmp },
        } => fault::mtu(*mtu, *block_icmp),
        Action::Fault {
            fault: Fault::ConntrackMax { entries },
        } => fault::conntrack_max(*entries),
        Action::Fault {
            fault: Fault::ConntrackFill { entries },
        } => galmanhae_lab::conntrack_fill::fill(*entries).map(|grew| {
            eprintln!(
                "the host's conntrack table grew by {grew} entries (zone {})",
                galmanhae_lab::conntrack_fill::FILL_ZONE
            );
        }),
        Action::Fault {
            fault: Fault::SnatRace { containers, rounds },
        } => {
            let [a, b] = containers.as_slice() else {
                anyhow::bail!("--containers takes two names");
            };
            let outcome = traffic::snat_race([a, b], db_v4()?, *rounds)?;
            eprintln!(
                "{} rounds: {} connections had to resend their SYN",
                outcome.rounds, outcome.syn_retransmitted
            );
            Ok(())
        }
        Action::Fault {
            fault: Fault::InvalidSegments { container, count },
        } => traffic::invalid_segments(container, db_v4()?, galmanhae_lab::DB_PORT, *count),
    }
}

fn db_v4() -> anyhow::Result<std::net::Ipv4Addr> {
    Ok(galmanhae_lab::DB_V4.parse()?)
}

fn target(container: Option<&String>, port: Option<u16>) -> Target {
    match (container, port) {
        (Some(name), _) => Target::Container(name.clone()),
        (None, Some(port)) => Target::Port(port),
        (None, None) => Target::All,
    }
}
