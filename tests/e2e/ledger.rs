//! The ledger end to end, on a wall clock the test controls (libfaketime): midnights, DST,
//! cron runs, counters that go to zero or backwards, clock jumps.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::sim::{self, Control};
use super::support::*;

/// 2026-10-24 00:00 UTC: where the simulated counters start.
pub const ORIGIN: i64 = 1_792_800_000;
/// Local midnights in Europe/Paris, written out (`TZ=Europe/Paris date -d '2026-10-25' +%s`):
/// 2026-10-25 00:00 CEST and 2026-10-26 00:00 CET. The day between has 25 hours.
pub const MIDNIGHT_25: i64 = 1_792_879_200;
pub const MIDNIGHT_26: i64 = 1_792_969_200;

/// Mean power by UTC hour, W. The night (20:00 to 06:59 UTC) is flat, so the counters are
/// straight lines through both local midnights and interpolation there is exact.
pub const PRODUCTION_W: [f64; 24] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 600.0, 1400.0, 2200.0, 2800.0, 3000.0, 2800.0, 2200.0,
    1400.0, 600.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
];
pub const HOUSE_W: [f64; 24] = [
    400.0, 400.0, 400.0, 400.0, 400.0, 400.0, 400.0, 1200.0, 700.0, 500.0, 500.0, 500.0, 900.0,
    500.0, 500.0, 500.0, 500.0, 1600.0, 1600.0, 1600.0, 400.0, 400.0, 400.0, 400.0,
];

/// The lifetime counters at `t`, Wh: production, grid import, grid export.
pub fn curve(t: i64) -> [f64; 3] {
    let mut e = [3_000_000.0, 2_000_000.0, 1_500_000.0];
    let mut at = ORIGIN;
    while at < t {
        let hour = ((at - ORIGIN) / 3600 % 24) as usize;
        let hours = ((t - at).min(3600)) as f64 / 3600.0;
        let net = HOUSE_W[hour] - PRODUCTION_W[hour];
        e[0] += PRODUCTION_W[hour] * hours;
        e[1] += net.max(0.0) * hours;
        e[2] += (-net).max(0.0) * hours;
        at += 3600;
    }
    e
}

/// Energy between two instants, Wh: production, house consumption, import, export.
pub fn energy(from: i64, to: i64) -> [f64; 4] {
    let (a, b) = (curve(from), curve(to));
    let (p, i, x) = (b[0] - a[0], b[1] - a[1], b[2] - a[2]);
    [p, p + i - x, i, x]
}

/// libfaketime from Debian (`make deps`): the bridge's wall clock reads the file the
/// simulated Envoy writes; its monotonic clock (timers) stays real.
pub fn faketime(file: &Path) -> Vec<(&'static str, String)> {
    let lib = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is needed: make deps installs it");
    vec![
        ("LD_PRELOAD", lib.to_str().unwrap().to_string()),
        (
            "FAKETIME_TIMESTAMP_FILE",
            file.to_str().unwrap().to_string(),
        ),
        ("FAKETIME_FMT", "%s".into()),
        ("FAKETIME_NO_CACHE", "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
    ]
}

/// A simulated Envoy (7.6.175_with_cts) whose clock starts at `start` and moves `step`
/// seconds at each readings request, up to `until`.
pub fn clocked_envoy(dir: &Tmp, start: i64, step: i64, until: i64) -> Envoy {
    let fixture = fixtures().join("7.6.175_with_cts");
    let control = Control::new(&serial_of(&fixture));
    let clock = sim::Clock {
        file: dir.path("now"),
        now: start,
        step,
        until,
        energy: curve,
    };
    clock.write();
    control.lock().clock = Some(clock);
    envoy_with(&fixture, control)
}

pub fn clock_now(e: &Envoy) -> i64 {
    e.server.control.lock().clock.as_ref().unwrap().now
}

/// A clocked Envoy, a broker, a state folder, and the bridge's environment for them under
/// libfaketime, with `settings` added.
pub struct Clocked {
    pub e: Envoy,
    pub broker: Mosquitto,
    pub state: Tmp,
    pub env: Vec<(&'static str, String)>,
    pub _dir: Tmp,
}

pub fn clocked(start: i64, step: i64, until: i64, settings: &[(&'static str, &str)]) -> Clocked {
    let dir = Tmp::new("clock");
    let e = clocked_envoy(&dir, start, step, until);
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let mut env = with(bridge_env(&e, &broker, &state), settings);
    env.extend(faketime(&dir.path("now")));
    Clocked {
        e,
        broker,
        state,
        env,
        _dir: dir,
    }
}

/// Waits until the clock reached `until` and three more polls ran at that time.
pub fn run_to_the_end(d: &Daemon, e: &Envoy, until: i64) {
    assert!(
        d.wait_until(Duration::from_secs(120), |_| clock_now(e) >= until),
        "the clock stopped at {}: {}",
        clock_now(e),
        d.stderr()
    );
    let polls = e.server.control.count("GET /ivp/meters/readings");
    assert!(d.wait_until(Duration::from_secs(10), |_| {
        e.server.control.count("GET /ivp/meters/readings") >= polls + 3
    }));
}

/// The retained JSON payloads under `envoy/122238082763/`, by the rest of their topic.
pub fn retained_values(broker: &Mosquitto) -> BTreeMap<String, serde_json::Value> {
    let sub = Subscriber::start(broker, &[]);
    let year = "envoy/122238082763/production/year";
    assert!(sub.wait_until(Duration::from_secs(5), |s| {
        s.iter().any(|m| m.topic == year)
    }));
    sub.seen()
        .into_iter()
        .filter(|m| m.retained)
        .filter_map(|m| {
            let rest = m.topic.strip_prefix("envoy/122238082763/")?.to_string();
            Some((rest, serde_json::from_str(&m.payload).ok()?))
        })
        .collect()
}

/// Checks the daily, month and year values against the curve; `first` is the first
/// reading, `end` the last, `slack` the allowed error in Wh.
pub fn check_ledger(got: &BTreeMap<String, serde_json::Value>, first: i64, end: i64, slack: f64) {
    let yesterday = energy(MIDNIGHT_25, MIDNIGHT_26);
    let today = energy(MIDNIGHT_26, end);
    let month = energy(first, end);
    let value = |topic: &str| {
        got.get(topic)
            .unwrap_or_else(|| panic!("no retained {topic}: {:?}", got.keys()))["value"]
            .as_f64()
            .unwrap()
    };
    let sensors = ["prod_eim", "conso_all_eim", "import_eim", "grid_eim"];
    let flows = ["production", "consumption", "import", "export"];
    for k in 0..4 {
        let checks = [
            (
                format!("data/{}_yesterday", sensors[k]),
                value(&format!("data/{}_yesterday", sensors[k])),
                yesterday[k],
            ),
            (
                format!("data/{}_today", sensors[k]),
                value(&format!("data/{}_today", sensors[k])),
                today[k],
            ),
            (
                format!("{}/daily", flows[k]),
                value(&format!("{}/daily", flows[k])) * 1000.0,
                today[k],
            ),
            (
                format!("{}/month", flows[k]),
                value(&format!("{}/month", flows[k])) * 1000.0,
                month[k],
            ),
            (
                format!("{}/year", flows[k]),
                value(&format!("{}/year", flows[k])) * 1000.0,
                month[k],
            ),
        ];
        for (topic, got, want) in checks {
            println!("{topic}: {got:.3} Wh, expected {want:.3}");
            assert!(
                (got - want).abs() <= slack,
                "{topic}: got {got}, want {want}"
            );
        }
    }
    assert_eq!(got["data/prod_eim_yesterday"]["date"], "2026-10-25");
    assert_eq!(got["data/prod_eim_today"]["date"], "2026-10-26");
    assert_eq!(got["production/daily"]["date"], "2026-10-26");
}

/// The service on the clocked Envoy from `start` to `until` (raw topics off, a data poll
/// every 150 ms of real time, JSON, `TZ=Europe/Paris`, and `more`): the daemon, for its log,
/// and the retained payloads at the end.
fn service_through(
    start: i64,
    step: i64,
    until: i64,
    more: &[(&'static str, &str)],
) -> (Daemon, BTreeMap<String, serde_json::Value>) {
    let settings = [
        ("RAW_DATA_INTERVAL_SECONDS", "0"),
        ("DATA_INTERVAL_SECONDS", "150ms"),
        ("HA_DISCOVERY", "false"),
        ("MQTT_FORMAT", "json"),
        ("TZ", "Europe/Paris"),
    ];
    let c = clocked(start, step, until, &[&settings[..], more].concat());
    let d = Daemon::start(&pairs(&c.env), &[]);
    run_to_the_end(&d, &c.e, until);
    (d, retained_values(&c.broker))
}

#[test]
fn ledger_as_a_service_across_two_midnights_and_a_dst_change() {
    // 2026-10-24 21:03 CEST to 2026-10-26 01:00 CET, a reading every 10 simulated minutes.
    let (start, step, until) = (MIDNIGHT_25 - 10_620, 600, MIDNIGHT_26 + 3600);
    let (d, got) = service_through(start, step, until, &[("OFFPEAK_HOURS", "22:00-06:00")]);
    check_ledger(&got, start + step, until, 1.0);
    // 00:00 to 01:00 is off-peak: all of today's import is HC.
    let import = &got["import/daily"];
    assert_eq!(import["hc"], import["value"]);
    assert_eq!(import["hp"], 0);
    let detail = &got["import/detailed"]["data"];
    let times: Vec<&str> = detail
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["time"].as_str().unwrap())
        .collect();
    // The day so far: at 01:00 sharp the 01:00 slot has begun.
    assert_eq!(times, ["00:00", "00:30", "01:00"]);
    let log = d.stderr();
    assert_eq!(log.matches("new day 2026-10-25").count(), 1, "{log}");
    assert_eq!(log.matches("new day 2026-10-26").count(), 1, "{log}");
}

#[test]
fn ledger_from_cron_every_five_minutes() {
    // 2026-10-24 23:31 CEST to 2026-10-26 01:31 CET, one --once run every 5 minutes.
    let (start, step, until) = (MIDNIGHT_25 - 1740, 300, MIDNIGHT_26 + 5460);
    let c = clocked(
        start,
        step,
        until,
        &[
            ("HA_DISCOVERY", "false"),
            ("MQTT_FORMAT", "json"),
            ("TZ", "CET-1CEST,M3.5.0,M10.5.0/3"),
            ("OFFPEAK_HOURS", "00:30-06:00"),
        ],
    );
    once_runs(&c.env, ((until - start) / step) as usize);
    assert_eq!(clock_now(&c.e), until);
    let got = retained_values(&c.broker);
    // The counters are straight lines through both midnights and the 00:30 edge: the
    // interpolation bound is the rounding of the payloads.
    check_ledger(&got, start + step, until, 1.0);
    let import = &got["import/daily"];
    let hc = energy(MIDNIGHT_26 + 1800, until)[2] / 1000.0;
    let hp = energy(MIDNIGHT_26, MIDNIGHT_26 + 1800)[2] / 1000.0;
    println!(
        "import today: hc {} kWh (expected {hc:.3}), hp {} kWh (expected {hp:.3})",
        import["hc"], import["hp"]
    );
    assert!((import["hc"].as_f64().unwrap() - hc).abs() <= 0.001);
    assert!((import["hp"].as_f64().unwrap() - hp).abs() <= 0.001);
}

#[test]
fn zero_and_backwards_counters_never_make_a_day_negative_or_count_twice() {
    let e = envoy("7.6.175_with_cts");
    let c = e.server.control.clone();
    c.lock().faults.rate = 20.0;
    let state = Tmp::new("state");
    let env = dry_run_env(&e, &state, "0", "200ms");
    let d = Daemon::start(&pairs(&env), &["--dry-run"]);
    let readings = || c.count("GET /ivp/meters/readings");
    for counters in [
        sim::Counters::Advancing,
        sim::Counters::Zero,
        sim::Counters::Advancing,
        sim::Counters::Backwards,
        sim::Counters::Advancing,
    ] {
        let before = readings();
        c.lock().faults.counters = counters;
        // Each phase of the fault: at least 5 polls served with it (0.2 s each), bounded.
        assert!(
            d.wait_until(Duration::from_secs(10), |_| readings() >= before + 5),
            "{counters:?} not served: {}",
            d.stderr()
        );
    }
    let today: Vec<f64> = d
        .stdout()
        .iter()
        .filter_map(|l| l.strip_prefix("envoy/122238082763/data/prod_eim_today [retained] "))
        .map(|v| v.parse().unwrap())
        .collect();
    let steps: Vec<f64> = today.windows(2).map(|w| w[1] - w[0]).collect();
    let decreases = steps.iter().filter(|s| **s < 0.0).count();
    let negative = today.iter().filter(|v| **v < 0.0).count();
    let biggest = steps.iter().copied().fold(0.0, f64::max);
    println!(
        "{} polls through zero and backwards counters: negative days {negative}, decreases {decreases}, biggest step {biggest:.1} Wh (20 Wh/s, 0.2 s polls)",
        today.len()
    );
    assert!(today.len() > 20, "{}", d.stderr());
    assert_eq!((negative, decreases), (0, 0));
    // No step takes back the 1 kWh of the backwards phase, or the whole counter.
    assert!(biggest < 100.0, "{today:?}");
    // And today is what the counter really gained, from the first poll to the last (both in
    // an advancing phase): a ledger that counts nothing, or twice, fails here.
    let lifetime: Vec<f64> = d
        .stdout()
        .iter()
        .filter_map(|l| l.strip_prefix("envoy/122238082763/data/prod_eim_whLifetime [retained] "))
        .map(|v| v.parse().unwrap())
        .collect();
    let real = lifetime.last().unwrap() - lifetime.first().unwrap();
    let counted = *today.last().unwrap();
    assert!(real > 50.0, "the counter moved: {lifetime:?}");
    assert!(
        (counted - real).abs() <= 25.0,
        "today {counted} Wh, the counter gained {real} Wh"
    );
}

#[test]
fn wall_clock_jumping_a_day_forward_and_back_loses_doubles_and_misplaces_nothing() {
    let dir = Tmp::new("clock");
    let clock = dir.path("now");
    let set = |t: i64| {
        std::fs::write(clock.with_extension("tmp"), format!("{t}\n")).unwrap();
        std::fs::rename(clock.with_extension("tmp"), &clock).unwrap();
    };
    // 2026-10-26 12:00 CET, away from any midnight.
    let noon = MIDNIGHT_26 + 12 * 3600;
    set(noon);
    let e = envoy("7.6.175_with_cts");
    let c = e.server.control.clone();
    c.lock().faults.rate = 10.0;
    let state = Tmp::new("state");
    let mut env = vec![
        ("ENVOY_HOST", e.server.url()),
        ("ENVOY_TOKEN", e.token.clone()),
        ("STATE_DIR", state.0.to_str().unwrap().into()),
        ("RAW_DATA_INTERVAL_SECONDS", "0".into()),
        ("DATA_INTERVAL_SECONDS", "200ms".into()),
        ("HA_DISCOVERY", "false".into()),
        ("TZ", "Europe/Paris".into()),
    ];
    env.extend(faketime(&clock));
    let d = Daemon::start(&pairs(&env), &["--dry-run"]);
    let lifetime = |d: &Daemon| {
        d.stdout()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("envoy/122238082763/data/prod_eim_whLifetime [retained] "))
            .map(|v| v.parse::<f64>().unwrap())
    };
    let today = |d: &Daemon| {
        d.stdout()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("envoy/122238082763/data/prod_eim_today [retained] "))
            .map(|v| v.parse::<f64>().unwrap())
    };
    assert!(d.wait_until(Duration::from_secs(10), |d| today(d).is_some()));
    let first = lifetime(&d).unwrap() - today(&d).unwrap();
    std::thread::sleep(Duration::from_secs(2)); // the clock's phases: 2 s of polls each
    set(noon + 86_400 + 2);
    std::thread::sleep(Duration::from_secs(2)); // a day ahead
    set(noon + 4);
    std::thread::sleep(Duration::from_secs(2)); // and back
    let counted = today(&d).unwrap();
    let increase = lifetime(&d).unwrap() - first;
    println!(
        "clock +1 day then back: today {counted:.3} Wh, counter increase {increase:.3} Wh, difference {:.3} Wh",
        counted - increase
    );
    assert!((counted - increase).abs() <= 1.0, "{}", d.stderr());
    // The jump is held and said once; the day stays the 26th: no new day, no yesterday.
    let log = d.stderr();
    assert_eq!(
        log.matches("the wall clock jumped 1day").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("the wall clock is back in step").count(),
        1,
        "{log}"
    );
    assert!(
        !log.contains("new day") && !log.contains("the clock went back"),
        "{log}"
    );
    assert!(
        !d.stdout()
            .iter()
            .any(|l| l.contains("/data/prod_eim_yesterday")),
        "no day was closed"
    );
}

#[test]
fn nothing_carries_a_time_while_the_clock_is_not_set() {
    // A router before NTP: its clock says 1970.
    let dir = Tmp::new("clock");
    std::fs::write(dir.path("now"), "600\n").unwrap();
    let e = envoy("7.6.175_with_cts");
    let state = Tmp::new("state");
    let mut env = vec![
        ("ENVOY_HOST", e.server.url()),
        ("ENVOY_TOKEN", e.token.clone()),
        ("STATE_DIR", state.0.to_str().unwrap().into()),
        ("MQTT_FORMAT", "json".into()),
        ("HA_DISCOVERY", "false".into()),
    ];
    env.extend(faketime(&dir.path("now")));
    let out = run(&pairs(&env), &["--once", "--dry-run"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("/data/prod_eim_wNow"), "{stdout}");
    assert!(
        !stdout.contains("timestamp") && !stdout.contains("1970"),
        "no time before the clock is set: {stdout}"
    );
}

#[test]
fn the_days_peak_import_comes_from_the_raw_ticks_between_data_polls() {
    // A 4.3 kW import that only raw ticks see: it comes and goes between two data polls.
    let readings = fixture_file("7.6.175_with_cts", "ivp_meters_readings");
    let fixture = variant_with("7.6.175_with_cts", "ivp_meters_readings", Some(&readings));
    let spike = {
        let mut v: serde_json::Value = serde_json::from_str(&readings).unwrap();
        v[1]["activePower"] = 4321.0.into();
        v[1]["instantaneousDemand"] = 4321.0.into();
        v.to_string()
    };
    let e = envoy_with(&fixture.0, Control::new("122238082763"));
    let state = Tmp::new("state");
    let env = dry_run_env(&e, &state, "0.25", "10");
    let d = Daemon::start(&pairs(&env), &["--dry-run"]);
    let peak = "envoy/122238082763/max_power [retained] ";
    let peaks = |d: &Daemon| -> Vec<f64> {
        d.stdout()
            .iter()
            .filter_map(|l| l.strip_prefix(peak))
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let raw_spike = "envoy/122238082763/raw/conso_net_eim_wNow 4321";
    let data_spike = "envoy/122238082763/data/conso_net_eim_wNow [retained] 4321";
    // The first peak comes with the second data poll (10 s): the first one starts the ledger.
    assert!(
        d.wait_until(Duration::from_secs(30), |d| !peaks(d).is_empty()),
        "{}",
        d.stderr()
    );
    assert_eq!(peaks(&d), [0.0], "exporting at first: no import");
    // The spike, for one raw tick or two; again if a data poll happened to read it.
    for _ in 0..3 {
        std::fs::write(fixture.0.join("ivp_meters_readings"), &spike).unwrap();
        let seen = |d: &Daemon| d.stdout().iter().any(|l| l == raw_spike);
        assert!(d.wait_until(Duration::from_secs(5), seen), "{}", d.stderr());
        std::fs::write(fixture.0.join("ivp_meters_readings"), &readings).unwrap();
        if !d.stdout().iter().any(|l| l.starts_with(data_spike)) {
            break;
        }
    }
    assert!(
        !d.stdout().iter().any(|l| l.starts_with(data_spike)),
        "no data poll read the spike"
    );
    // The next data poll says the day's peak: the raw ticks' 4,321 W.
    let n = peaks(&d).len();
    assert!(
        d.wait_until(Duration::from_secs(15), |d| peaks(d).len() > n),
        "{}",
        d.stderr()
    );
    assert_eq!(peaks(&d).last(), Some(&4321.0));
}

#[test]
fn a_running_service_crosses_a_month_end_inside_the_year() {
    // 2026-10-31 23:00 to 2026-11-01 01:00 CET (22:00 to 00:00 UTC: 400 W of grid import,
    // no sun), a reading every 10 simulated minutes.
    let midnight = MIDNIGHT_26 + 6 * 86_400; // 2026-11-01 00:00 CET
    let (start, step, until) = (midnight - 3600, 600, midnight + 3600);
    let (d, got) = service_through(start, step, until, &[]);
    let kwh = |topic: &str| got[topic]["value"].as_f64().unwrap();
    let (today, counted) = (energy(midnight, until)[2], energy(start + step, until)[2]);
    assert!(
        today > 300.0 && counted > today + 300.0,
        "the curve: {today} {counted}"
    );
    // November's month holds November only; the year goes on from October.
    for (topic, want) in [
        ("import/daily", today),
        ("import/month", today),
        ("import/year", counted),
    ] {
        assert!(
            (kwh(topic) - want / 1000.0).abs() < 0.002,
            "{topic}: {} kWh, not {}",
            kwh(topic),
            want / 1000.0
        );
    }
    let log = d.stderr();
    assert_eq!(log.matches("new day 2026-11-01").count(), 1, "{log}");
}
