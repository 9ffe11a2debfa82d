"""Print this machine's Debian apt sources (one-line format) for another architecture: the entries of
/etc/apt/sources.list(.d) signed by Debian's archive keyring, so an arm64 download uses the same mirror the
machine already uses. Usage: python3 debian_sources.py KEYRING ARCH"""

import glob
import re
import sys

keyring, arch = sys.argv[1], sys.argv[2]
out = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in stanza.splitlines():
            if line.strip().startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("signed-by") != keyring:
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(f"deb [arch={arch} signed-by={keyring}] {uri} {suite} {fields.get('components', 'main')}")
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line.strip())
        if m and "debian" in m.group(2) and "bookworm" in m.group(3):
            out.append(f"deb [arch={arch} signed-by={keyring}] {m.group(2)} {m.group(3)} {m.group(4)}")
print("\n".join(dict.fromkeys(out)))
