// The client side of a Switchboard session, with no IO and no clock: the
// mirror of the Rust client's `client/src/session.rs`. What a client must
// remember to resume after a drop (its peer id, the resume token, how many
// events it has read), which chat it must resend, when it acknowledges, how
// long it waits before the next attempt, and what a refused join means.
//
// Both are held to the same rules by replaying the scenarios in
// client/fixtures/session.json (Rust: client/tests/scenarios.rs; this module:
// tests/tests/protocol.rs, in Chromium).

import { EVENT_TYPES, client } from "./protocol.js";

/** Unacknowledged chat kept for a resend; past it the oldest is forgotten. */
export const UNACKED_CHATS = 256;
/** Events between two acknowledgements at most (besides every ping). */
export const ACK_EVERY = 64;
/** First reconnect delay; it doubles per failed attempt. */
export const BACKOFF_BASE_MS = 500;
/** Longest wait between reconnect attempts. */
export const BACKOFF_CAP_MS = 15000;

const EVENTS = new Set(EVENT_TYPES);

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential, capped,
 * drawn from the upper half ("equal jitter") with `unit` in [0, 1), so a
 * storm of clients spreads out without any of them retrying at once.
 */
export function backoffMs(attempt, unit = Math.random()) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling * (0.5 + 0.5 * Math.min(1, Math.max(0, unit))));
}

/**
 * The wait before attempt `attempt` when the server asked for at least
 * `floorMs` (going_away's retry_after_ms, a 503's Retry-After): promptly
 * after a notice (the floor plus a little jitter), else exponential, never
 * under the floor.
 */
export function waitMs(attempt, floorMs, unit = Math.random()) {
  if (attempt === 0 && floorMs > 0) return Math.round(floorMs + BACKOFF_BASE_MS * Math.min(1, Math.max(0, unit)));
  return Math.max(backoffMs(attempt, unit), floorMs);
}

/**
 * What a join refused with `code` means: "join_afresh" (the session cannot
 * be resumed: join at once under a new id), "fatal" (trying again cannot
 * help) or "retry" (after the backoff). `resumed`: the join was a resume.
 */
export function refusal(code, resumed) {
  if (code === "resume_failed" && resumed) return "join_afresh";
  if (["unauthorized", "token_expired", "forbidden", "replaced"].includes(code)) return "fatal";
  return "retry";
}

export class Session {
  /** A session not yet joined, for `{ room, name, token }`. */
  constructor({ room, name, token }) {
    this.request = { room, name, token };
    this.me = null;
    this.token = null;
    // Events received in this session (its position in the stream).
    this.receivedCount = 0;
    this.acked = 0;
    // Chat written to the socket whose echo has not come: client_id -> message.
    this.unacked = new Map();
    // Replayed events still to come after a resumed welcome; unacknowledged
    // chat is resent only once they are read (their echoes acknowledge what
    // did arrive, and the server remembers only 64 client ids).
    this.replayLeft = 0;
    // Whether this connection still owes the resend.
    this.resendDue = false;
  }

  /** Whether there is a session to resume. */
  get canResume() {
    return this.token !== null;
  }

  /** The join message: a resume when `resume` and there is a session, else a fresh join. */
  joinMessage(resume) {
    const { room, name, token } = this.request;
    const resuming = resume && this.token !== null;
    return client.join({ room, name, token, resume: resuming ? { token: this.token, received: this.receivedCount } : undefined });
  }

  /** Takes in a welcome: a fresh one starts a new session. */
  welcomed(welcome) {
    if (!welcome.resumed) {
      if (this.me !== null) {
        // Chats the old session stored before it was lost are in the
        // room's history: they need no resend.
        for (const m of welcome.chat) if (m.from === this.me) this.unacked.delete(m.client_id);
      }
      this.receivedCount = 0;
      this.acked = 0;
      this.me = welcome.you.id;
    }
    this.token = welcome.resume_token;
    this.replayLeft = welcome.resumed ? (welcome.replayed ?? 0) : 0;
    this.resendDue = true;
  }

  /** Counts an event and clears the chat it acknowledges. */
  received(message) {
    if (!EVENTS.has(message.type)) return;
    this.receivedCount += 1;
    this.replayLeft = Math.max(0, this.replayLeft - 1);
    if (message.type === "chat" && message.from === this.me) this.unacked.delete(message.client_id);
  }

  /** Remembers a chat (now written to the socket) until its echo comes back. */
  sending(message) {
    if (message.type !== "chat") return;
    this.unacked.delete(message.client_id);
    if (this.unacked.size >= UNACKED_CHATS) this.unacked.delete(this.unacked.keys().next().value);
    this.unacked.set(message.client_id, message);
  }

  /** A replay that never completes must not hold back what the client sends for good. */
  giveUpReplay() {
    this.replayLeft = 0;
  }

  /**
   * The chat to resend on this connection, once: null until the replay
   * after a resumed welcome has been read, then every message whose echo is
   * still missing, in order.
   */
  takeResend() {
    if (!this.resendDue || this.replayLeft > 0) return null;
    this.resendDue = false;
    return [...this.unacked.values()];
  }

  /** Whether enough events arrived since the last acknowledgement to send one now. */
  get ackDue() {
    return this.receivedCount - this.acked >= ACK_EVERY;
  }

  /** A ping acknowledging every event read so far. */
  ping() {
    this.acked = this.receivedCount;
    return client.ping({ ack: this.receivedCount });
  }
}
