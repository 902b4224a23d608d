// The chat panel: room chat over the signaling socket (history on join,
// acknowledgements by client id, typing indicators, read receipts, unread
// count) plus direct lines received on a peer's `chat` data channel.

import { client } from "./protocol.js";

/** Renew our typing indicator at most this often. */
const TYPING_RENEW_MS = 2000;
/** Stop announcing typing after this long without a keystroke. */
const TYPING_IDLE_MS = 4000;

export class ChatPanel {
  /**
   * @param {object} o
   * @param {HTMLElement} o.root the panel
   * @param {(message: object) => boolean} o.send signaling
   * @param {(id: string) => string} o.nameOf display name of a participant
   */
  constructor({ root, send, nameOf }) {
    this.root = root;
    this.list = root.querySelector("#messages");
    this.typingLine = root.querySelector("#typing");
    this.form = root.querySelector("#chat-form");
    this.input = root.querySelector("#chat-input");
    this.older = root.querySelector("#older");
    this.send = send;
    this.nameOf = nameOf;
    this.me = null;
    this.bySeq = new Map();
    // Our messages shown until their echo comes (the session resends them
    // after a drop: session.js).
    this.pending = new Map();
    this.readSeqs = new Map();
    this.myReadSeq = 0;
    this.typing = new Map();
    this.typingTtlMs = 5000;
    // When we last announced typing; -Infinity while not typing.
    this.typingSentAt = -Infinity;
    this.typingIdle = null;
    this.counter = 0;
    this.historyRequests = 0;
    this.onUnread = () => {};
    // A panel lives as long as its session: `dispose` removes every
    // listener, so a later session on the same page starts clean.
    this.listeners = new AbortController();
    const signal = this.listeners.signal;
    this.form.addEventListener(
      "submit",
      (event) => {
        event.preventDefault();
        this.submit();
      },
      { signal },
    );
    this.input.addEventListener("input", () => this.keystroke(), { signal });
    this.older.addEventListener("click", () => this.requestOlder(), { signal });
    this.list.replaceChildren();
    this.input.value = "";
    this.older.hidden = true;
    this.typingLine.hidden = true;
  }

  /** Stops listening and clears the timers: the session is over. */
  dispose() {
    this.listeners.abort();
    this.clearTyping();
    clearTimeout(this.typingIdle);
    this.onUnread(0);
  }

  /**
   * A (re)join: adopt the welcome's history, receipts and limits. After a
   * resumed welcome the panel keeps its state (the missed messages follow,
   * and the session resends what is still unechoed). After a fresh join,
   * those the old session got stored are found in the history instead.
   */
  joined(welcome) {
    const oldMe = this.me;
    this.me = welcome.you.id;
    this.typingTtlMs = welcome.limits.typing_ttl_ms;
    this.input.maxLength = welcome.limits.max_chat_chars;
    this.historyPage = welcome.limits.chat_history_page;
    if (welcome.resumed) return;
    this.readSeqs = new Map(welcome.peers.map((p) => [p.id, p.read_seq ?? 0]));
    this.myReadSeq = welcome.you.read_seq ?? 0;
    // The room's log as the server has it now (after a server restart it
    // starts again at seq 1): the list shows that, then what still waits.
    this.bySeq.clear();
    this.list.replaceChildren();
    for (const message of welcome.chat) {
      const stored = message.from === oldMe ? this.pending.get(message.client_id) : undefined;
      if (stored) {
        stored.line.remove();
        this.pending.delete(message.client_id);
      }
      this.add(message);
    }
    for (const { line } of this.pending.values()) this.list.append(line);
    this.older.hidden = !(welcome.chat.length > 0 && welcome.chat[0].seq > 1);
    this.clearTyping();
    this.refreshReceipts();
    this.countUnread();
  }

  /** A chat message from the room, or the echo acknowledging ours. */
  add(message) {
    const ack = message.from === this.me ? this.pending.get(message.client_id) : undefined;
    if (ack) {
      this.pending.delete(message.client_id);
      ack.line.remove();
    }
    if (this.bySeq.has(message.seq)) return;
    const line = this.line(message.name, message.text, message.from === this.me ? "mine" : "theirs");
    line.dataset.seq = String(message.seq);
    line.dataset.from = message.from;
    line.title = new Date(message.ts).toLocaleString();
    this.bySeq.set(message.seq, line);
    // Keep seq order even when older history arrives after newer messages.
    const after = [...this.list.children].find((el) => el.dataset.seq && Number(el.dataset.seq) > message.seq);
    this.list.insertBefore(line, after ?? null);
    if (!after) line.scrollIntoView({ block: "end" });
    this.setTyping(message.from, false);
    this.refreshReceipts();
    this.countUnread();
  }

  /** A page of older messages. */
  history(page) {
    for (const message of page.messages) this.add(message);
    this.older.hidden = !page.has_more;
  }

  /** A line received on a peer's `chat` data channel. */
  direct(from, text) {
    const line = this.line(`${this.nameOf(from)} (direct)`, text, "direct");
    line.dataset.from = from;
    this.list.append(line);
    line.scrollIntoView({ block: "end" });
  }

  /** A line from the client itself (joins, leaves, errors). */
  system(text) {
    const line = document.createElement("li");
    line.className = "system";
    line.textContent = text;
    this.list.append(line);
    line.scrollIntoView({ block: "end" });
  }

  /** Someone's read position. */
  read(from, seq) {
    this.readSeqs.set(from, Math.max(seq, this.readSeqs.get(from) ?? 0));
    this.refreshReceipts();
  }

  /** Someone started or stopped typing. */
  setTyping(from, active) {
    clearTimeout(this.typing.get(from));
    this.typing.delete(from);
    // The server clears an indicator after the TTL; so do we, in case the
    // "stopped" notice never comes.
    if (active) this.typing.set(from, setTimeout(() => this.setTyping(from, false), this.typingTtlMs));
    const names = [...this.typing.keys()].map((id) => this.nameOf(id));
    this.typingLine.hidden = names.length === 0;
    this.typingLine.textContent =
      names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
  }

  peerLeft(id) {
    this.setTyping(id, false);
    this.readSeqs.delete(id);
    this.refreshReceipts();
  }

  clearTyping() {
    for (const id of [...this.typing.keys()]) this.setTyping(id, false);
  }

  /** Highest sequence number shown. */
  get latestSeq() {
    return Math.max(0, ...this.bySeq.keys());
  }

  /** Messages from others not yet read. */
  get unread() {
    let count = 0;
    for (const [seq, line] of this.bySeq) if (seq > this.myReadSeq && line.dataset.from !== this.me) count += 1;
    return count;
  }

  /** Marks everything shown as read and tells the room. */
  markRead() {
    const latest = this.latestSeq;
    if (latest <= this.myReadSeq) return;
    this.myReadSeq = latest;
    this.send(client.read({ seq: latest }));
    this.countUnread();
  }

  // ---- internals ----

  submit() {
    const text = this.input.value.trim();
    if (!text) return;
    this.counter += 1;
    const client_id = `c${Date.now().toString(36)}-${this.counter}`;
    // While the connection is down the message waits, shown as pending,
    // and goes out when the session is back, after the older messages the
    // session resends then (signaling.js, session.js).
    if (!this.send(client.chat({ client_id, text }))) {
      this.system("Too many messages are waiting to be sent: this one was not.");
      return;
    }
    this.input.value = "";
    const line = this.line("You", text, "mine pending");
    this.pending.set(client_id, { line, text });
    this.list.append(line);
    line.scrollIntoView({ block: "end" });
    this.stopTyping();
  }

  keystroke() {
    clearTimeout(this.typingIdle);
    if (this.input.value.trim() === "") {
      this.stopTyping();
      return;
    }
    const now = performance.now();
    if (now - this.typingSentAt > Math.min(TYPING_RENEW_MS, this.typingTtlMs / 2)) {
      this.typingSentAt = now;
      this.send(client.typing({ active: true }));
    }
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  stopTyping() {
    clearTimeout(this.typingIdle);
    if (this.typingSentAt === -Infinity) return;
    this.typingSentAt = -Infinity;
    this.send(client.typing({ active: false }));
  }

  requestOlder() {
    const oldest = Math.min(...this.bySeq.keys());
    this.historyRequests += 1;
    this.send(client.chat_history({ id: `h${this.historyRequests}`, before: oldest, limit: this.historyPage }));
  }

  line(name, text, kind) {
    const line = document.createElement("li");
    line.className = kind;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = name;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    const receipt = document.createElement("span");
    receipt.className = "receipt";
    line.append(who, body, receipt);
    return line;
  }

  /** "Seen by …" under each of our own messages. */
  refreshReceipts() {
    for (const [seq, line] of this.bySeq) {
      if (line.dataset.from !== this.me) continue;
      const readers = [...this.readSeqs].filter(([, s]) => s >= seq).map(([id]) => this.nameOf(id));
      line.querySelector(".receipt").textContent = readers.length ? `Seen by ${readers.join(", ")}` : "";
    }
  }

  countUnread() {
    this.onUnread(this.unread);
  }
}
