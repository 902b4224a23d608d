// The local camera and microphone: acquired once, before any negotiation, so
// the first offer or answer already carries the tracks (an offer made without
// them has no media sections, and the call connects with no media and no
// error).

const CONSTRAINTS = {
  audio: { echoCancellation: true, noiseSuppression: true },
  video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
};

/** What went wrong, in words a person can act on. */
export function describeMediaError(error, wanted) {
  const what = wanted.audio && wanted.video ? "camera and microphone" : wanted.video ? "camera" : "microphone";
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return `Access to your ${what} was denied. Others cannot see or hear you. ` +
        "Allow access in your browser's site settings, then leave and join again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return `No ${what} was found. You joined without it.`;
    case "NotReadableError":
    case "AbortError":
      return `Your ${what} is in use by another application or could not be started.`;
    default:
      return `Could not start your ${what}: ${error?.message || error}.`;
  }
}

/**
 * Asks for camera and microphone; falls back to whichever one works.
 * Returns `{ stream, problem }`: `stream` holds the tracks that started (it
 * may be empty), `problem` is a readable sentence or null.
 */
export async function acquireLocalMedia(mediaDevices = navigator.mediaDevices) {
  if (!mediaDevices?.getUserMedia) {
    return {
      stream: new MediaStream(),
      problem: "This page cannot use a camera or microphone here (it needs https or localhost).",
    };
  }
  try {
    return { stream: await mediaDevices.getUserMedia(CONSTRAINTS), problem: null };
  } catch (both) {
    if (both.name === "NotAllowedError" || both.name === "SecurityError") {
      return { stream: new MediaStream(), problem: describeMediaError(both, { audio: true, video: true }) };
    }
    // One device may be missing or busy while the other works.
    for (const [kind, missing] of [["audio", "video"], ["video", "audio"]]) {
      try {
        const stream = await mediaDevices.getUserMedia({ [kind]: CONSTRAINTS[kind] });
        return { stream, problem: describeMediaError(both, { [missing]: true }) };
      } catch {
        // Try the other one.
      }
    }
    return { stream: new MediaStream(), problem: describeMediaError(both, { audio: true, video: true }) };
  }
}

/** The mute state to announce for a stream (a missing device counts as muted). */
export function mediaState(stream) {
  const on = (kind) => stream.getTracks().some((t) => t.kind === kind && t.enabled);
  return { mic_muted: !on("audio"), camera_muted: !on("video") };
}

/** Mutes or unmutes every track of one kind; returns false if there is none. */
export function setEnabled(stream, kind, enabled) {
  const tracks = stream.getTracks().filter((t) => t.kind === kind);
  for (const track of tracks) track.enabled = enabled;
  return tracks.length > 0;
}
