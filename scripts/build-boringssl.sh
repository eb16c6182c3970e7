#!/usr/bin/env bash
# build-boringssl.sh: static libcrypto.a and libssl.a of the BoringSSL that Debian ships as
# android-libboringssl-dev (only as shared objects), for `make STATIC=1`.
#
# Fetches the Debian source package of exactly the installed version from the archive apt got
# the binary package from, unpacks it with dpkg-source -x (which checks the tarballs against the
# .dsc checksums and applies Debian's patches) under build/boringssl-src/, and compiles Debian's
# own source lists (debian/sources.mk, as debian/libcrypto.mk and debian/libssl.mk use them) with
# Debian's defines and the x86_64 perlasm .S files, into
#
#   build/boringssl/lib/libcrypto.a, build/boringssl/lib/libssl.a, build/boringssl/include/
#
# Idempotent: does nothing when the archives are there, of the installed version and newer than
# the unpacked source and this script. CC/CXX choose the compiler (default clang/clang++, as
# Debian's build; gcc/g++ where clang is missing); JOBS the parallelism (default 2).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
self=$root/scripts/build-boringssl.sh
src_root=$root/build/boringssl-src
out=$root/build/boringssl
pkg=android-libboringssl-dev

scripts/install-deps.sh dpkg-dev curl

version=$(dpkg-query -W -f='${Version}' "$pkg")
srcpkg=$(dpkg-query -W -f='${source:Package}' "$pkg")
noepoch=${version#*:}
srcdir=$src_root/$srcpkg-$version
stamp=$srcdir/.unpacked

if [ -f "$out/lib/libcrypto.a" ] && [ -f "$out/lib/libssl.a" ] && [ -f "$stamp" ] &&
    [ "$(cat "$out/VERSION" 2>/dev/null)" = "$version" ] &&
    [ "$out/lib/libcrypto.a" -nt "$stamp" ] && [ "$out/lib/libssl.a" -nt "$stamp" ] &&
    [ "$out/lib/libcrypto.a" -nt "$self" ] && [ "$out/lib/libssl.a" -nt "$self" ]; then
    exit 0
fi

# --- fetch and unpack ------------------------------------------------------------------------
if [ ! -f "$stamp" ]; then
    # The source lies in the pool folder of the binary package, in the archive that has this
    # exact version (apt-cache madison names it; apt-cache show names the pool folder).
    base=$(apt-cache madison "$pkg" | awk -F' *[|] *' -v v="$version" '$2 == v { print $3; exit }')
    base=${base%% *}
    pool=$(apt-cache show "$pkg=$version" | sed -n 's/^Filename: //p' | head -n 1)
    if [ -z "$base" ] || [ -z "$pool" ]; then
        echo "build-boringssl: no archive has $pkg $version (apt-get update?)" >&2
        exit 1
    fi
    url=${base%/}/$(dirname "$pool")
    dsc=${srcpkg}_${noepoch}.dsc
    dl=$src_root/download
    mkdir -p "$dl"
    echo "build-boringssl: fetching $srcpkg $version" >&2
    curl -fsSL -o "$dl/$dsc" "$url/$dsc"
    # The .dsc's Files: section lists the tarballs ("md5 size name").
    for f in $(awk '/^Files:/ { on = 1; next } /^[^ ]/ { on = 0 } on && NF == 3 { print $3 }' \
        "$dl/$dsc"); do
        if [ ! -f "$dl/$f" ]; then
            curl -fsSL -o "$dl/$f.part" "$url/$f"
            mv "$dl/$f.part" "$dl/$f"
        fi
    done
    rm -rf "$srcdir"
    # -x checks sizes and checksums of every file against the .dsc and fails on a mismatch.
    # The .dsc's own signature cannot be checked without debian-keyring: it is said, not fatal.
    dpkg-source -q -x "$dl/$dsc" "$srcdir" >&2
    touch "$stamp"
fi

# --- build -------------------------------------------------------------------------------------
if [ -z "${CC:-}" ] || [ -z "${CXX:-}" ]; then
    if command -v clang >/dev/null && command -v clang++ >/dev/null; then
        CC=clang CXX=clang++
    else
        CC=gcc CXX=g++
    fi
fi

echo "build-boringssl: building static libcrypto.a and libssl.a ($CC)" >&2
rm -rf "$out"
mkdir -p "$out/obj" "$out/lib"

# Debian's flags (debian/rules, debian/lib*.mk) less the shared-library ones
# (BORINGSSL_SHARED_LIBRARY only marks the exported symbols of a .so), plus sections for
# --gc-sections in the program that links them, and -fno-rtti for libssl as upstream's own
# build has it: libssl then needs nothing of libstdc++ (its only references were the RTTI
# vtables), so a C program links it without the C++ runtime.
common="-O2 -fPIC -ffunction-sections -fdata-sections -fstack-protector-strong \
-DNDEBUG -UDEBUG -DBORINGSSL_ANDROID_SYSTEM -DBORINGSSL_IMPLEMENTATION -DOPENSSL_SMALL \
-fno-exceptions -fno-strict-aliasing -fvisibility=hidden -Isrc/include"

# Not a sub-make of the caller's make: its MAKEFLAGS (jobserver, CC=...) stay out.
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$srcdir" -j"${JOBS:-2}" -f - \
    CC="$CC" CXX="$CXX" OBJ="$out/obj" LIB="$out/lib" \
    CFLAGS_ALL="$common -std=gnu11 -Wa,--noexecstack -Isrc/crypto -D_FORTIFY_SOURCE=2" \
    CXXFLAGS_ALL="$common -std=gnu++2a -fno-rtti -D_FORTIFY_SOURCE=2" <<'EOF'
include debian/sources.mk
# As debian/libcrypto.mk for amd64: the portable sources plus the x86_64 assembly.
CRYPTO_SRCS := $(crypto_sources) $(linux_x86_64_sources)
CRYPTO_OBJS := $(patsubst %,$(OBJ)/crypto/%.o,$(CRYPTO_SRCS))
SSL_OBJS    := $(patsubst %,$(OBJ)/ssl/%.o,$(ssl_sources))

all: $(LIB)/libcrypto.a $(LIB)/libssl.a

$(LIB)/libcrypto.a: $(CRYPTO_OBJS)
	rm -f $@ && ar rcs $@ $^
$(LIB)/libssl.a: $(SSL_OBJS)
	rm -f $@ && ar rcs $@ $^

$(OBJ)/crypto/%.c.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@
$(OBJ)/crypto/%.S.o: %.S
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@
$(OBJ)/ssl/%.cc.o: %.cc
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS_ALL) -c $< -o $@
EOF

cp -r "$srcdir/src/include" "$out/include"
rm -rf "$out/obj"
echo "$version" >"$out/VERSION"
echo "build-boringssl: $out/lib/libcrypto.a $out/lib/libssl.a ($version)" >&2
