//! Telling a VP8 keyframe from the RTP payload, without decoding: the SFU
//! checks that a new subscriber got one, the headless peer counts them and
//! seeks its clip to one.

/// Whether an RTP payload (RFC 7741) starts a VP8 keyframe: the payload
/// descriptor says "start of partition 0", and the VP8 frame header's
/// inverse keyframe bit is 0.
pub fn is_rtp_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x0f);
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else { return false };
        at += 1;
        if x & 0x80 != 0 {
            // Picture id: 7 bits, or 15 when its first bit (M) is set.
            let Some(&pid) = payload.get(at) else { return false };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID / KEYIDX
        }
    }
    payload.get(at).is_some_and(|header| is_frame_keyframe(std::slice::from_ref(header)))
}

/// Whether a whole VP8 frame (as in an IVF file) is a keyframe: the first
/// bit of its frame tag is 0.
pub fn is_frame_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|tag| tag & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_with_and_without_extensions() {
        // S=1, PID=0, no extension; frame tag with P=0 (keyframe).
        assert!(is_rtp_keyframe(&[0x10, 0x50, 0x01]));
        // Same, inter frame (P=1).
        assert!(!is_rtp_keyframe(&[0x10, 0x51, 0x01]));
        // Not the start of a partition.
        assert!(!is_rtp_keyframe(&[0x00, 0x50]));
        // X=1 with I=1 and a 15-bit picture id (webrtc-rs and browsers).
        assert!(is_rtp_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x50]));
        assert!(!is_rtp_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x51]));
        // X=1 with I (7-bit id), L and T.
        assert!(is_rtp_keyframe(&[0x90, 0xe0, 0x05, 0x07, 0x20, 0x50]));
        // Truncated payloads are not keyframes.
        assert!(!is_rtp_keyframe(&[]));
        assert!(!is_rtp_keyframe(&[0x90, 0x80]));
        assert!(is_frame_keyframe(&[0x50]) && !is_frame_keyframe(&[0x51]) && !is_frame_keyframe(&[]));
    }
}
