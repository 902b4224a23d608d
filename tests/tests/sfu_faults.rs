//! Network cuts in SFU rooms: a participant whose network is cut for longer
//! than ICE takes to fail gets its media back by itself, by the SFU's ICE
//! restart (the SFU makes every offer in its room), whether it was there
//! before the SFU (the SFU offered on arriving) or joined after it (the SFU
//! offered on its `peer_joined`). Before, the SFU never restarted and a
//! later member offered itself. (A shorter cut recovers without a restart:
//! ICE goes `disconnected` and back.)

use std::time::{Duration, Instant};
use switchboard_e2e::lab_watch::{drop_host_traffic, events, video_flowing, watch};
use switchboard_e2e::netlab::{LabProcess, NatLab, Place};
use switchboard_e2e::{serial, workspace_binary};

/// The server in SFU mode on the lab's public network; a headless peer
/// sending the built-in clips joins `room` from `place`.
fn peer(lab: &mut NatLab, url: &str, place: Place, name: &str) -> LabProcess {
    let peer_bin = workspace_binary("switchboard-peer");
    let argv = [&peer_bin, "join", url, "--room", "cut", "--name", name, "--json", "--stats", "1"];
    lab.spawn(place, &argv)
}

/// Silence before ICE is `failed` (webrtc-rs: disconnected after 3 s, failed
/// 10 s later), plus a margin: only an ICE restart brings media back.
const CUT: Duration = Duration::from_secs(16);

/// Both receive the other's video through the SFU, `host`'s network is
/// cut for [`CUT`], and both must receive video again, with nobody leaving.
fn cut_and_recover(lab: &mut NatLab, a: &mut LabProcess, host: &mut LabProcess) {
    watch(a, host, "media both ways through the SFU", |la, lh| video_flowing(la, 0) && video_flowing(lh, 0));
    let (mark_a, mark_h) = (a.seen.len(), host.seen.len());
    drop_host_traffic(lab, true);
    std::thread::sleep(CUT);
    drop_host_traffic(lab, false);
    let restored = Instant::now();
    watch(a, host, "media through the SFU to recover both ways", |la, lh| {
        video_flowing(la, mark_a) && video_flowing(lh, mark_h)
    });
    println!("media back {:?} after the network came back", restored.elapsed());
    for (who, p) in [("A", &*a), ("the cut peer", &*host)] {
        assert_eq!(events(&p.seen, "peer_left").count(), 0, "{who} saw someone leave:\n{}", p.seen.join("\n"));
        assert_eq!(events(&p.seen, "rejoined").count(), 0, "{who} joined afresh:\n{}", p.seen.join("\n"));
    }
}

/// An SFU room where the peer on the lab's host joins first (`host_first`)
/// or second; the first waits for the SFU's offer before the second joins.
/// Then the host's network is cut.
fn cut_a_member(host_first: bool) {
    let mut lab = NatLab::new();
    let url = format!("ws://{}/v1/ws", lab.start_signaling(&["--room-mode", "sfu"]));
    let (first, second) = if host_first { (Place::Host, Place::Public) } else { (Place::Public, Place::Host) };
    let mut early = peer(&mut lab, &url, first, "first");
    early.wait_for("the SFU's offer", Duration::from_secs(30), |l| l.contains("\"offer_received\""));
    let late = peer(&mut lab, &url, second, "second");
    let (mut host, mut a) = if host_first { (early, late) } else { (late, early) };
    cut_and_recover(&mut lab, &mut a, &mut host);
}

#[tokio::test]
async fn the_first_member_of_an_sfu_room_gets_media_back_after_a_network_cut() {
    let _serial = serial().await;
    // The cut peer opens the room: the SFU joins after it and offers to it.
    cut_a_member(true);
}

#[tokio::test]
async fn a_later_member_of_an_sfu_room_gets_media_back_after_a_network_cut() {
    let _serial = serial().await;
    // The cut peer joins after the SFU, which offers to it on its arrival.
    cut_a_member(false);
}
