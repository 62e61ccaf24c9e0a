#!/usr/bin/env bash
# Installs what livecast and its tests need on Debian 12 with Python 3.11,
# as root; only what is missing. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
command -v ffmpeg >/dev/null || apt_packages+=(ffmpeg)
command -v gst-launch-1.0 >/dev/null || apt_packages+=(gstreamer1.0-tools)
if ! gst-inspect-1.0 rtmp2sink >/dev/null 2>&1 || ! gst-inspect-1.0 x264enc >/dev/null 2>&1 \
    || ! gst-inspect-1.0 flvmux >/dev/null 2>&1 || ! gst-inspect-1.0 avenc_aac >/dev/null 2>&1; then
  apt_packages+=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
                 gstreamer1.0-plugins-ugly gstreamer1.0-libav)
fi
command -v chromium >/dev/null || apt_packages+=(chromium fonts-dejavu-core)
command -v nginx >/dev/null || apt_packages+=(nginx-light)
command -v npm >/dev/null || apt_packages+=(npm)

if ((${#apt_packages[@]})); then
  echo "setup: installing Debian packages: ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep package scripts from starting services (nginx) during the install:
  # the tests start their own, on their own ports.
  policy=/usr/sbin/policy-rc.d
  [[ -e $policy ]] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; trap 'rm -f "$policy"' EXIT; }
  apt-get update -q </dev/null
  apt-get install -y -q --no-install-recommends "${apt_packages[@]}" </dev/null
fi

# hls.js for the /watch page, from the lock file.
if [[ ! -f node_modules/hls.js/dist/hls.min.js ]]; then
  npm ci --no-audit --no-fund </dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
stamp=.venv/.livecast-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install -q --upgrade pip </dev/null
  .venv/bin/pip install -q -e '.[test]' </dev/null
  touch "$stamp"
fi
