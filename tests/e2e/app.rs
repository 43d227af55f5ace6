//! The Home Assistant App mode: the binary under a stand-in Supervisor on loopback, as the
//! Supervisor runs an App: `SUPERVISOR_TOKEN` set, the owner's options in the data folder
//! (`APP_DATA_DIR` here, `/data` in the App), the broker asked of the Supervisor.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// A stand-in Supervisor: answers `GET /services/mqtt` with `answer` (status, body) when
/// the bearer is `token`, 401 otherwise; keeps each request's first line.
struct Supervisor {
    url: String,
    asked: Arc<Mutex<Vec<String>>>,
}

fn supervisor(token: &'static str, answer: (u16, String)) -> Supervisor {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = Arc::new(Mutex::new(Vec::new()));
    let kept = asked.clone();
    std::thread::spawn(move || {
        // A handful of requests at most: a test asks once or twice.
        for stream in listener.incoming().take(8).flatten() {
            let mut reader = BufReader::new(&stream);
            let mut head = Vec::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                head.push(line.trim().to_string());
                line.clear();
            }
            let authorized = head
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&format!("authorization: Bearer {token}")));
            let (status, body) = match (head.first(), authorized) {
                (_, false) => (
                    401,
                    r#"{"result":"error","message":"Unauthorized"}"#.to_string(),
                ),
                (Some(l), true) if l.starts_with("GET /services/mqtt ") => answer.clone(),
                _ => (404, "{}".to_string()),
            };
            kept.lock()
                .unwrap()
                .push(head.first().cloned().unwrap_or_default());
            let _ = write!(
                &stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Supervisor { url, asked }
}

fn mosquitto_service(port: &str) -> (u16, String) {
    let body = format!(
        r#"{{"result":"ok","data":{{"addon":"core_mosquitto","host":"127.0.0.1","port":"{port}","ssl":false,"protocol":"3.1.1","username":"addons","password":"Xo9-secret"}}}}"#
    );
    (200, body)
}

/// The App's options for the simulated Envoy, written to `dir/options.json`, `more` merged in.
fn options(dir: &Tmp, e: &Envoy, more: &str) {
    let text = format!(
        r#"{{"envoy_host":"{}","envoy_token":"{}","mqtt_topic_prefix":"envoy","ha_discovery":true,"log_level":"info"{more}}}"#,
        e.server.url(),
        e.token
    );
    std::fs::write(dir.path("options.json"), text).unwrap();
}

fn app_env<'a>(dir: &'a Tmp, s: &'a Supervisor, token: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("SUPERVISOR_TOKEN", token),
        ("SUPERVISOR_URL", s.url.as_str()),
        ("APP_DATA_DIR", dir.0.to_str().unwrap()),
        ("TZ", "Europe/Paris"),
    ]
}

#[test]
fn the_app_takes_its_options_and_the_supervisors_broker_and_keeps_state_in_data() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::with_password("addons", "Xo9-secret");
    let sub = Subscriber::start(&broker, &["-u", "addons", "-P", "Xo9-secret"]);
    let data = Tmp::new("app-data");
    options(&data, &e, "");
    let s = supervisor("sup-token-1", mosquitto_service(&broker.port()));
    let out = run(&app_env(&data, &s, "sup-token-1"), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(*s.asked.lock().unwrap(), ["GET /services/mqtt HTTP/1.1"]);
    // Published to the Supervisor's broker, with its login, under the options' prefix.
    let lifetime = "envoy/122238082763/data/prod_eim_whLifetime";
    assert!(
        sub.wait_until(Duration::from_secs(10), |seen| seen
            .iter()
            .any(|m| m.topic == lifetime)),
        "{}",
        text(&out.stderr)
    );
    let lifetime = sub.last(lifetime).expect("published");
    assert!(lifetime.0, "retained");
    // The state is in the data folder (kept across updates, in Home Assistant's backups).
    for file in ["ledger.json", "envoy-cert.sha256"] {
        assert!(data.path(file).is_file(), "{file} in the data folder");
    }
    // Neither the Supervisor's token nor the broker's password is in the output.
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !all.contains("sup-token-1") && !all.contains("Xo9-secret"),
        "{all}"
    );
}

#[test]
fn the_app_says_what_is_wrong_with_the_supervisor_and_exits_2() {
    let e = envoy("7.6.175_with_cts");
    let data = Tmp::new("app-data");
    options(&data, &e, "");
    let no_service = (
        400,
        r#"{"result":"error","message":"No available service"}"#.to_string(),
    );
    #[rustfmt::skip]
    let cases = [
        ("wrong-token", (200, String::new()), "configuration: SUPERVISOR_TOKEN was refused by the Supervisor (HTTP 401"),
        ("sup-token-1", no_service, "install the Mosquitto broker App or set mqtt_host"),
    ];
    for (token, answer, words) in cases {
        let s = supervisor("sup-token-1", answer);
        let out = run(&app_env(&data, &s, token), &["--once", "--dry-run"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{token}: {err}");
        assert!(err.contains(words), "{token}: {err}");
        assert!(
            !err.contains("sup-token-1") && !err.contains("wrong-token"),
            "{err}"
        );
        assert_eq!(s.asked.lock().unwrap().len(), 1);
    }
}

#[test]
fn options_naming_a_broker_or_a_wrong_value_need_no_supervisor() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let data = Tmp::new("app-data");
    let s = supervisor("sup-token-1", (500, String::new()));
    // A broker in the options: the Supervisor is not asked.
    options(
        &data,
        &e,
        &format!(r#","mqtt_host":"127.0.0.1","mqtt_port":{}"#, broker.port()),
    );
    let out = run(&app_env(&data, &s, "sup-token-1"), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s.asked.lock().unwrap().is_empty());
    // A wrong value: exit 2 naming the setting, as from any other source.
    options(&data, &e, r#","mqtt_host":"h","mqtt_port":"eighty""#);
    let out = run(&app_env(&data, &s, "sup-token-1"), &["--once"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("configuration: MQTT_PORT "),
        "{}",
        text(&out.stderr)
    );
    // An option envoy2mqtt does not have.
    options(&data, &e, r#","mqtt_hots":"h""#);
    let out = run(&app_env(&data, &s, "sup-token-1"), &["--once"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did you mean mqtt_host?"),
        "{}",
        text(&out.stderr)
    );
}
