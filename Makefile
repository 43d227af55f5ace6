# envoy2mqtt tasks. `make help` lists them; `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURES ?= tests/fixtures/envoy
VARIANT ?= 7.6.175_with_cts

.PHONY: help build release test deps lint demo bench soak fuzz mutants pyenphase clean cross cross-check size ipk apk deb ha-app oci dist install

help: ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## debug build
	$(CARGO) build

release: ## size-optimised release build (target/release/envoy2mqtt)
	$(CARGO) build --release

deps: ## install what the tests need (openssl, mosquitto, mosquitto-clients, libfaketime, tzdata, python3-yaml, skopeo, oci-image-tool) when it is missing
	@missing=""; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_sub >/dev/null || missing="$$missing mosquitto-clients"; \
	ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || missing="$$missing libfaketime"; \
	[ -f /usr/share/zoneinfo/Europe/Paris ] || missing="$$missing tzdata"; \
	python3 -c 'import yaml' 2>/dev/null || missing="$$missing python3-yaml"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v oci-image-tool >/dev/null || missing="$$missing oci-image-tool"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "the tests need:$$missing; install them, e.g.: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

lint: ## rustfmt and clippy (warnings are errors), shellcheck of the shell scripts
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	scripts/shellcheck

# The end-to-end tests mostly wait (on a simulated Envoy's delays, a broker's keep-alive, 1 Hz
# ticks): 8 at once keep 2 cores under a third busy, so 8 threads whatever the core count.
TEST_THREADS ?= 8

test: deps lint ## everything CI checks: lint, unit and end-to-end tests (fault figures shown)
	$(CARGO) test --lib --bins --tests -- --show-output --test-threads=$(TEST_THREADS)

demo: ## a simulated Envoy on loopback, and envoy2mqtt --once --dry-run against it (VARIANT=list shows the captures)
	@if [ "$(VARIANT)" = list ]; then \
	  echo "captures (make demo VARIANT=<name>):"; \
	  for d in $(FIXTURES)/*/; do n=$$(basename "$$d"); printf '  %s\n' "$$n"; done; exit 0; \
	fi; \
	if [ ! -d "$(FIXTURES)/$(VARIANT)" ]; then \
	  echo "make demo: there is no capture named '$(VARIANT)'; make demo VARIANT=list shows them" >&2; exit 2; \
	fi
	@[ "$(VARIANT)" = list ] || { echo "building envoy2mqtt and the simulated Envoy (about a minute the first time)..."; \
	  $(CARGO) build --examples --bins; }
	@[ "$(VARIANT)" = list ] || { dir=$$(mktemp -d); \
	./target/debug/examples/envoy_sim "$(FIXTURES)/$(VARIANT)" "$$dir/certs" > "$$dir/sim.out" & sim=$$!; \
	trap 'kill $$sim 2>/dev/null; rm -rf "$$dir"' EXIT; \
	for i in $$(seq 50); do grep -q '^token ' "$$dir/sim.out" && break; sleep 0.1; done; \
	url=$$(awk '/^url /{print $$2}' "$$dir/sim.out"); \
	echo "simulated Envoy ($(VARIANT)) at $$url"; \
	ENVOY_HOST="$$url" ENVOY_TOKEN="$$(awk '/^token /{print $$2}' "$$dir/sim.out")" STATE_DIR="$$dir/state" \
	  ./target/debug/envoy2mqtt --once --dry-run; }

clean: ## remove build output
	$(CARGO) clean

bench: ## the figures table: sizes, the service at 1 Hz for 10 minutes, --once (BENCH_SECONDS to change)
	scripts/bench

soak: ## an hour of service (memory at 10 against 60 minutes), then Envoy outages of minutes
	BENCH_SECONDS=3600 BENCH_SOAK=1 scripts/bench
	FAULT_SCALE=12 $(CARGO) test --test e2e -- --exact fault::envoy_outages_are_backed_off_and_recovered_from_at_the_next_poll --nocapture

pyenphase: ## compare every value with pyenphase's reading of the same captures (PyPI pyenphase, loopback)
	scripts/pyenphase

mutants: ## mutation testing of the pure core (cargo-mutants, unit tests; slow, not in CI)
	scripts/mutants

fuzz: ## every fuzz target for 10 million executions (FUZZ_RUNS to change); nightly
	scripts/fuzz

cross: ## static musl binaries for x86_64, aarch64, armv7, ARMv6, MIPS (both byte orders), riscv64 in build/cross (zig, no Docker)
	scripts/cross

cross-check: ## run each cross binary under qemu-user through the --once smoke test (minutes)
	scripts/cross-check

size: ## size of each cross binary against its budget, and the largest crates
	scripts/size

ipk: ## OpenWrt .ipk packages from the cross binaries, in build/packages
	scripts/package ipk

deb: ## Debian .deb packages (amd64, arm64, armhf) from the cross binaries (make cross first if missing), in build/packages
	[ -x build/cross/envoy2mqtt-x86_64-unknown-linux-musl ] || $(MAKE) cross
	scripts/package deb

ha-app: ## a local Home Assistant App (both architectures' binaries, time zones) in build/ha-app, for /addons
	scripts/ha-app

oci: ## a reproducible multi-arch OCI image (amd64, arm64, arm/v7) from scratch in build/oci, checked with oci-image-tool and skopeo
	scripts/oci --check

apk: ## OpenWrt 25.12 apk v3 packages and a signed feed index per architecture (APK_TOOLS_SRC: the apk-tools source archive, unless apk 3 is on PATH; APK_SIGN_KEY: the feed's key), in build/packages/apk
	[ -x build/cross/envoy2mqtt-x86_64-unknown-linux-musl ] || $(MAKE) cross
	scripts/package apk

dist: ## a reproducible release folder: every binary, .ipk and .deb, TOOLCHAIN and SHA256SUMS, in dist/
	scripts/dist

PREFIX ?= /usr/local
install: ## install the binary, the systemd unit and /etc/default/envoy2mqtt (as root; installed disabled)
	@case "$$(uname -m)" in \
	  x86_64) t=x86_64-unknown-linux-musl;; aarch64) t=aarch64-unknown-linux-musl;; \
	  armv7l) t=armv7-unknown-linux-musleabihf;; *) t=arm-unknown-linux-musleabihf;; \
	esac; bin=build/cross/envoy2mqtt-$$t; \
	[ -x "$$bin" ] || bin=target/release/envoy2mqtt; \
	[ -x "$$bin" ] || { echo "build first: make release (or make cross)"; exit 1; }; \
	echo "installing $$bin"; \
	install -D -m 0755 "$$bin" $(DESTDIR)$(PREFIX)/bin/envoy2mqtt; \
	install -D -m 0644 packaging/envoy2mqtt.service $(DESTDIR)/etc/systemd/system/envoy2mqtt.service; \
	sed -i 's|^ExecStart=/usr/bin/|ExecStart=$(PREFIX)/bin/|' $(DESTDIR)/etc/systemd/system/envoy2mqtt.service; \
	[ -e $(DESTDIR)/etc/default/envoy2mqtt ] || install -D -m 0600 packaging/envoy2mqtt.default $(DESTDIR)/etc/default/envoy2mqtt; \
	echo "edit /etc/default/envoy2mqtt, then: systemctl daemon-reload && systemctl enable --now envoy2mqtt"
