//! Media sections the remote rejected stay rejected (JSEP 5.2.2: a rejected
//! m= section is offered again with port 0 until it is recycled under a new
//! mid). webrtc-rs 0.17 offers such a section again with port 9 and the same
//! mid, which a stack that follows JSEP refuses ("Transceiver with mid=0 not
//! found" in aiortc), and it refuses a local description that differs from
//! the offer it made. So the negotiator notes the mids an answer rejects and
//! sends its later offers with those sections at port 0 and out of the
//! BUNDLE group; its own local description stays as webrtc-rs made it.

/// The mids of the media sections `sdp` rejects (port 0).
pub fn rejected_mids(sdp: &str) -> Vec<String> {
    sections(sdp)
        .1
        .iter()
        .filter(|lines| lines.first().and_then(|m| m.split(' ').nth(1)) == Some("0"))
        .filter_map(|lines| mid_of(lines))
        .collect()
}

/// `sdp` with the sections of `mids` rejected: port 0, and not in BUNDLE.
pub fn keep_rejected(sdp: &str, mids: &[String]) -> String {
    let (session, media) = sections(sdp);
    let mut out: Vec<String> = session
        .iter()
        .map(|line| match line.strip_prefix("a=group:BUNDLE ") {
            Some(tags) => {
                let kept: Vec<&str> = tags.split(' ').filter(|t| !mids.iter().any(|m| m == t)).collect();
                format!("a=group:BUNDLE {}", kept.join(" "))
            }
            None => (*line).to_owned(),
        })
        .collect();
    for lines in media {
        let reject = mid_of(&lines).is_some_and(|mid| mids.contains(&mid));
        for (i, line) in lines.iter().enumerate() {
            if i == 0 && reject {
                let mut parts: Vec<&str> = line.split(' ').collect();
                if parts.len() > 1 {
                    parts[1] = "0";
                }
                out.push(parts.join(" "));
            } else {
                out.push((*line).to_owned());
            }
        }
    }
    let mut text = out.join("\r\n");
    text.push_str("\r\n");
    text
}

/// The session lines, and the lines of each media section (from its `m=`).
fn sections(sdp: &str) -> (Vec<&str>, Vec<Vec<&str>>) {
    let mut session = Vec::new();
    let mut media: Vec<Vec<&str>> = Vec::new();
    for line in sdp.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            media.push(vec![line]);
        } else if let Some(section) = media.last_mut() {
            section.push(line);
        } else {
            session.push(line);
        }
    }
    (session, media)
}

fn mid_of(lines: &[&str]) -> Option<String> {
    lines.iter().find_map(|l| l.strip_prefix("a=mid:")).map(|m| m.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\na=group:BUNDLE 0 1 2\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";

    #[test]
    fn an_answer_rejecting_sections_names_their_mids() {
        let answer = "v=0\r\ns=-\r\na=group:BUNDLE 2\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                      m=video 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:1\r\nm=application 9 UDP/DTLS/SCTP x\r\na=mid:2\r\n";
        assert_eq!(rejected_mids(answer), ["0", "1"]);
        assert!(rejected_mids(OFFER).is_empty());
    }

    #[test]
    fn later_offers_keep_rejected_sections_at_port_0_and_out_of_bundle() {
        let sent = keep_rejected(OFFER, &["1".to_owned()]);
        assert!(sent.contains("a=group:BUNDLE 0 2\r\n"), "{sent}");
        assert!(sent.contains("m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1"), "{sent}");
        assert!(sent.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111"), "{sent}");
        assert_eq!(keep_rejected(OFFER, &[]), OFFER);
    }
}
