//! Leaked socket fds named by what they are: protocol, addresses and state, from
//! `/proc/net/{tcp,tcp6,udp,udp6,unix}`, instead of `socket:[81234]`.
//!
//! An fd's target names only the socket's inode; the kernel's per-protocol tables list each
//! socket by that inode with its addresses (hex, each 32-bit word in host order) and state.
//! The tables cover every socket of the network namespace, so they are read on the failure
//! path only, once per report, and only when a leaked fd is a socket.
//!
//! Identical sockets still group: sockets whose names differ only by one side's port (a
//! client's ephemeral port, the peers an accepting server sees, listeners bound to port 0)
//! are shown with that port as `*` (`tcp 127.0.0.1:* → 127.0.0.1:5432 ESTABLISHED ×4`). A
//! socket none of the tables lists (netlink, raw, another namespace) keeps its fd target.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An address and port as a report shows them: `127.0.0.1`, `[::1]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Endpoint {
    host: String,
    port: u16,
}

/// One socket of the tables.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Socket {
    Inet {
        proto: &'static str,
        local: Endpoint,
        /// `None` where unconnected (`0.0.0.0:0`).
        remote: Option<Endpoint>,
        /// `None` where the state says nothing (an unconnected UDP socket).
        state: Option<&'static str>,
    },
    Unix {
        /// The bound path (`@name` for an abstract one); `None` when unnamed.
        path: Option<String>,
        kind: &'static str,
    },
}

/// Which port a name leaves out, so that sockets differing only by it group together.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mask {
    None,
    Local,
    Remote,
}

impl Socket {
    fn name(&self, mask: Mask) -> String {
        match self {
            Socket::Inet {
                proto,
                local,
                remote,
                state,
            } => {
                let port = |e: &Endpoint, masked: bool| match masked {
                    true => format!("{}:*", e.host),
                    false => format!("{}:{}", e.host, e.port),
                };
                let mut out = format!("{proto} {}", port(local, mask == Mask::Local));
                if let Some(remote) = remote {
                    let _ = write!(out, " → {}", port(remote, mask == Mask::Remote));
                }
                if let Some(state) = state {
                    let _ = write!(out, " {state}");
                }
                out
            }
            Socket::Unix { path: Some(p), .. } => format!("unix {p}"),
            Socket::Unix { path: None, kind } => format!("unix {kind} (unnamed)"),
        }
    }
}

/// Replaces each `socket:[N]` label with the socket's name where a table lists inode `N`,
/// then gives sockets that differ by one port alone a common name. Other labels are kept.
pub(crate) fn name_sockets(labels: Vec<String>) -> Vec<String> {
    if !labels.iter().any(|l| inode_of(l).is_some()) {
        return labels;
    }
    name_with(labels, &read_tables())
}

/// `name_sockets` over given tables.
fn name_with(labels: Vec<String>, table: &HashMap<u64, Socket>) -> Vec<String> {
    let sockets: Vec<Option<&Socket>> = labels
        .iter()
        .map(|l| inode_of(l).and_then(|inode| table.get(&inode)))
        .collect();
    // Per masked name, the distinct sockets it would merge.
    let mut merged: HashMap<String, Vec<String>> = HashMap::new();
    for socket in sockets.iter().flatten() {
        for mask in [Mask::Local, Mask::Remote] {
            let group = merged.entry(socket.name(mask)).or_default();
            let exact = socket.name(Mask::None);
            if !group.contains(&exact) {
                group.push(exact);
            }
        }
    }
    let merges = |name: &String| merged.get(name).is_some_and(|g| g.len() > 1);
    labels
        .into_iter()
        .zip(sockets)
        .map(|(label, socket)| match socket {
            None => label,
            Some(s) => {
                let (local, remote) = (s.name(Mask::Local), s.name(Mask::Remote));
                if merges(&local) {
                    local
                } else if merges(&remote) {
                    remote
                } else {
                    s.name(Mask::None)
                }
            }
        })
        .collect()
}

/// `socket:[81234]` → 81234.
fn inode_of(label: &str) -> Option<u64> {
    label
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Every socket of the tables this process can read, by inode.
fn read_tables() -> HashMap<u64, Socket> {
    let mut table = HashMap::new();
    for (file, proto, udp) in [
        ("tcp", "tcp", false),
        ("tcp6", "tcp", false),
        ("udp", "udp", true),
        ("udp6", "udp", true),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) {
            table.extend(
                text.lines()
                    .skip(1)
                    .filter_map(|l| inet_line(l, proto, udp)),
            );
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/unix") {
        table.extend(text.lines().skip(1).filter_map(unix_line));
    }
    table
}

/// A line of `/proc/net/tcp` and the like:
/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode …`.
fn inet_line(line: &str, proto: &'static str, udp: bool) -> Option<(u64, Socket)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (local, remote, state, inode) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(9)?);
    let inode: u64 = inode.parse().ok()?;
    let local = endpoint(local)?;
    let remote = endpoint(remote)?;
    let unset = remote.port == 0 && (remote.host == "0.0.0.0" || remote.host == "[::]");
    let state = u8::from_str_radix(state, 16).ok()?;
    let state = match (udp, state) {
        // UDP uses the TCP numbers: 07 (CLOSE) is an unconnected socket, 01 a connected one.
        (true, _) => None,
        (false, s) => Some(tcp_state(s)),
    };
    let socket = Socket::Inet {
        proto,
        local,
        remote: (!unset).then_some(remote),
        state,
    };
    Some((inode, socket))
}

fn tcp_state(s: u8) -> &'static str {
    match s {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// `0100007F:1F90` → `127.0.0.1:8080`; 32 hex digits for IPv6. Each 32-bit word is printed
/// in host order, so its native-endian bytes are the address's bytes.
fn endpoint(text: &str) -> Option<Endpoint> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = |n: usize| -> Option<Vec<u8>> {
        (0..n)
            .map(|i| addr.get(i * 8..i * 8 + 8))
            .map(|w| u32::from_str_radix(w?, 16).ok().map(u32::to_ne_bytes))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat())
    };
    let host = match addr.len() {
        8 => {
            let b: [u8; 4] = words(1)?.try_into().ok()?;
            Ipv4Addr::from(b).to_string()
        }
        32 => {
            let b: [u8; 16] = words(4)?.try_into().ok()?;
            format!("[{}]", Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(Endpoint { host, port })
}

/// A line of `/proc/net/unix`: `Num RefCount Protocol Flags Type St Inode [Path]`.
fn unix_line(line: &str) -> Option<(u64, Socket)> {
    let mut f = line.split_whitespace();
    let kind = f.nth(4)?;
    let inode: u64 = f.nth(1)?.parse().ok()?;
    let path: Option<String> = {
        let rest: Vec<&str> = f.collect();
        (!rest.is_empty()).then(|| rest.join(" "))
    };
    let kind = match kind {
        "0001" => "stream",
        "0002" => "dgram",
        "0005" => "seqpacket",
        _ => "socket",
    };
    Some((inode, Socket::Unix { path, kind }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 501 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A132 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 502 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:A133 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 503 1 0000000000000000 20 4 30 10 -1";

    fn table() -> HashMap<u64, Socket> {
        let mut t: HashMap<u64, Socket> = TCP
            .lines()
            .skip(1)
            .filter_map(|l| inet_line(l, "tcp", false))
            .collect();
        let udp = "  1: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   0  0 504 2 0000000000000000 0";
        t.extend(inet_line(udp, "udp", true));
        let v6 = "  0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 505 1 0000000000000000 100 0 0 10 0";
        t.extend(inet_line(v6, "tcp", false));
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 506 /run/app.sock
0000000000000000: 00000003 00000000 00000000 0001 03 507";
        t.extend(unix.lines().skip(1).filter_map(unix_line));
        t
    }

    fn names(labels: &[&str]) -> Vec<String> {
        name_with(labels.iter().map(|l| l.to_string()).collect(), &table())
    }

    #[test]
    fn each_kind_by_protocol_addresses_and_state() {
        assert_eq!(
            names(&[
                "socket:[501]",
                "socket:[502]",
                "socket:[504]",
                "socket:[505]",
                "socket:[506]",
                "socket:[507]",
                "socket:[999]",
                "/tmp/x.log",
            ]),
            [
                "tcp 127.0.0.1:8080 LISTEN",
                "tcp 127.0.0.1:41266 → 127.0.0.1:5432 ESTABLISHED",
                "udp 0.0.0.0:5353",
                "tcp [::1]:8080 LISTEN",
                "unix /run/app.sock",
                "unix stream (unnamed)",
                "socket:[999]",
                "/tmp/x.log",
            ]
        );
    }

    #[test]
    fn sockets_that_differ_by_one_port_share_a_name() {
        assert_eq!(
            names(&["socket:[502]", "socket:[503]", "socket:[501]"]),
            [
                "tcp 127.0.0.1:* → 127.0.0.1:5432 ESTABLISHED",
                "tcp 127.0.0.1:* → 127.0.0.1:5432 ESTABLISHED",
                "tcp 127.0.0.1:8080 LISTEN",
            ]
        );
        // The same socket twice (a dup) is one socket: its name stays whole.
        assert_eq!(
            names(&["socket:[502]", "socket:[502]"]),
            [
                "tcp 127.0.0.1:41266 → 127.0.0.1:5432 ESTABLISHED",
                "tcp 127.0.0.1:41266 → 127.0.0.1:5432 ESTABLISHED",
            ]
        );
    }

    #[test]
    fn labels_without_sockets_are_untouched() {
        let labels = vec!["pipe:[12]".to_owned(), "/tmp/a".to_owned()];
        assert_eq!(name_sockets(labels.clone()), labels);
    }

    /// Live: a listener, a connection to it and its accepted end, read from this process's
    /// own tables.
    #[test]
    fn live_sockets_of_this_process() {
        use std::os::fd::AsRawFd;
        let target = |fd: i32| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        let cport = client.local_addr().unwrap().port();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = udp.local_addr().unwrap().port();
        let named = name_sockets(vec![
            target(listener.as_raw_fd()),
            target(client.as_raw_fd()),
            target(server.as_raw_fd()),
            target(udp.as_raw_fd()),
        ]);
        assert_eq!(
            named,
            [
                format!("tcp 127.0.0.1:{port} LISTEN"),
                format!("tcp 127.0.0.1:{cport} → 127.0.0.1:{port} ESTABLISHED"),
                format!("tcp 127.0.0.1:{port} → 127.0.0.1:{cport} ESTABLISHED"),
                format!("udp 127.0.0.1:{uport}"),
            ]
        );
    }
}
