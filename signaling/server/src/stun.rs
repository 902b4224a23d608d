//! The embedded STUN binding server (RFC 8489 Binding only), so that the
//! default set-up gives clients a server-reflexive address with no external
//! service. TURN relaying stays with coturn (see `turn-config/`).
//!
//! [`answer`] is pure: bytes and a source address in, bytes out. The task
//! around it reads datagrams until shutdown.

use crate::telemetry::Telemetry;
use std::net::SocketAddr;
use std::sync::Arc;
use stun_rs::attributes::stun::{Fingerprint, Software, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Largest datagram read. A Binding request is 20 bytes plus a few
/// attributes; anything longer than a path MTU is not STUN we answer.
pub const MAX_DATAGRAM: usize = 1500;

/// Largest answer: header, XOR-MAPPED-ADDRESS (IPv6), SOFTWARE, FINGERPRINT.
const MAX_ANSWER: usize = 128;

/// What the server tells clients it is (RFC 8489 SOFTWARE).
const SOFTWARE: &str = "switchboard";

/// The Binding success response to `packet` from `from`, or `None` for
/// anything that is not a well-formed Binding request (ignored silently, as
/// RFC 8489 asks of a server that receives garbage: no amplification, no
/// oracle).
pub fn answer(packet: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let decoder = MessageDecoderBuilder::default().build();
    let (request, _) = decoder.decode(packet).ok()?;
    if request.method() != BINDING || request.class() != MessageClass::Request {
        return None;
    }
    let response = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(*request.transaction_id())
        .with_attribute(XorMappedAddress::from(from))
        .with_attribute(Software::new(SOFTWARE).ok()?)
        .with_attribute(Fingerprint::default())
        .build();
    let mut buffer = [0u8; MAX_ANSWER];
    let size = MessageEncoderBuilder::default().build().encode(&mut buffer, &response).ok()?;
    Some(buffer[..size].to_vec())
}

/// Answers Binding requests on `socket` until `stop` turns true.
pub async fn run(socket: UdpSocket, telemetry: Arc<Telemetry>, mut stop: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, from) = tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here on Linux: not fatal.
                Err(_) => continue,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        match answer(&buffer[..len], from) {
            Some(reply) => {
                telemetry.stun_answered.increment(1);
                let _ = socket.send_to(&reply, from).await;
            }
            None => telemetry.stun_ignored.increment(1),
        }
    }
}

/// The `stun:` URL for a host and port (IPv6 literals in brackets).
pub fn url(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("stun:[{host}]:{port}")
    } else {
        format!("stun:{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_rs::TransactionId;

    fn binding_request(class: MessageClass) -> (Vec<u8>, TransactionId) {
        let id = TransactionId::default();
        let msg = StunMessageBuilder::new(BINDING, class).with_transaction_id(id).build();
        let mut buffer = [0u8; 64];
        let size = MessageEncoderBuilder::default().build().encode(&mut buffer, &msg).unwrap();
        (buffer[..size].to_vec(), id)
    }

    #[test]
    fn answers_a_binding_request_with_the_source_address() {
        let from: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let (request, id) = binding_request(MessageClass::Request);
        let reply = answer(&request, from).expect("an answer");
        let (msg, _) = MessageDecoderBuilder::default().build().decode(&reply).unwrap();
        assert_eq!(msg.class(), MessageClass::SuccessResponse);
        assert_eq!(*msg.transaction_id(), id);
        let mapped = msg.get::<XorMappedAddress>().unwrap().as_xor_mapped_address().unwrap();
        assert_eq!(*mapped.socket_address(), from);
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        assert!(answer(&request, v6).is_some());
    }

    #[test]
    fn ignores_everything_else() {
        let from: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        assert_eq!(answer(b"", from), None);
        assert_eq!(answer(&[0u8; 19], from), None);
        assert_eq!(answer(&[0xffu8; 200], from), None);
        let (indication, _) = binding_request(MessageClass::Indication);
        assert_eq!(answer(&indication, from), None);
        let (response, _) = binding_request(MessageClass::SuccessResponse);
        assert_eq!(answer(&response, from), None, "never answer an answer (reflection loops)");
    }

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(url("127.0.0.1", 3478), "stun:127.0.0.1:3478");
        assert_eq!(url("::1", 3478), "stun:[::1]:3478");
        assert_eq!(url("stun.example.org", 3478), "stun:stun.example.org:3478");
    }
}
