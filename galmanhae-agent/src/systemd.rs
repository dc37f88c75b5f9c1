//! The systemd notify protocol (`sd_notify(3)`), for `Type=notify` and `WatchdogSec=`: one
//! datagram to `$NOTIFY_SOCKET` per message. Outside systemd (no variable) it does nothing.
//! A few lines instead of libsystemd or a crate: the protocol is one `sendto`.

use std::{
    ffi::OsStr,
    io,
    os::unix::{ffi::OsStrExt as _, net::UnixDatagram},
    time::Duration,
};

/// Where systemd listens, if it does.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    socket: Option<std::ffi::OsString>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`.
    pub(crate) fn from_env() -> Self {
        Self {
            socket: std::env::var_os("NOTIFY_SOCKET"),
        }
    }

    /// Start-up is done: `READY=1`.
    pub(crate) fn ready(&self) {
        self.send("READY=1\nSTATUS=serving metrics");
    }

    /// A pass completed: `WATCHDOG=1` (systemd restarts the agent when these stop coming).
    pub(crate) fn alive(&self) {
        self.send("WATCHDOG=1");
    }

    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, message: &str) {
        let Some(socket) = &self.socket else {
            return;
        };
        if let Err(e) = send_to(socket, message) {
            log::warn!("telling systemd {message:?}: {e}");
        }
    }
}

/// How often systemd wants `WATCHDOG=1`, if it does: `$WATCHDOG_USEC` (for this process:
/// `$WATCHDOG_PID`, when set, is ours).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let for_us =
        std::env::var("WATCHDOG_PID").map_or(true, |pid| pid.parse() == Ok(std::process::id()));
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (for_us && usec > 0).then(|| Duration::from_micros(usec))
}

/// One datagram to a path or, with a leading `@`, an abstract socket.
fn send_to(socket: &OsStr, message: &str) -> io::Result<()> {
    let client = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        client.send_to_addr(message.as_bytes(), &address)?;
    } else {
        client.send_to(message.as_bytes(), std::path::Path::new(socket))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt as _;

    use super::*;

    #[test]
    fn messages_reach_a_path_and_an_abstract_socket() {
        let path = std::env::temp_dir().join(format!("galmanhae-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).expect("binding a notify socket");
        let notifier = Notifier {
            socket: Some(path.clone().into_os_string()),
        };
        notifier.ready();
        let mut buffer = [0u8; 128];
        let n = server.recv(&mut buffer).expect("a datagram");
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=serving metrics");
        std::fs::remove_file(&path).expect("cleaning up");

        let name = format!("galmanhae-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("an abstract address");
        let server = UnixDatagram::bind_addr(&address).expect("binding an abstract socket");
        let notifier = Notifier {
            socket: Some(format!("@{name}").into()),
        };
        notifier.alive();
        let n = server.recv(&mut buffer).expect("a datagram");
        assert_eq!(&buffer[..n], b"WATCHDOG=1");
    }

    #[test]
    fn outside_systemd_nothing_is_sent() {
        Notifier { socket: None }.ready();
    }
}
