// The signaling socket: one WebSocket, kept alive, paced to the server's
// rate limit, and reopened with backoff when it drops.
//
// It knows nothing about rooms: the session (app.js) sends `join` on every
// "open" event and decides what a message means.

import { WS_PATH, parseServer } from "./protocol.js";

/** First reconnect delay; it doubles per failed attempt. */
export const BACKOFF_BASE_MS = 500;
/** Longest wait between reconnect attempts. */
export const BACKOFF_CAP_MS = 15000;
/** Keepalive before the welcome says otherwise (the server's default). */
const DEFAULT_PING_INTERVAL_MS = 15000;
/** Share of the announced rate limit the client uses, so it never hits it. */
const RATE_SHARE = 0.9;
/** Messages waiting for rate tokens; past this the socket is overloaded. */
const MAX_QUEUED = 1000;

/** Delay before reconnect attempt `attempt` (0-based): exponential, capped, with jitter. */
export function backoffMs(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16));
  // "Equal jitter": at least half the ceiling, so a storm of clients spreads
  // out without any of them retrying at once.
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** The WebSocket URL of the server that served this page. */
export function defaultUrl(location = window.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${WS_PATH}`;
}

/**
 * Events: "open" (send your join now), "message" (detail: a checked server
 * message), "down" (detail: { retryInMs, reason }), "invalid" (detail: why a
 * frame was refused).
 */
export class Signaling extends EventTarget {
  constructor(url = defaultUrl()) {
    super();
    this.url = url;
    this.socket = null;
    this.attempt = 0;
    this.wanted = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pingIntervalMs = DEFAULT_PING_INTERVAL_MS;
    this.bucket = { tokens: 10, capacity: 10, perSecond: 10, last: performance.now() };
    this.queue = [];
    this.drainTimer = null;
  }

  /** Opens the socket, and keeps reopening it until `close()`. */
  open() {
    this.wanted = true;
    this.connect();
  }

  /** Closes for good: no reconnect. */
  close() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.dropSocket(1000, "left");
  }

  /** Reconnects after `delayMs` (a going-away notice), to `url` if given. */
  moveTo(url, delayMs) {
    if (url) this.url = url;
    this.dropSocket();
    this.scheduleRetry("The server is restarting.", delayMs);
  }

  /** Adopts the welcome's keepalive interval and rate limits. */
  configure({ pingIntervalMs, messagesPerSecond, burst }) {
    this.pingIntervalMs = pingIntervalMs;
    this.restartPing();
    const perSecond = Math.max(1, messagesPerSecond * RATE_SHARE);
    const capacity = Math.max(1, Math.floor(burst * RATE_SHARE));
    this.bucket = { tokens: capacity, capacity, perSecond, last: performance.now() };
  }

  /** True while the socket is open. */
  get connected() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  /** Sends a message, paced to the rate limit. False when not connected. */
  send(message) {
    if (!this.connected) return false;
    if (this.queue.length >= MAX_QUEUED) {
      this.dispatchEvent(new CustomEvent("invalid", { detail: "too many messages waiting to be sent" }));
      return false;
    }
    this.queue.push(JSON.stringify(message));
    this.drain();
    return true;
  }

  connect() {
    clearTimeout(this.retryTimer);
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.restartPing();
      this.dispatchEvent(new Event("open"));
    };
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      const { message, error } = parseServer(event.data);
      if (error) {
        this.dispatchEvent(new CustomEvent("invalid", { detail: error }));
        return;
      }
      this.dispatchEvent(new CustomEvent("message", { detail: message }));
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.dropSocket();
      const reason = event.code === 1006 ? "The connection to the server was lost." : "The server closed the connection.";
      this.scheduleRetry(reason);
    };
  }

  /** Stops the timers and closes the socket without reacting to its close. */
  dropSocket(code = undefined, reason = undefined) {
    clearInterval(this.pingTimer);
    clearTimeout(this.drainTimer);
    this.queue = [];
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.onclose = null;
      socket.onmessage = null;
      socket.close(code, reason);
    }
  }

  scheduleRetry(reason, atLeastMs = 0) {
    if (!this.wanted) return;
    const retryInMs = Math.max(atLeastMs, backoffMs(this.attempt));
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), retryInMs);
    this.dispatchEvent(new CustomEvent("down", { detail: { retryInMs, reason } }));
  }

  restartPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (this.connected) this.socket.send('{"type":"ping"}');
    }, this.pingIntervalMs);
  }

  /** Sends what the token bucket allows now; waits for the rest. */
  drain() {
    clearTimeout(this.drainTimer);
    const b = this.bucket;
    const now = performance.now();
    b.tokens = Math.min(b.capacity, b.tokens + ((now - b.last) / 1000) * b.perSecond);
    b.last = now;
    while (this.queue.length > 0 && b.tokens >= 1 && this.connected) {
      b.tokens -= 1;
      this.socket.send(this.queue.shift());
    }
    if (this.queue.length > 0) {
      const waitMs = Math.ceil(((1 - b.tokens) / b.perSecond) * 1000);
      this.drainTimer = setTimeout(() => this.drain(), waitMs);
    }
  }
}
