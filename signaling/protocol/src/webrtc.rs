//! WebRTC payloads in the browser's own shapes, relayed without looking inside.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// SDP text kept exactly as it arrived: a JSON string literal, escapes and
/// all. The server relays descriptions without reading them, so it never
/// unescapes ~2 KB of SDP only to escape it again; peers that need the text
/// call [`Sdp::text`]. Its `Debug` form shows only the length, so SDP cannot
/// reach a log through a `{:?}`.
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct Sdp(Box<RawValue>);

impl Sdp {
    /// Wraps SDP text.
    pub fn new(text: &str) -> Self {
        // A &str always serializes to a valid JSON string literal.
        let literal = serde_json::to_string(text).unwrap_or_else(|_| unreachable!("strings serialize"));
        Self(RawValue::from_string(literal).unwrap_or_else(|_| unreachable!("a string literal is valid JSON")))
    }

    /// The SDP text, unescaped. Never fails: every `Sdp` was checked to
    /// hold a JSON string that unescapes to valid Unicode when it was made
    /// (see the `Deserialize` impl), so the empty fallback is unreachable;
    /// it is there so that a bug here fails a negotiation, not a process.
    pub fn text(&self) -> String {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }

    /// The JSON string literal, quotes and escapes included.
    pub fn json(&self) -> &str {
        self.0.get()
    }
}

impl<'de> Deserialize<'de> for Sdp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if !raw.get().starts_with('"') {
            return Err(serde::de::Error::custom("sdp must be a string"));
        }
        // A raw value is not unescaped, so a `\u` escape may name a lone
        // UTF-16 surrogate (`"v=0\ud800"`), which is valid JSON but no
        // Unicode text: every peer would fail to read it. Only literals
        // with such an escape are unescaped to check (SDP has none as a
        // rule), so the relay still never unescapes ordinary SDP.
        if raw.get().contains("\\u") && serde_json::from_str::<String>(raw.get()).is_err() {
            return Err(serde::de::Error::custom("sdp must be valid Unicode text (a lone surrogate escape is not)"));
        }
        Ok(Self(raw))
    }
}

impl PartialEq for Sdp {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get() || self.text() == other.text()
    }
}

impl Eq for Sdp {}

impl fmt::Debug for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sdp(<{} bytes>)", self.0.get().len())
    }
}

/// The kind of a session description (`RTCSdpType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// An offer.
    Offer,
    /// A provisional answer.
    Pranswer,
    /// A final answer.
    Answer,
    /// A rollback (never relayed: it is local to a peer connection).
    Rollback,
}

/// `RTCSessionDescriptionInit`: `{ "type": "offer", "sdp": "v=0..." }`.
///
/// The server never parses the SDP; it only checks that the `type` matches
/// the message that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// `offer`, `answer` or `pranswer`.
    #[serde(rename = "type")]
    pub kind: SdpType,
    /// The SDP text, relayed verbatim.
    pub sdp: Sdp,
}

/// `RTCIceCandidateInit`, with the browser's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:` attribute line. An empty string is the browser's
    /// per-section end-of-candidates marker and is relayed as is.
    pub candidate: String,
    /// The media stream identification tag of the section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The index of the media section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE username fragment the candidate belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// `RTCIceServer`: a STUN or TURN server and, for TURN, its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_round_trips_verbatim_and_unescapes_on_demand() {
        let json = r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}"#;
        let d: SessionDescription = serde_json::from_str(json).expect("parses");
        assert_eq!(d.sdp.text(), "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n");
        assert_eq!(serde_json::to_string(&d).expect("serializes"), json);
        assert_eq!(d.sdp, Sdp::new("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"));
        assert!(!format!("{d:?}").contains("127.0.0.1"), "Debug must not show SDP");
    }

    #[test]
    fn sdp_with_a_lone_surrogate_is_refused_and_a_pair_is_kept() {
        for bad in [r#""v=0\ud800""#, r#""v=0\udc00x""#, r#""\ud83dv=0""#] {
            let json = format!(r#"{{"type":"offer","sdp":{bad}}}"#);
            let err = serde_json::from_str::<SessionDescription>(&json).unwrap_err();
            assert!(err.to_string().contains("valid Unicode"), "{bad}: {err}");
        }
        let d: SessionDescription =
            serde_json::from_str(r#"{"type":"offer","sdp":"s=\ud83d\ude00 \\u"}"#).expect("a pair is text");
        assert_eq!(d.sdp.text(), "s=\u{1F600} \\u");
    }

    #[test]
    fn sdp_must_be_a_string() {
        let err = serde_json::from_str::<SessionDescription>(r#"{"type":"offer","sdp":42}"#).unwrap_err();
        assert!(err.to_string().contains("sdp must be a string"), "{err}");
    }
}
