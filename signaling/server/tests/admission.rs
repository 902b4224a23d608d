//! Admission is fair per source: one address opening and closing upgrades
//! in a loop spends its own share, not everyone's. Sources are other
//! loopback addresses (127.0.0.2 is the abuser, 127.0.0.1 everyone else).

mod common;

use common::{server, upgrade_status};
use std::net::IpAddr;
use std::time::Duration;

const ABUSER: [u8; 4] = [127, 0, 0, 2];
const CLIENT: [u8; 4] = [127, 0, 0, 1];

#[tokio::test]
async fn a_source_upgrading_in_a_loop_does_not_lock_out_another() {
    let srv = server(|s| {
        s.limits.admissions_per_second = 100;
        s.limits.admission_burst = 100;
        s.limits.admissions_per_source_per_second = 20;
        s.limits.admission_per_source_burst = 20;
    })
    .await;
    let addr = srv.local_addr();
    let abuse = async {
        let mut refused = 0;
        for _ in 0..400 {
            if upgrade_status(IpAddr::from(ABUSER), addr, &[]).await == 503 {
                refused += 1;
            }
        }
        refused
    };
    let legit = async {
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(upgrade_status(IpAddr::from(CLIENT), addr, &[]).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        statuses
    };
    let (refused, statuses) = tokio::join!(abuse, legit);
    assert!(refused > 300, "the abuser is held to its own rate ({refused} of 400 refused)");
    assert!(statuses.iter().all(|s| *s == 101), "every attempt of the other client is admitted: {statuses:?}");
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_a_trusted_proxy() {
    let srv = server(|s| {
        s.limits.admissions_per_second = 0;
        s.limits.admissions_per_source_per_second = 1;
        s.limits.admission_per_source_burst = 3;
        s.trusted_proxies = vec!["127.0.0.1".parse().expect("cidr")];
        // Open rooms behind a proxy must be declared (see bad_input.rs).
        s.insecure_open_rooms = true;
    })
    .await;
    let addr = srv.local_addr();
    let via_proxy = |client: &'static str| async move {
        upgrade_status(IpAddr::from(CLIENT), addr, &[("X-Forwarded-For", client)]).await
    };
    // Behind the trusted proxy, each forwarded client has its own bucket.
    for _ in 0..3 {
        assert_eq!(via_proxy("203.0.113.5").await, 101);
    }
    assert_eq!(via_proxy("203.0.113.5").await, 503, "that client's burst is spent");
    assert_eq!(via_proxy("198.51.100.7").await, 101, "another client behind the same proxy is not");
    // An untrusted source cannot pick a bucket by writing the header.
    let forged = |client: &'static str| async move {
        upgrade_status(IpAddr::from(ABUSER), addr, &[("X-Forwarded-For", client)]).await
    };
    for n in 0..3 {
        assert_eq!(forged(["192.0.2.1", "192.0.2.2", "192.0.2.3"][n]).await, 101);
    }
    assert_eq!(forged("192.0.2.4").await, 503, "counted as 127.0.0.2 whatever the header says");
}

#[tokio::test]
async fn a_made_up_internal_key_is_admitted_like_anyone_else() {
    // The built-in SFU's key exempts it from admission; a client that sends
    // the header with any other value (or none at all, when the server has
    // no built-in SFU) gets no exemption.
    let srv = server(|s| {
        s.limits.admissions_per_second = 1;
        s.limits.admission_burst = 1;
    })
    .await;
    let addr = srv.local_addr();
    let forged = [("x-switchboard-internal", "00112233445566778899aabbccddeeff")];
    assert_eq!(upgrade_status(IpAddr::from(CLIENT), addr, &forged).await, 101, "the burst admits one");
    assert_eq!(upgrade_status(IpAddr::from(CLIENT), addr, &forged).await, 503, "the forged key is no exemption");
}
