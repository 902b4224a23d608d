// Switchboard signaling protocol v1, as the browser speaks it.
//
// The Rust types in signaling/protocol are the one definition of the wire
// format. This module mirrors them for the browser and cannot drift: the
// browser tests (tests/tests/protocol.rs) run it in Chromium against the same
// golden fixtures as the Rust types, and compare what both sides accept for
// every fixture with each field removed or given the wrong JSON type.

export const PROTOCOL_VERSION = 1;
export const WS_PATH = "/v1/ws";

/** Every message type a client may send (ClientKind::NAMES). */
export const CLIENT_TYPES = [
  "join", "leave", "offer", "answer", "candidate", "end_of_candidates",
  "chat", "chat_history", "typing", "read", "media", "ping", "ice_servers",
];

/** Every message type the server sends (ServerKind::NAMES). */
export const SERVER_TYPES = [
  "welcome", "peer_joined", "peer_left", "peer_updated", "offer", "answer",
  "candidate", "end_of_candidates", "chat", "chat_history", "typing", "read",
  "pong", "error", "going_away", "ice_servers",
];

/**
 * The server types numbered in a session's event stream (ServerKind::is_event):
 * a client counts them for `resume.received` and the ping's `ack`.
 */
export const EVENT_TYPES = [
  "peer_joined", "peer_left", "peer_updated", "offer", "answer", "candidate",
  "end_of_candidates", "chat", "typing", "read",
];

/** Why someone left (LeaveReason), with the words the client shows. */
export const LEAVE_REASONS = {
  left: "left",
  disconnected: "lost their connection",
  timeout: "timed out",
  slow_consumer: "was disconnected (connection too slow)",
  kicked: "was disconnected by the server",
  replaced: "rejoined from another device",
  shutdown: "left (server shutting down)",
};

/**
 * Every error code (ErrorCode::ALL), with a sentence a person can act on.
 * Servers may add codes: an unknown one falls back to the server's message.
 */
export const ERROR_TEXT = {
  malformed_json: "The client sent something the server could not read.",
  invalid_message: "The server refused a message as invalid.",
  unknown_type: "The server does not know a message this client sent.",
  binary_frame: "The client sent binary data the server does not accept.",
  message_too_large: "A message was too large for the server.",
  chat_too_long: "That chat message is too long.",
  not_joined: "Not in a room yet.",
  already_joined: "Already in a room.",
  room_full: "This room is full: it already has as many participants as the server allows.",
  too_many_rooms: "The server cannot open another room right now. Try again later.",
  unknown_peer: "That participant is no longer in the room.",
  invalid_description: "A connection offer was malformed.",
  unauthorized: "This room needs a valid invitation token.",
  token_expired: "Your invitation token has expired. Ask for a new link.",
  rate_limited: "Sending too fast: a message was dropped.",
  flood: "Disconnected for sending too many messages.",
  join_timeout: "Joining took too long.",
  ping_timeout: "The connection went quiet for too long.",
  replaced: "You joined this room again from another tab or device, so this one was disconnected.",
  internal: "The server hit an internal error.",
  forbidden: "This room does not allow that.",
  resume_failed: "The session could not be resumed, so this client joined again.",
  unavailable: "The server cannot take this right now. Trying again shortly.",
};

// ---- Client messages: one builder per type, fields named as in Rust. ----

const media = (m) => ({ mic_muted: Boolean(m.mic_muted), camera_muted: Boolean(m.camera_muted) });
const description = (d) => ({ type: d.type, sdp: d.sdp });
const candidate = (c) =>
  dropUndefined({
    candidate: c.candidate,
    sdpMid: c.sdpMid ?? undefined,
    sdpMLineIndex: c.sdpMLineIndex ?? undefined,
    usernameFragment: c.usernameFragment ?? undefined,
  });

/** Builders for every client message; `id` is the optional request id. */
export const client = {
  join: ({ id, room, name, token, media: m, role, resume }) =>
    dropUndefined({
      type: "join", id, room, name, token: token || undefined, media: media(m ?? {}),
      role: role === "sfu" ? role : undefined,
      resume: resume ? { token: resume.token, received: resume.received } : undefined,
    }),
  leave: ({ id } = {}) => dropUndefined({ type: "leave", id }),
  offer: ({ id, to, description: d }) => dropUndefined({ type: "offer", id, to, description: description(d) }),
  answer: ({ id, to, description: d }) => dropUndefined({ type: "answer", id, to, description: description(d) }),
  candidate: ({ id, to, candidate: c }) => dropUndefined({ type: "candidate", id, to, candidate: candidate(c) }),
  end_of_candidates: ({ id, to }) => dropUndefined({ type: "end_of_candidates", id, to }),
  chat: ({ id, client_id, text }) => dropUndefined({ type: "chat", id, client_id, text }),
  chat_history: ({ id, before, limit }) => dropUndefined({ type: "chat_history", id, before, limit }),
  typing: ({ id, active }) => dropUndefined({ type: "typing", id, active: Boolean(active) }),
  read: ({ id, seq }) => dropUndefined({ type: "read", id, seq }),
  media: ({ id, mic_muted, camera_muted }) =>
    dropUndefined({ type: "media", id, ...media({ mic_muted, camera_muted }) }),
  ping: ({ id, ack } = {}) => dropUndefined({ type: "ping", id, ack }),
  ice_servers: ({ id } = {}) => dropUndefined({ type: "ice_servers", id }),
};

function dropUndefined(object) {
  for (const key of Object.keys(object)) if (object[key] === undefined) delete object[key];
  return object;
}

// ---- Server messages: shapes, checked before anything uses them. ----

const isString = (v) => typeof v === "string";
const isBool = (v) => typeof v === "boolean";
const isUint = (v) => Number.isInteger(v) && v >= 0;
const isRequestId = (v) => isString(v) || isUint(v);
const oneOf = (values) => (v) => values.includes(v);

/** A field that may be absent or null (a Rust `Option`). */
const optional = (check) => ({ nullable: true, check });
/** A field that may be absent but not null (Rust `#[serde(default)]`). */
const defaulted = (check) => ({ nullable: false, check });
const arrayOf = (shape) => (v) => Array.isArray(v) && v.every((item) => mismatch(item, shape) === null);
const object = (shape) => (v) => mismatch(v, shape) === null;
const stringArray = (v) => Array.isArray(v) && v.every(isString);

const MEDIA = { mic_muted: defaulted(isBool), camera_muted: defaulted(isBool) };
const PEER = {
  id: isString,
  name: isString,
  identity: optional(isString),
  media: object(MEDIA),
  read_seq: defaulted(isUint),
  role: defaulted(oneOf(["participant", "sfu"])),
  reconnecting: defaulted(isBool),
};
const CHAT_MESSAGE = { seq: isUint, ts: isUint, from: isString, name: isString, client_id: isString, text: isString };
const ICE_SERVER = { urls: stringArray, username: optional(isString), credential: optional(isString) };
const LIMITS = {
  max_message_bytes: isUint,
  max_chat_chars: isUint,
  messages_per_second: isUint,
  message_burst: isUint,
  max_peers_per_room: isUint,
  chat_history_page: isUint,
  typing_ttl_ms: isUint,
};
const DESCRIPTION = { type: oneOf(["offer", "answer", "pranswer", "rollback"]), sdp: isString };
const CANDIDATE = {
  candidate: isString,
  sdpMid: optional(isString),
  sdpMLineIndex: optional(isUint),
  usernameFragment: optional(isString),
};
const RELAYED_DESCRIPTION = { from: isString, description: object(DESCRIPTION) };

/** The fields of every server message, by type. */
export const SERVER_SHAPES = {
  welcome: {
    id: optional(isRequestId),
    protocol: isUint,
    room: isString,
    mode: defaulted(oneOf(["mesh", "sfu"])),
    you: object(PEER),
    peers: arrayOf(PEER),
    ice_servers: arrayOf(ICE_SERVER),
    ice_servers_ttl_s: optional(isUint),
    ping_interval_ms: isUint,
    ping_timeout_ms: isUint,
    limits: object(LIMITS),
    chat: arrayOf(CHAT_MESSAGE),
    chat_seq: isUint,
    resume_token: isString,
    resume_grace_ms: defaulted(isUint),
    resumed: defaulted(isBool),
    replayed: defaulted(isUint),
  },
  peer_joined: { peer: object(PEER) },
  peer_left: { peer_id: isString, reason: oneOf(Object.keys(LEAVE_REASONS)) },
  peer_updated: { peer: object(PEER) },
  offer: RELAYED_DESCRIPTION,
  answer: RELAYED_DESCRIPTION,
  candidate: { from: isString, candidate: object(CANDIDATE) },
  end_of_candidates: { from: isString },
  chat: CHAT_MESSAGE,
  chat_history: { id: optional(isRequestId), messages: arrayOf(CHAT_MESSAGE), has_more: isBool },
  typing: { from: isString, active: isBool },
  read: { from: isString, seq: isUint },
  pong: { id: optional(isRequestId) },
  error: { id: optional(isRequestId), code: isString, message: isString, fatal: isBool },
  going_away: { reason: isString, reconnect_url: optional(isString), retry_after_ms: isUint },
  ice_servers: { id: optional(isRequestId), ice_servers: arrayOf(ICE_SERVER), ice_servers_ttl_s: optional(isUint) },
};

/** The first field of `value` that does not fit `shape`, or null. */
function mismatch(value, shape) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return "not an object";
  for (const [field, rule] of Object.entries(shape)) {
    const v = value[field];
    if (typeof rule === "object") {
      if (v === undefined || (v === null && rule.nullable)) continue;
      if (v === null || !rule.check(v)) return field;
    } else if (v === undefined || v === null || !rule(v)) {
      return field;
    }
  }
  return null;
}

/**
 * Checks a decoded server message: null when it is well formed, else a
 * sentence naming what is wrong. Unknown fields are ignored, as in Rust.
 */
export function validateServer(message) {
  if (message === null || typeof message !== "object" || Array.isArray(message)) return "not a JSON object";
  const shape = SERVER_SHAPES[message.type];
  if (!shape) return `unknown message type ${JSON.stringify(message.type)}`;
  const field = mismatch(message, shape);
  return field === null ? null : `${message.type}: bad or missing field "${field}"`;
}

/** Parses one text frame from the server: `{ message }` or `{ error }`. */
export function parseServer(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return { error: "the server sent a frame that is not JSON" };
  }
  const error = validateServer(message);
  return error ? { error } : { message };
}
