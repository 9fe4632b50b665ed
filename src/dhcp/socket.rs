//! The UDP socket of one served interface: bound to port 67 (or 4011) with SO_REUSEADDR,
//! SO_BROADCAST and SO_BINDTODEVICE, receiving with IP_PKTINFO (the local address and
//! interface a datagram arrived on) and sending with IP_PKTINFO (the source address and
//! egress interface of a reply, so a broadcast leaves through the interface it answers).
//!
//! Datagrams are received and replies sent many at a time (`recvmmsg`, `sendmmsg`), without
//! blocking: the DHCP worker thread ([`super::worker`]) waits for readiness itself. The
//! sockets are deliberately not registered with the tokio reactor, so a packet wakes only
//! that thread.
//!
//! Also finds an interface's IPv4 address and subnet. No policy here.

use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

use ipnet::Ipv4Net;
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn, sendmsg, setsockopt, sockopt};

use crate::proto::dhcp::MAX_MESSAGE_LENGTH;

/// Requested receive buffer (bytes).
const RECEIVE_BUFFER: usize = 4 << 20;
/// Most datagrams taken by one `recvmmsg` (and replies sent by one `sendmmsg`).
pub const BATCH: usize = 32;
/// Room for one IP_PKTINFO control message, in `u64`s so that it is suitably aligned.
const CONTROL_WORDS: usize = 8;

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

/// A received datagram's addressing.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub length: usize,
    pub source: SocketAddrV4,
    /// The destination address of the datagram (ours, or a broadcast address).
    pub destination: Option<Ipv4Addr>,
    pub interface_index: Option<u32>,
}

/// Buffers for one `recvmmsg`: [`BATCH`] datagrams with their source and IP_PKTINFO.
pub struct ReceiveBatch {
    buffers: Vec<[u8; MAX_MESSAGE_LENGTH + 1]>,
    received: Vec<Received>,
}

impl Default for ReceiveBatch {
    fn default() -> ReceiveBatch {
        ReceiveBatch {
            buffers: vec![[0; MAX_MESSAGE_LENGTH + 1]; BATCH],
            received: Vec::with_capacity(BATCH),
        }
    }
}

impl ReceiveBatch {
    /// The datagrams of the last receive, with their addressing.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], &Received)> {
        self.received
            .iter()
            .zip(&self.buffers)
            .map(|(received, buffer)| (buffer.get(..received.length).unwrap_or_default(), received))
    }
}

/// A reply to send: payload, destination, and the local address to send it from.
pub struct Outgoing {
    pub payload: Vec<u8>,
    pub destination: SocketAddrV4,
    pub source_address: Ipv4Addr,
}

/// The socket of one interface.
pub struct InterfaceSocket {
    pub interface: String,
    pub interface_index: u32,
    pub port: u16,
    socket: std::net::UdpSocket,
}

impl InterfaceSocket {
    /// Open and bind (non-blocking).
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
        // A boot storm arrives in bursts, and the worker does not read while it syncs the lease
        // journal: a larger buffer rides both out instead of dropping. The kernel caps
        // SO_RCVBUF at net.core.rmem_max; root (as a DHCP server usually is) may go beyond.
        let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
        if socket.recv_buffer_size().unwrap_or(0) < RECEIVE_BUFFER {
            let _ = setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER);
        }
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(socket_error)?;
        setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
            .map_err(|error| socket_error(std::io::Error::from(error)))?;
        socket.set_nonblocking(true).map_err(socket_error)?;
        let address = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        socket.bind(&address.into()).map_err(socket_error)?;
        Ok(InterfaceSocket {
            interface: interface.to_string(),
            interface_index,
            port,
            socket: socket.into(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Take up to [`BATCH`] waiting datagrams into `batch` with one `recvmmsg`; 0 when none is
    /// waiting.
    pub fn receive_batch(&self, batch: &mut ReceiveBatch) -> std::io::Result<usize> {
        batch.received.clear();
        let mut messages = Messages::zeroed();
        for (iovec, buffer) in messages.iovecs.iter_mut().zip(batch.buffers.iter_mut()) {
            *iovec = libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            };
        }
        let headers = messages.link(BATCH);
        let length = u32::try_from(BATCH).unwrap_or(1);
        // SAFETY: `link` pointed every header into `messages` and `batch.buffers`, sized as
        // declared and alive (and not moved) until the call returns; the kernel writes only
        // within the declared lengths.
        let result = unsafe {
            libc::recvmmsg(
                self.fd(),
                headers,
                length,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let count = match usize::try_from(result) {
            Ok(count) => count,
            Err(_) => {
                let error = std::io::Error::last_os_error();
                return if error.kind() == std::io::ErrorKind::WouldBlock {
                    Ok(0)
                } else {
                    Err(error)
                };
            }
        };
        for (message, name) in messages.headers.iter().zip(&messages.names).take(count) {
            let (destination, interface_index) = packet_info_of(&message.msg_hdr);
            let source = SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
                u16::from_be(name.sin_port),
            );
            batch.received.push(Received {
                length: usize::try_from(message.msg_len).unwrap_or(0),
                source,
                destination,
                interface_index,
            });
        }
        Ok(count)
    }

    /// Send `replies` with as few `sendmmsg` calls as it takes. Returns how many could not be
    /// sent, with the first error.
    pub fn send_batch(&self, replies: &[Outgoing]) -> (usize, Option<std::io::Error>) {
        let mut failed = 0;
        let mut first_error = None;
        for chunk in replies.chunks(BATCH) {
            let mut from = 0;
            while from < chunk.len() {
                match self.send_some(chunk.get(from..).unwrap_or_default()) {
                    Ok(sent) => from += sent.max(1),
                    Err(error) => {
                        // The first message of the rest failed: skip it, go on with the others.
                        failed += 1;
                        from += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        (failed, first_error)
    }

    /// One `sendmmsg` of `replies` (at most [`BATCH`]): how many were sent.
    fn send_some(&self, replies: &[Outgoing]) -> std::io::Result<usize> {
        let count = replies.len().min(BATCH);
        let mut messages = Messages::zeroed();
        for ((name, iovec), reply) in messages
            .names
            .iter_mut()
            .zip(messages.iovecs.iter_mut())
            .zip(replies)
        {
            *name = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: reply.destination.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*reply.destination.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            *iovec = libc::iovec {
                // sendmmsg only reads through this pointer.
                iov_base: reply.payload.as_ptr().cast_mut().cast(),
                iov_len: reply.payload.len(),
            };
        }
        messages.link(count);
        for (message, reply) in messages.headers.iter_mut().zip(replies).take(count) {
            let header = &mut message.msg_hdr;
            let info = packet_info(self.interface_index, reply.source_address);
            // SAFETY: `link` pointed the header at its control buffer, which is large enough
            // and aligned for one in_pktinfo message (CMSG_SPACE of 12 bytes is 32 on 64-bit
            // Linux, the buffer is 64).
            unsafe {
                let control = libc::CMSG_FIRSTHDR(std::ptr::from_ref(header));
                (*control).cmsg_level = libc::IPPROTO_IP;
                (*control).cmsg_type = libc::IP_PKTINFO;
                (*control).cmsg_len = libc::CMSG_LEN(socklen::<libc::in_pktinfo>()) as libc::size_t;
                std::ptr::write_unaligned(libc::CMSG_DATA(control).cast(), info);
                header.msg_controllen =
                    libc::CMSG_SPACE(socklen::<libc::in_pktinfo>()) as libc::size_t;
            }
        }
        let headers = messages.headers.as_mut_ptr();
        let length = u32::try_from(count).unwrap_or(0);
        // SAFETY: the first `count` headers point into `messages` and the replies' payloads,
        // all alive (and not moved) until the call returns; the kernel only reads them.
        let result = unsafe { libc::sendmmsg(self.fd(), headers, length, libc::MSG_DONTWAIT) };
        usize::try_from(result).map_err(|_| std::io::Error::last_os_error())
    }

    /// Send one datagram now (probes): one non-blocking `sendmsg` with IP_PKTINFO.
    pub fn send_now(
        &self,
        payload: &[u8],
        destination: SocketAddrV4,
        source_address: Ipv4Addr,
    ) -> std::io::Result<()> {
        let info = packet_info(self.interface_index, source_address);
        let control = [ControlMessage::Ipv4PacketInfo(&info)];
        sendmsg(
            self.fd(),
            &[IoSlice::new(payload)],
            &control,
            MsgFlags::MSG_DONTWAIT,
            Some(&SockaddrIn::from(destination)),
        )
        .map(|_| ())
        .map_err(std::io::Error::from)
    }
}

/// The arrays one `recvmmsg` or `sendmmsg` call points into: per message a source or
/// destination address, a control buffer for IP_PKTINFO and one iovec.
struct Messages {
    names: [libc::sockaddr_in; BATCH],
    controls: [[u64; CONTROL_WORDS]; BATCH],
    iovecs: [libc::iovec; BATCH],
    headers: [libc::mmsghdr; BATCH],
}

impl Messages {
    fn zeroed() -> Messages {
        // SAFETY: every field is an array of plain C structs or integers, for which all-zero
        // bytes are valid values (null pointers, zero lengths).
        unsafe { std::mem::zeroed() }
    }

    /// Point the first `count` headers at their address, control buffer and iovec, and return
    /// the headers for the system call. Call right before it: `self` must not move until the
    /// call returns.
    fn link(&mut self, count: usize) -> *mut libc::mmsghdr {
        let (names, controls, iovecs) = (
            self.names.as_mut_ptr(),
            self.controls.as_mut_ptr(),
            self.iovecs.as_mut_ptr(),
        );
        for (slot, message) in self.headers.iter_mut().take(count).enumerate() {
            let header = &mut message.msg_hdr;
            header.msg_name = names.wrapping_add(slot).cast();
            header.msg_namelen = socklen::<libc::sockaddr_in>();
            header.msg_iov = iovecs.wrapping_add(slot);
            header.msg_iovlen = 1;
            header.msg_control = controls.wrapping_add(slot).cast();
            header.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>();
        }
        self.headers.as_mut_ptr()
    }
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0)
}

/// The IP_PKTINFO of a received message: its destination address and ingress interface.
fn packet_info_of(header: &libc::msghdr) -> (Option<Ipv4Addr>, Option<u32>) {
    // SAFETY: `header` was filled by recvmmsg: its control pointer and length describe the
    // control messages the kernel wrote, which CMSG_FIRSTHDR/CMSG_NXTHDR walk within bounds.
    unsafe {
        let mut control = libc::CMSG_FIRSTHDR(header);
        while !control.is_null() {
            if (*control).cmsg_level == libc::IPPROTO_IP && (*control).cmsg_type == libc::IP_PKTINFO
            {
                let info: libc::in_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(control).cast());
                return (
                    Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))),
                    u32::try_from(info.ipi_ifindex).ok(),
                );
            }
            control = libc::CMSG_NXTHDR(header, control);
        }
    }
    (None, None)
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
