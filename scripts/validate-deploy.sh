#!/usr/bin/env bash
# Validates every file under deploy/ (and the example configs) with the tools that can run here:
#   - each scopegate TOML (also the one inside the Kubernetes ConfigMap) passes `scopegate check`, with
#     throwaway keys in place of the secret paths it names;
#   - YAML parses; JSON5/HuJSON parses after comments, bare keys and trailing commas are normalised;
#   - the Caddyfile passes `caddy validate`, the nginx config `nginx -t`;
#   - the Dockerfile uses only valid instructions and existing stages;
#   - systemd units pass `systemd-analyze verify` when available, else parse as unit files.
# No Docker engine, Kubernetes or systemd is needed. Exit status: non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p scopegate
SG=$PWD/target/debug/scopegate
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; failures=$((failures + 1)); }

python3 -c 'import yaml' 2>/dev/null || { echo "python3-yaml is required (apt-get install python3-yaml)"; exit 1; }

# Throwaway secrets the configs can point at.
"$SG" keygen --out "$WORK/ed25519.pem" >/dev/null 2>&1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=validate \
  -keyout "$WORK/tls-key.pem" -out "$WORK/tls-cert.pem" >/dev/null 2>&1

echo "== scopegate configs =="
python3 - "$WORK" <<'PY' > "$WORK/configs.txt"
import glob, os, sys, yaml
work = sys.argv[1]
out = []
for path in sorted(glob.glob("deploy/**/*.toml", recursive=True) + glob.glob("examples/**/*.toml", recursive=True)):
    out.append(path)
# Configs embedded in Kubernetes ConfigMaps.
for path in sorted(glob.glob("deploy/**/*.y*ml", recursive=True)):
    for i, doc in enumerate(yaml.safe_load_all(open(path))):
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            for name, text in (doc.get("data") or {}).items():
                if name.endswith(".toml"):
                    target = os.path.join(work, f"embedded-{os.path.basename(path)}-{name}")
                    open(target, "w").write(text)
                    out.append(f"{target}\t{path} ConfigMap {name}")
print("\n".join(out))
PY
while IFS=$'\t' read -r cfg label; do
  label=${label:-$cfg}
  staged="$WORK/check-$(echo "$label" | tr '/ ' '__').toml"
  # Secret and certificate paths point at the throwaway files; everything else is checked as written.
  python3 - "$cfg" "$staged" "$WORK" <<'PY'
import re, sys
src, dst, work = sys.argv[1:]
text = open(src).read()
def repl(m):
    key = m.group(1)
    if key in ("cert_file", "ca_file"):
        f = f"{work}/tls-cert.pem"
    elif key == "key_file" and "[server" in text[: m.start()] and "tls" in text[max(0, m.start() - 200): m.start()]:
        f = f"{work}/tls-key.pem"
    else:
        f = f"{work}/ed25519.pem"
    return f'{key} = "{f}"'
text = re.sub(r'\b(key_file|next_key_file|cert_file|ca_file)\s*=\s*"[^"]*"', repl, text)
open(dst, "w").write(text)
PY
  if out=$("$SG" check --config "$staged" 2>&1); then ok "$label"; else bad "$label"; echo "$out" | sed 's/^/        /'; fi
done < "$WORK/configs.txt"

echo "== YAML, JSON, JSON5 =="
while read -r f; do
  if python3 -c 'import sys, yaml; list(yaml.safe_load_all(open(sys.argv[1])))' "$f" 2>"$WORK/err"; then ok "$f"; else bad "$f"; sed 's/^/        /' "$WORK/err"; fi
done < <(find deploy -name '*.yml' -o -name '*.yaml' | sort)
while read -r f; do
  if python3 - "$f" 2>"$WORK/err" <<'PY'
import json, re, sys, yaml
def json5(text):
    text = re.sub(r'(?m)^\s*//.*$', '', text)                       # whole-line comments
    text = re.sub(r'(?m)([,{\[]\s*)//[^\n]*$', r'\1', text)          # trailing comments
    text = re.sub(r'([{,]\s*)([A-Za-z_$][\w$]*)\s*:', r'\1"\2":', text)  # bare keys
    text = re.sub(r',(\s*[}\]])', r'\1', text)                       # trailing commas
    return json.loads(text)
path = sys.argv[1]
if path.endswith(".json"):
    json.load(open(path))
else:
    json5(open(path).read())
# JSON5 documents embedded in ConfigMaps are checked with the YAML files' pass below.
PY
  then ok "$f"; else bad "$f"; sed 's/^/        /' "$WORK/err"; fi
done < <(find deploy -name '*.json' -o -name '*.json5' -o -name '*.hujson' | sort)
for f in $(find deploy -name '*.y*ml' | sort); do
  python3 - "$f" <<'PY' || bad "$f (embedded JSON5)"
import json, re, sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        for name, text in (doc.get("data") or {}).items():
            if name.endswith(".json5"):
                t = re.sub(r'(?m)^\s*//.*$', '', text)
                t = re.sub(r'([{,]\s*)([A-Za-z_$][\w$]*)\s*:', r'\1"\2":', t)
                t = re.sub(r',(\s*[}\]])', r'\1', t)
                json.loads(t)
                print(f"  ok    {sys.argv[1]} ConfigMap {name}")
PY
done

echo "== proxies =="
if command -v caddy >/dev/null; then
  if out=$(caddy validate --config deploy/trusted-proxy/Caddyfile --adapter caddyfile 2>&1); then ok "deploy/trusted-proxy/Caddyfile (caddy validate)"; else bad "Caddyfile"; echo "$out" | tail -5 | sed 's/^/        /'; fi
else bad "caddy is not installed"; fi
if command -v nginx >/dev/null; then
  if out=$(nginx -t -c "$PWD/deploy/trusted-proxy/nginx.conf" 2>&1); then ok "deploy/trusted-proxy/nginx.conf (nginx -t)"; else bad "nginx.conf"; echo "$out" | sed 's/^/        /'; fi
else bad "nginx is not installed"; fi

echo "== Dockerfile =="
for f in $(find deploy -name Dockerfile | sort); do
  if python3 - "$f" 2>"$WORK/err" <<'PY'
import re, sys
valid = {"FROM","RUN","CMD","LABEL","EXPOSE","ENV","ADD","COPY","ENTRYPOINT","VOLUME","USER","WORKDIR","ARG","ONBUILD","STOPSIGNAL","HEALTHCHECK","SHELL"}
lines, cur = [], ""
for raw in open(sys.argv[1]):
    line = raw.rstrip("\n")
    if not cur and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.endswith("\\"):
        cur += line[:-1] + " "
        continue
    lines.append(cur + line); cur = ""
assert not cur, "a continuation line runs off the end"
stages = set()
assert lines and lines[0].split()[0].upper() in ("FROM", "ARG"), "must start with FROM"
for l in lines:
    word = l.split()[0]
    assert word.upper() in valid, f"unknown instruction {word!r}"
    if word.upper() == "FROM":
        m = re.search(r"\bAS\s+(\S+)", l, re.I)
        if m: stages.add(m.group(1))
    m = re.search(r"--from=(\S+)", l)
    if m:
        assert m.group(1) in stages, f"COPY --from={m.group(1)}: no such stage"
    if word.upper() in ("CMD", "ENTRYPOINT") and l.split(None, 1)[1].startswith("["):
        import json; json.loads(l.split(None, 1)[1])
PY
  then ok "$f"; else bad "$f"; sed 's/^/        /' "$WORK/err"; fi
done

echo "== systemd units =="
for f in $(find deploy -name '*.service' | sort); do
  if command -v systemd-analyze >/dev/null && systemd-analyze verify --man=no "$f" >"$WORK/err" 2>&1; then
    ok "$f (systemd-analyze verify)"
  elif python3 - "$f" 2>"$WORK/err2" <<'PY'
import configparser, sys
p = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
p.optionxform = str
p.read(sys.argv[1])
assert set(p.sections()) >= {"Unit", "Service", "Install"}, f"sections: {p.sections()}"
assert p["Service"].get("ExecStart", "").startswith("/"), "ExecStart must be an absolute path"
PY
  then ok "$f (unit syntax; systemd-analyze unavailable here)"; else bad "$f"; cat "$WORK/err" "$WORK/err2" 2>/dev/null | sed 's/^/        /'; fi
done

echo
if [ "$failures" -gt 0 ]; then echo "deploy validation: $failures failure(s)"; exit 1; fi
echo "deploy validation: all files pass"
