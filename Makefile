# qmount — see README.md. `make test` sets up everything it needs by itself.

GO       ?= go
ARCH     ?= $(shell $(GO) env GOARCH)
GUEST    ?= linux
BUILD    := build
GUESTDIR := $(BUILD)/guests
QMOUNT   := $(BUILD)/qmount
# Packages whose tests are slow end-to-end runs (real VMs).
E2E_TIMEOUT ?= 40m

.PHONY: all build deps deps-bench guests guest kernel test test-unit check-darwin \
	fmt-check vet fuzz bench bench-datapath demo clean

all: build

build: $(QMOUNT)

$(QMOUNT): FORCE
	@mkdir -p $(BUILD)
	$(GO) build -trimpath -o $@ ./cmd/qmount
	@if [ "$$(uname -s)" = Darwin ]; then codesign --force --entitlements vmm/vz/entitlements.plist -s - $@; fi

FORCE:

deps:
	@scripts/install-deps.sh test
	@$(GO) mod download

deps-bench: deps
	@scripts/install-deps.sh bench

# Every shipped guest that needs no kernel compile, for amd64 and arm64 (the
# host's for the end-to-end tests, arm64 for the Mac, booted under
# qemu-system-aarch64 in the tests).
guests: deps
	$(GO) run ./cmd/qmount-build guests --arch amd64,arm64 --out $(GUESTDIR)

# One guest: make guest GUEST=mini [ARCH=arm64] (mini compiles a kernel);
# a custom one: make guest GUEST=mine DEFS=dir-holding-mine/guest.json.
guest: deps
	$(GO) run ./cmd/qmount-build guest --name $(GUEST) --arch $(ARCH) $(if $(DEFS),--defs $(DEFS)) --out $(GUESTDIR)/$(GUEST)/$(ARCH)

# A kernel from a config fragment: make kernel CONFIG=kernels/configs/mini.config
kernel: deps
	$(GO) run ./cmd/qmount-build kernel --config $(CONFIG) --arch $(ARCH)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

check-darwin:
	$(GO) run ./internal/tools/checkdarwin ./...

# A short run of every fuzz target (each keeps its seed corpus in testdata).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 10s ./internal/p9ext
	$(GO) test -run '^$$' -fuzz '^FuzzProbe$$' -fuzztime 10s -fuzzminimizetime 5s ./probe
	$(GO) test -run '^$$' -fuzz '^FuzzDetect$$' -fuzztime 10s -fuzzminimizetime 5s ./probe

test: deps fmt-check vet guests
	$(GO) test -count=1 -timeout $(E2E_TIMEOUT) ./...
	$(MAKE) --no-print-directory check-darwin fuzz

bench-datapath: deps build
	$(GO) run ./tests/bench/datapath

bench: deps-bench build guests
	$(GO) run ./tests/bench $(if $(QUICK),-quick)

demo: deps build guests
	scripts/demo.sh

clean:
	rm -rf $(BUILD)
