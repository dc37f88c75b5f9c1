//! Container names and images from the Docker Engine API.
//!
//! One `GET /containers/json` on the local socket per refresh (see [`super::docker_names`],
//! which runs it off the passes). A Docker client crate (bollard) would bring an HTTP stack
//! and ~80 crates for this single request; HTTP/1.0 without keep-alive needs no chunked
//! decoding, so a plain Unix-socket request does it. Every step is bounded: the connect, each
//! read and write, and the size of the answer.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

/// The default Docker Engine API socket.
pub(crate) const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

#[derive(Debug, thiserror::Error)]
pub(crate) enum DockerError {
    #[error("Docker Engine API at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("Docker Engine API answered {status}")]
    Status { status: String },
    #[error("Docker Engine API: unexpected answer: {0}")]
    Decode(String),
    #[error("Docker Engine API at {path}: an answer over {MAX_RESPONSE} bytes, not read")]
    TooLarge { path: String },
}

/// How long a connect, a read or a write may take.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer read: about 10,000 containers' worth of JSON.
const MAX_RESPONSE: u64 = 32 << 20;

/// What the Engine API says about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ContainerInfo {
    pub(crate) name: String,
    pub(crate) image: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: String,
}

/// Every container (running or not), by full id.
pub(crate) fn containers(socket: &Path) -> Result<HashMap<String, ContainerInfo>, DockerError> {
    let io = |source| DockerError::Io {
        path: socket.display().to_string(),
        source,
    };
    let mut stream = connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    stream
        .write_all(b"GET /containers/json?all=1 HTTP/1.0\r\nHost: docker\r\n\r\n")
        .map_err(io)?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE + 1)
        .read_to_end(&mut response)
        .map_err(io)?;
    if response.len() as u64 > MAX_RESPONSE {
        return Err(DockerError::TooLarge {
            path: socket.display().to_string(),
        });
    }
    parse_response(&response)
}

/// A connect that cannot hang: a Unix socket whose backlog is full refuses at once
/// (`EAGAIN`) instead of blocking.
fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let address = socket2::SockAddr::unix(socket)?;
    let stream = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    stream.connect_timeout(&address, TIMEOUT)?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(stream)))
}

fn parse_response(response: &[u8]) -> Result<HashMap<String, ContainerInfo>, DockerError> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| DockerError::Decode("no HTTP header".to_owned()))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(DockerError::Status {
            status: status.to_owned(),
        });
    }
    let list: Vec<ApiContainer> =
        serde_json::from_str(body).map_err(|e| DockerError::Decode(e.to_string()))?;
    Ok(list
        .into_iter()
        .map(|c| {
            let name = c.names.first().map_or_else(
                || c.id.chars().take(12).collect(),
                |n| n.trim_start_matches('/').to_owned(),
            );
            (
                c.id,
                ContainerInfo {
                    name,
                    image: c.image,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_container_list() {
        let response = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n\
            [{\"Id\":\"abc\",\"Names\":[\"/app\"],\"Image\":\"galmanhae-lab/busybox\",\"State\":\"running\"}]";
        let list = parse_response(response).unwrap();
        assert_eq!(
            list["abc"],
            ContainerInfo {
                name: "app".to_owned(),
                image: "galmanhae-lab/busybox".to_owned()
            }
        );
    }

    #[test]
    fn error_status_is_reported() {
        let err = parse_response(b"HTTP/1.0 500 Internal Server Error\r\n\r\n{}").unwrap_err();
        assert!(err.to_string().contains("500"), "{err}");
    }
}
