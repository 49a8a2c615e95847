# lanes — top-level wrapper around CMake.
#   make        build everything into build/bin (installs missing Debian packages)
#   make demo   build, build the debian image, boot a lane, exec, snapshot
#   make test   unit tests (plain and ASan+UBSan), bounded fuzzing, integration tests with real lanes
#   make bench  benchmarks (tables of ratios against baselines measured in the same run)
BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
export LANES_CACHE ?= $(HOME)/.cache/lanes

BUILD_FUZZ ?= build-fuzz
export FUZZ_SECONDS ?= 15

.PHONY: all deps build build-asan unit unit-asan fuzz test integration demo bench clean

all: build

deps:
	@./scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DLANES_ASAN=ON >/dev/null
	@cmake --build $(BUILD_ASAN) -j $(JOBS)

unit: build
	@cd $(BUILD) && ctest -L unit --output-on-failure

unit-asan: build-asan
	@cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest -L unit --output-on-failure

# libFuzzer targets (guest protocol, HTTP, JSON, netmed DNS and HTTP), each
# for FUZZ_SECONDS; exit 77 (clang missing) counts as a skip.
fuzz: deps
	@./tests/fuzz/run.sh $(BUILD_FUZZ); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 77 ]

integration: build
	@./tests/run-integration.sh $(BUILD)

test: unit unit-asan fuzz integration

demo: build
	@./scripts/demo.sh $(BUILD)

bench: build
	@./bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
