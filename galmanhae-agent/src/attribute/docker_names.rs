//! Container names from the Docker Engine API, read by a thread of their own: a slow or hung
//! Docker daemon never delays a pass or a scrape, which read the last answer. A container
//! the API no longer lists keeps its last known name, marked removed, for a while: its
//! sockets can outlive it.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Condvar, Mutex, MutexGuard, mpsc},
    thread,
    time::{Duration, Instant},
};

use super::docker::{self, ContainerInfo, DockerError};

/// How often the thread asks unprompted (a pass that sees a new container asks at once).
const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How long start-up waits for the first answer (a healthy daemon answers in milliseconds).
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// How long a container the API no longer lists keeps its name.
const REMOVED_KEEP: Duration = Duration::from_secs(600);

/// A container as last listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) info: ContainerInfo,
    /// The API no longer lists it.
    pub(crate) removed: bool,
    last_listed: Instant,
}

#[derive(Debug, Default)]
struct State {
    containers: HashMap<String, Known>,
    /// Whether the last ask was answered; `None` when not asked (no socket, or no permission:
    /// a choice, see `xtask install --docker-names`).
    answered: Option<bool>,
    /// Why names are short ids, when they are.
    note: Option<String>,
    /// Answers so far, so that a caller can wait for the next one.
    answers: u64,
}

/// The names, shared with the thread that refreshes them.
#[derive(Debug)]
pub(crate) struct DockerNames {
    shared: Arc<(Mutex<State>, Condvar)>,
    wake: mpsc::SyncSender<()>,
}

impl DockerNames {
    /// Starts the thread, which asks at once (each ask bounded, see [`docker::containers`]),
    /// and waits at most [`FIRST_WAIT`] for that first answer.
    pub(crate) fn start(socket: &Path) -> Self {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let (wake, woken) = mpsc::sync_channel(1);
        let socket = socket.to_owned();
        let thread_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("docker-names".to_owned())
            .spawn(move || refresh_loop(&socket, &thread_shared, &woken));
        let names = Self { shared, wake };
        match spawned {
            Ok(_) => names.wait_for_answer(0, FIRST_WAIT),
            Err(e) => log::warn!("no thread for container names ({e}): containers keep short ids"),
        }
        names
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks the thread for a fresh answer, without waiting.
    pub(crate) fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// Asks for a fresh answer and waits for it at most `timeout`.
    pub(crate) fn refresh_within(&self, timeout: Duration) {
        let asked = self.state().answers;
        self.wake();
        self.wait_for_answer(asked, timeout);
    }

    /// Waits at most `timeout` for an answer after the first `asked`.
    fn wait_for_answer(&self, asked: u64, timeout: Duration) {
        let (lock, answered) = &*self.shared;
        let guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = answered.wait_timeout_while(guard, timeout, |s| s.answers == asked);
    }

    pub(crate) fn get(&self, id: &str) -> Option<Known> {
        self.state().containers.get(id).cloned()
    }

    pub(crate) fn answered(&self) -> Option<bool> {
        self.state().answered
    }

    pub(crate) fn note(&self) -> Option<String> {
        self.state().note.clone()
    }
}

fn refresh_loop(socket: &Path, shared: &Arc<(Mutex<State>, Condvar)>, woken: &mpsc::Receiver<()>) {
    loop {
        refresh(socket, shared, Instant::now());
        match woken.recv_timeout(REFRESH_EVERY) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn refresh(socket: &Path, shared: &(Mutex<State>, Condvar), now: Instant) {
    let answer = if socket.exists() {
        Some(docker::containers(socket))
    } else {
        None
    };
    let (lock, answered) = shared;
    let mut state = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    merge(&mut state, answer, socket, now);
    state.answers += 1;
    answered.notify_all();
}

/// Folds one answer in: listed containers are named afresh, unlisted ones marked removed and
/// forgotten after [`REMOVED_KEEP`].
fn merge(
    state: &mut State,
    answer: Option<Result<HashMap<String, ContainerInfo>, DockerError>>,
    socket: &Path,
    now: Instant,
) {
    let listed = match answer {
        None => {
            state.answered = None;
            state.note = None;
            None
        }
        Some(Ok(listed)) => {
            state.answered = Some(true);
            state.note = None;
            Some(listed)
        }
        Some(Err(DockerError::Io { path, source }))
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            state.answered = None;
            state.note = Some(format!(
                "no permission to use {path}: containers are named by short id (it is \
                 root-equivalent; to name them, give the agent access, e.g. \
                 `cargo xtask install --docker-names`)"
            ));
            None
        }
        Some(Err(e)) => {
            state.answered = Some(false);
            state.note = Some(format!("{e}: containers are named by short id"));
            None
        }
    };
    let Some(listed) = listed else {
        return;
    };
    for known in state.containers.values_mut() {
        known.removed = true;
    }
    for (id, info) in listed {
        state.containers.insert(
            id,
            Known {
                info,
                removed: false,
                last_listed: now,
            },
        );
    }
    state
        .containers
        .retain(|_, k| now.saturating_duration_since(k.last_listed) <= REMOVED_KEEP);
    log::debug!(
        "{} containers known from {}",
        state.containers.len(),
        socket.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(names: &[(&str, &str)]) -> HashMap<String, ContainerInfo> {
        names
            .iter()
            .map(|(id, name)| {
                let info = ContainerInfo {
                    name: (*name).to_owned(),
                    image: "busybox".to_owned(),
                };
                ((*id).to_owned(), info)
            })
            .collect()
    }

    #[test]
    fn a_removed_container_keeps_its_name_marked_removed_then_goes() {
        let socket = Path::new("/run/docker.sock");
        let mut state = State::default();
        let start = Instant::now();
        merge(
            &mut state,
            Some(Ok(listed(&[("a1", "app"), ("b2", "db")]))),
            socket,
            start,
        );
        merge(
            &mut state,
            Some(Ok(listed(&[("b2", "db")]))),
            socket,
            start + Duration::from_secs(5),
        );
        let app = &state.containers["a1"];
        assert_eq!((app.info.name.as_str(), app.removed), ("app", true));
        assert!(!state.containers["b2"].removed);
        // A failed ask changes no name.
        let hung = DockerError::Decode("timed out".to_owned());
        merge(
            &mut state,
            Some(Err(hung)),
            socket,
            start + Duration::from_secs(10),
        );
        assert_eq!(state.answered, Some(false));
        assert!(state.containers.contains_key("a1"));
        let later = start + REMOVED_KEEP + Duration::from_secs(6);
        merge(&mut state, Some(Ok(listed(&[("b2", "db")]))), socket, later);
        assert!(
            !state.containers.contains_key("a1"),
            "{:?}",
            state.containers
        );
        assert!(state.containers.contains_key("b2"));
    }

    #[test]
    fn no_socket_is_not_asked_and_no_permission_is_a_choice() {
        let socket = Path::new("/run/docker.sock");
        let mut state = State::default();
        merge(&mut state, None, socket, Instant::now());
        assert_eq!(state.answered, None);
        let denied = DockerError::Io {
            path: "/run/docker.sock".to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        merge(&mut state, Some(Err(denied)), socket, Instant::now());
        assert_eq!(state.answered, None);
        assert!(
            state
                .note
                .as_deref()
                .is_some_and(|n| n.contains("--docker-names"))
        );
    }
}
