//! Conversions between webrtc-rs types and the protocol's browser-shaped
//! JSON.

use switchboard_protocol::{IceCandidate, Sdp, SdpType, SessionDescription};
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::peer_connection::sdp::sdp_type::RTCSdpType;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;

/// Protocol description to webrtc-rs.
pub fn to_rtc(desc: &SessionDescription) -> anyhow::Result<RTCSessionDescription> {
    let sdp = desc.sdp.text();
    Ok(match desc.kind {
        SdpType::Offer => RTCSessionDescription::offer(sdp)?,
        SdpType::Answer => RTCSessionDescription::answer(sdp)?,
        SdpType::Pranswer => RTCSessionDescription::pranswer(sdp)?,
        SdpType::Rollback => {
            let mut rollback = RTCSessionDescription::default();
            rollback.sdp_type = RTCSdpType::Rollback;
            rollback
        }
    })
}

/// webrtc-rs description to the protocol's.
pub fn from_rtc(desc: &RTCSessionDescription) -> SessionDescription {
    let kind = match desc.sdp_type {
        RTCSdpType::Answer => SdpType::Answer,
        RTCSdpType::Pranswer => SdpType::Pranswer,
        RTCSdpType::Rollback => SdpType::Rollback,
        _ => SdpType::Offer,
    };
    SessionDescription { kind, sdp: Sdp::new(&desc.sdp) }
}

/// Protocol candidate to webrtc-rs.
pub fn candidate_to_rtc(c: &IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate.clone(),
        sdp_mid: c.sdp_mid.clone(),
        sdp_mline_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment.clone(),
    }
}

/// webrtc-rs candidate to the protocol's.
pub fn candidate_from_rtc(c: RTCIceCandidateInit) -> IceCandidate {
    IceCandidate {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_m_line_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
    }
}
