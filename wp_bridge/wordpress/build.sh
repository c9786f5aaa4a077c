#!/usr/bin/env bash
# Builds kivicare-sidecar-bridge.zip, the file an admin uploads under Plugins → Add New → Upload Plugin.
# Usage: wp_bridge/wordpress/build.sh [OUTPUT_DIR]      (default: wp_bridge/wordpress/dist, git-ignored)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/dist}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
zip="$out/kivicare-sidecar-bridge.zip"
version="$(sed -n 's/^ \* Version: *//p' "$here/kivicare-sidecar-bridge/kivicare-sidecar-bridge.php")"

if command -v php >/dev/null 2>&1; then
  find "$here/kivicare-sidecar-bridge" -name '*.php' -print0 | xargs -0 -n1 php -l >/dev/null
fi

rm -f "$zip"
if command -v zip >/dev/null 2>&1; then
  (cd "$here" && zip -qrX "$zip" kivicare-sidecar-bridge -x '*/.*' '*~')
else
  python3 - "$here" "$zip" <<'PY'
import os, sys, zipfile
root, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
    for folder, dirs, files in os.walk(os.path.join(root, "kivicare-sidecar-bridge")):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".") and not f.endswith("~")):
            path = os.path.join(folder, name)
            archive.write(path, os.path.relpath(path, root))
PY
fi
echo "$zip (version $version)"
