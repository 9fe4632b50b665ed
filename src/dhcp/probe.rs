//! Auto mode: is another DHCP server answering on a segment?
//!
//! A probe is one DISCOVER sent from the interface's server socket the way a relay would send it
//! ([`crate::proto::dhcp::encode_probe_discover`]: `giaddr` = our address, so answers come back
//! to our port 67, the socket we already own), with a random locally administered `chaddr` kept
//! for the life of the service and a fresh `xid`. The receive loop hands every BOOTREPLY to
//! [`Prober::answer`]; an OFFER to the pending probe whose server identifier is not ours means a
//! foreign server serves the segment. No decision here beyond "who answered".

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::sync::oneshot;

use super::socket::InterfaceSocket;
use crate::proto::dhcp::{self as wire, MessageType, ServerReply};

/// How long a probe waits for answers.
pub const PROBE_WAIT: Duration = Duration::from_secs(2);

/// The probe state of one auto-mode interface, shared with its receive loop.
pub struct Prober {
    chaddr: [u8; 6],
    /// The xid of the probe in flight and where to report a foreign answer.
    pending: parking_lot::Mutex<Option<(u32, oneshot::Sender<Ipv4Addr>)>>,
}

/// Why a probe could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum DhcpProbeError {
    #[error("failed to encode the probe")]
    Encode(#[source] wire::DhcpEncodeError),
    #[error("failed to send the probe")]
    Send(#[source] std::io::Error),
}

impl Default for Prober {
    fn default() -> Prober {
        Prober::new()
    }
}

impl Prober {
    pub fn new() -> Prober {
        let mut chaddr: [u8; 6] = rand::random();
        // Locally administered, unicast: never a real NIC's address.
        chaddr[0] = (chaddr[0] & 0xfc) | 0x02;
        Prober {
            chaddr,
            pending: parking_lot::Mutex::new(None),
        }
    }

    /// Is `request` one of this prober's own DISCOVERs (looped back to our socket)?
    pub fn is_own(&self, request: &wire::DhcpRequest) -> bool {
        request.chaddr.as_slice() == self.chaddr
            && request.client_identifier.as_deref() == Some(wire::PROBE_CLIENT_IDENTIFIER)
    }

    /// Take a reply received on the server port. Returns whether it answered the pending
    /// probe from a server other than `ours` (`source` stands in for a missing server id).
    pub fn answer(&self, reply: &ServerReply, source: Ipv4Addr, ours: Ipv4Addr) -> bool {
        if reply.message_type != MessageType::Offer {
            return false;
        }
        let server = reply.server_identifier.unwrap_or(source);
        if server == ours {
            return false;
        }
        let mut pending = self.pending.lock();
        if pending.as_ref().is_some_and(|(xid, _)| *xid == reply.xid)
            && let Some((_, sender)) = pending.take()
        {
            let _ = sender.send(server);
            return true;
        }
        false
    }

    /// Send one probe on `socket` (whose address on the segment is `ours`) and wait up to
    /// `wait` for a foreign server's OFFER. Returns that server's address.
    pub async fn probe(
        &self,
        socket: &InterfaceSocket,
        ours: Ipv4Addr,
        wait: Duration,
    ) -> Result<Option<Ipv4Addr>, DhcpProbeError> {
        let xid: u32 = rand::random();
        let payload =
            wire::encode_probe_discover(xid, self.chaddr, ours).map_err(DhcpProbeError::Encode)?;
        let (sender, receiver) = oneshot::channel();
        *self.pending.lock() = Some((xid, sender));
        let destination = std::net::SocketAddrV4::new(Ipv4Addr::BROADCAST, wire::SERVER_PORT);
        if let Err(error) = socket.send_now(&payload, destination, ours) {
            *self.pending.lock() = None;
            return Err(DhcpProbeError::Send(error));
        }
        let answer = tokio::time::timeout(wait, receiver).await;
        *self.pending.lock() = None;
        Ok(answer.ok().and_then(Result::ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(xid: u32, server: Option<Ipv4Addr>, message_type: MessageType) -> ServerReply {
        ServerReply {
            xid,
            message_type,
            server_identifier: server,
        }
    }

    #[test]
    fn only_a_foreign_offer_to_the_pending_probe_counts() {
        let prober = Prober::new();
        let ours = Ipv4Addr::new(10, 0, 0, 1);
        let foreign = Some(Ipv4Addr::new(10, 0, 0, 2));
        let (sender, mut receiver) = oneshot::channel();
        *prober.pending.lock() = Some((42, sender));
        assert!(!prober.answer(&reply(41, foreign, MessageType::Offer), ours, ours));
        assert!(!prober.answer(&reply(42, Some(ours), MessageType::Offer), ours, ours));
        assert!(!prober.answer(&reply(42, foreign, MessageType::Ack), ours, ours));
        assert!(receiver.try_recv().is_err());
        assert!(prober.answer(&reply(42, foreign, MessageType::Offer), ours, ours));
        assert_eq!(receiver.try_recv().unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        // Answered once: a second OFFER finds nothing pending.
        assert!(!prober.answer(&reply(42, foreign, MessageType::Offer), ours, ours));
    }

    #[test]
    fn own_probes_are_recognised_by_chaddr_and_client_id() {
        let prober = Prober::new();
        let ours = Ipv4Addr::new(10, 0, 0, 1);
        let bytes = wire::encode_probe_discover(1, prober.chaddr, ours).unwrap();
        assert!(prober.is_own(&wire::decode_request(&bytes).unwrap()));
        let other = wire::encode_probe_discover(1, [2, 9, 9, 9, 9, 9], ours).unwrap();
        assert!(!prober.is_own(&wire::decode_request(&other).unwrap()));
        assert_eq!(prober.chaddr[0] & 0x03, 0x02);
    }
}
