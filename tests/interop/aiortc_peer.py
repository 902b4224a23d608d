#!/usr/bin/env python3
"""An independent Switchboard participant written with aiortc.

It is written from docs/protocol.md alone (not from the Rust types or the JS
client), to check that the document is enough to interoperate:

- join with `{"type":"join","id":1,"room":..,"name":..}`, read the `welcome`
  (`you.id`, `mode`, `peers`, `ice_servers`, `ping_interval_ms`);
- keep alive with `{"type":"ping","id":n,"ack":events}` every
  `ping_interval_ms`, and after every 64 events, counting as events the types
  listed in section 12 (peer_joined ... read), not replies;
- mesh rooms: the newcomer offers to everyone in `peers` (section 3, and
  section 12 "in a mesh, the later joiner"); members already there answer the
  offers of whoever joins later;
- SFU rooms (section 11): negotiate only with the member whose `role` is
  `sfu`, never offer, answer every (re)offer; a forwarded track's stream id
  (msid) names its publisher;
- candidates: aiortc gathers before it produces a description, so its
  candidates travel inside the SDP, followed by `end_of_candidates`. Remote
  `candidate` messages (RTCIceCandidateInit) are added with `addIceCandidate`,
  kept until the remote description is set; `end_of_candidates` and an empty
  `candidate` string end the remote candidates;
- `leave` on exit.

Not from the document, but aiortc: max-bundle (see Link), and gathering on
127.0.0.1 when the machine has no other address (loopback-only namespaces).

Output: one JSON object per line on stdout (welcome, peer_joined, peer_left,
connection_state, track with decoded_frames, error, summary). Exit status 0;
1 when fewer than --expect-peers remote publishers had both video and audio
decoded (--min-frames each), the join was refused, a fatal error came, or
handling a message raised.

  aiortc_peer.py --url ws://127.0.0.1:PORT/v1/ws --room r --name a \
      [--send-media] [--run-s 20] [--expect-peers 1]
"""

import argparse
import array
import asyncio
import fractions
import json
import logging
import math
import signal
import sys
import time

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.client import connect

# Section 12: what counts as an event (replies and going_away do not).
EVENTS = {"peer_joined", "peer_left", "peer_updated", "offer", "answer", "candidate",
          "end_of_candidates", "chat", "typing", "read"}
T0 = time.monotonic()


def now_ms():
    return int((time.monotonic() - T0) * 1000)


def emit(event, **fields):
    print(json.dumps({"event": event, "t_ms": now_ms(), **fields}), flush=True)


def gather_on_loopback(force):
    """aioice never gathers 127.0.0.1 or ::1. In a loopback-only namespace that
    leaves no candidate at all and ICE silently never starts, so there (or with
    --loopback-only) gather 127.0.0.1, as `switchboard-peer --loopback-only` does."""
    found = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
    if force or not found:
        emit("loopback_candidates", reason="--loopback-only" if force else "no other address")
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


# --- synthetic media -----------------------------------------------------------

class PatternVideo(MediaStreamTrack):
    """A moving grey ramp with slowly changing colour, 320x240 at 15 fps."""
    kind = "video"

    def __init__(self, width=320, height=240, fps=15):
        super().__init__()
        self.w, self.h, self.fps, self.n, self.start = width, height, fps, 0, None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        delay = self.start + self.n / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame(self.w, self.h, "yuv420p")
        shift = self.n * 4
        frame.planes[0].update(bytes((x + shift) & 255 for x in range(self.w)) * self.h)
        chroma = (self.w // 2) * (self.h // 2)
        frame.planes[1].update(bytes([(self.n * 2) & 255]) * chroma)
        frame.planes[2].update(bytes([(255 - self.n * 2) & 255]) * chroma)
        frame.pts = self.n * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.n += 1
        return frame


class ToneAudio(MediaStreamTrack):
    """A 400 Hz tone, 48 kHz mono, 20 ms frames."""
    kind = "audio"
    RATE, SAMPLES = 48000, 960

    def __init__(self, hz=400):
        super().__init__()
        pcm = array.array("h", (int(6000 * math.sin(2 * math.pi * hz * i / self.RATE))
                                for i in range(self.SAMPLES)))
        self.pcm, self.n, self.start = pcm.tobytes(), 0, None

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        delay = self.start + self.n * self.SAMPLES / self.RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(self.pcm)
        frame.sample_rate = self.RATE
        frame.pts = self.n * self.SAMPLES
        frame.time_base = fractions.Fraction(1, self.RATE)
        self.n += 1
        return frame


# --- SDP helpers (only reading what the document says to read) ---------------

def sdp_sections(sdp):
    """[{mid, kind, port, direction, msid}] for each m= section, and the BUNDLE mids."""
    sections, bundle = [], []
    for line in sdp.splitlines():
        if line.startswith("a=group:BUNDLE"):
            bundle = line.split()[1:]
        elif line.startswith("m="):
            kind, port = line[2:].split()[:2]
            sections.append({"kind": kind, "port": int(port), "direction": "sendrecv",
                             "mid": None, "msid": None})
        elif sections and line.startswith("a=mid:"):
            sections[-1]["mid"] = line[6:].strip()
        elif sections and line.startswith("a=msid:"):
            sections[-1]["msid"] = line[7:].split()
        elif sections and line[2:] in ("sendrecv", "sendonly", "recvonly", "inactive"):
            sections[-1]["direction"] = line[2:]
    return sections, bundle


def trace(direction, msg):
    """--log-signaling: one line per signaling message, SDP summarised."""
    fields = {k: v for k, v in msg.items() if k not in ("description", "type", "ice_servers",
                                                         "limits", "chat", "resume_token")}
    if "description" in msg:
        sections, bundle = sdp_sections(msg["description"]["sdp"])
        fields["bundle"] = bundle
        fields["sections"] = [f'{s["mid"]}:{s["kind"]}:{s["port"]}:{s["direction"]}'
                              + (f':{s["msid"][0]}' if s["msid"] else "") for s in sections]
        fields["sdp_candidates"] = msg["description"]["sdp"].count("a=candidate:")
    emit("signal", dir=direction, type=msg.get("type"), **fields)


# --- one peer connection -------------------------------------------------------

class Link:
    """The peer connection with one remote peer (mesh) or with the SFU."""

    def __init__(self, client, peer_id, polite):
        self.client, self.peer_id, self.polite = client, peer_id, polite
        # max-bundle: aiortc's default ("balanced") gives a new m-section the
        # transport of the first earlier one of its kind, before BUNDLE is
        # applied; when that one is not the BUNDLE primary (an SFU offer with
        # two video sections after the audio one), the section stays on a
        # closed transport and never receives.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=client.ice_servers,
                                                     bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pending = []          # remote candidates that came before the description
        self.publisher_by_mid = {}  # SFU: mid -> publisher peer id (msid stream id)
        self.sent_end = False
        self.attached = set()      # kinds whose local track is attached
        self.created_ms = now_ms()
        self.rejected = set()      # mids answered with port 0 (--reject-unused)
        self.pc.on("connectionstatechange", self.on_state)
        self.pc.on("track", self.on_track)

    def on_state(self):
        emit("connection_state", peer=self.peer_id, state=self.pc.connectionState)
        self.client.states[self.peer_id] = self.pc.connectionState

    def on_track(self, track):
        mid = next((t.mid for t in self.pc.getTransceivers() if t.receiver.track is track), None)
        emit("track_added", peer=self.peer_id, kind=track.kind, mid=mid,
             publisher=self.publisher(mid))
        self.client.readers.append(asyncio.ensure_future(self.read(track, mid)))

    def publisher(self, mid):
        if self.client.mode == "sfu":
            return self.publisher_by_mid.get(mid, "?")
        return self.peer_id

    async def read(self, track, mid):
        stats = self.client.stats
        while True:
            try:
                await track.recv()   # a decoded av.VideoFrame / av.AudioFrame
            except MediaStreamError:
                return
            key = (self.publisher(mid), track.kind)
            s = stats.setdefault(key, {"decoded_frames": 0, "first_frame_ms": None})
            if s["decoded_frames"] == 0:
                s["first_frame_ms"] = now_ms() - self.client.welcome_ms
                emit("first_frame", peer=key[0], kind=key[1], via=self.peer_id,
                     ms_after_welcome=s["first_frame_ms"],
                     ms_after_link=now_ms() - self.created_ms)
            s["decoded_frames"] += 1

    def remember_remote(self, sdp):
        sections, _ = sdp_sections(sdp)
        for s in sections:
            if s["kind"] in ("audio", "video") and s["msid"]:
                self.publisher_by_mid[s["mid"]] = s["msid"][0]

    def attach_media(self, sdp):
        """Send our tracks on the sections where the remote wants to receive."""
        if not self.client.args.send_media:
            return
        # An SFU offers its forwarded tracks as sendrecv too, so there only its
        # recvonly sections (one audio, one video) are where we publish.
        accept = ("recvonly",) if self.client.mode == "sfu" else ("recvonly", "sendrecv")
        wants = {s["mid"]: s for s in sdp_sections(sdp)[0]
                 if s["port"] != 0 and s["direction"] in accept}
        for t in self.pc.getTransceivers():
            s = wants.get(t.mid)
            if s is None or t.kind in self.attached or t.sender.track is not None:
                continue
            t.sender.replaceTrack(PatternVideo() if t.kind == "video" else ToneAudio())
            t.direction = "sendrecv" if s["direction"] == "sendrecv" else "sendonly"
            self.attached.add(t.kind)

    async def send_description(self, kind):
        desc = self.pc.localDescription   # aiortc: candidates already inside
        sdp = desc.sdp
        if kind == "answer" and self.client.args.reject_unused:
            sdp = self.reject_unused(sdp)
        await self.client.send({"type": kind, "to": self.peer_id,
                                "description": {"type": desc.type, "sdp": sdp}})
        if not self.sent_end:
            # aiortc gathers once per transport: nothing will ever trickle.
            self.sent_end = True
            await self.client.send({"type": "end_of_candidates", "to": self.peer_id})

    def reject_unused(self, sdp):
        """--reject-unused: answer port 0 (JSEP: rejected) for inactive audio/video
        sections other than the BUNDLE-tagged one, as some clients do. aiortc
        itself never rejects, so this is done on the SDP text."""
        sections, bundle = sdp_sections(sdp)
        reject = {s["mid"] for s in sections if s["kind"] in ("audio", "video")
                  and s["direction"] == "inactive" and bundle and s["mid"] != bundle[0]}
        self.rejected |= reject
        out, i = [], -1
        for line in sdp.split("\r\n"):
            if line.startswith("m="):
                i += 1
                if sections[i]["mid"] in reject:
                    kind, _, rest = line[2:].split(" ", 2)
                    line = f"m={kind} 0 {rest}"
            elif line.startswith("a=group:BUNDLE"):
                line = " ".join(w for w in line.split() if w not in reject)
            out.append(line)
        return "\r\n".join(out)

    def check_rejected(self, sdp):
        """JSEP 5.2.2: a rejected m-section stays rejected (port 0) unless the
        offerer recycles it for a new transceiver with a new mid."""
        for s in sdp_sections(sdp)[0]:
            if s["mid"] in self.rejected and s["port"] != 0:
                emit("jsep_violation", peer=self.peer_id, mid=s["mid"], kind=s["kind"],
                     port=s["port"], direction=s["direction"],
                     message="a section this client rejected (port 0) came back with the same mid")

    async def offer(self):
        for kind in ("audio", "video"):
            if self.client.args.send_media:
                self.pc.addTrack(PatternVideo() if kind == "video" else ToneAudio())
                self.attached.add(kind)
            else:
                self.pc.addTransceiver(kind, direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.send_description("offer")

    async def on_offer(self, description):
        self.check_rejected(description["sdp"])
        self.remember_remote(description["sdp"])
        await self.pc.setRemoteDescription(RTCSessionDescription(description["sdp"], "offer"))
        self.attach_media(description["sdp"])
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.send_description("answer")
        await self.flush()

    async def on_answer(self, description):
        if self.pc.signalingState != "have-local-offer":
            emit("warning", peer=self.peer_id, message="answer in state " + self.pc.signalingState)
            return
        self.remember_remote(description["sdp"])
        await self.pc.setRemoteDescription(RTCSessionDescription(description["sdp"],
                                                                 description["type"]))
        await self.flush()

    async def on_candidate(self, init):
        """init is an RTCIceCandidateInit, or None for end_of_candidates."""
        if self.pc.remoteDescription is None:
            self.pending.append(init)
            return
        if init is None or init.get("candidate", "") == "":
            await self.pc.addIceCandidate(None)
            return
        line = init["candidate"]
        cand = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
        cand.sdpMid, cand.sdpMLineIndex = init.get("sdpMid"), init.get("sdpMLineIndex")
        # Under BUNDLE there is one transport: the first mid's. aiortc drops a
        # candidate addressed to any other bundled mid, so address it there.
        sections, bundle = sdp_sections(self.pc.remoteDescription.sdp)
        mids = [s["mid"] for s in sections]
        if bundle and (cand.sdpMid in bundle or (not cand.sdpMid and cand.sdpMLineIndex is None)):
            cand.sdpMid, cand.sdpMLineIndex = bundle[0], mids.index(bundle[0])
        elif not cand.sdpMid and cand.sdpMLineIndex is None:
            emit("warning", peer=self.peer_id, message="candidate without sdpMid or index")
            return
        await self.pc.addIceCandidate(cand)

    async def flush(self):
        pending, self.pending = self.pending, []
        for init in pending:
            await self.on_candidate(init)

    async def close(self):
        await self.pc.close()


# --- the signaling client ------------------------------------------------------

class Client:
    def __init__(self, args):
        self.args = args
        self.ws = None
        self.me = self.mode = self.sfu_id = None
        self.ice_servers = []
        self.links = {}
        self.events = self.acked = 0
        self.next_id = 1
        self.ping_interval = 15.0
        self.stats, self.states, self.errors, self.readers = {}, {}, [], []
        self.remote_candidates = {}   # peer -> {sdpMid or end_of_candidates: count}
        self.welcome_ms = 0
        self.stop = asyncio.Event()
        self.failed = False   # join refused, fatal error, or an exception in a handler

    async def send(self, msg):
        if self.args.log_signaling:
            trace("out", msg)
        await self.ws.send(json.dumps(msg, separators=(",", ":")))

    def request_id(self):
        self.next_id += 1
        return self.next_id

    async def ping(self):
        self.acked = self.events
        await self.send({"type": "ping", "id": self.request_id(), "ack": self.events})

    async def pinger(self):
        while True:
            await asyncio.sleep(self.ping_interval)
            await self.ping()

    async def reporter(self):
        last = {}
        while True:
            await asyncio.sleep(self.args.report_s)
            for (peer, kind), s in sorted(self.stats.items()):
                if last.get((peer, kind)) != s["decoded_frames"]:
                    last[(peer, kind)] = s["decoded_frames"]
                    emit("track", peer=peer, kind=kind, **s)

    def link(self, peer_id, polite=True):
        if peer_id not in self.links:
            self.links[peer_id] = Link(self, peer_id, polite)
        return self.links[peer_id]

    async def drop(self, peer_id):
        link = self.links.pop(peer_id, None)
        if link:
            await link.close()

    async def run(self):
        tasks = []
        async with connect(self.args.url, ping_interval=None, max_size=2**20) as ws:
            self.ws = ws
            media = {"mic_muted": not self.args.send_media,
                     "camera_muted": not self.args.send_media}
            await self.send({"type": "join", "id": 1, "room": self.args.room,
                             "name": self.args.name, "media": media})
            tasks.append(asyncio.ensure_future(self.receive()))
            if self.args.run_s:
                tasks.append(asyncio.ensure_future(asyncio.sleep(self.args.run_s)))
            tasks.append(asyncio.ensure_future(self.stop.wait()))
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            try:
                await self.send({"type": "leave"})
                await asyncio.wait_for(ws.wait_closed(), 3)   # server closes with 1000 left
                emit("closed", code=ws.close_code, reason=ws.close_reason)
            except Exception as e:  # noqa: BLE001 - report and go on closing
                emit("warning", message=f"leave: {e!r}")
        for link in list(self.links.values()):
            await link.close()
        for r in self.readers:
            r.cancel()

    async def receive(self):
        helpers = []
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                kind = msg.get("type")
                if self.args.log_signaling:
                    trace("in", msg)
                if kind in EVENTS:
                    self.events += 1
                try:
                    await self.handle(kind, msg, helpers)
                except Exception as e:  # noqa: BLE001 - one bad message must not end the run
                    logging.exception("handling %s", kind)
                    emit("exception", message_type=kind, error=repr(e))
                    self.failed = True
                if self.events - self.acked >= 64:
                    await self.ping()
            # The server closed the socket (after a fatal error or going_away).
            emit("socket_closed", code=self.ws.close_code, reason=self.ws.close_reason)
            self.stop.set()
        finally:
            for h in helpers:
                h.cancel()

    async def handle(self, kind, msg, helpers):
        if kind == "welcome":
            self.me, self.mode = msg["you"]["id"], msg["mode"]
            self.welcome_ms = now_ms()
            self.ping_interval = msg["ping_interval_ms"] / 1000
            self.ice_servers = [RTCIceServer(urls=s["urls"], username=s.get("username"),
                                             credential=s.get("credential"))
                                for s in msg["ice_servers"]]
            emit("welcome", id=self.me, mode=self.mode, room=msg["room"],
                 peers=[p["id"] for p in msg["peers"]],
                 ice_servers=[s["urls"] for s in msg["ice_servers"]])
            helpers += [asyncio.ensure_future(self.pinger()),
                        asyncio.ensure_future(self.reporter())]
            for p in msg["peers"]:
                if p.get("role") == "sfu":
                    self.sfu_id = p["id"]
                elif self.mode == "mesh":
                    # We are the newcomer: we offer, and we are the impolite side.
                    await self.link(p["id"], polite=False).offer()
        elif kind == "peer_joined":
            p = msg["peer"]
            emit("peer_joined", id=p["id"], name=p["name"], role=p.get("role"))
            if p.get("role") == "sfu":
                self.sfu_id = p["id"]
        elif kind == "peer_left":
            emit("peer_left", id=msg["peer_id"], reason=msg["reason"])
            if msg["peer_id"] == self.sfu_id:
                self.sfu_id = None
            await self.drop(msg["peer_id"])
        elif kind == "peer_updated":
            p = msg["peer"]
            emit("peer_updated", id=p["id"], reconnecting=p.get("reconnecting", False))
        elif kind == "offer":
            await self.on_offer(msg["from"], msg["description"])
        elif kind == "answer":
            if msg["from"] in self.links:
                await self.links[msg["from"]].on_answer(msg["description"])
        elif kind in ("candidate", "end_of_candidates"):
            if self.mode == "sfu" and msg["from"] != self.sfu_id:
                return
            init = msg["candidate"] if kind == "candidate" else None
            key = "end_of_candidates" if init is None else (init.get("sdpMid") or "(none)")
            counts = self.remote_candidates.setdefault(msg["from"], {})
            counts[key] = counts.get(key, 0) + 1
            await self.link(msg["from"]).on_candidate(init)
        elif kind == "error":
            emit("error", code=msg["code"], message=msg["message"], fatal=msg["fatal"],
                 id=msg.get("id"))
            self.errors.append(msg["code"])
            if msg.get("id") == 1 or msg["fatal"]:
                self.failed = True
                self.stop.set()
        elif kind == "going_away":
            emit("going_away", reason=msg["reason"], retry_after_ms=msg["retry_after_ms"])
            self.stop.set()

    async def on_offer(self, peer_id, description):
        if self.mode == "sfu" and peer_id != self.sfu_id:
            emit("warning", peer=peer_id, message="offer from a participant in an SFU room")
            return
        link = self.links.get(peer_id)
        if link and link.pc.signalingState == "have-local-offer":
            # Glare. The document leaves collisions to the application; here the
            # newcomer (who offered first) wins, and the earlier member, being
            # polite, drops its own attempt (aiortc has no rollback: new pc).
            emit("offer_collision", peer=peer_id, polite=link.polite)
            if not link.polite:
                return
            await self.drop(peer_id)
            link = None
        await self.link(peer_id).on_offer(description)

    def summary(self):
        tracks = [{"peer": p, "kind": k, **s} for (p, k), s in sorted(self.stats.items())]
        return {"id": self.me, "mode": self.mode, "events": self.events, "errors": self.errors,
                "connections": self.states, "remote_candidates": self.remote_candidates,
                "tracks": tracks}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True, help="ws://HOST:PORT/v1/ws")
    ap.add_argument("--room", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--send-media", action="store_true", help="publish synthetic video+audio")
    ap.add_argument("--run-s", type=float, default=0, help="leave after this long (0: on signal)")
    ap.add_argument("--report-s", type=float, default=1.0, help="track report period")
    ap.add_argument("--expect-peers", type=int, default=0,
                    help="exit 1 unless this many remote publishers had video and audio decoded")
    ap.add_argument("--min-frames", type=int, default=10, help="frames that count as decoded")
    ap.add_argument("--loopback-only", action="store_true",
                    help="gather 127.0.0.1 only (automatic when there is no other address)")
    ap.add_argument("--log-signaling", action="store_true", help="a line per message")
    ap.add_argument("--reject-unused", action="store_true",
                    help="answer port 0 for inactive media sections (to test the SFU)")
    ap.add_argument("--verbose", action="store_true", help="aiortc/aioice debug logs on stderr")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    gather_on_loopback(args.loopback_only)

    async def amain():
        client = Client(args)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, client.stop.set)
        try:
            await client.run()
        except Exception as e:  # noqa: BLE001 - the summary still goes out
            emit("error", code="client", message=repr(e), fatal=True)
            client.errors.append("client")
            client.failed = True
        summary = client.summary()
        emit("summary", **summary)
        good = {t["peer"] for t in summary["tracks"]
                if t["kind"] == "video" and t["decoded_frames"] >= args.min_frames}
        good &= {t["peer"] for t in summary["tracks"]
                 if t["kind"] == "audio" and t["decoded_frames"] >= args.min_frames}
        return 1 if client.failed or len(good) < args.expect_peers else 0

    sys.exit(asyncio.run(amain()))


if __name__ == "__main__":
    main()
