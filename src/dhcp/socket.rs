//! The UDP socket of one served interface: bound to port 67 (or 4011) with SO_REUSEADDR,
//! SO_BROADCAST and SO_BINDTODEVICE, receiving with IP_PKTINFO (the local address and
//! interface a datagram arrived on) and sending with IP_PKTINFO (the source address and
//! egress interface of a reply, so a broadcast leaves through the interface it answers).
//!
//! Also finds an interface's IPv4 address and subnet. No policy here.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use ipnet::Ipv4Net;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Requested receive buffer (bytes).
const RECEIVE_BUFFER: usize = 4 << 20;

/// Why an interface cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum DhcpBindError {
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("interface {0} has no IPv4 address")]
    NoAddress(String),
    #[error("failed to list the interface addresses")]
    Interfaces(#[source] nix::Error),
    #[error("failed to open a UDP socket on {interface} port {port}")]
    Socket {
        interface: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// The first IPv4 address and subnet of an interface.
pub fn interface_address(name: &str) -> Result<(Ipv4Addr, Ipv4Net), DhcpBindError> {
    if nix::net::if_::if_nametoindex(name).is_err() {
        return Err(DhcpBindError::NoSuchInterface(name.to_string()));
    }
    for entry in nix::ifaddrs::getifaddrs().map_err(DhcpBindError::Interfaces)? {
        if entry.interface_name != name {
            continue;
        }
        let (Some(address), Some(netmask)) = (
            entry.address.as_ref().and_then(|a| a.as_sockaddr_in()),
            entry.netmask.as_ref().and_then(|m| m.as_sockaddr_in()),
        ) else {
            continue;
        };
        let address = address.ip();
        let prefix = u8::try_from(u32::from(netmask.ip()).count_ones()).unwrap_or(32);
        if let Ok(subnet) = Ipv4Net::new(address, prefix) {
            return Ok((address, subnet.trunc()));
        }
    }
    Err(DhcpBindError::NoAddress(name.to_string()))
}

/// A received datagram.
pub struct Received {
    pub length: usize,
    pub source: SocketAddrV4,
    /// The destination address of the datagram (ours, or a broadcast address).
    pub destination: Option<Ipv4Addr>,
    pub interface_index: Option<u32>,
}

/// The socket of one interface.
pub struct InterfaceSocket {
    pub interface: String,
    pub interface_index: u32,
    pub port: u16,
    socket: UdpSocket,
}

impl InterfaceSocket {
    /// Open and bind. Must run inside a tokio runtime.
    pub fn bind(interface: &str, port: u16) -> Result<InterfaceSocket, DhcpBindError> {
        let socket_error = |source| DhcpBindError::Socket {
            interface: interface.to_string(),
            port,
            source,
        };
        let interface_index = nix::net::if_::if_nametoindex(interface)
            .map_err(|_| DhcpBindError::NoSuchInterface(interface.to_string()))?;
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(socket_error)?;
        socket.set_reuse_address(true).map_err(socket_error)?;
        socket.set_broadcast(true).map_err(socket_error)?;
        // A boot storm arrives in bursts; a larger buffer rides them out instead of dropping.
        // The kernel caps it at net.core.rmem_max, which is fine.
        let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(socket_error)?;
        setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
            .map_err(|error| socket_error(std::io::Error::from(error)))?;
        socket.set_nonblocking(true).map_err(socket_error)?;
        let address = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        socket.bind(&address.into()).map_err(socket_error)?;
        let socket = UdpSocket::from_std(socket.into()).map_err(socket_error)?;
        Ok(InterfaceSocket {
            interface: interface.to_string(),
            interface_index,
            port,
            socket,
        })
    }

    /// Receive one datagram into `buffer`.
    pub async fn receive(&self, buffer: &mut [u8]) -> std::io::Result<Received> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .async_io(Interest::READABLE, || {
                let mut control = nix::cmsg_space!(libc::in_pktinfo);
                let mut iov = [IoSliceMut::new(buffer)];
                let message =
                    recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut control), MsgFlags::MSG_DONTWAIT)
                        .map_err(std::io::Error::from)?;
                let mut destination = None;
                let mut interface_index = None;
                if let Ok(messages) = message.cmsgs() {
                    for control in messages {
                        if let ControlMessageOwned::Ipv4PacketInfo(info) = control {
                            destination = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
                            interface_index = u32::try_from(info.ipi_ifindex).ok();
                        }
                    }
                }
                let source = message
                    .address
                    .map(|address| SocketAddrV4::new(address.ip(), address.port()))
                    .unwrap_or_else(|| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
                Ok(Received {
                    length: message.bytes,
                    source,
                    destination,
                    interface_index,
                })
            })
            .await
    }

    /// [`InterfaceSocket::send`] without waiting: `WouldBlock` when the socket buffer is full.
    pub fn try_send(
        &self,
        payload: &[u8],
        destination: SocketAddrV4,
        source_address: Ipv4Addr,
    ) -> std::io::Result<()> {
        self.socket.try_io(Interest::WRITABLE, || {
            self.send_now(payload, destination, source_address)
        })
    }

    /// Send `payload` to `destination` from `source_address` out of this interface.
    pub async fn send(
        &self,
        payload: &[u8],
        destination: SocketAddrV4,
        source_address: Ipv4Addr,
    ) -> std::io::Result<()> {
        self.socket
            .async_io(Interest::WRITABLE, || {
                self.send_now(payload, destination, source_address)
            })
            .await
    }

    /// One non-blocking `sendmsg` with IP_PKTINFO.
    fn send_now(
        &self,
        payload: &[u8],
        destination: SocketAddrV4,
        source_address: Ipv4Addr,
    ) -> std::io::Result<()> {
        let info = packet_info(self.interface_index, source_address);
        let control = [ControlMessage::Ipv4PacketInfo(&info)];
        sendmsg(
            self.socket.as_raw_fd(),
            &[IoSlice::new(payload)],
            &control,
            MsgFlags::MSG_DONTWAIT,
            Some(&SockaddrIn::from(destination)),
        )
        .map(|_| ())
        .map_err(std::io::Error::from)
    }
}

/// IP_PKTINFO for a reply: leave through `interface_index` from `source_address`.
fn packet_info(interface_index: u32, source_address: Ipv4Addr) -> libc::in_pktinfo {
    libc::in_pktinfo {
        ipi_ifindex: i32::try_from(interface_index).unwrap_or(0),
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(source_address).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    }
}
