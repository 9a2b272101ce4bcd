#!/bin/sh
# Figure 8's job, run inside the container (busybox sh) or on the host:
# untar the sources, then run $BENCH_BUILD_CMD with the Go toolchain at
# /bench/goroot and the module cache at /bench/gomod (both read-only binds)
# and a fresh build cache, so every run compiles everything. No network:
# GOPROXY=off, GOTOOLCHAIN=local.
#   build.sh WORKDIR TARBALL GOROOT GOMODCACHE CMD...
set -eu
work=$1 tarball=$2 goroot=$3 gomod=$4
shift 4
rm -rf "$work"
mkdir -p "$work/src" "$work/cache" "$work/tmp" "$work/home"
tar -C "$work/src" -xf "$tarball"
cd "$work/src"
export PATH="$goroot/bin:$PATH" GOROOT="$goroot" GOCACHE="$work/cache" GOMODCACHE="$gomod" \
	GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local GOTELEMETRY=off CGO_ENABLED=0 \
	HOME="$work/home" GOTMPDIR="$work/tmp"
"$@"
cd /
rm -rf "$work"
