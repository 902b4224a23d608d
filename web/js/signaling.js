// The signaling socket: one WebSocket, kept alive, paced to the server's
// rate limit, and reopened with backoff when it drops (or goes silent).
//
// The session's rules (session.js: what to count and acknowledge, what to
// resend and when, how long to wait) decide; this class does the IO and the
// timing. Messages sent while the socket is down wait in the queue and go
// out once the session is back (`ready()`), in order, after the resend of
// chat a dropped connection may have swallowed.
//
// It knows nothing about rooms: the app (app.js) sends `join` (with
// `sendNow`) on every "open" event and decides what a message means.

import { WS_PATH, parseServer } from "./protocol.js";
import { waitMs } from "./session.js";

/** Keepalive before the welcome says otherwise (the server's default). */
const DEFAULT_PING_INTERVAL_MS = 15000;
/** Share of the announced rate limit the client uses, so it never hits it. */
const RATE_SHARE = 0.9;
/** Messages waiting (for rate tokens, or for the session to be back). */
const MAX_QUEUED = 1000;

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
  /** `session`: a session.js Session, whose rules this connection follows. */
  constructor(session, url = defaultUrl()) {
    super();
    this.session = session;
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
    this.isReady = false;
    this.readyAt = 0;
    this.lastHeard = performance.now();
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

  /** The session is (back) in (the app gave the session its welcome): send what waited. */
  ready() {
    this.attempt = 0;
    this.isReady = true;
    this.readyAt = performance.now();
    this.drain();
  }

  /**
   * Queues messages ahead of everything waiting: the resend of what a
   * dropped connection may have swallowed must reach the room before what
   * was typed after it.
   */
  sendFirst(messages) {
    if (!this.wanted) return false;
    this.queue.unshift(...messages);
    const dropped = this.queue.splice(MAX_QUEUED);
    if (dropped.length > 0) {
      this.dispatchEvent(new CustomEvent("invalid", { detail: `${dropped.length} waiting messages dropped: too many` }));
    }
    this.drain();
    return true;
  }

  /** Sends at once, ahead of the queue (the join). */
  sendNow(message) {
    if (!this.connected) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  /**
   * Sends a message, paced to the rate limit; while the socket is down it
   * waits for the session to be back. False when the queue is full.
   */
  send(message) {
    if (!this.wanted) return false;
    if (this.queue.length >= MAX_QUEUED) {
      this.dispatchEvent(new CustomEvent("invalid", { detail: "too many messages waiting to be sent" }));
      return false;
    }
    this.queue.push(message);
    this.drain();
    return true;
  }

  connect() {
    clearTimeout(this.retryTimer);
    const socket = new WebSocket(this.url);
    this.socket = socket;
    this.isReady = false;
    socket.onopen = () => {
      // The backoff is not reset here: a server (or proxy) that accepts and
      // then closes would get a reconnect every half second from every tab.
      // Only a welcome (`ready`) shows the session is back.
      this.lastHeard = performance.now();
      this.restartPing();
      this.dispatchEvent(new Event("open"));
    };
    socket.onmessage = (event) => {
      this.lastHeard = performance.now();
      if (typeof event.data !== "string") return;
      const { message, error } = parseServer(event.data);
      if (error) {
        this.dispatchEvent(new CustomEvent("invalid", { detail: error }));
        return;
      }
      this.session.received(message);
      this.dispatchEvent(new CustomEvent("message", { detail: message }));
      this.resendIfDue();
      if (this.session.ackDue) this.ping();
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.dropSocket();
      const reason = event.code === 1006 ? "The connection to the server was lost." : "The server closed the connection.";
      this.scheduleRetry(reason);
    };
  }

  /**
   * Stops the timers and closes the socket without reacting to its close.
   * The queue is kept for the next session, unless this is the end.
   */
  dropSocket(code = undefined, reason = undefined) {
    clearInterval(this.pingTimer);
    clearTimeout(this.drainTimer);
    this.isReady = false;
    if (!this.wanted) this.queue = [];
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
    const retryInMs = waitMs(this.attempt, atLeastMs);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), retryInMs);
    this.dispatchEvent(new CustomEvent("down", { detail: { retryInMs, reason } }));
  }

  /**
   * For tests and the console: drops the connection as a network failure
   * would for the session (the server holds the seat), and stays away at
   * least `awayMs`.
   */
  simulateDrop(awayMs = 0) {
    if (!this.socket) return;
    this.dropSocket();
    this.scheduleRetry("The connection to the server was lost.", awayMs);
  }

  restartPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      // Nothing heard (not even a pong) for a ping interval and a half:
      // the connection is dead even if the socket does not know it yet.
      const silentMs = performance.now() - this.lastHeard;
      if (silentMs > this.pingIntervalMs + Math.max(this.pingIntervalMs / 2, 1000)) {
        this.dropSocket();
        this.scheduleRetry("The connection to the server went silent.");
        return;
      }
      // A replay that never completes (an event this client cannot read is
      // not counted) must not hold back what it sends for good.
      const replayStuck = this.session.resendDue && this.session.replayLeft > 0;
      if (this.isReady && replayStuck && performance.now() - this.readyAt >= this.pingIntervalMs) {
        this.session.giveUpReplay();
        this.resendIfDue();
      }
      this.ping();
    }, this.pingIntervalMs);
  }

  /** A keepalive that acknowledges every event received so far. */
  ping() {
    if (!this.connected) return;
    this.socket.send(JSON.stringify(this.session.ping()));
  }

  /** Sends the session's resend when it is due, ahead of everything waiting. */
  resendIfDue() {
    if (!this.isReady) return;
    const resend = this.session.takeResend();
    if (resend !== null) this.sendFirst(resend);
  }

  /** Sends what the token bucket allows now; waits for the rest. */
  drain() {
    clearTimeout(this.drainTimer);
    const b = this.bucket;
    const now = performance.now();
    b.tokens = Math.min(b.capacity, b.tokens + ((now - b.last) / 1000) * b.perSecond);
    b.last = now;
    // Nothing new goes out before the resend of what the old connection
    // may have swallowed: the room stores chat in the order it arrives.
    if (!this.isReady || !this.connected || this.session.resendDue) return;
    while (this.queue.length > 0 && b.tokens >= 1) {
      b.tokens -= 1;
      const message = this.queue.shift();
      this.session.sending(message);
      this.socket.send(JSON.stringify(message));
    }
    if (this.queue.length > 0) {
      const waitMs = Math.ceil(((1 - b.tokens) / b.perSecond) * 1000);
      this.drainTimer = setTimeout(() => this.drain(), waitMs);
    }
  }
}
