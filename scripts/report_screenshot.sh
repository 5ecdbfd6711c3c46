#!/usr/bin/env bash
# Renders a run's report.html in headless Chromium (Debian package `chromium`) and writes report.png beside it:
# how a user's browser shows it. Usage: scripts/report_screenshot.sh <run dir> [width] [height]
set -euo pipefail
run=${1:?usage: scripts/report_screenshot.sh <run dir> [width] [height]}
[ -f "$run/report.html" ] || { echo "no report.html in $run" >&2; exit 1; }
command -v chromium >/dev/null || { echo "chromium is not installed (apt-get install chromium)" >&2; exit 1; }
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="${2:-1150},${3:-2400}" \
    --screenshot="$run/report.png" "file://$(cd "$run" && pwd)/report.html" 2>/dev/null
echo "$run/report.png"
