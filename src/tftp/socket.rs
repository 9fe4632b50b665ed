//! Sockets of the TFTP service: the listening socket (requests arrive here, with IP_PKTINFO /
//! IPV6_PKTINFO telling which local address they were sent to) and one connected ephemeral
//! socket per transfer, bound to that same local address so that replies come from the
//! address the client talked to, whatever interface it arrived on.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Requested receive buffer of the listening socket: a boot storm arrives in bursts.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Why the TFTP service could not start.
#[derive(Debug, thiserror::Error)]
pub enum TftpBindError {
    #[error("failed to open the TFTP socket on {address}")]
    Socket {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the TFTP root is not usable")]
    Root(#[source] crate::fsroot::ConfinedRootError),
}

/// A request datagram as received.
pub struct Received {
    pub length: usize,
    pub peer: SocketAddr,
    /// The local address the datagram was sent to (from the packet info), when known.
    pub local: Option<IpAddr>,
}

/// The listening socket.
pub struct ListenSocket {
    socket: UdpSocket,
    local_addr: SocketAddr,
}

impl ListenSocket {
    /// Open and bind. Must run inside a tokio runtime.
    pub fn bind(address: SocketAddr) -> Result<ListenSocket, TftpBindError> {
        let error = |source| TftpBindError::Socket { address, source };
        let domain = socket2::Domain::for_address(address);
        let socket =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
                .map_err(error)?;
        let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
        if address.is_ipv4() {
            setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
                .map_err(|e| error(std::io::Error::from(e)))?;
        } else {
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
                .map_err(|e| error(std::io::Error::from(e)))?;
        }
        socket.set_nonblocking(true).map_err(error)?;
        socket.bind(&address.into()).map_err(error)?;
        let socket = UdpSocket::from_std(socket.into()).map_err(error)?;
        let local_addr = socket.local_addr().map_err(error)?;
        Ok(ListenSocket { socket, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Receive one datagram into `buffer` (longer datagrams are truncated).
    pub async fn receive(&self, buffer: &mut [u8]) -> std::io::Result<Received> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .async_io(Interest::READABLE, || {
                let mut control = nix::cmsg_space!(libc::in6_pktinfo, libc::in_pktinfo);
                let mut iov = [IoSliceMut::new(buffer)];
                let message = recvmsg::<SockaddrStorage>(
                    fd,
                    &mut iov,
                    Some(&mut control),
                    MsgFlags::MSG_DONTWAIT,
                )
                .map_err(std::io::Error::from)?;
                let mut local = None;
                if let Ok(messages) = message.cmsgs() {
                    for control in messages {
                        match control {
                            ControlMessageOwned::Ipv4PacketInfo(info) => {
                                let destination =
                                    Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                                // A request sent to a broadcast address is answered from the
                                // interface's own address.
                                local = Some(IpAddr::V4(
                                    if destination.is_broadcast() || destination.is_multicast() {
                                        Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr))
                                    } else {
                                        destination
                                    },
                                ));
                            }
                            ControlMessageOwned::Ipv6PacketInfo(info) => {
                                local = Some(
                                    IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr))
                                        .to_canonical(),
                                );
                            }
                            _ => {}
                        }
                    }
                }
                let peer = message
                    .address
                    .as_ref()
                    .and_then(socket_addr)
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "datagram without a source address",
                        )
                    })?;
                Ok(Received {
                    length: message.bytes,
                    peer,
                    local,
                })
            })
            .await
    }

    /// Send a datagram from the listening socket (used for errors that need no transfer).
    pub async fn send_to(&self, payload: &[u8], peer: SocketAddr) -> std::io::Result<()> {
        self.socket.send_to(payload, peer).await.map(|_| ())
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()));
    }
    let v6 = address.as_sockaddr_in6()?;
    Some(SocketAddr::new(
        IpAddr::V6(v6.ip()).to_canonical(),
        v6.port(),
    ))
}

/// A transfer's own socket: bound to `local` on an ephemeral port (the server's transfer ID,
/// RFC 1350 section 4) and connected to the client, so the kernel drops datagrams from any
/// other source. Returns the socket and the path MTU the kernel knows for the route, if any.
pub fn transfer_socket(
    local: IpAddr,
    peer: SocketAddr,
) -> std::io::Result<(UdpSocket, Option<u32>)> {
    let domain = socket2::Domain::for_address(peer);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(local, 0).into())?;
    socket.connect(&peer.into())?;
    let mtu = path_mtu(&socket, peer.is_ipv4());
    let socket = UdpSocket::from_std(socket.into())?;
    Ok((socket, mtu))
}

/// IP_MTU / IPV6_MTU of a connected socket: the MTU of the route to the peer.
fn path_mtu(socket: &socket2::Socket, ipv4: bool) -> Option<u32> {
    let (level, name) = if ipv4 {
        (libc::IPPROTO_IP, libc::IP_MTU)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    };
    let mut value: libc::c_int = 0;
    let mut length = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).ok()?;
    // SAFETY: getsockopt writes at most `length` bytes into `value`, which is that large.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &mut length,
        )
    };
    if result != 0 {
        return None;
    }
    u32::try_from(value).ok().filter(|mtu| *mtu > 0)
}
