//! `cargo run --example envoy_sim -- FIXTURE_DIR [CERT_DIR]`: a simulated Envoy on loopback
//! serving a fixture folder over HTTPS, for trying envoy2mqtt without hardware (`make demo`).
//! It prints its URL and a token it accepts, then serves until stopped. The energy counters
//! advance by `SIM_RATE` Wh a second (0.5 unless set; 0 keeps the fixture's numbers).
//! Every second it prints `stats CONNECTIONS REQUESTS`: what it has seen so far.

mod pki;
mod sim;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(fixture) = args.next() else {
        eprintln!("usage: envoy_sim FIXTURE_DIR [CERT_DIR]");
        std::process::exit(2);
    };
    let fixture = std::path::PathBuf::from(fixture);
    if !fixture.join("info").is_file() && !fixture.join("endpoint_info.xml").is_file() {
        eprintln!(
            "envoy_sim: {} is not an Envoy capture (no info file in it)",
            fixture.display()
        );
        std::process::exit(2);
    }
    let certs = args.next().map_or_else(
        || std::env::temp_dir().join(format!("envoy_sim-{}", std::process::id())),
        Into::into,
    );
    let info = std::fs::read_to_string(fixture.join("info")).unwrap_or_default();
    let serial = info
        .split("<sn>")
        .nth(1)
        .and_then(|s| s.split("</sn>").next())
        .unwrap_or("000000000000")
        .to_string();
    let control = sim::Control::new(&serial);
    control.lock().faults.rate = std::env::var("SIM_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0.5);
    let server = sim::envoy(&fixture, &certs, control.clone());
    println!("url {}", server.url());
    println!(
        "token {}",
        control.issue_token(365 * 86_400, "demo@example.com")
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let (connections, requests) = {
            let s = control.lock();
            (s.seen.connections, s.seen.requests.len())
        };
        println!("stats {connections} {requests}");
    }
}
