# edgetunnel: edged + originctl.
#
#   make                      build edged and originctl (build/<cc>[-<sanitizer>]/)
#   make test                 everything CI runs: format check, unit tests under ASan+UBSan with
#                             gcc and clang, fuzz smoke run, integration tests under ASan+UBSan
#                             (gcc), ThreadSanitizer (clang), and against the static release
#                             build (STATIC=1; it fetches Debian's BoringSSL source once)
#   make test-unit            unit tests in the current configuration (TEST=name for one)
#   make fuzz                 every fuzz target as libFuzzer (clang) and AFL++ binaries
#   make fuzz-smoke           each libFuzzer target for FUZZ_SECONDS, then a corpus replay
#   make SANITIZER=address,undefined | SANITIZER=thread   any target with sanitizers
#   make STATIC=1             fully static edged and originctl (build/<cc>-static/): BoringSSL
#                             built from Debian's source package (scripts/build-boringssl.sh),
#                             glibc, jansson, inih, xxhash archives; smaller idle RSS
#                             (a static PIE; STATIC_PIE=0: plain -static, build/<cc>-static-nopie/)
#   make bench                benchmarks (bench/README.md), JSON lines into bench/out/
#                             (each alone: bench-core, -ssh, -relay, -netns, -requests, -streams;
#                             bench-plot draws bench/out/*.png)
#   make soak                 10 minutes of 1,000 mixed streams, origin restarts and cancels
#                             (not in CI; SOAK_SECONDS=N for another length)
#   make format | format-check
#   make man                  man pages from man/*.scd (scdoc) into build/man/
#   make install [PREFIX=/usr/local] [DESTDIR=]   binaries, man pages, systemd units, examples
#   make uninstall            removes what install put there (same PREFIX and DESTDIR)
#   V=1                       show full commands

CC        ?= cc
SANITIZER ?=
STATIC    ?=
STATIC_PIE ?= 1
WERROR    ?= 1
FUZZ_SECONDS ?= 15
V ?= 0

BSSL_INC := /usr/include/android
BSSL_LIB := /usr/lib/x86_64-linux-gnu/android

comma := ,
CCNAME  := $(notdir $(firstword $(CC)))
VARIANT := $(CCNAME)$(if $(STATIC),-static$(if $(filter 0,$(STATIC_PIE)),-nopie))$(if $(SANITIZER),-$(subst $(comma),-,$(SANITIZER)))
O       := build/$(VARIANT)

# STATIC=1: BoringSSL's static archives and headers, built from the Debian source package of the
# installed android-libboringssl-dev (Debian ships only the .so). Every object waits for them.
BSSL_STATIC := build/boringssl
BSSL_ARCHIVES := $(BSSL_STATIC)/lib/libssl.a $(BSSL_STATIC)/lib/libcrypto.a
ifneq ($(STATIC),)
ifneq ($(SANITIZER),)
$(error STATIC=1 and SANITIZER do not go together: the sanitizer runtimes want a dynamic program)
endif
BSSL_INC := $(BSSL_STATIC)/include
STATIC_DEPS := $(BSSL_ARCHIVES)
endif

ifeq ($(V),0)
Q = @
msg = @printf '  %-6s %s\n' $(1) $(2);
else
Q =
msg =
endif

# BoringSSL's headers as system headers (their casts trip -Wcast-qual), searched before
# /usr/include, so no OpenSSL header can shadow them.
CPPFLAGS += -isystem $(BSSL_INC) -Iinclude -D_GNU_SOURCE -MMD -MP
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
        -Wundef -Wvla -Wpointer-arith -Wcast-qual -Wimplicit-fallthrough -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN += -Werror
endif
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 $(WARN) -fstack-protector-strong -fPIE
ifeq ($(STATIC),)
LDFLAGS += -pie -Wl,-z,relro,-z,now -Wl,-rpath,$(BSSL_LIB)
LDLIBS  += -L$(BSSL_LIB) -lssl -lcrypto -lxxhash -ljansson -linih -lpthread
else
# A static PIE (ASLR kept) with glibc's libc.a; getaddrinfo still loads the NSS modules of the
# glibc on the machine at run time (the link warns about it). Unused sections are dropped.
# STATIC_PIE=0 links a plain -static program at a fixed address (build/<cc>-static-nopie/):
# no start-up relocations, about 130 kB less resident memory, but no ASLR for its image.
# Unit tests do not link this way (Debian ships no libcmocka.a): run them in the default build.
CFLAGS  += -ffunction-sections -fdata-sections
ifeq ($(STATIC_PIE),0)
LDFLAGS += -static -Wl,-z,relro,-z,now -Wl,--gc-sections
else
LDFLAGS += -static-pie -Wl,-z,relro,-z,now -Wl,--gc-sections
endif
LDLIBS  += $(BSSL_ARCHIVES) -lxxhash -ljansson -linih -lpthread
endif

ifeq ($(SANITIZER),)
CPPFLAGS += -D_FORTIFY_SOURCE=2
else
CFLAGS  += -fsanitize=$(SANITIZER) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZER)
endif

LIB_SRCS  := $(sort $(wildcard src/*/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(O)/%.o)
LIB       := $(O)/libet.a
BINS      := $(O)/edged $(O)/originctl
TEST_SRCS := $(sort $(wildcard tests/unit/*_test.c))
TESTS     := $(TEST_SRCS:tests/unit/%.c=$(O)/tests/%)

.SECONDARY:
.PHONY: all test test-unit test-integration test-sanitizers fuzz fuzz-smoke format format-check \
        clean deps man install uninstall
all: $(BINS)
	@ln -sfn $(VARIANT) build/current

$(O)/%.o: %.c | $(STATIC_DEPS)
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(O)/edged $(O)/originctl: $(O)/%: $(O)/src/%.o $(LIB) $(STATIC_DEPS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) $(filter %.o $(LIB),$^) $(LDLIBS) -o $@

# One rule makes both archives (the script is idempotent and quick when they are up to date).
$(BSSL_STATIC)/lib/libcrypto.a: scripts/build-boringssl.sh
	$(call msg,BSSL,$(BSSL_STATIC))
	$(Q)scripts/build-boringssl.sh
	$(Q)touch $(BSSL_ARCHIVES)
$(BSSL_STATIC)/lib/libssl.a: $(BSSL_STATIC)/lib/libcrypto.a

$(O)/tests/%: $(O)/tests/unit/%.o $(O)/tests/unit/testutil.o $(LIB) $(STATIC_DEPS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) $(filter %.o $(LIB),$^) $(LDLIBS) -lcmocka -o $@

# Unit tests: every tests/unit/*_test.c is its own program; TEST=frame runs frame_test only.
test-unit: $(TESTS)
	$(Q)tests/run-unit.sh $(O)/tests $(TEST)

# What CI runs (README's test command).
test: format-check
	$(Q)$(MAKE) --no-print-directory test-sanitizers
	$(Q)$(MAKE) --no-print-directory fuzz-smoke
	$(Q)$(MAKE) --no-print-directory CC=gcc SANITIZER=address,undefined test-integration
	$(Q)$(MAKE) --no-print-directory CC=clang SANITIZER=thread test-integration
	$(Q)$(MAKE) --no-print-directory CC=gcc STATIC=1 test-integration
	$(Q)$(MAKE) --no-print-directory bench-smoke

test-sanitizers:
	$(Q)$(MAKE) --no-print-directory CC=gcc SANITIZER=address,undefined test-unit
	$(Q)$(MAKE) --no-print-directory CC=clang SANITIZER=address,undefined test-unit

test-integration: all
	$(Q)tests/run-integration.sh $(O)

# --- fuzzing -----------------------------------------------------------------------------
# Each fuzz/<name>.c is one target, linked with the pure modules (src/base, src/wire) only.
FUZZ_SRCS    := $(sort $(wildcard fuzz/*.c))
FUZZ_NAMES   := $(FUZZ_SRCS:fuzz/%.c=%)
FUZZ_LIBSRCS := $(sort $(wildcard src/base/*.c src/wire/*.c))
FUZZ_CFLAGS  := -std=c11 -O1 -g -fno-omit-frame-pointer $(WARN)
FUZZ_LDLIBS  := -L$(BSSL_LIB) -Wl,-rpath,$(BSSL_LIB) -lssl -lcrypto -lxxhash -ljansson -linih
FUZZ_DEPS    := $(FUZZ_LIBSRCS) $(wildcard include/et/*.h)
LF_BINS      := $(FUZZ_NAMES:%=build/fuzz/libfuzzer/%)
AFL_BINS     := $(FUZZ_NAMES:%=build/fuzz/afl/%)
AFL_CC       ?= afl-clang-fast

build/fuzz/libfuzzer/%: fuzz/%.c $(FUZZ_DEPS)
	$(call msg,FUZZ,$@)
	@mkdir -p $(@D)
	$(Q)clang -isystem $(BSSL_INC) -Iinclude -D_GNU_SOURCE $(FUZZ_CFLAGS) \
	    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    $< $(FUZZ_LIBSRCS) $(FUZZ_LDLIBS) -o $@

build/fuzz/afl/%: fuzz/%.c $(FUZZ_DEPS)
	$(call msg,AFL,$@)
	@mkdir -p $(@D)
	$(Q)AFL_QUIET=1 $(AFL_CC) -isystem $(BSSL_INC) -Iinclude -D_GNU_SOURCE $(FUZZ_CFLAGS) \
	    -fsanitize=fuzzer $< $(FUZZ_LIBSRCS) $(FUZZ_LDLIBS) -o $@

fuzz: $(LF_BINS) $(AFL_BINS)

fuzz-smoke: $(LF_BINS)
	$(Q)fuzz/smoke.sh $(FUZZ_SECONDS) $(FUZZ_NAMES)

# --- benchmarks (make test runs only bench-smoke): JSON lines to stdout and bench/out/ ---
BENCH_PY ?= /usr/bin/python3
.PHONY: bench bench-deps bench-core bench-ssh bench-relay bench-netns bench-requests bench-streams bench-smoke \
        bench-plot
bench: bench-core bench-ssh bench-relay bench-netns bench-requests bench-streams

bench-deps:
	$(Q)scripts/install-bench-deps.sh
	$(Q)$(MAKE) --no-print-directory CC=gcc all
	$(Q)mkdir -p bench/out

# Every bench once, tiny, its output checked (bench/smoke.py; part of `make test`, ~75 s).
bench-smoke: bench-deps
	$(Q)$(MAKE) --no-print-directory CC=gcc build/gcc/bench/tls_relay
	$(Q)$(BENCH_PY) bench/smoke.py --build build/gcc --relay build/gcc/bench/tls_relay

bench-core: bench-deps
	$(Q)$(BENCH_PY) bench/core.py | tee bench/out/core.jsonl
	$(Q)$(MAKE) --no-print-directory CC=gcc STATIC=1 all
	$(Q)$(BENCH_PY) bench/core.py --build build/gcc-static --only memory | tee -a bench/out/core.jsonl

bench-ssh: bench-deps
	$(Q)$(BENCH_PY) bench/sshpeer.py | tee bench/out/sshpeer.jsonl

# The minimal TLS relay (no framing, blocking plain I/O, one TLS leg): the ceiling.
$(O)/bench/tls_relay: bench/tls_relay.c
	$(call msg,CCLD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $< -L$(BSSL_LIB) -lssl -lcrypto -lpthread -o $@

-include $(O)/bench/tls_relay.d

# Cancel and throughput across a veth pair shaped to 100 Mbit/s (root: makes its own namespaces).
bench-netns: bench-deps
	$(Q)$(BENCH_PY) bench/netns.py | tee bench/out/netns.jsonl

bench-relay: bench-deps
	$(Q)$(MAKE) --no-print-directory CC=gcc build/gcc/bench/tls_relay
	$(Q)$(BENCH_PY) bench/relay.py --relay build/gcc/bench/tls_relay | tee bench/out/relay.jsonl

# Small requests (wrk) to a private nginx: tunnel (edged --http), ssh -R, direct; alone and
# beside a bulk download.
bench-requests: bench-deps
	$(Q)$(BENCH_PY) bench/requests.py | tee bench/out/requests.jsonl

# 1 and 8 parallel streams: tunnel, ssh -R, TLS relay, direct; and 8 streams with 1, 2, 4 reactors.
bench-streams: bench-deps
	$(Q)$(MAKE) --no-print-directory CC=gcc build/gcc/bench/tls_relay
	$(Q)$(BENCH_PY) bench/streams.py --relay build/gcc/bench/tls_relay | tee bench/out/streams.jsonl

# The soak (tests/soak/soak.py): release binaries, bounded by SOAK_SECONDS (default 600).
.PHONY: soak
soak:
	$(Q)scripts/install-deps.sh
	$(Q)$(MAKE) --no-print-directory CC=gcc all
	$(Q)$(BENCH_PY) tests/soak/soak.py

# PNG plots (cancel latency distributions, throughput, requests) from bench/out/*.jsonl.
bench-plot:
	$(Q)scripts/install-bench-deps.sh
	$(Q)$(BENCH_PY) bench/plot.py --dir bench/out

# --- man pages and installing ------------------------------------------------------------
# `make install` installs the binaries of the current configuration ($(O)); the systemd units
# get BINDIR and SYSCONFDIR written in. The config files themselves are the operator's: only
# examples are installed (DOCDIR/examples).
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/edgetunnel
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SCDOC      ?= scdoc

MAN_SRCS  := $(sort $(wildcard man/*.scd))
MAN_PAGES := $(MAN_SRCS:man/%.scd=build/man/%)
UNIT_SRCS := $(sort $(wildcard dist/systemd/*.service.in))
UNITS     := $(UNIT_SRCS:dist/systemd/%.in=build/dist/%)
EXAMPLES  := $(sort $(wildcard dist/examples/*.conf))

man: $(MAN_PAGES)

build/man/%: man/%.scd
	$(call msg,SCDOC,$@)
	@mkdir -p $(@D)
	$(Q)$(SCDOC) < $< > $@.tmp && mv $@.tmp $@

# The units depend on the install paths: rewritten on every install.
build/dist/%: dist/systemd/%.in FORCE
	$(call msg,GEN,$@)
	@mkdir -p $(@D)
	$(Q)sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' $< > $@.tmp && mv $@.tmp $@

install: $(BINS) $(MAN_PAGES) $(UNITS)
	$(call msg,INSTALL,$(DESTDIR)$(PREFIX))
	$(Q)install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(DOCDIR)/examples
	$(Q)install -m 0755 $(BINS) $(DESTDIR)$(BINDIR)/
	$(Q)install -m 0644 $(MAN_PAGES) $(DESTDIR)$(MANDIR)/man1/
	$(Q)install -m 0644 $(UNITS) $(DESTDIR)$(UNITDIR)/
	$(Q)install -m 0644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/

uninstall:
	$(Q)rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(BINS))) \
	    $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MAN_PAGES))) \
	    $(addprefix $(DESTDIR)$(UNITDIR)/,$(notdir $(UNITS))) \
	    $(addprefix $(DESTDIR)$(DOCDIR)/examples/,$(notdir $(EXAMPLES)))
	$(Q)rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) 2>/dev/null || true

.PHONY: FORCE
FORCE:

# --- housekeeping ------------------------------------------------------------------------
FORMAT_FILES = $(sort $(wildcard include/et/*.h src/*.c src/*/*.c src/*/*.h tests/unit/*.c tests/unit/*.h \
                                 fuzz/*.c bench/*.c))
format:
	$(Q)clang-format -i $(FORMAT_FILES)

format-check:
	$(Q)clang-format --dry-run -Werror $(FORMAT_FILES) && echo "  format ok ($(words $(FORMAT_FILES)) files)"

deps:
	$(Q)scripts/install-deps.sh

clean:
	rm -rf build

-include $(LIB_OBJS:.o=.d) $(O)/src/edged.d $(O)/src/originctl.d $(TESTS:$(O)/tests/%=$(O)/tests/unit/%.d)
