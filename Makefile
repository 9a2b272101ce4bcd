# sysvisor — see README.md.
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
UNITDIR   ?= $(PREFIX)/lib/systemd/system
# Configuration stays in /etc whatever PREFIX is (sysvisor-runc is started by
# engines that know nothing of PREFIX); the binaries are built with
# POLICYDIR as their default policy directory, so the two always agree.
SYSCONFDIR ?= /etc
POLICYDIR ?= $(SYSCONFDIR)/sysvisor/policies
# sysvisor's AppArmor profile goes where the distribution's apparmor service
# loads profiles from at every boot; the binaries load it from there too.
APPARMORDIR ?= $(SYSCONFDIR)/apparmor.d
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
GO        ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Go's release tarball installs in /usr/local/go; a root shell may not have it on PATH.
export PATH := $(PATH):/usr/local/go/bin
GOFLAGS   ?=
LDFLAGS   := -X github.com/sysvisor/sysvisor/supervisor.Version=$(VERSION) \
	-X github.com/sysvisor/sysvisor/policy.DefaultDir=$(POLICYDIR) \
	-X github.com/sysvisor/sysvisor/apparmor.Dir=$(APPARMORDIR)
POLICIES  := $(wildcard policy/builtin/*.hcl)
BINS      := bin/sysvisor-runc bin/sysvisord bin/sysvisorctl bin/sysvisor-holder

.PHONY: all build install uninstall test test-unit test-integration test-e2e test-hosts fuzz bench demo deps lint clean

all: build

build: $(BINS)

bin/%: FORCE
	$(GO) build $(GOFLAGS) -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

FORCE:

# Also installs the built-in policies into POLICYDIR, as files to read and
# copy. A file there overrides the built-in of the same name; this target
# overwrites them, so keep local policies under names of their own.
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BINS) $(DESTDIR)$(BINDIR)/
	for u in sysvisord sysvisor-holder; do \
		sed 's|@BINDIR@|$(BINDIR)|g' docs/$$u.service.in > $(DESTDIR)$(UNITDIR)/$$u.service && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service || exit 1; done
	install -d $(DESTDIR)$(POLICYDIR)
	install -m 0644 $(POLICIES) $(DESTDIR)$(POLICYDIR)/
	install -d $(DESTDIR)$(APPARMORDIR)
	install -m 0644 apparmor/sysvisor-default $(DESTDIR)$(APPARMORDIR)/sysvisor-default
	@# On the live system (no DESTDIR) whose kernel enforces AppArmor, load it
	@# now; an image built with DESTDIR gets it from the apparmor service at boot
	@# (and sysvisord loads it at start when missing).
	if [ -z "$(DESTDIR)" ] && [ -d /sys/kernel/security/apparmor ] && command -v apparmor_parser >/dev/null; then \
		apparmor_parser --replace --skip-cache $(APPARMORDIR)/sysvisor-default; fi

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(BINS))) $(DESTDIR)$(UNITDIR)/sysvisord.service $(DESTDIR)$(UNITDIR)/sysvisor-holder.service
	rm -f $(addprefix $(DESTDIR)$(POLICYDIR)/,$(notdir $(POLICIES)))
	@# The profile stays loaded: unloading it would leave running containers
	@# unconfined (apparmor_parser -R sysvisor-default, once none runs).
	rm -f $(DESTDIR)$(APPARMORDIR)/sysvisor-default

# Installs what the tests and the demo need on a Debian host.
deps:
	./tests/deps.sh

lint:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Every test: unit, integration (real notify filters), end to end (private
# dockerd). SYSVISOR_E2E=required turns "cannot run here" into a failure.
# Then the end-to-end tests that reach kernel interfaces newer than the
# floor again, with every fallback forced (SYSVISOR_KERNEL_FALLBACKS=all):
# the paths older kernels take, run on this one too. Last, each fuzz target
# briefly (see fuzz).
FALLBACK_TESTS ?= DockerInDocker|Mount|Sysfs|ProductUUID|Sysctl|Sysinfo|Views|UIDMap|WritableLayer|BindMount|Restart|Nothing
test: deps build lint
	SYSVISOR_E2E=$${SYSVISOR_E2E:-required} $(GO) test -count=1 -timeout 30m ./...
	SYSVISOR_E2E=$${SYSVISOR_E2E:-required} SYSVISOR_KERNEL_FALLBACKS=all \
		$(GO) test -count=1 -timeout 20m -run '$(FALLBACK_TESTS)' ./tests/e2e/
	GO='$(GO)' ./tests/fuzz.sh $(FUZZ_SMOKE_TIME)

# Every fuzz target of the repository (tests/fuzz.sh finds them), FUZZTIME
# each, one after another. make test runs each for FUZZ_SMOKE_TIME; their
# seed corpora run with the unit tests anyway.
FUZZTIME ?= 60s
FUZZ_SMOKE_TIME ?= 5s
fuzz:
	GO='$(GO)' ./tests/fuzz.sh $(FUZZTIME)

# The host matrix: this build installed as docs/install.md says in Debian 13
# VMs on the kernels of Debian 12 (6.1), 13 (6.12) and sid (7.x), booted
# under qemu, AppArmor off and on, each running tests/hosts/checks.sh; one
# table, check x host. HOSTS_CELLS=all: all five cells.
# HOSTS_CELLS, HOSTS_CHECKS, HOSTS_E2E=1, HOSTS_JOBS: see tests/hosts/matrix.
test-hosts: deps build
	./tests/hosts/matrix

test-unit: build
	$(GO) test -count=1 -short ./...

# Go benchmarks of the in-process pieces (policy parsing and lookup, the
# dispatch lookup, /proc rendering and FUSE reads, trace decoding, stats),
# then the whole-system figures of bench/run.
bench: deps build
	mkdir -p bench/out
	$(GO) test -run '^$$' -bench . -benchmem ./policy/ ./handlers/ ./supervisor/... >bench/out/go-bench.txt; \
		s=$$?; cat bench/out/go-bench.txt; exit $$s
	./bench/run

demo: deps build
	./tests/demo.sh

clean:
	rm -rf bin

# OCI conformance: the runtime-tools validation suite against runc and
# against sysvisor-runc in one run, no engine (as root; ~3 min, plus ~1 min
# to build the suite once into /var/cache/sysvisor/runtime-tools). Prints
# both ok / not ok counts; see docs/oci-conformance.md.
.PHONY: oci-validation
oci-validation: build
	./tests/oci-validation.sh
