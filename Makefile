# heiretsu: `make build`, `make test`, `make demo`. Each installs missing Debian
# packages first (scripts/setup-deps.sh), then configures with CMake + Ninja.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)

.PHONY: all build test demo deps configure clean

all: build

deps:
	@scripts/setup-deps.sh

$(BUILD_DIR)/build.ninja: | deps
	@scripts/configure.sh $(BUILD_DIR) $(BUILD_TYPE)

configure: deps $(BUILD_DIR)/build.ninja

build: deps $(BUILD_DIR)/build.ninja
	@ninja -C $(BUILD_DIR) -j $(JOBS)

test: build
	@scripts/run-tests.sh $(BUILD_DIR)

demo: build
	@scripts/demo.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR)
