//! Free loopback ports for test servers.
//!
//! A port is found by binding `127.0.0.1:0` and releasing the socket, so another
//! process could in principle take it before the server binds it; server start-up
//! retries on new ports when a server exits during start-up.

use std::net::{TcpListener, UdpSocket};

/// Returns `count` distinct TCP ports on 127.0.0.1 that were free a moment ago.
///
/// All sockets are held until every port is chosen, so the ports differ.
pub fn free_tcp_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|error| panic!("cannot bind a TCP port on 127.0.0.1: {error}"))
        })
        .collect();
    listeners
        .iter()
        .map(|listener| local_port(listener.local_addr()))
        .collect()
}

/// Returns one TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    free_tcp_ports(1)[0]
}

/// Returns one UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .unwrap_or_else(|error| panic!("cannot bind a UDP port on 127.0.0.1: {error}"));
    local_port(socket.local_addr())
}

fn local_port(address: std::io::Result<std::net::SocketAddr>) -> u16 {
    address
        .unwrap_or_else(|error| panic!("cannot read a bound socket's address: {error}"))
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_one_call_are_distinct() {
        let mut ports = free_tcp_ports(5);
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 5);
    }
}
