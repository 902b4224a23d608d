// One remote participant: its RTCPeerConnection, its two data channels, and
// the negotiation with it.
//
// The rules are the shared ones of negotiation.js (the mirror of the Rust
// negotiator's rules, both replaying rtc/fixtures/negotiation.json), so
// browsers, Rust peers and the SFU interoperate:
// - one side makes every offer: the newcomer in a mesh, the SFU in an SFU
//   room; the other answers;
// - a colliding offer anyway: of each pair, the peer whose id sorts greater
//   is polite (it rolls back its own offer), the other ignores it;
// - the offerer creates the data channels `chat` (reliable, ordered) and
//   `state` (unordered, no retransmits); the answerer accepts them by label;
// - an offerer offers to receive every kind it does not send, or the
//   answerer could never send that kind.
// - when ICE stays disconnected (1 s) or fails, the side that made the first
//   offer (the ICE-controlling side) restarts it (restartIce: a new offer
//   with new ICE credentials), and again every 5 s until it is back, since
//   the offer may be lost while signaling is down too;
// - an offer with no answer after 10 s is made again.
// Every signaling input for a link is applied in arrival order through one
// promise chain.

import { client } from "./protocol.js";
import { Clocks, collisionRule, iceKind, polite } from "./negotiation.js";
import { summarize } from "./stats.js";

/** The data channels of every link, by label. */
export const CHANNELS = {
  chat: { ordered: true },
  state: { ordered: false, maxRetransmits: 0 },
};
/** How often the statistics are sampled. */
export const STATS_INTERVAL_MS = 1000;
/** Data-channel messages kept per link for the page and its tests. */
const DATA_LOG = 200;

export class Link extends EventTarget {
  /**
   * @param {object} o
   * @param {string} o.me this participant's id
   * @param {string} o.remote the other participant's id
   * @param {boolean} o.offerer true for the side that makes the offers
   * @param {RTCIceServer[]} o.iceServers from the welcome
   * @param {boolean} o.relayOnly gather relay (TURN) candidates only
   * @param {MediaStream} o.stream local tracks (possibly none)
   * @param {(message: object) => boolean} o.send signaling
   * Events: "change" (state, tracks, stats), "data" (detail: {label, text}),
   * "problem" (detail: a sentence).
   */
  constructor({ me, remote, offerer, iceServers, relayOnly = false, stream, send }) {
    super();
    this.remote = remote;
    this.polite = polite(me, remote);
    this.send = send;
    this.pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relayOnly ? "relay" : "all" });
    this.makingOffer = false;
    this.ignoreOffer = false;
    // The answerer's first offer comes from the other side.
    this.mayOffer = offerer;
    // The offerer's clocks (negotiation.js): it restarts ICE, being the
    // ICE-controlling side (webrtc-rs keeps its ICE role across restarts
    // while browsers give it to whoever offers the restart, so a restart
    // from the answerer would leave both ends in one role), and it makes an
    // unanswered offer again.
    this.clocks = new Clocks(offerer);
    this.clockTimer = null;
    this.origin = performance.now();
    this.pending = [];
    this.chain = Promise.resolve();
    this.channels = new Map();
    this.dataLog = [];
    this.remoteStream = new MediaStream();
    this.byStream = new Map();
    this.lastReport = null;
    this.perPublisher = new Map();
    this.trackOwner = new Map();
    this.stats = null;
    this.closed = false;
    // ICE restarts this side made, in all (for the page and its tests).
    this.iceRestarts = 0;

    const pc = this.pc;
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    if (offerer) {
      const sending = new Set(stream.getTracks().map((t) => t.kind));
      for (const kind of ["audio", "video"]) {
        if (!sending.has(kind)) pc.addTransceiver(kind, { direction: "recvonly" });
      }
      for (const [label, init] of Object.entries(CHANNELS)) this.watchChannel(pc.createDataChannel(label, init));
    } else {
      pc.ondatachannel = ({ channel }) => {
        if (channel.label in CHANNELS) this.watchChannel(channel);
      };
    }
    pc.onnegotiationneeded = () => this.enqueue(() => this.offer());
    pc.onicecandidate = ({ candidate }) => {
      const to = this.remote;
      // A null candidate is the browser's end of gathering; an empty
      // candidate string is a per-section end marker, relayed as is.
      this.send(candidate ? client.candidate({ to, candidate: candidate.toJSON() }) : client.end_of_candidates({ to }));
    };
    pc.ontrack = ({ track, streams }) => {
      this.remoteStream.addTrack(track);
      // Through an SFU, a track's stream id is its publisher's peer id.
      const streamId = streams[0]?.id;
      // Statistics name the receiving track, whose id the browser may have
      // made up itself: remember whose stream each track is.
      if (streamId) this.trackOwner.set(track.id, streamId);
      if (streamId) {
        if (!this.byStream.has(streamId)) this.byStream.set(streamId, new MediaStream());
        this.byStream.get(streamId).addTrack(track);
      }
      track.onended = () => {
        this.remoteStream.removeTrack(track);
        if (streamId) this.byStream.get(streamId)?.removeTrack(track);
        this.changed();
      };
      this.changed();
    };
    pc.onconnectionstatechange = () => this.changed();
    pc.oniceconnectionstatechange = () => this.iceChanged();
    this.statsTimer = setInterval(() => this.sample(), STATS_INTERVAL_MS);
  }

  /** "new", "connecting", "connected", "disconnected", "failed" or "closed". */
  get state() {
    return this.pc.connectionState;
  }

  /** A relayed offer or answer. */
  description(description) {
    this.enqueue(async () => {
      const pc = this.pc;
      const collision = description.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
      this.ignoreOffer = collision && collisionRule(this.polite, true) === "ignore";
      if (this.ignoreOffer) return;
      // On a collision the polite side's setRemoteDescription rolls its own
      // offer back implicitly.
      await pc.setRemoteDescription(description);
      if (description.type === "answer") {
        this.clocks.answered();
        this.schedule();
      }
      for (const candidate of this.pending.splice(0)) await this.addCandidate(candidate);
      if (description.type === "offer") {
        this.mayOffer = true;
        await pc.setLocalDescription();
        this.send(client.answer({ to: this.remote, description: pc.localDescription }));
      }
    });
  }

  /** A relayed candidate: applied once the remote description is in. */
  candidate(candidate) {
    this.enqueue(async () => {
      if (!this.pc.remoteDescription) this.pending.push(candidate);
      else await this.addCandidate(candidate);
    });
  }

  /** The remote has no more candidates. */
  endOfCandidates() {
    this.enqueue(async () => {
      if (this.pc.remoteDescription) await this.pc.addIceCandidate().catch(() => {});
    });
  }

  /** Fresh ICE servers (new TURN credentials) for later gathering and ICE restarts. */
  setIceServers(iceServers) {
    if (!this.closed) this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
  }

  /** Sends text on a data channel; false if it is not open. */
  sendData(label, text) {
    const channel = this.channels.get(label);
    if (channel?.readyState !== "open") return false;
    channel.send(text);
    return true;
  }

  /** Samples the statistics now. */
  async sample() {
    if (this.closed) return this.stats;
    const report = await this.pc.getStats();
    this.lastReport = report;
    this.stats = summarize(report, this.stats);
    for (const publisher of this.byStream.keys()) {
      const belongs = (stat) => this.trackOwner.get(stat.trackIdentifier) === publisher;
      this.perPublisher.set(publisher, summarize(report, this.perPublisher.get(publisher), belongs));
    }
    this.changed();
    return this.stats;
  }

  close() {
    this.closed = true;
    clearInterval(this.statsTimer);
    clearTimeout(this.clockTimer);
    for (const track of this.remoteStream.getTracks()) track.stop();
    this.pc.close();
    this.changed();
  }

  // ---- internals ----

  iceChanged() {
    this.clocks.onIce(iceKind(this.pc.iceConnectionState), this.now());
    this.schedule();
    this.changed();
  }

  now() {
    return performance.now() - this.origin;
  }

  /** Arms one timer for the clocks' next deadline. */
  schedule() {
    clearTimeout(this.clockTimer);
    const next = this.clocks.next();
    if (next === null || this.closed) return;
    this.clockTimer = setTimeout(() => this.tick(), Math.max(0, next - this.now()));
  }

  tick() {
    if (this.closed) return;
    const due = this.clocks.fire(this.now());
    if (due?.restartIce) this.restartIce();
    if (due?.offerAgain) this.offerAgain();
    this.schedule();
  }

  /** Offers with new ICE credentials (the clocks try again until ICE is back). */
  restartIce() {
    this.iceRestarts += 1;
    this.enqueue(async () => {
      // An offer of ours that was never answered (lost with the network)
      // would hold the restart back: start over from stable.
      if (this.pc.signalingState === "have-local-offer") await this.pc.setLocalDescription({ type: "rollback" });
      this.mayOffer = true;
      this.pc.restartIce();
    });
  }

  /** Our offer got no answer: withdraw it and make it again. */
  offerAgain() {
    this.enqueue(async () => {
      if (this.pc.signalingState !== "have-local-offer") return;
      await this.pc.setLocalDescription({ type: "rollback" });
      await this.offer();
    });
  }

  async offer() {
    if (!this.mayOffer || this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.send(client.offer({ to: this.remote, description: this.pc.localDescription }));
      this.clocks.offerSent(this.now());
      this.schedule();
    } finally {
      this.makingOffer = false;
    }
  }

  async addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (error) {
      // A candidate for an offer we ignored is expected to fail; any other
      // failure is a bug worth seeing (a call may still connect through a
      // peer-reflexive candidate and hide it).
      if (!this.ignoreOffer) this.problem(`a candidate was rejected: ${error.message}`);
    }
  }

  watchChannel(channel) {
    this.channels.set(channel.label, channel);
    channel.onopen = () => this.changed();
    channel.onclose = () => this.changed();
    channel.onmessage = ({ data }) => {
      const text = typeof data === "string" ? data : "[binary]";
      this.dataLog.push({ label: channel.label, text });
      if (this.dataLog.length > DATA_LOG) this.dataLog.shift();
      this.dispatchEvent(new CustomEvent("data", { detail: { label: channel.label, text } }));
    };
  }

  enqueue(step) {
    this.chain = this.chain.then(step).catch((error) => this.problem(error.message || String(error)));
  }

  problem(text) {
    if (this.closed) return;
    console.warn(`link ${this.remote}: ${text}`);
    this.dispatchEvent(new CustomEvent("problem", { detail: text }));
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }
}
