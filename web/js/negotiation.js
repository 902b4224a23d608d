// The negotiation rules with no IO and no clock: the mirror of the Rust
// negotiator's rtc/src/negotiator/rules.rs. Who offers, what a colliding
// offer gets, and the offerer's two clocks (ICE restart, answer timeout).
// Both replay rtc/fixtures/negotiation.json (here: tests/tests/protocol.rs,
// in Chromium).

/** How long ICE may stay disconnected before the offerer restarts it. */
export const ICE_RESTART_AFTER_MS = 1000;
/** How often a restart is tried again while ICE has not recovered. */
export const ICE_RESTART_RETRY_MS = 5000;
/** How long an offer may wait for its answer before it is made again. */
export const ANSWER_TIMEOUT_MS = 10000;

/**
 * Whether this side makes every offer on a connection: in an SFU room the
 * SFU, in a mesh the newcomer (who found the other in its welcome).
 */
export function makesOffers(sfuRoom, iAmSfu, iAmNewcomer) {
  return sfuRoom ? iAmSfu : iAmNewcomer;
}

/** Whether this side is the polite one of the pair: its id sorts greater. */
export function polite(me, remote) {
  return me > remote;
}

/**
 * What an offer arriving while ours is pending gets: "ignore" (impolite),
 * "roll_back_and_answer" (polite, a stack that can, like the browser) or
 * "drop" (polite, a stack that cannot: webrtc-rs).
 */
export function collisionRule(isPolite, canRollBack) {
  if (!isPolite) return "ignore";
  return canRollBack ? "roll_back_and_answer" : "drop";
}

/** The offerer's clocks, in milliseconds from any origin. */
export class Clocks {
  constructor(offerer) {
    this.offerer = offerer;
    this.restartAt = null;
    this.answerAt = null;
    this.restarts = 0;
  }

  /** ICE changed ("up", "down" or "other") at `now`; true when ICE is back after restarts. */
  onIce(ice, now) {
    if (ice === "down" && this.offerer && this.restartAt === null) {
      this.restartAt = now + ICE_RESTART_AFTER_MS;
      return false;
    }
    if (ice === "up") {
      this.restartAt = null;
      const back = this.restarts > 0;
      this.restarts = 0;
      return back;
    }
    return false;
  }

  /** An offer of ours went out at `now`. */
  offerSent(now) {
    this.answerAt = now + ANSWER_TIMEOUT_MS;
  }

  /** The answer to our offer came. */
  answered() {
    this.answerAt = null;
  }

  /** When the next clock fires, or null. */
  next() {
    if (this.restartAt !== null && this.answerAt !== null) return Math.min(this.restartAt, this.answerAt);
    return this.restartAt ?? this.answerAt;
  }

  /** What is due at `now`: { restartIce: attempt }, { offerAgain: true } or null. */
  fire(now) {
    if (this.restartAt !== null && this.restartAt <= now) {
      this.restartAt = now + ICE_RESTART_RETRY_MS;
      this.restarts += 1;
      return { restartIce: this.restarts };
    }
    if (this.answerAt !== null && this.answerAt <= now) {
      this.answerAt = null;
      return this.restartAt === null ? { offerAgain: true } : null;
    }
    return null;
  }
}

/** The ICE states the clocks care about. */
export function iceKind(state) {
  if (state === "connected" || state === "completed") return "up";
  if (state === "disconnected" || state === "failed") return "down";
  return "other";
}
