// The call page: a session joins one room, keeps one Link per remote
// participant, and routes every server message to the part of the page it
// concerns. `window.switchboard` is the session, for the console and tests.

import { ERROR_TEXT, LEAVE_REASONS, client } from "./protocol.js";
import { Signaling } from "./signaling.js";
import { makesOffers } from "./negotiation.js";
import { Session as ClientSession, refusal } from "./session.js";
import { Link } from "./link.js";
import { ChatPanel } from "./chat.js";
import { Tiles } from "./tiles.js";
import { acquireLocalMedia, mediaState, setEnabled } from "./media.js";

/** Message types that count as events of the session. */

const $ = (selector) => document.querySelector(selector);
/** How long the "reconnected" banner stays up. */
const RECONNECTED_BANNER_MS = 3000;
/** The tile key of the local preview. */
const LOCAL = "local";
/** Join refusals that send the user back to the lobby instead of retrying. */
const REFUSALS = new Set(["room_full", "unauthorized", "token_expired", "too_many_rooms", "invalid_message"]);
/** Problems kept for the page's diagnostics (and the tests). */
const MAX_PROBLEMS = 50;
/** Share of the TURN credentials' lifetime after which fresh ones are asked for. */
const ICE_REFRESH_AT = 0.8;

class Session {
  /** @param {{ relayOnly: boolean }} options `relayOnly`: ICE through TURN only (diagnosis, privacy). */
  constructor({ relayOnly = false } = {}) {
    this.relayOnly = relayOnly;
    this.mode = "mesh";
    this.iceTimer = null;
    this.me = null;
    this.room = null;
    this.peers = new Map();
    this.links = new Map();
    this.iceServers = [];
    this.stream = new MediaStream();
    this.signaling = null;
    this.joined = false;
    // The session's rules (session.js): resume token, event count, resends.
    this.session = null;
    this.away = new Set();
    this.problems = [];
    this.bannerTimer = null;
    this.tiles = new Tiles($("#tiles"), $("#people"));
    this.chat = new ChatPanel({
      root: $("#chat"),
      send: (m) => this.signal(m),
      nameOf: (id) => this.nameOf(id),
    });
    this.chat.onUnread = (count) => showUnread(count);
  }

  /** Asks for camera and microphone, then connects and joins. */
  async start({ room, name, token }) {
    this.room = room;
    this.name = name;
    this.token = token;
    const { stream, problem } = await acquireLocalMedia();
    this.stream = stream;
    showCall(room);
    const notice = $("#media-error");
    notice.hidden = !problem;
    notice.textContent = problem ?? "";
    this.tiles.local(LOCAL, name, stream);
    this.tiles.media(LOCAL, mediaState(stream));
    this.updateButtons();
    this.session = new ClientSession({ room, name, token });
    this.signaling = new Signaling(this.session);
    this.signaling.addEventListener("open", () => this.sendJoin());
    this.signaling.addEventListener("message", (event) => this.receive(event.detail));
    this.signaling.addEventListener("down", (event) => this.down(event.detail));
    this.signaling.addEventListener("invalid", (event) => this.problem(`signaling: ${event.detail}`));
    this.signaling.open();
  }

  /** Leaves the room for good. */
  leave(message = "You left the call.") {
    if (this.signaling?.connected) this.signaling.socket.send(JSON.stringify(client.leave()));
    this.signaling?.close();
    this.closeLinks();
    clearTimeout(this.iceTimer);
    for (const track of this.stream.getTracks()) track.stop();
    this.tiles.clear();
    this.chat.dispose();
    this.joined = false;
    this.me = null;
    hideBanner();
    showLobby(message);
  }

  toggle(kind) {
    const on = !this.stream.getTracks().some((t) => t.kind === kind && t.enabled);
    if (!setEnabled(this.stream, kind, on)) return;
    const state = mediaState(this.stream);
    this.tiles.media(LOCAL, state);
    this.updateButtons();
    this.signal(client.media(state));
  }

  /**
   * A snapshot for tests and the console: fresh statistics per participant
   * (in an SFU room, of the tracks the SFU forwards from each).
   */
  async snapshot() {
    for (const link of this.links.values()) await link.sample();
    const sfu = this.sfuLink();
    const peers = {};
    for (const [id, info] of this.peers) {
      const link = this.mode === "sfu" ? sfu : this.links.get(id);
      if (!link || info.role === "sfu") continue;
      peers[id] = {
        name: info.name,
        state: link.state,
        reconnecting: Boolean(info.reconnecting),
        iceRestarts: link.iceRestarts,
        stats: this.mode === "sfu" ? (link.perPublisher.get(id) ?? null) : link.stats,
        channels: Object.fromEntries([...link.channels].map(([label, c]) => [label, c.readyState])),
        data: link.dataLog,
      };
    }
    const base = { me: this.me, room: this.room, mode: this.mode, joined: this.joined, problems: this.problems };
    return { ...base, peers, sfu: sfu ? { state: sfu.state, stats: sfu.stats } : null };
  }

  /** Sends `text` on a data channel to one peer (or everyone); how many got it. */
  sendData(label, text, to = null) {
    let sent = 0;
    for (const [id, link] of this.links) if ((to === null || to === id) && link.sendData(label, text)) sent += 1;
    return sent;
  }

  // ---- signaling ----

  signal(message) {
    return this.signaling?.send(message) ?? false;
  }

  /** Joins, or resumes the session when it has one and `resume`. */
  sendJoin(resume = true) {
    const join = this.session.joinMessage(resume);
    this.signaling.sendNow({ ...join, id: "join", media: mediaState(this.stream) });
  }

  receive(m) {
    this.handle(m);
  }

  handle(m) {
    switch (m.type) {
      case "welcome":
        return this.welcome(m);
      case "peer_joined":
        this.addPeer(m.peer, makesOffers(this.mode === "sfu", false, false));
        return m.peer.role === "sfu" ? undefined : this.chat.system(`${m.peer.name} joined.`);
      case "peer_left":
        return this.removePeer(m.peer_id, m.reason);
      case "peer_updated":
        this.peers.set(m.peer.id, m.peer);
        this.tiles.media(m.peer.id, m.peer.media);
        this.reconnecting(m.peer);
        return this.chat.read(m.peer.id, m.peer.read_seq ?? 0);
      case "offer":
      case "answer":
        return this.linkFor(m.from)?.description(m.description);
      case "candidate":
        return this.linkFor(m.from)?.candidate(m.candidate);
      case "end_of_candidates":
        return this.linkFor(m.from)?.endOfCandidates();
      case "chat":
        this.chat.add(m);
        return this.maybeMarkRead();
      case "chat_history":
        return this.chat.history(m);
      case "typing":
        return m.from === this.me ? undefined : this.chat.setTyping(m.from, m.active);
      case "read":
        return this.chat.read(m.from, m.seq);
      case "error":
        return this.error(m);
      case "ice_servers":
        this.iceServers = m.ice_servers;
        for (const link of this.links.values()) link.setIceServers(m.ice_servers);
        return this.scheduleIceRefresh(m.ice_servers_ttl_s);
      case "going_away":
        this.banner("The server is restarting. Reconnecting…", "down");
        return this.signaling.moveTo(m.reconnect_url, m.retry_after_ms);
      default:
        return undefined; // pong
    }
  }

  welcome(w) {
    this.joined = true;
    this.session.welcomed(w);
    this.iceServers = w.ice_servers;
    this.scheduleIceRefresh(w.ice_servers_ttl_s);
    this.signaling.configure({
      pingIntervalMs: w.ping_interval_ms,
      messagesPerSecond: w.limits.messages_per_second,
      burst: w.limits.message_burst,
    });
    if (w.resumed) {
      // Same id, same links: the events missed meanwhile follow in order.
      for (const link of this.links.values()) link.setIceServers(w.ice_servers);
      this.chat.joined(w);
    } else {
      // A fresh session has a new id: the others dropped (or will drop)
      // their links to the old one, so start every link afresh as the
      // newcomer.
      this.closeLinks();
      for (const id of [...this.tiles.tiles.keys()]) if (id !== LOCAL) this.tiles.remove(id);
      this.me = w.you.id;
      this.mode = w.mode ?? "mesh";
      this.peers = new Map();
      this.away = new Set();
      this.chat.joined(w);
      // In a mesh the newcomer offers; in an SFU room the SFU makes every offer.
      for (const peer of w.peers) this.addPeer(peer, makesOffers(this.mode === "sfu", false, true));
    }
    this.signaling.ready();
    if (this.downSince) {
      this.downSince = null;
      this.banner(w.resumed ? "Reconnected." : "Reconnected (joined again).", "up");
      clearTimeout(this.bannerTimer);
      this.bannerTimer = setTimeout(hideBanner, RECONNECTED_BANNER_MS);
    }
    this.maybeMarkRead();
  }

  /** Shows a participant whose connection dropped as reconnecting, and back. */
  reconnecting(peer) {
    const was = this.away.has(peer.id);
    if (Boolean(peer.reconnecting) === was) return;
    if (peer.reconnecting) this.away.add(peer.id);
    else this.away.delete(peer.id);
    this.tiles.reconnecting(peer.id, Boolean(peer.reconnecting));
    this.chat.system(peer.reconnecting ? `${peer.name} is reconnecting…` : `${peer.name} is back.`);
  }

  error(m) {
    if (refusal(m.code, this.session.canResume) === "join_afresh") {
      // The server no longer has the session (it restarted, or the grace
      // ran out): join as a new participant.
      return this.sendJoin(false);
    }
    const text = ERROR_TEXT[m.code] ?? m.message;
    if (!this.joined && REFUSALS.has(m.code)) {
      this.leave(`${text} (${m.message})`);
      return;
    }
    if (m.code === "replaced") {
      this.leave(text);
      return;
    }
    // A relay to someone who has just left races with their peer_left.
    if (m.code === "unknown_peer") return;
    this.problem(`${m.code}: ${m.message}`);
    if (m.code !== "rate_limited") this.chat.system(text);
  }

  down({ retryInMs, reason }) {
    // Until the next welcome a refusal means the room is gone for us (for
    // example it filled up meanwhile).
    this.joined = false;
    this.downSince ??= Date.now();
    const seconds = Math.max(1, Math.round(retryInMs / 1000));
    this.banner(`${reason} Reconnecting in ${seconds} s… Calls already connected keep going.`, "down");
  }

  /** Asks for fresh TURN credentials before the current ones expire. */
  scheduleIceRefresh(ttlSeconds) {
    clearTimeout(this.iceTimer);
    if (!ttlSeconds) return;
    this.iceTimer = setTimeout(() => this.signal(client.ice_servers({ id: "ice" })), ttlSeconds * 1000 * ICE_REFRESH_AT);
  }

  // ---- peers ----

  /**
   * A new member: a tile for a participant, and a peer connection with it
   * (mesh) or, in an SFU room, with the SFU alone.
   */
  addPeer(info, offerer) {
    this.peers.set(info.id, info);
    const isSfu = info.role === "sfu";
    if (!isSfu) {
      this.tiles.remote(info.id, info.name);
      this.tiles.media(info.id, info.media);
      this.chat.read(info.id, info.read_seq ?? 0);
    }
    if (this.mode === "sfu" && !isSfu) {
      this.refreshSfuTiles();
      return null;
    }
    const link = new Link({
      me: this.me,
      remote: info.id,
      offerer,
      iceServers: this.iceServers,
      relayOnly: this.relayOnly,
      stream: this.stream,
      send: (m) => this.signal(m),
    });
    link.addEventListener("change", () => {
      if (isSfu) return this.refreshSfuTiles();
      this.tiles.attach(info.id, link.remoteStream);
      return this.tiles.connection(info.id, link);
    });
    link.addEventListener("data", ({ detail }) => {
      if (isSfu) return this.sfuData(detail);
      if (detail.label === "chat") return this.chat.direct(info.id, detail.text);
      return this.tiles.status(info.id, detail.text);
    });
    link.addEventListener("problem", ({ detail }) => this.problem(`${info.name}: ${detail}`));
    this.links.set(info.id, link);
    return link;
  }

  /** The connection with the room's SFU, in an SFU room. */
  sfuLink() {
    const sfu = [...this.peers.values()].find((p) => p.role === "sfu");
    return sfu ? this.links.get(sfu.id) : undefined;
  }

  /** Every participant's tile shows what the SFU forwards from it. */
  refreshSfuTiles() {
    const link = this.sfuLink();
    for (const [id, info] of this.peers) {
      if (info.role === "sfu") continue;
      this.tiles.attach(id, link?.byStream.get(id) ?? null);
      this.tiles.connection(id, { state: link?.state ?? "new", stats: link?.perPublisher.get(id) ?? null });
    }
  }

  /**
   * In an SFU room: stops (or restarts) forwarding of one publisher's
   * `audio` or `video` to this page. Sent to the SFU on the `chat` channel.
   */
  setPaused(publisher, kind, paused) {
    const message = { type: paused ? "pause" : "resume", publisher, kind };
    return this.sfuLink()?.sendData("chat", JSON.stringify(message)) ?? false;
  }

  /** A hidden tab shows no video: in an SFU room, stop receiving it. */
  visibilityChanged() {
    if (this.mode === "sfu") {
      for (const [id, info] of this.peers) if (info.role !== "sfu") this.setPaused(id, "video", document.hidden);
    }
    this.maybeMarkRead();
  }

  /** The SFU relays `state` lines as {"from", "text"}. */
  sfuData({ label, text }) {
    if (label !== "state") return;
    try {
      const { from, text: line } = JSON.parse(text);
      if (typeof from === "string" && typeof line === "string") this.tiles.status(from, line);
    } catch {
      // Not from a Switchboard SFU: ignore.
    }
  }

  /** The link a relay is for; an offer from a known peer with none starts one. */
  linkFor(id) {
    if (!this.links.has(id) && this.peers.has(id)) this.addPeer(this.peers.get(id), false);
    return this.links.get(id);
  }

  removePeer(id, reason) {
    const name = this.nameOf(id);
    this.away.delete(id);
    const isSfu = this.peers.get(id)?.role === "sfu";
    this.links.get(id)?.close();
    this.links.delete(id);
    this.peers.delete(id);
    if (isSfu) {
      // Media pauses until the server's next SFU connects.
      this.refreshSfuTiles();
      return;
    }
    this.tiles.remove(id);
    this.chat.peerLeft(id);
    this.chat.system(`${name} ${LEAVE_REASONS[reason] ?? "left"}.`);
  }

  closeLinks() {
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }

  nameOf(id) {
    return this.peers.get(id)?.name ?? (id === this.me ? this.name : id);
  }

  // ---- page ----

  maybeMarkRead() {
    if (!$("#chat").hidden && document.visibilityState === "visible") this.chat.markRead();
  }

  updateButtons() {
    for (const [kind, button] of [["audio", $("#mic")], ["video", $("#camera")]]) {
      const tracks = this.stream.getTracks().filter((t) => t.kind === kind);
      const on = tracks.some((t) => t.enabled);
      button.disabled = tracks.length === 0;
      button.setAttribute("aria-pressed", String(!on));
      const what = kind === "audio" ? "microphone" : "camera";
      button.textContent = tracks.length === 0 ? `No ${what}` : on ? `Mute ${what}` : `Unmute ${what}`;
    }
  }

  banner(text, kind) {
    clearTimeout(this.bannerTimer);
    const banner = $("#banner");
    banner.textContent = text;
    banner.dataset.kind = kind;
    banner.hidden = false;
  }

  problem(text) {
    this.problems.push(text);
    if (this.problems.length > MAX_PROBLEMS) this.problems.shift();
    console.warn(text);
  }
}

function hideBanner() {
  $("#banner").hidden = true;
}

function showUnread(count) {
  const badge = $("#unread");
  badge.hidden = count === 0;
  badge.textContent = String(count);
}

function showCall(room) {
  $("#lobby").hidden = true;
  $("#call").hidden = false;
  $("#room-name").textContent = room;
  const link = `${location.origin}${location.pathname}?room=${encodeURIComponent(room)}`;
  $("#share").value = link;
  history.replaceState(null, "", link);
  document.title = `${room} · Switchboard`;
}

function showLobby(message) {
  $("#call").hidden = true;
  $("#lobby").hidden = false;
  $("#join").disabled = false;
  const error = $("#lobby-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  document.title = "Switchboard";
}

function wirePage() {
  const params = new URLSearchParams(location.search);
  $("#room").value = params.get("room") ?? "";
  $("#name").value = params.get("name") ?? localStorage.getItem("switchboard.name") ?? "";
  $("#token").value = params.get("token") ?? "";
  let session = null;
  $("#join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const room = $("#room").value.trim();
    const name = $("#name").value.trim();
    if (!room || !name) return;
    localStorage.setItem("switchboard.name", name);
    $("#join").disabled = true;
    $("#lobby-error").hidden = true;
    session = new Session({ relayOnly: params.get("relay") === "1" });
    window.switchboard = session;
    session.start({ room, name, token: $("#token").value.trim() || undefined });
  });
  $("#leave").addEventListener("click", () => session?.leave());
  $("#mic").addEventListener("click", () => session?.toggle("audio"));
  $("#camera").addEventListener("click", () => session?.toggle("video"));
  $("#stats-toggle").addEventListener("click", (event) => {
    const shown = session?.tiles.toggleStats();
    event.target.setAttribute("aria-pressed", String(Boolean(shown)));
  });
  $("#chat-toggle").addEventListener("click", () => {
    $("#chat").hidden = !$("#chat").hidden;
    session?.maybeMarkRead();
  });
  $("#copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("#share").value);
      $("#copy").textContent = "Copied";
    } catch {
      $("#share").select();
    }
  });
  document.addEventListener("visibilitychange", () => session?.visibilityChanged());
  // Tell the room we left on purpose rather than let it see a dropped link.
  window.addEventListener("pagehide", () => {
    if (session?.signaling?.connected) session.signaling.socket.send(JSON.stringify(client.leave()));
  });
}

wirePage();
