#!/usr/bin/env bash
# Validates the deployment recipes under deploy/ (and any scopegate config under examples/) with the
# tools that run on a CI machine, without Docker, Kubernetes, Tailscale, systemd as PID 1 or a gateway:
#
#   1. every *.toml under deploy/ and examples/, and every *.toml embedded in a Kubernetes ConfigMap,
#      passes `scopegate check` on a copy whose secret, key and certificate paths point at throwaway
#      files generated here, with every *_env variable it names set to a dummy value;
#      every openclaw*.json5 equals `scopegate openclaw-config` for the scopegate*.toml beside it;
#   2. YAML, JSON, JSON5/HuJSON and TOML-format *.cfg files parse (plus light compose checks);
#   3. `nginx -t` on each nginx*.conf (run unprivileged, with a throwaway certificate) and
#      `caddy validate` on each Caddyfile;
#   4. each Dockerfile uses only valid instructions and COPY --from names an earlier stage;
#   5. each systemd unit passes `systemd-analyze verify` (with stand-ins for binaries this machine lacks),
#      or, without systemd-analyze, parses as a unit file.
#
# Run from anywhere (it changes to the repository root). Needs: cargo, python3 with PyYAML
# (apt-get install python3-yaml), openssl, nginx, caddy; systemd-analyze is used when present.
# Prints one line per checked file and a summary; exits non-zero if anything failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

passed=0
failed=0
skipped=0
ok() { passed=$((passed + 1)); printf '  ok    %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf '  FAIL  %s\n' "$*"; }
skip() { skipped=$((skipped + 1)); printf '  skip  %s\n' "$*"; }
indent() { sed 's/^/          /'; }

for tool in cargo python3 openssl; do
  command -v "$tool" >/dev/null || { echo "validate-deploy: $tool is required" >&2; exit 1; }
done
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "validate-deploy: python3 cannot import yaml; install PyYAML (apt-get install python3-yaml)" >&2
  exit 1
fi
if ! python3 -c 'import tomllib' 2>/dev/null; then
  echo "validate-deploy: python3 >= 3.11 is required (tomllib)" >&2
  exit 1
fi

echo "building scopegate (cargo build --quiet)"
cargo build --quiet --package scopegate --bin scopegate
SG=${CARGO_TARGET_DIR:-$ROOT/target}/debug/scopegate

WORK=$(mktemp -d "${TMPDIR:-/tmp}/validate-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
HELPER=$WORK/helper.py

# ------------------------------------------------------------------------------------------------------
# The Python half: staging configs with generated secrets, parsers, the Dockerfile and unit checks.
cat >"$HELPER" <<'PYTHON'
import base64
import configparser
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import tomllib

import yaml

ROOT = os.getcwd()
WORK = os.environ["VD_WORK"]
SG = os.environ["VD_SCOPEGATE"]
GEN = os.path.join(WORK, "generated")
os.makedirs(GEN, exist_ok=True)


class Invalid(Exception):
    pass


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---- throwaway material, generated once per kind ------------------------------------------------------

def new_path(name):
    return os.path.join(GEN, name)


def once(*names):
    """Wraps a generator of the named files so that it runs only when they are not there yet: each
    helper call is a new process, and the files are shared by the whole validation run."""

    def wrap(make):
        def get():
            paths = [new_path(n) for n in names]
            if not all(os.path.exists(p) for p in paths):
                make(*paths)
            return paths[0] if len(paths) == 1 else tuple(paths)

        return get

    return wrap


def write_secret(p, nbytes):
    with open(p, "w") as f:
        f.write(secrets.token_urlsafe(nbytes))


def assertion_key(alg):
    """scopegate's own signing key, in the format [assertion] key_file expects for `alg`."""
    if alg == "HS256":
        return once("assertion-hs256.secret")(lambda p: write_secret(p, 48))()
    if alg not in ("EdDSA", "ES256"):
        raise Invalid(f"[assertion] algorithm {alg!r} is unknown to this validator")
    keygen_alg = {"EdDSA": "ed-dsa", "ES256": "es256"}[alg]
    return once(f"assertion-{alg.lower()}.pem")(
        lambda p: run(SG, "keygen", "--out", p, "--algorithm", keygen_alg)
    )()


def hmac_secret():
    # 86 characters: long enough for HS512's 64-byte minimum.
    return once("jwt-hmac.secret")(lambda p: write_secret(p, 64))()


def idp_private_key(alg):
    """A private key of the type a JWT algorithm needs (for deriving public keys and JWKs)."""
    if alg.startswith(("RS", "PS")):
        kind, opts = "rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    elif alg == "ES256":
        kind, opts = "p256", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    elif alg == "ES384":
        kind, opts = "p384", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]
    elif alg == "EdDSA":
        kind, opts = "ed25519", ["-algorithm", "ed25519"]
    else:
        raise Invalid(f"JWT algorithm {alg!r} is unknown to this validator")

    return kind, once(f"idp-{kind}.key")(lambda p: run("openssl", "genpkey", *opts, "-out", p))()


def idp_public_pem(alg):
    kind, key = idp_private_key(alg)
    return once(f"idp-{kind}.pub.pem")(
        lambda p: run("openssl", "pkey", "-in", key, "-pubout", "-out", p)
    )()


def idp_jwk(alg):
    """A JWKS holding one public key for `alg` (jwk_file accepts a JWK or a one-key JWKS)."""
    kind, key = idp_private_key(alg)

    def make(p):
        der = run("openssl", "pkey", "-in", key, "-pubout", "-outform", "DER").stdout
        if kind == "rsa":
            pem = run("openssl", "pkey", "-in", key, "-pubout").stdout
            out = run("openssl", "rsa", "-pubin", "-noout", "-modulus", input=pem).stdout.decode()
            n = bytes.fromhex(out.strip().split("=", 1)[1])
            jwk = {"kty": "RSA", "n": b64url(n), "e": "AQAB"}  # genpkey's default exponent, 65537
        elif kind in ("p256", "p384"):
            size = 32 if kind == "p256" else 48
            point = der[-(2 * size + 1):]
            if point[0] != 4:
                raise Invalid("unexpected EC public key encoding from openssl")
            jwk = {
                "kty": "EC",
                "crv": "P-256" if kind == "p256" else "P-384",
                "x": b64url(point[1 : 1 + size]),
                "y": b64url(point[1 + size :]),
            }
        else:
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(der[-32:])}
        jwk.update({"alg": alg, "use": "sig", "kid": f"validate-{kind}"})
        with open(p, "w") as f:
            json.dump({"keys": [jwk]}, f)

    return once(f"idp-{kind}-{alg}.jwks.json")(make)()


def tls_pair():
    def make(cert, key):
        run(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,DNS:openclaw.example.com,IP:127.0.0.1",
            "-keyout", key, "-out", cert,
        )

    return once("tls-cert.pem", "tls-key.pem")(make)()


# ---- staging a scopegate config -----------------------------------------------------------------------


def placeholders(doc):
    """(path literal -> generated file) and (env var -> value) for everything the config reads."""
    files, env = {}, {}

    def want(literal, target, where):
        if not isinstance(literal, str):
            return
        if files.get(literal, target) != target:
            raise Invalid(f"{literal!r} is used for two different kinds of secret ({where})")
        files[literal] = target

    def key_material(alg):
        p = assertion_key(alg)
        with open(p) as f:
            return f.read()

    server = doc.get("server", {})
    tls = server.get("tls")
    if isinstance(tls, dict):
        cert, key = tls_pair()
        want(tls.get("cert_file"), cert, "server.tls.cert_file")
        want(tls.get("key_file"), key, "server.tls.key_file")

    upstream = doc.get("upstream", {})
    if "ca_file" in upstream:
        want(upstream["ca_file"], tls_pair()[0], "upstream.ca_file")

    for i, k in enumerate(doc.get("jwt", {}).get("keys", [])):
        alg = k.get("algorithm", "")
        where = f"jwt.keys[{i}]"
        if "secret_file" in k:
            want(k["secret_file"], hmac_secret(), where + ".secret_file")
        if "secret_env" in k:
            with open(hmac_secret()) as f:
                env[k["secret_env"]] = f.read()
        if "public_key_file" in k:
            want(k["public_key_file"], idp_public_pem(alg), where + ".public_key_file")
        if "jwk_file" in k:
            want(k["jwk_file"], idp_jwk(alg), where + ".jwk_file")

    a = doc.get("assertion", {})
    alg = a.get("algorithm", "EdDSA")
    for name in ("key_file", "next_key_file"):
        if name in a:
            want(a[name], assertion_key(alg), f"assertion.{name}")
    for name in ("key_env", "next_key_env"):
        if name in a:
            env[a[name]] = key_material(alg)

    # [oidc]: the client secret is any text; cookie keys are base64 32-byte AEAD keys.
    oidc = doc.get("oidc", {})
    if "client_secret_file" in oidc:
        want(oidc["client_secret_file"], hmac_secret(), "oidc.client_secret_file")
    cookie_keys = ", ".join(base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(2))
    if "cookie_keys_file" in oidc:
        def make_keys(p):
            with open(p, "w") as f:
                f.write(cookie_keys)
        want(oidc["cookie_keys_file"], once("cookie-keys")(make_keys)(), "oidc.cookie_keys_file")
    if "cookie_keys_env" in oidc:
        env[oidc["cookie_keys_env"]] = cookie_keys

    # Anything else that names a file or a variable: variables get a dummy value; files this validator
    # does not know how to fake must exist as written, or it says so.
    def walk(node, trail):
        if isinstance(node, dict):
            for k, v in node.items():
                here = f"{trail}.{k}" if trail else k
                if k.endswith("_env") and isinstance(v, str) and v not in env:
                    env[v] = secrets.token_urlsafe(64)
                elif k.endswith("_file") and isinstance(v, str) and v not in files:
                    raise Invalid(
                        f"{here} = {v!r}: this validator does not know what that file holds; "
                        "teach scripts/validate-deploy.sh (and tests/deploy_configs.rs)"
                    )
                else:
                    walk(v, here)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{trail}[{i}]")

    walk(doc, "")
    return files, env


def stage(src, dst):
    """Copies `src` to `dst` with every secret path replaced; returns the env the check needs."""
    with open(src, "rb") as f:
        raw = f.read()
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise Invalid(f"{src}: not TOML: {e}")
    files, env = placeholders(doc)
    text = raw.decode()
    for literal, target in files.items():
        replaced = False
        for quote in ('"', "'"):
            needle = f"{quote}{literal}{quote}"
            if needle in text:
                text = text.replace(needle, json.dumps(target))
                replaced = True
        if not replaced:
            raise Invalid(f"{literal!r}: cannot find it written as a plain string to replace")
    with open(dst, "w") as f:
        f.write(text)
    return env


def scopegate(args, env):
    full = dict(os.environ)
    full.update(env)
    return subprocess.run([SG, *args], capture_output=True, text=True, env=full)


def cmd_check_toml(src, dst):
    env = stage(src, dst)
    r = scopegate(["check", "--config", dst], env)
    if r.returncode != 0:
        # Line numbers are the original's: only quoted paths were replaced. Name the original file.
        sys.stdout.write((r.stdout + r.stderr).replace(dst, src))
        return 1
    return 0


# ---- which configs --------------------------------------------------------------------------------------


def repo_files(top, suffixes=None, names=None):
    out = []
    if not os.path.isdir(top):
        return out
    for d, subdirs, fs in os.walk(top):
        subdirs[:] = sorted(s for s in subdirs if s not in ("node_modules", "target", ".git"))
        for f in sorted(fs):
            if (suffixes and f.endswith(suffixes)) or (names and names(f)):
                out.append(os.path.relpath(os.path.join(d, f), ROOT))
    return out


def configmaps():
    """(yaml file, ConfigMap name, data) for every ConfigMap in deploy/."""
    for path in repo_files("deploy", (".yaml", ".yml")):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
                    yield path, doc.get("metadata", {}).get("name", "?"), doc.get("data") or {}


def extract(path, cm, key, text):
    d = os.path.join(WORK, "embedded", re.sub(r"[^A-Za-z0-9_.-]", "_", f"{path}-{cm}"))
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, key)
    with open(p, "w") as f:
        f.write(text)
    return p


def cmd_configs():
    """Lines: file-to-check TAB label."""
    for p in repo_files("deploy", (".toml",)) + repo_files("examples", (".toml",)):
        print(f"{p}\t{p}")
    for path, cm, data in configmaps():
        for key, text in sorted(data.items()):
            if key.endswith(".toml"):
                print(f"{extract(path, cm, key, text)}\t{path} (ConfigMap {cm}, {key})")
    return 0


def cmd_openclaw_pairs():
    """Lines: gateway json5 TAB scopegate toml TAB label."""
    for p in repo_files("deploy", names=lambda f: f.startswith("openclaw") and f.endswith(".json5")):
        d = os.path.dirname(p)
        tomls = sorted(
            os.path.join(d, f) for f in os.listdir(d) if f.startswith("scopegate") and f.endswith(".toml")
        )
        if not tomls:
            print(f"{p}\t-\t{p}")
        for t in tomls:
            print(f"{p}\t{t}\t{p} = openclaw-config({os.path.basename(t)})")
    for path, cm, data in configmaps():
        j = [k for k in sorted(data) if k.endswith(".json5")]
        t = [k for k in sorted(data) if k.endswith(".toml")]
        for jk in j:
            for tk in t:
                print(
                    f"{extract(path, cm, jk, data[jk])}\t{extract(path, cm, tk, data[tk])}\t"
                    f"{path} (ConfigMap {cm}, {jk} = openclaw-config({tk}))"
                )
    return 0


def cmd_openclaw_compare(json5_path, toml_path, dst):
    if toml_path == "-":
        print("no scopegate*.toml next to it to compare with")
        return 1
    with open(json5_path) as f:
        have = json5_loads(f.read())
    env = stage(toml_path, dst)
    r = scopegate(["openclaw-config", "--config", dst], env)
    if r.returncode != 0:
        sys.stdout.write(r.stdout + r.stderr)
        return 1
    want = json5_loads(r.stdout)
    if have != want:
        print("differs from `scopegate openclaw-config`; regenerate it. scopegate prints:")
        print(json.dumps(want, indent=2))
        return 1
    return 0


# ---- parsers -----------------------------------------------------------------------------------------


def json5_loads(text):
    """JSON5/HuJSON as written in these recipes: comments, trailing commas, bare keys, '...' strings."""
    parts, i, n = [], 0, len(text)  # (is_string, text) pieces of the equivalent JSON
    while i < n:
        c = text[i]
        if c in "\"'":
            j, buf = i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\":
                    esc = text[j : j + 2]
                    buf.append("'" if esc == "\\'" else esc)  # JSON has no \' escape
                    j += 2
                    continue
                buf.append('\\"' if text[j] == '"' else text[j])
                j += 1
            if j >= n:
                raise ValueError("unterminated string")
            parts.append((True, '"' + "".join(buf) + '"'))
            i = j + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError("unterminated comment")
            i = end + 2
        else:
            m = re.match(r"[A-Za-z_$][A-Za-z0-9_$]*", text[i:])
            if m:
                word = m.group(0)
                bare_key = word not in ("true", "false", "null") and text[i + m.end() :].lstrip().startswith(":")
                parts.append((bare_key, json.dumps(word) if bare_key else word))
                i += m.end()
            else:
                parts.append((False, c))
                i += 1
    # Trailing commas, looked for outside strings only (comments are already gone).
    out, pending = [], []
    for is_string, piece in parts + [(True, "")]:
        if is_string:
            out.append(re.sub(r",(\s*[}\]])", r"\1", "".join(pending)))
            out.append(piece)
            pending = []
        else:
            pending.append(piece)
    return json.loads("".join(out))


def cmd_parse(path):
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith((".yml", ".yaml")):
        docs = list(yaml.safe_load_all(raw))
        if not any(d is not None for d in docs):
            raise Invalid("no YAML document")
        if os.path.basename(path).startswith(("docker-compose", "compose")):
            compose_checks(docs[0])
    elif path.endswith(".json"):
        json.loads(raw)
    elif path.endswith((".json5", ".hujson")):
        json5_loads(raw.decode())
    elif path.endswith(".cfg"):
        tomllib.loads(raw.decode())
    else:
        raise Invalid("unknown file type")
    return 0


def compose_checks(doc):
    services = doc.get("services") or {}
    declared = set((doc.get("secrets") or {}).keys())
    for name, svc in services.items():
        mode = svc.get("network_mode", "")
        if mode.startswith("service:") and mode[len("service:") :] not in services:
            raise Invalid(f"service {name}: network_mode {mode} names no service")
        if mode.startswith("service:") and svc.get("ports"):
            raise Invalid(f"service {name}: ports must be published by the namespace's owner")
        for s in svc.get("secrets") or []:
            s = s if isinstance(s, str) else s.get("source")
            if s not in declared:
                raise Invalid(f"service {name}: secret {s} is not declared")


# ---- Dockerfile ---------------------------------------------------------------------------------------

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}


def cmd_dockerfile(path):
    with open(path) as f:
        lines = f.read().split("\n")
    escape = "\\"
    for l in lines:  # parser directives come first: `# escape=` changes the continuation character
        m = re.match(r"#\s*escape\s*=\s*(\S)", l)
        if m:
            escape = m.group(1)
        elif not l.startswith("#"):
            break
    instrs, cur, start = [], "", 0
    for no, l in enumerate(lines, 1):
        s = l.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not cur:
            start = no
        if s.endswith(escape):
            cur += s[:-1] + " "
            continue
        instrs.append((start, cur + s))
        cur = ""
    if cur:
        raise Invalid(f"line {start}: the last instruction ends with a line continuation")
    if not instrs:
        raise Invalid("no instructions")
    stages, problems = [], []
    for no, text in instrs:
        word, _, rest = text.partition(" ")
        up = word.upper()
        if up not in INSTRUCTIONS:
            problems.append(f"line {no}: unknown instruction {word!r}")
            continue
        if not stages and up not in ("FROM", "ARG"):
            problems.append(f"line {no}: {up} before the first FROM")
        if up == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", rest.strip(), re.I)
            if not m:
                problems.append(f"line {no}: cannot read FROM {rest!r}")
                continue
            stages.append((m.group(2) or "").lower())
        for ref in re.findall(r"--from=(\S+)", rest):
            if up not in ("COPY", "ADD", "RUN"):
                continue
            if ref.isdigit():
                if int(ref) >= len(stages) - 1:
                    problems.append(f"line {no}: --from={ref}: no earlier stage with that index")
            elif ref.lower() not in stages[:-1]:
                if "/" in ref or ":" in ref:
                    continue  # an image reference, not a stage
                problems.append(f"line {no}: --from={ref}: no earlier stage named {ref!r}")
        if up in ("CMD", "ENTRYPOINT", "SHELL") and rest.lstrip().startswith("["):
            try:
                json.loads(rest)
            except ValueError as e:
                problems.append(f"line {no}: {up} exec form is not a JSON array: {e}")
        if up == "HEALTHCHECK" and rest.strip().upper() != "NONE" and "CMD" not in rest.upper():
            problems.append(f"line {no}: HEALTHCHECK needs NONE or CMD")
    if not stages:
        problems.append("no FROM")
    if problems:
        raise Invalid("\n".join(problems))
    named = [s for s in stages if s]
    print(f"{len(stages)} stage(s){': ' + ', '.join(named) if named else ''}")
    return 0


# ---- systemd units ------------------------------------------------------------------------------------


def cmd_unit_stage(path, outdir):
    """Copies a unit for `systemd-analyze verify`, pointing Exec*= binaries this machine lacks at
    stand-ins (scopegate's build for scopegate, /bin/true for others). Prints what was replaced."""
    os.makedirs(outdir, exist_ok=True)
    notes, out = [], []
    with open(path) as f:
        for line in f:
            m = re.match(r"^(Exec(?:Start|StartPre|StartPost|Reload|Stop|StopPost)=)([-@:+!]*)(\S+)(.*)$", line)
            if m and m.group(3).startswith("/") and not os.access(m.group(3), os.X_OK):
                stand_in = SG if os.path.basename(m.group(3)) == "scopegate" else "/bin/true"
                notes.append(f"{m.group(3)} -> {stand_in}")
                line = f"{m.group(1)}{m.group(2)}{stand_in}{m.group(4)}\n"
            out.append(line)
    with open(os.path.join(outdir, os.path.basename(path)), "w") as f:
        f.writelines(out)
    if notes:
        print("stand-ins: " + ", ".join(sorted(set(notes))))
    return 0


def cmd_unit_ini(path):
    p = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    p.optionxform = str
    with open(path) as f:
        p.read_file(f)
    for section in ("Unit", "Service", "Install"):
        if section not in p:
            raise Invalid(f"no [{section}] section")
    start = p["Service"].get("ExecStart", "")
    if not start.lstrip("-@:+!").startswith("/"):
        raise Invalid("ExecStart must start with an absolute path")
    return 0


# ---- nginx --------------------------------------------------------------------------------------------


def cmd_nginx_stage(path, dst, scratch):
    """A copy with certificate paths pointing at the throwaway pair and /tmp paths under `scratch`."""
    cert, key = tls_pair()
    with open(path) as f:
        text = f.read()
    text = text.replace("/tmp/", scratch.rstrip("/") + "/")
    text = re.sub(r"(\bssl_certificate\s+)[^;]+;", lambda m: f"{m.group(1)}{cert};", text)
    text = re.sub(r"(\bssl_certificate_key\s+)[^;]+;", lambda m: f"{m.group(1)}{key};", text)
    with open(dst, "w") as f:
        f.write(text)
    return 0


def main(argv):
    commands = {
        "configs": cmd_configs,
        "check-toml": cmd_check_toml,
        "openclaw-pairs": cmd_openclaw_pairs,
        "openclaw-compare": cmd_openclaw_compare,
        "parse": cmd_parse,
        "dockerfile": cmd_dockerfile,
        "unit-stage": cmd_unit_stage,
        "unit-ini": cmd_unit_ini,
        "nginx-stage": cmd_nginx_stage,
    }
    try:
        return commands[argv[1]](*argv[2:])
    except (Invalid, ValueError, OSError, yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        print(e)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"{shlex.join(e.cmd)} failed:\n{(e.stdout or b'').decode()}{(e.stderr or b'').decode()}")
        return 1


sys.exit(main(sys.argv))
PYTHON

export VD_WORK=$WORK VD_SCOPEGATE=$SG
helper() { python3 "$HELPER" "$@"; }

# Runs "$@" capturing its output; prints the ok/FAIL line for $label, with the output under a failure.
check() {
  local label=$1
  shift
  local out
  if out=$("$@" 2>&1); then
    ok "$label"
  else
    bad "$label"
    printf '%s\n' "$out" | indent
  fi
}

# ------------------------------------------------------------------------------------------------------
echo
echo "== 1. scopegate configs (scopegate check, with generated secrets) =="
n=0
while IFS=$'\t' read -r file label; do
  n=$((n + 1))
  check "$label" helper check-toml "$file" "$WORK/staged-$n.toml"
done < <(helper configs)
[ "$n" -gt 0 ] || bad "no scopegate config found under deploy/ or examples/"

echo
echo "== 1b. gateway configs (openclaw*.json5 = scopegate openclaw-config) =="
while IFS=$'\t' read -r json5 toml label; do
  n=$((n + 1))
  check "$label" helper openclaw-compare "$json5" "$toml" "$WORK/staged-$n.toml"
done < <(helper openclaw-pairs)

echo
echo "== 2. YAML, JSON, JSON5/HuJSON, TOML-format .cfg =="
while read -r f; do
  check "$f" helper parse "$f"
done < <(find deploy examples -type d \( -name node_modules -o -name target \) -prune -o -type f \
  \( -name '*.yml' -o -name '*.yaml' -o -name '*.json' -o -name '*.json5' -o -name '*.hujson' \
  -o -name '*.cfg' \) -print | sort)

echo
echo "== 3. proxies =="
mapfile -t nginx_confs < <(find deploy -type f -name 'nginx*.conf' | sort)
for conf in "${nginx_confs[@]}"; do
  if ! command -v nginx >/dev/null; then
    bad "$conf: nginx is not installed"
    continue
  fi
  scratch=$WORK/nginx-$(basename "$conf" .conf)
  mkdir -p "$scratch"
  staged=$scratch/nginx.conf
  if out=$(helper nginx-stage "$conf" "$staged" "$scratch" 2>&1 && nginx -t -q -e stderr -p "$scratch/" -c "$staged" 2>&1); then
    ok "$conf (nginx -t; throwaway certificate, /tmp paths under a scratch dir)"
  else
    bad "$conf (nginx -t)"
    printf '%s\n' "${out//"$staged"/$conf}" | indent
  fi
done
mapfile -t caddyfiles < <(find deploy -type f -name 'Caddyfile*' | sort)
for cf in "${caddyfiles[@]}"; do
  if ! command -v caddy >/dev/null; then
    bad "$cf: caddy is not installed"
    continue
  fi
  if out=$(XDG_DATA_HOME=$WORK/caddy-data XDG_CONFIG_HOME=$WORK/caddy-config \
    caddy validate --config "$cf" --adapter caddyfile 2>&1); then
    ok "$cf (caddy validate)"
  else
    bad "$cf (caddy validate)"
    printf '%s\n' "$out" | grep -v '"level":"info"' | indent
  fi
done
[ "${#nginx_confs[@]}" -gt 0 ] || skip "no nginx config under deploy/"
[ "${#caddyfiles[@]}" -gt 0 ] || skip "no Caddyfile under deploy/"

echo
echo "== 4. Dockerfiles =="
mapfile -t dockerfiles < <(find deploy -type f \( -name Dockerfile -o -name '*.Dockerfile' -o -name 'Dockerfile.*' \) ! -name '*.dockerignore' | sort)
for df in "${dockerfiles[@]}"; do
  if out=$(helper dockerfile "$df" 2>&1); then
    ok "$df ($out)"
  else
    bad "$df"
    printf '%s\n' "$out" | indent
  fi
done
[ "${#dockerfiles[@]}" -gt 0 ] || skip "no Dockerfile under deploy/"

echo
echo "== 5. systemd units =="
mapfile -t units < <(find deploy -type f \( -name '*.service' -o -name '*.socket' -o -name '*.timer' \) | sort)
if command -v systemd-analyze >/dev/null; then
  for unit in "${units[@]}"; do
    # Units of one directory are staged together, so that their references to each other resolve.
    dir=$WORK/units/$(dirname "$unit" | tr '/' '_')
    notes=""
    for sibling in "$(dirname "$unit")"/*.service "$(dirname "$unit")"/*.socket "$(dirname "$unit")"/*.timer; do
      [ -e "$sibling" ] || continue
      note=$(helper unit-stage "$sibling" "$dir")
      [ "$sibling" = "$unit" ] && notes=$note
    done
    if out=$(systemd-analyze verify --man=no "$dir/$(basename "$unit")" 2>&1) && [ -z "$out" ]; then
      ok "$unit (systemd-analyze verify${notes:+; $notes})"
    else
      bad "$unit (systemd-analyze verify${notes:+; $notes})"
      printf '%s\n' "$out" | indent
    fi
  done
else
  for unit in "${units[@]}"; do
    if out=$(helper unit-ini "$unit" 2>&1); then
      ok "$unit (parses as a unit file; systemd-analyze is not installed, so not verified)"
    else
      bad "$unit"
      printf '%s\n' "$out" | indent
    fi
  done
fi
[ "${#units[@]}" -gt 0 ] || skip "no systemd unit under deploy/"

echo
echo "deploy validation: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
