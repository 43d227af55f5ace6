//! Faults: bad Envoy answers, outages and back-off, a slow Envoy, a broker killed and
//! restarted, two clients with one id.

use std::time::{Duration, Instant};

use super::sim::{self};
use super::support::*;

/// Raw lines the daemon printed so far.
fn raw_lines(d: &Daemon) -> usize {
    d.stdout()
        .iter()
        .filter(|l| l.contains("/raw/timestamp"))
        .count()
}

#[test]
fn bad_answers_are_skipped_and_the_bridge_recovers() {
    let e = envoy("7.6.175_with_cts");
    let c = e.server.control.clone();
    let state = Tmp::new("state");
    let env = [
        ("ENVOY_HOST", e.server.url()),
        ("ENVOY_TOKEN", e.token.clone()),
        ("STATE_DIR", state.0.to_str().unwrap().into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // --once: a broken answer is a one-line reason and exit 1, nothing published.
    for fault in ["garbage", "503"] {
        match fault {
            "garbage" => c.lock().faults.garbage = 1,
            _ => c.lock().faults.status = Some((503, 1)),
        }
        let out = run(&env, &["--once", "--dry-run"]);
        assert_eq!(out.status.code(), Some(1), "{fault}");
        let printed = text(&out.stdout);
        assert!(!printed.contains("/data/"), "{fault}: nothing published");
        assert!(
            printed.starts_with(r#"envoy/status [retained] {"status":"error""#),
            "{fault}: {printed}"
        );
        let err = text(&out.stderr);
        let last = err.trim().lines().last().unwrap();
        assert!(last.starts_with("envoy2mqtt: envoy:"), "{fault}: {err}");
    }

    // The service: garbage, a 503 and a dropped connection are skipped, the data keeps coming.
    let mut env = env.clone();
    env.extend([
        ("RAW_DATA_INTERVAL_SECONDS", "100ms"),
        ("DATA_INTERVAL_SECONDS", "1h"),
    ]);
    {
        let mut s = c.lock();
        s.faults.garbage = 2;
        s.faults.status = Some((503, 2));
        s.faults.drop = 1;
    }
    let d = Daemon::start(&env, &["--dry-run"]);
    assert!(d.wait_until(Duration::from_secs(20), |d| {
        d.stdout()
            .iter()
            .filter(|l| l.contains("/raw/prod_eim_wNow"))
            .count()
            >= 3
    }));
    // Each fault is named in the log: the garbage, the 503, the connection closed unanswered.
    let err = d.stderr();
    for said in [
        "is not the JSON expected",
        "HTTP 503",
        "the Envoy closed the connection without answering",
    ] {
        assert!(err.contains(said), "{said}: {err}");
    }
    assert!(
        d.stdout()
            .iter()
            .all(|l| !l.contains("NaN") && !l.contains("activePower"))
    );
}

#[test]
fn broker_killed_and_restarted_20_times() {
    let e = envoy("7.6.175_with_cts");
    let mut broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "1"),
            ("DATA_INTERVAL_SECONDS", "2"),
            ("HA_DISCOVERY", "false"),
        ],
    );
    let mut d = Daemon::start(&pairs(&env), &[]);
    assert!(d.wait_until(Duration::from_secs(10), |d| {
        d.stderr().contains("connected to broker")
    }));
    for _ in 0..20 {
        broker.restart();
        std::thread::sleep(Duration::from_millis(600)); // the fault's pace: a restart every 0.6 s
    }
    let restarted = Instant::now();
    let sub = Subscriber::start(&broker, &[]);
    let back = sub.wait_until(Duration::from_secs(30), |s| {
        let retained = |t: &str| s.iter().any(|m| m.topic == t && m.retained);
        retained("envoy/122238082763/status")
            && retained("envoy/122238082763/data/prod_eim_wNow")
            && retained("envoy/122238082763/ledger")
            && s.iter()
                .any(|m| m.topic == "envoy/122238082763/raw/timestamp")
    });
    let crashed = d.child.try_wait().unwrap().is_some();
    println!(
        "broker restarts: 20; bridge crashes: {}; availability, data, ledger and raw back {} ms after the last restart",
        u8::from(crashed),
        restarted.elapsed().as_millis()
    );
    assert!(back && !crashed, "{}", d.stderr());
    assert_eq!(sub.last("envoy/122238082763/status").unwrap().1, "online");
}

#[test]
fn envoy_outages_are_backed_off_and_recovered_from_at_the_next_poll() {
    let e = envoy("7.6.175_with_cts");
    let c = e.server.control.clone();
    let state = Tmp::new("state");
    // Requests time out after 2 s rather than 10 (ENVOY_TIMEOUT_SECONDS), so that a hung
    // Envoy costs the test seconds, not minutes.
    let env = with(
        dry_run_env(&e, &state, "1", "1h"),
        &[("ENVOY_TIMEOUT_SECONDS", "2")],
    );
    let d = Daemon::start(&pairs(&env), &["--dry-run"]);
    assert!(d.wait_until(Duration::from_secs(10), |d| raw_lines(d) >= 2));
    let readings = || c.count("GET /ivp/meters/readings");
    // (what, fault on, fault off, requests): 503s, dropped connections, and answers slower
    // than the 2 s timeout (the Envoy's nightly outage, shortened); each outage lasts until
    // the Envoy has been asked that many times, and the back-off must have spread them.
    type Fault = fn(&mut sim::Faults);
    let phases: [(&str, Fault, Fault, usize); 3] = [
        (
            "HTTP 503",
            |f| f.status = Some((503, u32::MAX)),
            |f| f.status = None,
            4,
        ),
        (
            "dropped connections",
            |f| f.drop = u32::MAX,
            |f| f.drop = 0,
            4,
        ),
        (
            "timeouts",
            |f| f.delay = Duration::from_secs(3),
            |f| f.delay = Duration::ZERO,
            2,
        ),
    ];
    // `make soak` stretches the outages (FAULT_SCALE=12: many more requests, minutes of
    // back-off); at most 12, so that the test stays bounded in time.
    let scale: usize = std::env::var("FAULT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .clamp(1, 12);
    for (what, on, off, requests) in phases {
        let requests = requests * scale;
        on(&mut c.lock().faults);
        let during = readings();
        let started = Instant::now();
        assert!(
            d.wait_until(Duration::from_secs(60 * scale as u64), |_| readings()
                >= during + requests),
            "{what}: the Envoy was not asked again: {}",
            d.stderr()
        );
        let seconds = started.elapsed().as_secs_f64();
        off(&mut c.lock().faults);
        let (asked, lines) = (readings() - during, raw_lines(&d));
        let cleared = readings();
        // The next poll comes at most one back-off (5 minutes at most) after the outage.
        let back = d.wait_until(Duration::from_secs((40 * scale as u64).min(330)), |d| {
            raw_lines(d) > lines
        });
        let polls = readings() - cleared;
        // Back-off 1, 2, 4, 8, 16 s: a poll at most every 2^n s after n failures.
        let bound = 2 + seconds.log2().ceil() as usize;
        println!(
            "{what}: {asked} Envoy requests in {seconds:.1} s of outage (bound {bound}); {polls} poll(s) after it ended to recover"
        );
        assert!(back, "{what}: no data after the outage: {}", d.stderr());
        assert!(asked <= bound, "{what}: {asked} requests");
        assert!(polls <= 1, "{what}: {polls} polls to recover");
    }
}

#[test]
fn status_goes_ok_error_ok_across_an_envoy_outage() {
    let Rig { d, sub, c, .. } = &rig(
        "7.6.175_with_cts",
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
            ("DATA_INTERVAL_SECONDS", "1"),
            ("HA_DISCOVERY", "false"),
        ],
    );
    let statuses = |s: &[Seen]| -> Vec<String> {
        s.iter()
            .filter(|m| m.topic == "envoy/status")
            .map(|m| m.payload.split('"').nth(3).unwrap_or_default().to_string())
            .collect()
    };
    let has = |s: &[Seen], want: &[&str]| {
        let got = statuses(s);
        let mut i = 0;
        for g in &got {
            if i < want.len() && g == want[i] {
                i += 1;
            }
        }
        i == want.len()
    };
    assert!(
        sub.wait_until(Duration::from_secs(10), |s| has(s, &["ok"])),
        "first ok: {}",
        d.stderr()
    );
    c.lock().faults.status = Some((503, u32::MAX));
    assert!(
        sub.wait_until(Duration::from_secs(10), |s| has(s, &["ok", "error"])),
        "error: {}",
        d.stderr()
    );
    c.lock().faults.status = None;
    assert!(
        sub.wait_until(Duration::from_secs(20), |s| has(s, &["ok", "error", "ok"])),
        "ok again: {:?}",
        statuses(&sub.seen())
    );
    let last = sub.last("envoy/status").unwrap();
    assert!(last.0, "retained");
    assert!(
        last.1.contains(r#""errors":[]"#) && last.1.contains(r#""next_sync":"20"#),
        "{}",
        last.1
    );
}

#[test]
fn a_slow_envoy_never_makes_the_availability_lie() {
    // Every answer, the Envoy's and the cloud's, takes 9 s for 2 minutes, and the Envoy
    // refuses the session once at the start of it, so that a poll needs a new token from
    // the cloud: seven requests of 9 s in one poll. The broker drops a client it hears
    // nothing from for 45 s (1.5 × the 30 s keep-alive); the bridge must keep its session
    // alive through it all.
    let (e, cloud, ca, _certs) = envoy_and_cloud("7.6.175_with_cts", false);
    let c = e.server.control.clone();
    let broker = Mosquitto::start("allow_anonymous true");
    let sub = Subscriber::start(&broker, &[]);
    let state = Tmp::new("state");
    std::fs::write(
        state.path("token"),
        c.issue_token(365 * 86_400, "owner@example.com"),
    )
    .unwrap();
    let env = with(
        cloud_env(&e, &state, &cloud, ca.to_str().unwrap()),
        &[
            ("MQTT_HOST", "127.0.0.1"),
            ("MQTT_PORT", &broker.port()),
            ("RAW_DATA_INTERVAL_SECONDS", "1"),
            ("DATA_INTERVAL_SECONDS", "20"),
        ],
    );
    let d = Daemon::start(&pairs(&env), &[]);
    let availability = "envoy/122238082763/status";
    let raw = |s: &[Seen]| {
        s.iter()
            .filter(|m| m.topic.ends_with("/raw/timestamp"))
            .count()
    };
    assert!(
        sub.wait_until(Duration::from_secs(10), |s| raw(s) >= 2),
        "{}",
        d.stderr()
    );
    {
        let mut s = c.lock();
        s.faults.delay = Duration::from_secs(9);
        s.faults.unauthorized = 2; // the session, then the token
        s.tokens.clear();
    }
    // Slow answers, as in the Envoy's nightly busy spell, until the poll that needs a new
    // token has got it and read the Envoy with it: seven answers of 9 s, over a minute,
    // longer than the broker's 45 s (bounded at 3 minutes).
    let readings = || c.count("GET /ivp/meters/readings");
    let before = readings();
    let slow_poll_done = |_: &Daemon| c.count("POST /tokens") >= 1 && readings() >= before + 2;
    assert!(
        d.wait_until(Duration::from_secs(180), slow_poll_done),
        "{}",
        d.stderr()
    );
    let during = raw(&sub.seen());
    c.lock().faults.delay = Duration::ZERO;
    assert!(
        sub.wait_until(Duration::from_secs(30), |s| raw(s) >= during + 3),
        "data resumes: {}",
        d.stderr()
    );
    assert_eq!(c.count("POST /tokens"), 1, "a new token: {}", d.stderr());
    let seen = sub.seen();
    assert!(
        seen.iter()
            .any(|m| m.topic == availability && m.payload == "online")
    );
    let offline = seen
        .iter()
        .filter(|m| m.topic == availability && m.payload == "offline")
        .count();
    assert_eq!(offline, 0, "the last will fired: {}", d.stderr());
    assert!(
        !d.stderr().contains("is back"),
        "no reconnect: {}",
        d.stderr()
    );
}

#[test]
fn one_client_id_for_two_clients_is_named_and_backed_off() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let sub = Subscriber::start(&broker, &[]);
    let state = Tmp::new("state");
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
            ("HA_DISCOVERY", "false"),
        ],
    );
    // By default the service and --once have different ids: --once beside the service
    // does not throw it out (its availability never blips offline).
    let service = Daemon::start(&pairs(&env), &[]);
    let online = |s: &[Seen]| {
        s.iter()
            .any(|m| m.topic == "envoy/122238082763/status" && m.payload == "online")
    };
    assert!(
        sub.wait_until(Duration::from_secs(10), online),
        "{}",
        service.stderr()
    );
    let once_state = Tmp::new("state");
    let once = run(&pairs(&bridge_env(&e, &broker, &once_state)), &["--once"]);
    assert!(once.status.success(), "{}", text(&once.stderr));
    assert!(!sub.seen().iter().any(|m| m.payload == "offline"));
    assert!(
        !service.stderr().contains("is back"),
        "{}",
        service.stderr()
    );
    drop(service);

    // Two services given one id: each throws the other out. The bridge says so, and backs off.
    let same = with(env, &[("MQTT_CLIENT_ID", "shared-id")]);
    let a = Daemon::start(&pairs(&same), &[]);
    let b = Daemon::start(&pairs(&same), &[]);
    let named = |d: &Daemon| {
        d.stderr()
            .contains("another client uses MQTT_CLIENT_ID=shared-id")
    };
    let start = Instant::now();
    while !(named(&a) || named(&b)) && start.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(100)); // polling the logs, bounded above
    }
    assert!(named(&a) || named(&b), "{}\n{}", a.stderr(), b.stderr());
    let connects = |d: &Daemon| d.stderr().matches("connected to broker").count();
    let before = connects(&a) + connects(&b);
    std::thread::sleep(Duration::from_secs(30)); // the window the rate is measured over
    let during = connects(&a) + connects(&b) - before;
    println!("two clients with one id: {during} connections in 30 s");
    assert!(during <= 10, "{during} connections in 30 s: {}", a.stderr());
}

/// The topics of `seen` from position `from` on, in order.
fn topics_from(seen: &[Seen], from: usize) -> Vec<(String, String)> {
    seen[from..]
        .iter()
        .map(|m| (m.topic.clone(), m.payload.clone()))
        .collect()
}

#[test]
fn the_envoy_is_online_again_at_the_first_raw_tick_that_works() {
    // The data poll hourly: only a raw tick can bring the Envoy back before it.
    let r = rig(
        "7.6.175_with_cts",
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "1"),
            ("DATA_INTERVAL_SECONDS", "1h"),
            ("HA_DISCOVERY", "false"),
        ],
    );
    let envoy = "envoy/122238082763/envoy";
    let said = |word: &'static str| {
        move |s: &[Seen]| s.iter().any(|m| m.topic == envoy && m.payload == word)
    };
    assert!(
        r.sub.wait_until(Duration::from_secs(10), said("online")),
        "{}",
        r.d.stderr()
    );
    r.c.lock().faults.status = Some((503, u32::MAX));
    assert!(
        r.sub.wait_until(Duration::from_secs(20), said("offline")),
        "{}",
        r.d.stderr()
    );
    let at_offline = r.sub.seen().len();
    r.c.lock().faults.status = None;
    let back = |s: &[Seen]| {
        topics_from(s, at_offline)
            .iter()
            .any(|(t, p)| t == envoy && p == "online")
    };
    // Back-off after 3 failures is at most 8 s; then the first raw tick that works.
    assert!(
        r.sub.wait_until(Duration::from_secs(20), back),
        "{}",
        r.d.stderr()
    );
    let after = topics_from(&r.sub.seen(), at_offline);
    let online = after
        .iter()
        .position(|(t, p)| t == envoy && p == "online")
        .unwrap();
    assert!(
        !after[..online].iter().any(|(t, _)| t.contains("/data/")),
        "online came with a data poll, not the first raw tick: {after:?}"
    );
    // Raw values flow at their period afterwards (a few ticks, bounded).
    let raw = "envoy/122238082763/raw/timestamp";
    let ticks = |s: &[Seen]| {
        topics_from(s, at_offline)
            .iter()
            .filter(|(t, _)| t == raw)
            .count()
            >= 3
    };
    assert!(r.sub.wait_until(Duration::from_secs(10), ticks));
    assert!(
        !topics_from(&r.sub.seen(), at_offline)
            .iter()
            .any(|(t, p)| t == envoy && p == "offline"),
        "no flap back"
    );
}

#[test]
fn a_sync_during_the_back_off_brings_the_raw_ticks_back_at_their_period() {
    let r = rig(
        "7.6.175_with_cts",
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "1"),
            ("DATA_INTERVAL_SECONDS", "1h"),
            ("HA_DISCOVERY", "false"),
        ],
    );
    let raw = "envoy/122238082763/raw/timestamp";
    let has_raw = |s: &[Seen]| s.iter().any(|m| m.topic == raw);
    assert!(
        r.sub.wait_until(Duration::from_secs(10), has_raw),
        "{}",
        r.d.stderr()
    );
    // Five failures: the pause is now 16 s.
    let readings = || r.c.count("GET /ivp/meters/readings");
    let before = readings();
    r.c.lock().faults.drop = u32::MAX;
    assert!(
        r.d.wait_until(Duration::from_secs(30), |_| readings() >= before + 5),
        "{}",
        r.d.stderr()
    );
    r.c.lock().faults.drop = 0;
    let at_sync = r.sub.seen().len();
    publish(&r._broker, "envoy/command/sync", "", &[]);
    // The forced poll works: raw ticks come back every second, not at the end of the pause.
    let three = |s: &[Seen]| {
        topics_from(s, at_sync)
            .iter()
            .filter(|(t, _)| t == raw)
            .count()
            >= 3
    };
    // (Without the resume they came back only at the pause's end, 16 s on.)
    assert!(
        r.sub.wait_until(Duration::from_secs(12), three),
        "{}",
        r.d.stderr()
    );
    assert!(r.d.stderr().contains("sync asked: polling the Envoy"));
}

/// The resident memory of `pid`, KiB.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_50_mb_answer_is_refused_unread_and_its_memory_returned() {
    let readings = fixture_file("7.6.175_with_cts", "ivp_meters_readings");
    let fixture = variant_with("7.6.175_with_cts", "ivp_meters_readings", Some(&readings));
    let e = envoy_with(&fixture.0, sim::Control::new("122238082763"));
    let state = Tmp::new("state");
    let env = dry_run_env(&e, &state, "1", "1h");
    let d = Daemon::start(&pairs(&env), &["--dry-run"]);
    assert!(d.wait_until(Duration::from_secs(10), |d| raw_lines(d) >= 3));
    let before = rss(d.child.id());
    let huge = format!("[{{\"eid\": 1, \"x\": \"{}\"}}]", "a".repeat(50 << 20));
    std::fs::write(fixture.0.join("ivp_meters_readings"), huge).unwrap();
    let said = "/ivp/meters/readings answered more than 1024 KB, far more than an Envoy sends there: not read";
    assert!(
        d.wait_until(Duration::from_secs(20), |d| d.stderr().contains(said)),
        "{}",
        d.stderr()
    );
    std::fs::write(fixture.0.join("ivp_meters_readings"), &readings).unwrap();
    let lines = raw_lines(&d);
    assert!(
        d.wait_until(Duration::from_secs(20), |d| raw_lines(d) >= lines + 3),
        "{}",
        d.stderr()
    );
    let after = rss(d.child.id());
    assert!(
        after < before + 3 * 1024,
        "RSS {before} KiB before, {after} KiB after the 50 MB answers"
    );
    assert_eq!(
        d.stderr().matches(said).count(),
        1,
        "said once: {}",
        d.stderr()
    );
}
