# ppm: the one entry point. `make` builds, `make test` tests everything,
# `make run` starts the demo. Sources are found by layout, not listed:
#
#   common/*.c                       -> $(BUILD)/libppm.a (with proto/*.proto)
#   services/<svc>/*.c but main.c    -> $(BUILD)/libppm_<svc>.a
#   services/<svc>/main.c            -> $(BUILD)/bin/ppm-<svc>
#   tools/<tool>/*.c                 -> $(BUILD)/bin/<tool>
#   tests/stripe-emulator/*.c        -> $(BUILD)/bin/stripe-emulator
#   tests/chaos/*.c                  -> $(BUILD)/bin/chaos-load
#   tests/lib/*.c                    -> $(BUILD)/libppm_test.a
#   tests/{unit,integration}/test_*.c -> $(BUILD)/tests/{unit,integration}/test_*
#   tests/bench/*.c                  -> $(BUILD)/bench/*
#
# SANITIZER=address,undefined builds everything with ASan+UBSan into
# build/san, so both builds can sit side by side.

SHELL := /bin/bash
# Keep generated and intermediate files (protobuf code, objects).
.SECONDARY:
.DEFAULT_GOAL := all

SANITIZER ?=
ifeq ($(SANITIZER),)
BUILD ?= build
SANFLAGS :=
OPT ?= -O2
else
BUILD ?= build/san
SANFLAGS := -fsanitize=$(SANITIZER) -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT ?= -O1
endif
GEN := build/gen

CC ?= cc
PKGS := libczmq libzmq libprotobuf-c hiredis libpq libcurl libmicrohttpd jansson libsodium openssl
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS ?= $(OPT) -g
CFLAGS += -std=c17 -Wall -Wextra -Werror -D_GNU_SOURCE -pthread $(SANFLAGS)
CPPFLAGS += -I. -Icommon -I$(GEN) $(PKG_CFLAGS) -MMD -MP
LDFLAGS += -pthread $(SANFLAGS)
LDLIBS += $(PKG_LIBS) -lm

SERVICES := $(notdir $(wildcard services/*))
TOOLS := $(sort $(notdir $(patsubst %/,%,$(dir $(wildcard tools/*/*.c)))))

PROTOS := $(wildcard proto/*.proto)
PROTO_C := $(patsubst %.proto,$(GEN)/%.pb-c.c,$(PROTOS))
PROTO_H := $(PROTO_C:.c=.h)

COMMON_SRC := $(wildcard common/*.c)
LIBPPM_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(COMMON_SRC)) \
              $(patsubst $(GEN)/%.c,$(BUILD)/obj/gen/%.o,$(PROTO_C))
LIBPPM := $(BUILD)/libppm.a

svc_src = $(filter-out services/$(1)/main.c,$(wildcard services/$(1)/*.c))
svc_lib = $(BUILD)/libppm_$(1).a
SVC_LIBS := $(foreach s,$(SERVICES),$(if $(call svc_src,$(s)),$(call svc_lib,$(s))))
SVC_BINS := $(foreach s,$(SERVICES),$(if $(wildcard services/$(s)/main.c),$(BUILD)/bin/ppm-$(s)))
TOOL_BINS := $(foreach t,$(TOOLS),$(BUILD)/bin/$(t))

EMU_SRC := $(wildcard tests/stripe-emulator/*.c)
EMU_BIN := $(if $(EMU_SRC),$(BUILD)/bin/stripe-emulator)

CHAOS_SRC := $(wildcard tests/chaos/*.c)
CHAOS_BIN := $(if $(CHAOS_SRC),$(BUILD)/bin/chaos-load)

TESTLIB_SRC := $(wildcard tests/lib/*.c)
TESTLIB := $(BUILD)/libppm_test.a
TEST_SRC := $(wildcard tests/unit/test_*.c tests/integration/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BINS := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

# Everything we own and format: not generated code, not fuzz corpora.
OWN_SRC := $(shell find common services tools tests -name '*.[ch]' -not -path 'tests/fuzz/corpus/*' 2>/dev/null)

.PHONY: all deps build tests benches test test-only test-san lint format bench run \
        chaos fuzz screenshots clean stop

all: deps build

# The package list is the only place dependencies are named.
deps:
	@bash deploy/install-deps.sh deploy/debian-packages.txt

build: $(LIBPPM) $(SVC_LIBS) $(SVC_BINS) $(TOOL_BINS) $(EMU_BIN)

# The benchmarks are built with the tests, so that a change that breaks
# one fails `make test`, and tests/e2e/run.sh has bench_e2e to run.
tests: build $(TESTLIB) $(TEST_BINS) $(BENCH_BINS) $(CHAOS_BIN)
benches: build $(BENCH_BINS)

# --- generated protobuf code --------------------------------------------
$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: %.proto
	@mkdir -p $(dir $@)
	protoc-c --proto_path=. --c_out=$(GEN) $<

# Every object may include any generated header.
$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/gen/%.o: $(GEN)/%.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIBPPM): $(LIBPPM_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

define SERVICE_RULES
$(call svc_lib,$(1)): $(patsubst %.c,$(BUILD)/obj/%.o,$(call svc_src,$(1)))
	@mkdir -p $$(dir $$@)
	$$(AR) rcs $$@ $$^

$(BUILD)/bin/ppm-$(1): $(BUILD)/obj/services/$(1)/main.o $(if $(call svc_src,$(1)),$(call svc_lib,$(1))) $(LIBPPM)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach s,$(SERVICES),$(eval $(call SERVICE_RULES,$(s))))

define TOOL_RULES
$(BUILD)/bin/$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard tools/$(1)/*.c)) $(SVC_LIBS) $(LIBPPM)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach t,$(TOOLS),$(eval $(call TOOL_RULES,$(t))))

$(BUILD)/bin/stripe-emulator: $(patsubst %.c,$(BUILD)/obj/%.o,$(EMU_SRC)) $(LIBPPM)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bin/chaos-load: $(patsubst %.c,$(BUILD)/obj/%.o,$(CHAOS_SRC)) $(LIBPPM)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(TESTLIB): $(patsubst %.c,$(BUILD)/obj/%.o,$(TESTLIB_SRC))
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

# Tests and benchmarks may use any service's library.
$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TESTLIB) $(SVC_LIBS) $(LIBPPM)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/obj/tests/bench/%.o $(TESTLIB) $(SVC_LIBS) $(LIBPPM)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# --- checks -------------------------------------------------------------
BANNED := \b(strcpy|strcat|sprintf|vsprintf|strtok|gets|atoi|atol|atoll)[[:space:]]*\(

lint: deps
	@echo "lint: clang-format"
	@clang-format --dry-run --Werror $(OWN_SRC)
	@echo "lint: banned functions"
	@if grep -nE '$(BANNED)' $(OWN_SRC); then echo "lint: banned function used (see above)"; exit 1; fi
	@echo "lint: cppcheck"
	@cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	    --suppress=missingIncludeSystem -I common -D__GNUC__ $(filter %.c,$(OWN_SRC))

format:
	clang-format -i $(OWN_SRC)

# `make test`: install, build, lint, every test; then the same tests again
# built with AddressSanitizer and UndefinedBehaviorSanitizer, and the
# integration tests once more with CURVE on every ZeroMQ link.
test: deps
	$(MAKE) tests
	$(MAKE) lint
	$(MAKE) tests SANITIZER=address,undefined
	bash tests/harness/run-tests.sh build build/san curve:build
	bash tests/harness/replay-fuzz.sh build/san

# One build's tests only, for a quick loop: `make test-only`.
test-only: deps tests
	bash tests/harness/run-tests.sh $(BUILD)

# `make bench`: every benchmark, then docs/BENCHMARKS.md written from
# their figures (tests/bench/README.md).
bench: deps benches
	bash tests/harness/run-bench.sh $(BUILD)

run: deps build
	bash deploy/run.sh $(BUILD)

# `make chaos`: the full chaos run (tests/chaos/README.md): >= 1,000 paid
# sessions through the gateway while every fault kind is injected, one at a
# time and then together; the invariant table at the end. `make test` runs
# the short version (tests/chaos/run.sh without --full).
chaos: deps build $(CHAOS_BIN)
	PPM_BIN_DIR=$(CURDIR)/$(BUILD)/bin bash tests/chaos/run.sh --full

# The README's pictures of the web pages, taken in headless Chromium.
screenshots: deps build
	PPM_BIN_DIR=$(CURDIR)/$(BUILD)/bin bash tests/browser/run.sh --screenshots

# `make fuzz [FUZZ_SECONDS=60]`: every tests/fuzz/fuzz_<name>.c, linked with
# libFuzzer and the project's libraries built by clang with coverage into
# build/fuzz/lib, runs FUZZ_SECONDS on tests/fuzz/corpus/fuzz_<name>/ (new
# inputs go to build/fuzz/corpus/, crashes to tests/fuzz/findings/).
FUZZ_SECONDS ?= 60
fuzz: deps
	$(MAKE) CC=clang SANITIZER=fuzzer-no-link,address,undefined BUILD=build/fuzz/lib \
	    build/fuzz/lib/libppm.a $(patsubst $(BUILD)/%,build/fuzz/lib/%,$(SVC_LIBS))
	@set -e; for src in $(wildcard tests/fuzz/fuzz_*.c); do n=$$(basename $$src .c); \
	    mkdir -p build/fuzz/corpus/$$n tests/fuzz/findings/$$n; \
	    clang -std=c17 -g -O1 -D_GNU_SOURCE -pthread -fsanitize=fuzzer,address,undefined \
	        $(filter-out -MMD -MP,$(CPPFLAGS)) -o build/fuzz/$$n $$src \
	        $$(ls build/fuzz/lib/libppm_*.a 2>/dev/null) build/fuzz/lib/libppm.a $(LDLIBS); \
	    build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=tests/fuzz/findings/$$n/ \
	        build/fuzz/corpus/$$n tests/fuzz/corpus/$$n; done

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
