//! `cargo xtask lab up|down|fault ...`

use clap::{Args, Subcommand};
use galmanhae_lab::fault::{self, Target};

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
    }
}

fn target(container: Option<&String>, port: Option<u16>) -> Target {
    match (container, port) {
        (Some(name), _) => Target::Container(name.clone()),
        (None, Some(port)) => Target::Port(port),
        (None, None) => Target::All,
    }
}
