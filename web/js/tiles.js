// The call's video tiles and the presence list: one tile per participant
// with name, camera/mic state, connection state and a stats overlay.

import { overlayText } from "./stats.js";

/** The words shown for a peer connection's state. */
const CONNECTION_WORDS = {
  new: "connecting",
  connecting: "connecting",
  connected: "connected",
  disconnected: "connection interrupted",
  failed: "connection failed",
  closed: "closed",
};

export class Tiles {
  /**
   * @param {HTMLElement} grid where the tiles go
   * @param {HTMLElement} people the presence list
   */
  constructor(grid, people) {
    this.grid = grid;
    this.people = people;
    this.tiles = new Map();
    this.showStats = false;
  }

  /** The local preview (muted, mirrored). */
  local(id, name, stream) {
    const tile = this.ensure(id, name, true);
    const video = tile.querySelector("video");
    video.muted = true;
    video.srcObject = stream;
    return tile;
  }

  /** A remote participant's tile, created on first use. */
  remote(id, name) {
    return this.ensure(id, name, false);
  }

  /** Shows a remote stream in its tile. */
  attach(id, stream) {
    const video = this.tiles.get(id)?.querySelector("video");
    if (video && video.srcObject !== stream) video.srcObject = stream;
  }

  /** Camera/microphone state as announced by the participant. */
  media(id, { mic_muted, camera_muted }) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.dataset.mic = mic_muted ? "muted" : "on";
    tile.dataset.camera = camera_muted ? "muted" : "on";
    tile.querySelector(".mic").textContent = mic_muted ? "mic off" : "mic on";
    tile.querySelector(".cam").textContent = camera_muted ? "camera off" : "camera on";
    this.presence();
  }

  /** The peer connection's state, and its statistics. */
  connection(id, link) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.dataset.connection = link.state;
    tile.querySelector(".conn").textContent = CONNECTION_WORDS[link.state] ?? link.state;
    tile.querySelector(".stats").textContent = overlayText(link.stats);
    this.presence();
  }

  /** A participant whose signaling dropped: the server holds its seat. */
  reconnecting(id, away) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    if (away) tile.dataset.reconnecting = "true";
    else delete tile.dataset.reconnecting;
    this.presence();
  }

  /** A line of `state` channel text under the name. */
  status(id, text) {
    const status = this.tiles.get(id)?.querySelector(".status");
    if (status) status.textContent = text.slice(0, 120);
  }

  toggleStats() {
    this.showStats = !this.showStats;
    for (const tile of this.tiles.values()) {
      tile.querySelector(".stats").hidden = !this.showStats || tile.classList.contains("local");
    }
    return this.showStats;
  }

  remove(id) {
    this.tiles.get(id)?.remove();
    this.tiles.delete(id);
    this.presence();
  }

  clear() {
    for (const id of [...this.tiles.keys()]) this.remove(id);
  }

  // ---- internals ----

  ensure(id, name, local) {
    let tile = this.tiles.get(id);
    if (!tile) {
      tile = document.createElement("figure");
      tile.className = local ? "tile local" : "tile remote";
      tile.dataset.peer = id;
      const video = document.createElement("video");
      video.autoplay = true;
      video.playsInline = true;
      const caption = document.createElement("figcaption");
      for (const part of ["name", "mic", "cam", "conn", "status"]) {
        const span = document.createElement("span");
        span.className = part;
        caption.append(span);
      }
      const stats = document.createElement("pre");
      stats.className = "stats";
      stats.hidden = !this.showStats || local;
      const off = document.createElement("div");
      off.className = "camera-off";
      off.textContent = "Camera off";
      tile.append(video, off, caption, stats);
      this.grid.append(tile);
      this.tiles.set(id, tile);
    }
    tile.querySelector(".name").textContent = local ? `${name} (you)` : name;
    tile.dataset.name = name;
    this.presence();
    return tile;
  }

  /** The presence list mirrors the tiles. */
  presence() {
    const items = [...this.tiles.values()].map((tile) => {
      const item = document.createElement("li");
      item.dataset.peer = tile.dataset.peer;
      const state = [tile.querySelector(".mic").textContent, tile.querySelector(".cam").textContent];
      if (tile.dataset.reconnecting) state.push("reconnecting…");
      else if (tile.dataset.connection && tile.dataset.connection !== "connected") {
        state.push(CONNECTION_WORDS[tile.dataset.connection] ?? tile.dataset.connection);
      }
      item.textContent = `${tile.querySelector(".name").textContent} · ${state.filter(Boolean).join(" · ")}`;
      return item;
    });
    this.people.replaceChildren(...items);
    const count = document.querySelector("#count");
    if (count) count.textContent = String(items.length);
  }
}
