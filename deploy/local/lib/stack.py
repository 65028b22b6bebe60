"""Paths and small Keystone/Cinder helpers shared by the python parts of deploy/local.

Must agree with lib/common.sh (same layout under ${STACKUBE_LOCAL:-/var/tmp/stackube})."""
import json
import os
import secrets
import tempfile

import requests

BASE = os.environ.get("STACKUBE_LOCAL", "/var/tmp/stackube").rstrip("/") or "/"


def _layout():
    """deploy/local/layout.env: the layout shared with lib/common.sh and harness/local-stack.ts."""
    out = {}
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "layout.env")) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and key.isupper():
                out[key] = value.replace("${BASE}", BASE)
    return out


_L = _layout()
STATE = _L["STATE"]
RUN = _L["RUN"]
LOG = _L["LOG"]
CEPH_ADMIN_CONF = _L["CEPH_ADMIN_CONF"]
IDENTITIES = _L["IDENTITIES"]
READY = _L["READY"]                  # written by `up` once everything is provisioned (lib/common.sh)
KS_KEY_REPOS = ("fernet-keys", "credential-keys", "receipt-keys")   # as KS_KEY_REPOS in lib/common.sh
CLOUD_CONF = _L["CLOUD_CONF"]
CLOUDS_YAML = _L["CLOUDS_YAML"]
SECRETS = _L["SECRETS"]
CEPH_CONF = _L["CEPH_CONF"]
CEPH_KEYRING = _L["CEPH_KEYRING"]
CEPH_CONTROLLER_KEYRING = _L["CEPH_CONTROLLER_KEYRING"]
CEPH_FENCING_KEYRING = _L["CEPH_FENCING_KEYRING"]

KEYSTONE = _L["KEYSTONE_URL"]
CINDER = _L["CINDER_URL"]
REGION = _L["REGION"]
POOL = _L["CEPH_POOL"]
TENANTS = ("tenant-a", "tenant-b")
BACKENDS = ("ceph",)                 # first = default volume type
# More public types on a backend: a second type to retype to (ModifyVolume, csi-sanity's mutable parameters).
EXTRA_TYPES = {"ceph-gold": "ceph"}
# The group type of Cinder's generic volume groups (volume group snapshots); cinder.conf's default_group_type.
GROUP_TYPE = _L["GROUP_TYPE"]
APPCRED_NAME = "stackube-csi"

DRIVER_FILES = [CLOUD_CONF, CLOUDS_YAML, CEPH_CONF, CEPH_KEYRING, CEPH_CONTROLLER_KEYRING, CEPH_FENCING_KEYRING] + [
    f"{SECRETS}/{n}.yaml" for n in ("tenant-a", "tenant-b", "tenant-a-password", "tenant-b-password", "admin")]


def stamp():
    """Which deploy/local made the stack: a hash of its own files. `up` writes it into READY; a stack
    provisioned by another version is provisioned again (and Cinder restarted on its new conf)."""
    import hashlib
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for path in [os.path.join(here, "..", "up")] + [os.path.join(here, f) for f in sorted(os.listdir(here)) if not f.startswith((".", "__"))]:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def created(part):
    """Whether PART's (ceph, keystone, cinder) creation finished: `mark_created` in lib/common.sh."""
    return os.path.exists(f"{STATE}/{part}/created")


def write_private(path, text, mode=0o600):
    """Atomically write a file readable by its owner only (default)."""
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_identities():
    try:
        with open(IDENTITIES) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save_identities(ids):
    write_private(IDENTITIES, json.dumps(ids, indent=1, sort_keys=True) + "\n")


def password(ids, name):
    """The stored password of NAME, generated (URL-safe, so INI/YAML need no quoting) on first use."""
    entry = ids.setdefault(name, {})
    if "password" not in entry:
        entry["password"] = secrets.token_urlsafe(18)
    return entry["password"]


def read_flat_yaml(path):
    """secrets/*.yaml as written by provision.py: `key: "json string"` lines, # comments."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k.strip()] = json.loads(v)
    return out


def pw_auth(user, pw, project):
    return {"identity": {"methods": ["password"], "password": {
        "user": {"name": user, "domain": {"name": "Default"}, "password": pw}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}


def appcred_auth(cred_id, cred_secret):
    return {"identity": {"methods": ["application_credential"], "application_credential": {
        "id": cred_id, "secret": cred_secret}}}


def token(auth, timeout=5):
    """(token, token body) for a Keystone v3 auth block; raises on failure."""
    r = requests.post(f"{KEYSTONE}/auth/tokens", json={"auth": auth}, timeout=timeout)
    r.raise_for_status()
    return r.headers["X-Subject-Token"], r.json()["token"]


def admin_token(ids, timeout=5):
    return token(pw_auth("admin", ids["admin"]["password"], "admin"), timeout)
