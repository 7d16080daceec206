#!/usr/bin/env bash
# setup-deps: makes sure the build's system packages are there (a C compiler, CMake,
# pkg-config, cJSON, zlib, libpng, Python 3 for the CLI test); installs them with apt-get when run as
# root on a Debian/Ubuntu machine, else prints the command. Optional: SDL2 and SDL2_ttf with a
# font for `df11 window`, Xvfb for its test (installed alongside when root, else named); CUDA
# (nvcc) for the GPU backend.
set -u
missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v cmake >/dev/null || missing+=(cmake)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v python3 >/dev/null || missing+=(python3)
pkg-config --exists libcjson 2>/dev/null || missing+=(libcjson-dev)
[ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
pkg-config --exists libpng 2>/dev/null || [ -f /usr/include/png.h ] || missing+=(libpng-dev)
optional=()
pkg-config --exists sdl2 2>/dev/null || optional+=(libsdl2-dev)
pkg-config --exists SDL2_ttf 2>/dev/null || optional+=(libsdl2-ttf-dev)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || optional+=(fonts-dejavu-core)
command -v Xvfb >/dev/null || optional+=(xvfb xauth)
if [ ${#optional[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
    echo "setup-deps: installing ${optional[*]} (for df11 window and its test)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${optional[@]}"; } \
      >/dev/null 2>&1 || echo "setup-deps: could not install ${optional[*]}; df11 window is left out" >&2
  else
    echo "setup-deps: for df11 window and its test: sudo apt-get install ${optional[*]}" >&2
  fi
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  echo "setup-deps: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit $?
fi
echo "setup-deps: missing ${missing[*]}; install them with:" >&2
echo "  sudo apt-get install ${missing[*]}" >&2
exit 1
