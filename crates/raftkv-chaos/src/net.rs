//! The network the nodes run on: one Linux network namespace per node, or
//! plain loopback when namespaces are not available.
//!
//! Namespace layout of one harness process (pid `P`), all created with
//! iproute2 and removed at the end:
//!
//! ```text
//!   host namespace (the harness and its clients)
//!     rkcPc1 10.199.C.5/30 ─veth─ cli0 10.199.C.6/30 ┐
//!     rkcPc2 10.199.C.9/30 ─veth─ cli0 10.199.C.10/30 ┤ in rkc-P-n1, -n2, -n3:
//!     rkcPc3 10.199.C.13/30 ─veth─ cli0 10.199.C.14/30┘ one raftkv serve each
//!                                     peer0 10.199.0.1i/24
//!                                        │ veth
//!   rkc-P-hub:  br0 (bridge) ── n1, n2, n3
//! ```
//!
//! Peers talk over the bridge (10.199.0.0/24, which exists only inside
//! these namespaces); the harness reaches each node over its own
//! point-to-point link (10.199.C.0/24, C picked so no host address or route
//! already uses it). Isolating a node takes its port on the bridge down: it
//! can no longer reach its peers (packets are dropped silently, as in a real
//! partition), yet clients still reach it, which is what lets a stale
//! leader's answers be observed. Forwarding between nodes uses the peer
//! addresses, so an isolated follower cannot forward either.
//!
//! Nothing is routed outside: the namespaces have no default route, and
//! the harness sends only to the addresses above.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

/// The peer network inside the namespaces (never configured on the host).
pub const PEER_SUBNET: [u8; 3] = [10, 199, 0];
/// Port of every node's client API inside its namespace.
pub const NETNS_CLIENT_PORT: u16 = 7000;
/// Port of every node's peer transport inside its namespace.
pub const NETNS_PEER_PORT: u16 = 7100;

/// Prefix of every name this harness creates (namespaces `rkc-P-...`, host
/// links `rkcPc...`).
const PREFIX: &str = "rkc";

/// Why the namespace network could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {detail}")]
    Command { args: String, detail: String },
    /// Not running as root: namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN.
    #[error("network namespaces need root (running as uid {0})")]
    NotRoot(u32),
    /// Every 10.199.C.0/24 for the client links is in use on this host.
    #[error("no free 10.199.C.0/24 for the client links")]
    NoSubnet,
}

/// Runs `ip args...` and returns its stdout.
fn ip(args: &[&str]) -> Result<String, NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetError::Command {
            args: args.join(" "),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetError::Command {
            args: args.join(" "),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One namespace per node plus the hub with the bridge. Dropping it tears
/// everything down (kill the node processes first: a namespace with a
/// process in it outlives its name).
#[derive(Debug)]
pub struct Netns {
    pid: u32,
    nodes: u64,
    client_subnet: u8,
    torn_down: bool,
}

impl Netns {
    /// Creates the namespaces, bridge and links for `nodes` nodes (1..=20).
    /// On failure everything created so far is removed again.
    pub fn setup(nodes: u64) -> Result<Netns, NetError> {
        assert!((1..=20).contains(&nodes), "1..=20 nodes, not {nodes}");
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(NetError::NotRoot(uid));
        }
        let mut net = Netns {
            pid: std::process::id(),
            nodes,
            client_subnet: 0,
            torn_down: false,
        };
        // Leftovers of an earlier run of a process with our pid.
        net.teardown();
        net.torn_down = false;
        net.client_subnet = free_client_subnet(net.pid)?;
        if let Err(e) = net.build() {
            net.teardown();
            return Err(e);
        }
        Ok(net)
    }

    fn build(&self) -> Result<(), NetError> {
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for id in 1..=self.nodes {
            let ns = self.ns_name(id);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // Peer link: cli end in the hub (on the bridge), peer0 in the node.
            let port = hub_port(id);
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "peer0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            let peer_cidr = format!("{}/24", self.peer_ip(id));
            ip(&["-n", &ns, "addr", "add", &peer_cidr, "dev", "peer0"])?;
            ip(&["-n", &ns, "link", "set", "peer0", "up"])?;
            // Client link: host end here, cli0 in the node.
            let host = self.host_link(id);
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", "cli0", "netns", &ns,
            ])?;
            let host_cidr = format!("{}/30", self.host_ip(id));
            ip(&["addr", "add", &host_cidr, "dev", &host])?;
            ip(&["link", "set", &host, "up"])?;
            let node_cidr = format!("{}/30", self.client_ip(id));
            ip(&["-n", &ns, "addr", "add", &node_cidr, "dev", "cli0"])?;
            ip(&["-n", &ns, "link", "set", "cli0", "up"])?;
        }
        Ok(())
    }

    /// The hub namespace's name.
    pub fn hub(&self) -> String {
        format!("{PREFIX}-{}-hub", self.pid)
    }

    /// Node `id`'s namespace.
    pub fn ns_name(&self, id: u64) -> String {
        format!("{PREFIX}-{}-n{id}", self.pid)
    }

    fn host_link(&self, id: u64) -> String {
        format!("{PREFIX}{}c{id}", self.pid)
    }

    /// Node `id`'s address on the peer network.
    pub fn peer_ip(&self, id: u64) -> Ipv4Addr {
        // id <= 20: fits a byte.
        Ipv4Addr::new(
            PEER_SUBNET[0],
            PEER_SUBNET[1],
            PEER_SUBNET[2],
            10 + id as u8,
        )
    }

    /// Node `id`'s address on its client link (inside its namespace).
    pub fn client_ip(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, 199, self.client_subnet, 4 * id as u8 + 2)
    }

    /// The host's address on node `id`'s client link.
    fn host_ip(&self, id: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, 199, self.client_subnet, 4 * id as u8 + 1)
    }

    /// Where the harness reaches node `id`'s client API.
    pub fn client_addr(&self, id: u64) -> SocketAddr {
        SocketAddr::from((self.client_ip(id), NETNS_CLIENT_PORT))
    }

    /// Where peers (and forwarded client requests) reach node `id`.
    pub fn peer_addr(&self, id: u64, port: u16) -> SocketAddr {
        SocketAddr::from((self.peer_ip(id), port))
    }

    /// `10.199.C.0/24` of the client links, for the report.
    pub fn describe(&self) -> String {
        format!(
            "network namespaces {PREFIX}-{}-*: peers on {}.{}.{}.0/24 (bridge), clients on 10.199.{}.0/24",
            self.pid, PEER_SUBNET[0], PEER_SUBNET[1], PEER_SUBNET[2], self.client_subnet
        )
    }

    /// Cuts node `id` off from its peers (its bridge port goes down).
    pub fn isolate(&self, id: u64) -> Result<(), NetError> {
        ip(&["-n", &self.hub(), "link", "set", &hub_port(id), "down"]).map(drop)
    }

    /// Reconnects node `id` to its peers.
    pub fn heal(&self, id: u64) -> Result<(), NetError> {
        ip(&["-n", &self.hub(), "link", "set", &hub_port(id), "up"]).map(drop)
    }

    /// Removes the links and namespaces (idempotent; errors are ignored:
    /// whatever does not exist needs no removing). Returns what it removed.
    pub fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut removed = Vec::new();
        for id in 1..=self.nodes.max(1) {
            let link = self.host_link(id);
            if ip(&["link", "del", &link]).is_ok() {
                removed.push(link);
            }
        }
        let mut names: Vec<String> = (1..=self.nodes).map(|id| self.ns_name(id)).collect();
        names.push(self.hub());
        for ns in names {
            kill_processes_in(&ns);
            if ip(&["netns", "del", &ns]).is_ok() {
                removed.push(ns);
            }
        }
        removed
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn hub_port(id: u64) -> String {
    format!("n{id}")
}

/// SIGKILLs every process in namespace `ns` (SIGKILL also ends stopped ones).
fn kill_processes_in(ns: &str) {
    let Ok(out) = ip(&["netns", "pids", ns]) else {
        return;
    };
    for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        // SAFETY: kill(2) has no memory-safety preconditions. The pid was
        // just listed as living in a namespace only this harness creates.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// A 10.199.C.0/24 no host address or route mentions, starting from one
/// derived from `pid` (so concurrent harnesses start apart).
fn free_client_subnet(pid: u32) -> Result<u8, NetError> {
    let used = format!(
        "{}\n{}",
        ip(&["-o", "-4", "addr", "show"])?,
        ip(&["-4", "route", "show", "table", "all"])?
    );
    let start = pid % 254;
    (0..254u32)
        .map(|i| ((start + i) % 254 + 1) as u8)
        .find(|c| !used.contains(&format!("10.199.{c}.")))
        .ok_or(NetError::NoSubnet)
}

/// Whether process `pid` exists and is not a zombie (a killed harness whose
/// parent does not reap it stays a zombie, and its pid stays taken).
pub fn alive(pid: u32) -> bool {
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        return !matches!(state, Some("Z" | "X"));
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The harness pid in a name this harness creates (`rkc-P-...` or `rkcPc..`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    if digits.is_empty() || !(after.starts_with('-') || after.starts_with('c')) {
        return None;
    }
    digits.parse().ok()
}

/// Removes namespaces and host links left by harness processes that no
/// longer run (killed before they could clean up), killing any node
/// process still inside. Returns what it removed. Needs root; does nothing
/// (and returns nothing) without.
pub fn cleanup_stale() -> Vec<String> {
    let me = std::process::id();
    let stale = |name: &str| owner_pid(name).is_some_and(|p| p != me && !alive(p));
    let mut removed = Vec::new();
    if let Ok(out) = ip(&["-o", "link", "show"]) {
        for line in out.lines() {
            // "12: rkc123c1@if2: <...>"
            let Some(name) = line.split(':').nth(1) else {
                continue;
            };
            let name = name.trim().split('@').next().unwrap_or("");
            if stale(name) && ip(&["link", "del", name]).is_ok() {
                removed.push(name.to_string());
            }
        }
    }
    if let Ok(out) = ip(&["netns", "list"]) {
        for line in out.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if stale(name) {
                kill_processes_in(name);
                if ip(&["netns", "del", name]).is_ok() {
                    removed.push(name.to_string());
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_are_read_only_from_our_names() {
        assert_eq!(owner_pid("rkc-123-n1"), Some(123));
        assert_eq!(owner_pid("rkc-77-hub"), Some(77));
        assert_eq!(owner_pid("rkc4242c3"), Some(4242));
        assert_eq!(owner_pid("rkc-x-n1"), None);
        assert_eq!(owner_pid("rkc12"), None);
        assert_eq!(owner_pid("docker0"), None);
        assert_eq!(owner_pid("rkcfoo"), None);
    }

    #[test]
    fn our_own_pid_is_alive_and_a_huge_one_is_not() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        // Not reaped yet: it stays a zombie once it exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(child.id()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(child.id()));
        assert!(std::path::Path::new(&format!("/proc/{}", child.id())).exists());
        child.wait().expect("reap");
    }
}
