// Per-peer call statistics from RTCPeerConnection.getStats(): counters for
// the tests and the overlay, rates computed between two samples.

/**
 * Counters and rates for one peer connection; with `belongs`, only the
 * inbound tracks it accepts (through an SFU: one publisher's).
 */
export function summarize(report, previous, belongs = null) {
  const now = {
    at: performance.now(),
    video: { bytesReceived: 0, packetsReceived: 0, packetsLost: 0, framesDecoded: 0, codec: "", width: 0 },
    audio: { bytesReceived: 0, packetsReceived: 0, packetsLost: 0, codec: "" },
    sent: { videoBytes: 0, audioBytes: 0, videoPackets: 0, audioPackets: 0 },
    rttMs: null,
    pair: null,
  };
  const codecs = new Map();
  for (const stat of report.values()) if (stat.type === "codec") codecs.set(stat.id, stat.mimeType);
  let selectedPair = null;
  for (const stat of report.values()) {
    const mine = belongs === null || belongs(stat);
    if (stat.type === "inbound-rtp" && (stat.kind === "video" || stat.kind === "audio") && mine) {
      const into = now[stat.kind];
      into.bytesReceived += stat.bytesReceived ?? 0;
      into.packetsReceived += stat.packetsReceived ?? 0;
      into.packetsLost += Math.max(0, stat.packetsLost ?? 0);
      if (stat.kind === "video") {
        into.framesDecoded += stat.framesDecoded ?? 0;
        into.width = Math.max(into.width, stat.frameWidth ?? 0);
      }
      if (stat.codecId && codecs.has(stat.codecId)) into.codec = codecs.get(stat.codecId);
    } else if (stat.type === "outbound-rtp") {
      const video = stat.kind === "video";
      now.sent[video ? "videoBytes" : "audioBytes"] += stat.bytesSent ?? 0;
      now.sent[video ? "videoPackets" : "audioPackets"] += stat.packetsSent ?? 0;
    } else if (stat.type === "transport" && stat.selectedCandidatePairId) {
      selectedPair = report.get(stat.selectedCandidatePairId);
    }
  }
  if (selectedPair) {
    now.rttMs = selectedPair.currentRoundTripTime != null ? selectedPair.currentRoundTripTime * 1000 : null;
    const local = report.get(selectedPair.localCandidateId);
    const remote = report.get(selectedPair.remoteCandidateId);
    now.pair = { local: local?.candidateType ?? "?", remote: remote?.candidateType ?? "?" };
  }
  now.rates = rates(now, previous);
  return now;
}

function rates(now, previous) {
  if (!previous) return { videoKbps: 0, audioKbps: 0, lossPercent: 0 };
  const seconds = Math.max(0.001, (now.at - previous.at) / 1000);
  const kbps = (kind) => (Math.max(0, now[kind].bytesReceived - previous[kind].bytesReceived) * 8) / 1000 / seconds;
  const received = now.video.packetsReceived + now.audio.packetsReceived -
    previous.video.packetsReceived - previous.audio.packetsReceived;
  const lost = now.video.packetsLost + now.audio.packetsLost - previous.video.packetsLost - previous.audio.packetsLost;
  const lossPercent = received + lost > 0 ? (Math.max(0, lost) * 100) / (received + lost) : 0;
  return { videoKbps: kbps("video"), audioKbps: kbps("audio"), lossPercent };
}

/** The overlay's lines for one peer. */
export function overlayText(stats) {
  if (!stats) return "no statistics yet";
  const r = stats.rates;
  const rtt = stats.rttMs == null ? "–" : `${stats.rttMs.toFixed(0)} ms`;
  const codecs = [stats.video.codec, stats.audio.codec].filter(Boolean).map((c) => c.split("/")[1]).join(" + ");
  return [
    `video ${r.videoKbps.toFixed(0)} kbit/s · audio ${r.audioKbps.toFixed(0)} kbit/s`,
    `RTT ${rtt} · loss ${r.lossPercent.toFixed(1)} %`,
    `codec ${codecs || "–"} · ${stats.video.framesDecoded} frames`,
    stats.pair ? `path ${stats.pair.local} ↔ ${stats.pair.remote}` : "path –",
  ].join("\n");
}
