#!/usr/bin/env bash
# setup-deps: makes sure the build's system packages are there (a C compiler, CMake,
# pkg-config, cJSON, zlib, libpng, Python 3 for the CLI test); installs them with apt-get when run as
# root on a Debian/Ubuntu machine, else prints the command. CUDA (nvcc) is optional.
set -u
missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v cmake >/dev/null || missing+=(cmake)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v python3 >/dev/null || missing+=(python3)
pkg-config --exists libcjson 2>/dev/null || missing+=(libcjson-dev)
[ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
pkg-config --exists libpng 2>/dev/null || [ -f /usr/include/png.h ] || missing+=(libpng-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  echo "setup-deps: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit $?
fi
echo "setup-deps: missing ${missing[*]}; install them with:" >&2
echo "  sudo apt-get install ${missing[*]}" >&2
exit 1
