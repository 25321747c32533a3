# telgate - build, test and benchmark.
#
#   make            build bin/ingress bin/verifier bin/spine bin/actuator bin/telctl
#   make deps       install missing Debian packages (scripts/deps.sh)
#   make test       every test: unit (plain and ASan+UBSan) and integration
#   make asan       the same binaries with AddressSanitizer + UBSan in build/asan/bin
#   make bench      benchmarks (bench/), prints a table
#   make clean
#
# Overridable: CC, CFLAGS, LDFLAGS, BUILD (object dir), BIN (binary dir).

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CPPFLAGS += -Icommon -D_GNU_SOURCE
ALLCFLAGS = -std=c11 $(WARN) $(CFLAGS) $(CPPFLAGS) -MMD -MP
BUILD   ?= build
BIN     ?= bin

LIBS_COMMON := $(shell pkg-config --libs libzmq msgpack libsodium 2>/dev/null) -lpthread
LIBS_INGRESS  := -lcivetweb -ljansson
LIBS_VERIFIER := -ljansson -llmdb
LIBS_SPINE    := -llmdb
LIBS_ACTUATOR := $(shell pkg-config --libs libcurl 2>/dev/null) -ljansson
LIBS_TELCTL   := -llmdb -ljansson

# --- sources (explicit lists; one directory per process) -------------------

COMMON_SRC := common/util.c common/log.c common/mp.c common/config.c \
              common/msg.c common/event.c common/stage.c common/crc32c.c \
              common/journal.c common/spinedb.c common/numbers.c \
              common/cert.c common/keyfile.c common/registry.c \
              common/jscan.c
INGRESS_SRC  := ingress/ingress_http.c ingress/ingress_sig.c \
                ingress/ingress_journal.c ingress/ingress_metrics.c \
                ingress/ingress_redeliver.c
VERIFIER_SRC := verifier/verifier_webhook.c verifier/verifier_flow.c \
                verifier/verifier_state.c verifier/verifier_certs.c
SPINE_SRC    := spine/spine_store.c
ACTUATOR_SRC := actuator/actuator_http.c actuator/actuator_retry.c
TELCTL_SRC   := telctl/telctl_events.c telctl/telctl_cert.c telctl/telctl_status.c \
                telctl/telctl_replay.c telctl/telctl_replay_source.c

PROGS := ingress verifier spine actuator telctl

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

COMMON_LIB   := $(BUILD)/libtgcommon.a
INGRESS_LIB  := $(BUILD)/libingress.a
VERIFIER_LIB := $(BUILD)/libverifier.a
SPINE_LIB    := $(BUILD)/libspine.a
ACTUATOR_LIB := $(BUILD)/libactuator.a
TELCTL_LIB   := $(BUILD)/libtelctl.a

.PHONY: all deps test test-unit test-integration asan bench clean soak
all: $(addprefix $(BIN)/,$(PROGS))

deps:
	@sh scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLCFLAGS) -c $< -o $@

$(BUILD)/lib%.a:
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(COMMON_LIB):   $(call obj,$(COMMON_SRC))
$(INGRESS_LIB):  $(call obj,$(INGRESS_SRC))
$(VERIFIER_LIB): $(call obj,$(VERIFIER_SRC))
$(SPINE_LIB):    $(call obj,$(SPINE_SRC))
$(ACTUATOR_LIB): $(call obj,$(ACTUATOR_SRC))
$(TELCTL_LIB):   $(call obj,$(TELCTL_SRC))

$(BIN)/ingress: $(BUILD)/ingress/main.o $(INGRESS_LIB) $(COMMON_LIB)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS_INGRESS) $(LIBS_COMMON)
$(BIN)/verifier: $(BUILD)/verifier/main.o $(VERIFIER_LIB) $(COMMON_LIB)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS_VERIFIER) $(LIBS_COMMON)
$(BIN)/spine: $(BUILD)/spine/main.o $(SPINE_LIB) $(COMMON_LIB)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS_SPINE) $(LIBS_COMMON)
$(BIN)/actuator: $(BUILD)/actuator/main.o $(ACTUATOR_LIB) $(COMMON_LIB)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS_ACTUATOR) $(LIBS_COMMON)
$(BIN)/telctl: $(BUILD)/telctl/main.o $(TELCTL_LIB) $(VERIFIER_LIB) $(SPINE_LIB) $(COMMON_LIB)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS_TELCTL) $(LIBS_COMMON)

# --- unit tests (cmocka): tests/unit/<module>_test.c ------------------------
# Each test links every stage library; the linker pulls only what it uses.

UNIT_SRC   := $(sort $(wildcard tests/unit/*_test.c))
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
STAGE_LIBS := $(INGRESS_LIB) $(VERIFIER_LIB) $(SPINE_LIB) $(ACTUATOR_LIB) $(TELCTL_LIB) $(COMMON_LIB)
LIBS_ALL   := -lcmocka -lcivetweb -ljansson -llmdb $(LIBS_ACTUATOR) $(LIBS_COMMON)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(STAGE_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(STAGE_LIBS) $(LIBS_ALL)

test-unit: $(UNIT_BINS)
	@sh tests/run_unit.sh $(UNIT_BINS)

test-integration: all
	@TELGATE_BIN=$(abspath $(BIN)) sh tests/run_integration.sh

SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
asan:
	@$(MAKE) --no-print-directory BUILD=build/asan BIN=build/asan/bin \
	    CFLAGS="-O1 -g $(SAN)" LDFLAGS="$(SAN)" all $(patsubst $(BUILD)/%,build/asan/%,$(UNIT_BINS))

# The whole suite: plain unit tests, then unit and integration tests against
# the ASan+UBSan build, then integration against the plain build.  Ends with
# one summary line "N passed, N failed".
test: deps
	@$(MAKE) --no-print-directory all $(UNIT_BINS)
	@$(MAKE) --no-print-directory asan
	@sh tests/run_all.sh "$(abspath $(BIN))" "$(abspath build/asan/bin)" \
	    "$(UNIT_BINS)" "$(patsubst $(BUILD)/%,build/asan/%,$(UNIT_BINS))"

soak: all
	@TELGATE_BIN=$(abspath $(BIN)) TELGATE_SOAK=1 sh tests/run_integration.sh -k chaos

bench: deps all
	@sh bench/run.sh

# --- benchmarks (bench/): `make bench` runs bench/run.sh -----------------------
# The benchmark programs build into $(BUILD)/bench/; run.sh builds them with
# `make bench-progs` and then drives them and the real stages (bin/).

BENCH_COMMON_SRC := bench/bench_common.c
BENCH_DIR   := $(BUILD)/bench
BENCH_PROGS := $(addprefix $(BENCH_DIR)/,loadgen ref_ingress spine_bench verifier_bench)

.PHONY: bench-progs
bench-progs: $(BENCH_PROGS)

$(BENCH_DIR)/%.o: CPPFLAGS += -Ispine -Iverifier

$(BENCH_DIR)/loadgen: $(call obj,bench/loadgen.c bench/api_sink.c $(BENCH_COMMON_SRC)) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -lcivetweb $(LIBS_COMMON)
$(BENCH_DIR)/ref_ingress: $(call obj,bench/ref_ingress.c) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -lcivetweb $(LIBS_COMMON)
$(BENCH_DIR)/spine_bench: $(call obj,bench/spine_bench.c $(BENCH_COMMON_SRC)) $(SPINE_LIB) $(VERIFIER_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -llmdb -ljansson $(LIBS_COMMON)
$(BENCH_DIR)/verifier_bench: $(call obj,bench/verifier_bench.c $(BENCH_COMMON_SRC)) $(VERIFIER_LIB) $(COMMON_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -llmdb -ljansson $(LIBS_COMMON)

clean:
	rm -rf build bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
