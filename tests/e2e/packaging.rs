//! Packaging: the OpenWrt init script run as procd would, the feed's test script, `make demo`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::support::*;

/// Stand-ins for the OpenWrt shell functions the init script calls: UCI options are read
/// from `$UCI_FILE` (with the defaults of the validation specs), and what the script asks
/// of procd is written to `$OUT`: `argv` (one argument a line), `env` (KEY=value lines),
/// `params` (the other instance parameters).
pub const PROCD_HARNESS: &str = r#"
config_load() { :; }
config_foreach() { _cb=$1; shift 2; "$_cb" main "$@"; }
uci_option() { sed -n "s/^[[:space:]]*option $1 '\(.*\)'\$/\1/p" "$UCI_FILE" | head -n 1; }
# As OpenWrt's validate_data: whether $2 is of type $1; booleans come out as 1 or 0.
uci_valid() {
	case "$1" in
	bool) case "$2" in
		1|true|yes|on|enabled) _value=1 ;;
		0|false|no|off|disabled) _value=0 ;;
		*) return 1 ;;
		esac ;;
	port) case "$2" in ''|*[!0-9]*) return 1 ;; esac; [ "$2" -le 65535 ] ;;
	host) case "$2" in ''|*[!A-Za-z0-9.:_-]*) return 1 ;; esac ;;
	file) [ -f "$2" ] ;;
	range\(*) _r=${1#range(}; _r=${_r%)}
		case "$2" in ''|*[!0-9]*) return 1 ;; esac
		[ "$2" -ge "${_r%,*}" ] && [ "$2" -le "${_r#*,}" ] ;;
	or\(*) _r=${1#or(}; _r=${_r%)}
		for _c in $(echo "$_r" | tr ',' ' '); do [ "$_c" = "\"$2\"" ] && return 0; done
		return 1 ;;
	*) return 0 ;;
	esac
}
uci_load_validate() {
	_section=$3; _callback=$4; shift 4; _bad=0
	for _spec in "$@"; do
		_name=${_spec%%:*}; _rest=${_spec#*:}; _type=${_rest%%:*}; _default=
		case "$_rest" in *:*) _default=${_rest#*:} ;; esac
		_value=$(uci_option "$_name")
		[ -n "$_value" ] || _value=$_default
		if [ -n "$_value" ] && ! uci_valid "$_type" "$_value"; then
			echo "validation failed: $_name '$_value' is not a $_type" >&2
			_bad=1
		fi
		eval "$_name=\$_value"
	done
	"$_callback" "$_section" "$_bad"
}
procd_open_instance() { :; }
procd_close_instance() { :; }
procd_set_param() {
	_key=$1; shift
	case "$_key" in
	command) printf '%s\n' "$@" > "$OUT/argv" ;;
	env) printf '%s\n' "$@" > "$OUT/env" ;;
	*) echo "$_key $*" >> "$OUT/params" ;;
	esac
}
procd_append_param() {
	_key=$1; shift
	case "$_key" in
	command) printf '%s\n' "$@" >> "$OUT/argv" ;;
	env) printf '%s\n' "$@" >> "$OUT/env" ;;
	*) echo "$_key $*" >> "$OUT/params" ;;
	esac
}
. "$INIT"
SETTINGS="$OUT/envoy2mqtt.conf"
start_service
"#;

/// Runs the init script's `start_service` on `uci` (the text of /etc/config/envoy2mqtt);
/// returns the command line and the environment procd would start the bridge with.
/// The init script's `start_service` under the harness, with `uci` as the UCI file.
pub fn procd_run(dir: &Tmp, uci: &str) -> Output {
    for f in ["env", "params", "argv"] {
        let _ = std::fs::remove_file(dir.path(f));
    }
    std::fs::write(dir.path("uci"), uci).unwrap();
    let init =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("openwrt/envoy2mqtt/files/envoy2mqtt.init");
    Command::new("sh")
        .args(["-c", PROCD_HARNESS])
        .env("UCI_FILE", dir.path("uci"))
        .env("OUT", &dir.0)
        .env("INIT", init)
        .output()
        .unwrap()
}

pub fn procd_start(dir: &Tmp, uci: &str) -> (Vec<String>, Vec<(String, String)>) {
    let out = procd_run(dir, uci);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read = |f: &str| std::fs::read_to_string(dir.path(f)).unwrap_or_default();
    let argv = read("argv").lines().map(str::to_string).collect();
    let env = read("env")
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    (argv, env)
}

/// The UCI file of a router that runs the bridge against `e` and `broker`.
fn uci_file(e: &Envoy, broker: &Mosquitto, state: &Tmp, prefix: &str) -> String {
    format!(
        "config envoy2mqtt 'main'\n\toption enabled '1'\n\toption envoy_host '{}'\n\toption envoy_token '{}'\n\toption mqtt_host '127.0.0.1'\n\toption mqtt_port '{}'\n\toption mqtt_username 'router'\n\toption mqtt_password 'uci-SECRET-8812'\n\toption mqtt_topic_prefix '{prefix}'\n\toption raw_data_interval_seconds '0'\n\toption ha_discovery '0'\n\toption offpeak_hours '22:00-06:00'\n\toption state_dir '{}'\n",
        e.server.url(),
        e.token,
        broker.port(),
        state.0.display()
    )
}

/// What procd was asked for: secrets only in the environment, the rest in a 0600 settings
/// file, and the instance parameters of a supervised service.
fn check_instance(dir: &Tmp, env: &[(String, String)], token: &str) {
    let settings = dir.path("envoy2mqtt.conf");
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["ENVOY_TOKEN", "MQTT_PASSWORD"],
        "secrets only, in the environment"
    );
    let file = std::fs::read_to_string(&settings).unwrap();
    assert!(
        file.contains("MQTT_TOPIC_PREFIX=solar\n") && file.contains("HA_DISCOVERY=false\n"),
        "{file}"
    );
    assert!(
        !file.contains("SECRET") && !file.contains(token),
        "no secret in {file}"
    );
    assert_eq!(
        std::fs::metadata(&settings).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let params = std::fs::read_to_string(dir.path("params")).unwrap();
    assert!(
        params.contains("reload_signal HUP")
            && params.contains("respawn")
            && params.contains("stderr 1"),
        "{params}"
    );
}

#[test]
fn openwrt_init_script_starts_and_reloads_the_bridge_as_procd_would() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::with_password("router", "uci-SECRET-8812");
    let dir = Tmp::new("procd");
    let state = Tmp::new("state");
    let uci = |prefix: &str| uci_file(&e, &broker, &state, prefix);
    // Disabled, as installed: no instance.
    let (argv, _) = procd_start(
        &dir,
        &uci("solar").replace("option enabled '1'", "option enabled '0'"),
    );
    assert!(argv.is_empty(), "{argv:?}");

    let (argv, env) = procd_start(&dir, &uci("solar"));
    let settings = dir.path("envoy2mqtt.conf");
    assert_eq!(
        argv,
        [
            "/usr/bin/envoy2mqtt",
            "--config",
            settings.to_str().unwrap()
        ]
    );
    check_instance(&dir, &env, &e.token);

    // Started as procd would: that command line, that environment and nothing else.
    let sub = Subscriber::start(&broker, &["-u", "router", "-P", "uci-SECRET-8812"]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    let mut cmd = command(&env, &args);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let topic = "solar/122238082763/data/prod_eim_wNow";
    let seen = sub.wait_until(Duration::from_secs(10), |s| {
        s.iter().any(|m| m.topic == topic)
    });
    if !seen {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("no {topic}: {}", text(&out.stderr));
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    assert!(!text(&cmdline).contains("SECRET") && !text(&cmdline).contains(&e.token));

    // `reload` after a UCI change: the command line and the secrets are the same, so procd
    // sends SIGHUP instead of restarting; the bridge re-reads the file and moves to the new
    // prefix without a new process.
    let (argv2, env2) = procd_start(&dir, &uci("roof"));
    assert_eq!(argv2, argv);
    assert_eq!(env2.len(), env.len());
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let topic = "roof/122238082763/data/prod_eim_wNow";
    let moved = sub.wait_until(Duration::from_secs(10), |s| {
        s.iter().any(|m| m.topic == topic)
    });
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        moved && alive,
        "no {topic} after SIGHUP: {}",
        text(&out.stderr)
    );
}

#[test]
fn make_demo_lists_the_captures_and_refuses_an_unknown_one() {
    let make = |variant: &str| {
        Command::new("make")
            .args(["-s", "demo", &format!("VARIANT={variant}")])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let list = make("list");
    assert!(list.status.success());
    let names = text(&list.stdout);
    for name in [
        "7.6.175_with_cts",
        "8.2.4264_metered_no_ct",
        "vincentwolsink_D7.6.175_metered",
    ] {
        assert!(names.contains(&format!("  {name}\n")), "{names}");
    }
    let nope = make("nope");
    assert!(!nope.status.success());
    let err = text(&nope.stderr);
    assert!(
        err.lines().next().unwrap_or_default()
            == "make demo: there is no capture named 'nope'; make demo VARIANT=list shows them",
        "{err}"
    );
    assert!(
        !err.contains("panicked") && text(&nope.stdout).is_empty(),
        "{err}"
    );
}

#[test]
fn openwrt_feed_test_script_passes() {
    // The feed's test.sh runs `envoy2mqtt` from PATH with the package version.
    let bin = Path::new(env!("CARGO_BIN_EXE_envoy2mqtt"))
        .parent()
        .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("openwrt/envoy2mqtt/test.sh");
    let out = Command::new("sh")
        .arg(script)
        .args(["envoy2mqtt", env!("CARGO_PKG_VERSION")])
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(&format!("envoy2mqtt {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn openwrt_init_script_refuses_values_of_the_wrong_type_and_reads_every_boolean() {
    let dir = Tmp::new("procd");
    let base = "config envoy2mqtt 'main'\n\toption enabled '1'\n\toption envoy_host '10.0.0.2'\n";
    // Every spelling of a UCI boolean: written to the settings file as true or false.
    let uci = format!(
        "{base}\toption mqtt_retain 'off'\n\toption ha_discovery 'no'\n\toption mqtt_tls 'yes'\n"
    );
    let (argv, _) = procd_start(&dir, &uci);
    assert_eq!(argv.len(), 3, "{argv:?}");
    let file = std::fs::read_to_string(dir.path("envoy2mqtt.conf")).unwrap();
    for line in ["MQTT_RETAIN=false", "HA_DISCOVERY=false", "MQTT_TLS=true"] {
        assert!(file.lines().any(|l| l == line), "{line}: {file}");
    }
    // A value of the wrong type: no instance, and the reason in the log.
    for bad in [
        "option mqtt_port 'abc'",
        "option mqtt_qos '5'",
        "option envoy_tls_verify 'maybe'",
        "option mqtt_retain 'perhaps'",
        "option mqtt_host 'http://broker/'",
        "option mqtt_ca_cert '/nonexistent/ca.pem'",
    ] {
        let out = procd_run(&dir, &format!("{base}\t{bad}\n"));
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{bad}: accepted");
        assert!(
            err.contains("validation failed") && err.contains("is not valid"),
            "{bad}: {err}"
        );
        assert!(!dir.path("argv").exists(), "{bad}: an instance was started");
    }
}

/// A change made to a copy of the App folder.
type Edit = dyn Fn(&Path);

/// `scripts/ha-app-check` on a copy of the App folder: `Ok` or the problems it printed.
fn ha_app_check(edit: impl Fn(&Path)) -> Result<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = Tmp::new("ha-app");
    let ok = Command::new("cp")
        .arg("-r")
        .arg(root.join("ha-app/."))
        .arg(&copy.0)
        .status()
        .unwrap();
    assert!(ok.success());
    edit(&copy.0);
    let out = Command::new(root.join("scripts/ha-app-check"))
        .arg(&copy.0)
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(text(&out.stdout)),
        false => Err(text(&out.stderr)),
    }
}

#[test]
fn the_home_assistant_app_keeps_the_supervisors_rules_and_ours() {
    let ok = ha_app_check(|_| {}).unwrap();
    assert!(ok.contains("24 options, version 0.1.0: ok"), "{ok}");
    let replace = |file: &'static str, from: &'static str, to: &'static str| {
        move |dir: &Path| {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains(from), "{file}: {from}");
            std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        }
    };
    #[rustfmt::skip]
    let cases: Vec<(Box<Edit>, &str)> = vec![
        (Box::new(replace("config.yaml", "version: \"0.1.0\"", "version: \"0.2.0\"")), "version 0.2.0 is not the crate's 0.1.0"),
        (Box::new(replace("config.yaml", "  - amd64\n", "  - amd64\n  - armv7\n")), "arch: aarch64 and amd64 only"),
        (Box::new(replace("config.yaml", "mqtt_password: password?", "mqtt_password: str?")), "mqtt_password is a password"),
        (Box::new(replace("config.yaml", "log_level: list(error|warn|info|debug|trace)", "log_level: list(error|warn|info|debug|trace")), "schema: log_level"),
        (Box::new(replace("config.yaml", "  ha_discovery: bool\n", "  ha_discovery: bool\n  envoy_colour: str?\n")), "'envoy_colour' is not one of envoy2mqtt's settings"),
        (Box::new(replace("translations/en.yaml", "    name: Log level\n", "")), "'log_level' needs a name and a description"),
        (Box::new(replace("config.yaml", "startup: services", "startup: application")), "startup: services"),
        (Box::new(|d: &Path| std::fs::write(d.join("build.yaml"), "build_from: {}\n").unwrap()), "build.yaml is deprecated"),
        (Box::new(|d: &Path| std::fs::write(d.join("icon.png"), "GIF89a").unwrap()), "icon.png is not a PNG"),
    ];
    for (edit, words) in cases {
        let err = ha_app_check(edit).expect_err(words);
        assert!(err.contains(words), "{words}: {err}");
    }
}

#[test]
fn the_oci_image_is_valid_and_two_builds_are_the_same_bytes() {
    // A stand-in binary (the layout is what is checked here; `make oci` takes the static ones).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let standin = Tmp::new("oci-bin");
    let bin = standin.path("envoy2mqtt");
    std::fs::write(&bin, b"\x7fELF stand-in for the static binary").unwrap();
    let build = |out: &Tmp, extra: &[&str]| {
        let mut cmd = Command::new(root.join("scripts/oci"));
        for p in ["amd64", "arm64", "arm/v7"] {
            cmd.arg("--bin").arg(format!("{p}={}", bin.display()));
        }
        let out = cmd
            .arg("--out")
            .arg(&out.0)
            .args(extra)
            .env("SOURCE_DATE_EPOCH", "1764806400")
            .output()
            .unwrap();
        (out.status.success(), text(&out.stdout) + &text(&out.stderr))
    };
    let (a, b) = (Tmp::new("oci-a"), Tmp::new("oci-b"));
    let (ok, said) = build(&a, &["--check"]);
    assert!(ok, "{said}");
    for platform in ["linux/amd64", "linux/arm64", "linux/arm/v7"] {
        assert!(
            said.contains(&format!("checked {platform}: oci-image-tool and skopeo")),
            "{said}"
        );
    }
    let (ok, said) = build(&b, &[]);
    assert!(ok, "{said}");
    let archive = |t: &Tmp| std::fs::read(t.path("envoy2mqtt-0.1.0.oci.tar")).unwrap();
    assert!(archive(&a) == archive(&b), "two builds, two archives");
    // A damaged blob is found.
    let blobs = a.path("envoy2mqtt-0.1.0/blobs/sha256");
    let blob = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|f| f.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let (ok, said) = build(&a, &["--check-only"]);
    assert!(!ok && said.contains("oci: check failed"), "{said}");
}

/// `scripts/package apk` for x86_64 into `out`, from a stand-in binary, as release `release`.
fn apk_packages(out: &Tmp, bin: &Path, release: &str) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new(root.join("scripts/package"))
        .arg("apk")
        .env("PACKAGE_BINARY", bin)
        .env("PACKAGE_OUT", &out.0)
        .env("APK_ARCHS", "x86_64")
        .env("APK_RELEASE", release)
        .env("SOURCE_DATE_EPOCH", "1764806400")
        .output()
        .unwrap()
}

/// apk-tools 3, as `scripts/apk-tools` finds or builds it (APK_TOOLS_SRC: the source archive).
fn apk_tools() -> Result<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/apk-tools"))
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(text(&out.stdout).trim().to_string()),
        false => Err(text(&out.stderr)),
    }
}

#[test]
fn openwrt_apk_packages_install_from_a_signed_feed_and_keep_an_edited_config() {
    let apk = match apk_tools() {
        Ok(apk) => apk,
        Err(said) => {
            // No apk-tools 3 and no source archive: the one thing to check is that the
            // builder is told what to give (CI gives APK_TOOLS_SRC: .ci/run).
            assert!(said.contains("set APK_TOOLS_SRC"), "{said}");
            println!("apk packages not checked: {said}");
            return;
        }
    };
    let standin = Tmp::new("apk-bin");
    let bin = standin.path("envoy2mqtt");
    std::fs::write(&bin, b"#!/bin/sh\necho envoy2mqtt stand-in\n").unwrap();
    let feed = Tmp::new("apk-feed");
    let made = apk_packages(&feed, &bin, "r1");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let pkg = feed.path("apk/x86_64/envoy2mqtt-0.1.0-r1.apk");
    let index = feed.path("apk/x86_64/packages.adb");
    // The package's metadata, its files in OpenWrt's layout, its scripts; deflate, not zstd.
    let dump = |f: &Path| {
        let out = Command::new(&apk).arg("adbdump").arg(f).output().unwrap();
        text(&out.stdout)
    };
    let meta = dump(&pkg);
    for words in [
        "name: envoy2mqtt",
        "version: 0.1.0-r1",
        "arch: x86_64",
        "license: MIT",
        "name: lib/apk/packages",
        "name: envoy2mqtt.conffiles_static",
        "name: envoy2mqtt.list",
        "name: lib/upgrade/keep.d",
        "post-install: |",
        "pre-deinstall: |",
        "default_postinst",
        "default_prerm",
    ] {
        assert!(meta.contains(words), "{words}: {meta}");
    }
    assert_eq!(&std::fs::read(&pkg).unwrap()[..4], b"ADBd", "deflate");
    assert!(dump(&index).contains("name: envoy2mqtt"));
    let apk_in = |root: &Tmp, args: &[&str]| {
        let out = Command::new(&apk)
            .arg("--root")
            .arg(&root.0)
            .args(["--arch", "x86_64", "--no-scripts", "--no-cache"])
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), text(&out.stdout) + &text(&out.stderr))
    };
    // From the signed feed: refused without its key, taken with it.
    let fake = Tmp::new("apk-root");
    let repo = ["--repository", index.to_str().unwrap()];
    let (ok, said) = apk_in(
        &fake,
        &[&["--initdb"][..], &repo, &["add", "envoy2mqtt"]].concat(),
    );
    assert!(
        !ok,
        "installed from a feed signed by an unknown key: {said}"
    );
    std::fs::create_dir_all(fake.path("etc/apk/keys")).unwrap();
    std::fs::copy(
        feed.path("apk/throwaway-key.pub"),
        fake.path("etc/apk/keys/envoy2mqtt.pub"),
    )
    .unwrap();
    let (ok, said) = apk_in(
        &fake,
        &[&["--initdb"][..], &repo, &["add", "envoy2mqtt"]].concat(),
    );
    assert!(ok, "{said}");
    for file in [
        "usr/bin/envoy2mqtt",
        "etc/init.d/envoy2mqtt",
        "lib/apk/packages/envoy2mqtt.list",
        "lib/upgrade/keep.d/envoy2mqtt",
    ] {
        assert!(fake.path(file).is_file(), "{file}");
    }
    let list = std::fs::read_to_string(fake.path("lib/apk/packages/envoy2mqtt.list")).unwrap();
    assert!(list.contains("/usr/bin/envoy2mqtt\n") && list.contains("/etc/config/envoy2mqtt\n"));
    let keep = std::fs::read_to_string(fake.path("lib/upgrade/keep.d/envoy2mqtt")).unwrap();
    assert_eq!(keep, "/etc/envoy2mqtt/\n");
    // An edited /etc/config/envoy2mqtt survives an upgrade (the new one beside it) and removal.
    let config = fake.path("etc/config/envoy2mqtt");
    let edited = std::fs::read_to_string(&config).unwrap() + "\toption enabled '1'\n";
    std::fs::write(&config, &edited).unwrap();
    let newer = Tmp::new("apk-feed-r2");
    assert!(apk_packages(&newer, &bin, "r2").status.success());
    let r2 = newer.path("apk/x86_64/envoy2mqtt-0.1.0-r2.apk");
    let (ok, said) = apk_in(&fake, &["--allow-untrusted", "add", r2.to_str().unwrap()]);
    assert!(ok && said.contains("0.1.0-r2"), "{said}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    let (ok, said) = apk_in(&fake, &["del", "envoy2mqtt"]);
    assert!(ok, "{said}");
    assert!(!fake.path("usr/bin/envoy2mqtt").exists());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
}
