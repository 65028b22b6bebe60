#!/usr/bin/python3
"""Idempotent setup of what lives inside Keystone and Cinder, and the driver's files.

usage: provision.py passwords       generate the stack's passwords once (before anything runs in parallel)
       provision.py password NAME   print NAME's stored password
       provision.py keystone        service project + cinder user, tenant-a/-b with a member user and an
                                    application credential each, block-storage/volumev3 catalog
       provision.py cinder          wait for Cinder's services, volume type per backend, tenant quotas
       provision.py files           cloud.conf, clouds.yaml, secrets/*.yaml
Every command can run again on a provisioned stack and changes nothing then."""
import json
import os
import sys
import time

import requests

import stack as S

QUOTAS = {"volumes": 1500, "snapshots": 500, "gigabytes": 10000, "groups": 20}


class Unauthorized(Exception):
    pass


class Keystone:
    def __init__(self, tok):
        self.h = {"X-Auth-Token": tok}

    def call(self, method, path, **kw):
        r = requests.request(method, f"{S.KEYSTONE}{path}", headers=self.h, timeout=10, **kw)
        if r.status_code == 401:
            raise Unauthorized(f"keystone {method} {path}: 401 {r.text[:300]}")
        if r.status_code >= 400:
            raise SystemExit(f"keystone {method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.text else None

    def ensure(self, coll, key, query, body):
        """id of the first COLL matching QUERY, created from BODY when there is none."""
        found = self.call("GET", f"/{coll}", params=query)[coll]
        if found:
            return found[0]["id"]
        print(f"created {key} {query}")
        return self.call("POST", f"/{coll}", json={key: body})[key]["id"]

    def grant(self, project, user, role):
        self.call("PUT", f"/projects/{project}/users/{user}/roles/{role}")


def ensure_user(ks, name, pw, project_id):
    uid = ks.ensure("users", "user", {"name": name},
                    {"name": name, "password": pw, "domain_id": "default", "default_project_id": project_id})
    # Reset the password only when ours no longer works: a change revokes the user's live tokens.
    try:
        S.token({"identity": {"methods": ["password"], "password": {"user": {"id": uid, "password": pw}}}})
    except requests.HTTPError:
        ks.call("PATCH", f"/users/{uid}", json={"user": {"password": pw}})
        print(f"reset password of {name}")
    return uid


def ensure_appcred(ids, tenant, user_id):
    """The tenant's application credential: reuse the stored one while it authenticates."""
    entry = ids[tenant]
    if entry.get("appcred_id"):
        try:
            S.token(S.appcred_auth(entry["appcred_id"], entry["appcred_secret"]))
            return
        except requests.HTTPError:
            pass
    base = f"/users/{user_id}/application_credentials"
    for attempt in range(3):
        # Seen once: a token of a just-granted user was refused (401) right after it worked, as if one of
        # Keystone's SQLite connections still read from before the grant. A fresh token then works.
        tok, _ = S.token(S.pw_auth(entry["username"], entry["password"], tenant))
        user = Keystone(tok)
        try:
            for old in user.call("GET", base, params={"name": S.APPCRED_NAME})["application_credentials"]:
                user.call("DELETE", f"{base}/{old['id']}")   # its secret is lost: replace it
            cred = user.call("POST", base, json={"application_credential": {
                "name": S.APPCRED_NAME, "description": "stackube-csi local test credential"}})
            break
        except Unauthorized as e:
            print(f"{e}; retrying with a new token")
            time.sleep(1)
    else:
        raise SystemExit(f"could not create the application credential of {tenant}")
    cred = cred["application_credential"]
    entry["appcred_id"], entry["appcred_secret"] = cred["id"], cred["secret"]
    print(f"created application credential for {tenant}")


def keystone():
    ids = S.load_identities()
    tok, _ = S.admin_token(ids)
    ks = Keystone(tok)
    roles = {r["name"]: r["id"] for r in ks.call("GET", "/roles")["roles"]}
    if "service" not in roles:
        roles["service"] = ks.call("POST", "/roles", json={"role": {"name": "service"}})["role"]["id"]

    # Cinder's own user validates tokens (keystonemiddleware) with the service + admin roles.
    service = ks.ensure("projects", "project", {"name": "service"}, {"name": "service", "domain_id": "default"})
    cinder = ensure_user(ks, "cinder", S.password(ids, "cinder"), service)
    ks.grant(service, cinder, roles["admin"])
    ks.grant(service, cinder, roles["service"])

    for tenant in S.TENANTS:
        pid = ks.ensure("projects", "project", {"name": tenant}, {"name": tenant, "domain_id": "default"})
        entry = ids.setdefault(tenant, {})
        entry["username"] = f"{tenant}-member"
        uid = ensure_user(ks, entry["username"], S.password(ids, tenant), pid)
        ks.grant(pid, uid, roles["member"])
        ids[tenant]["project_id"] = pid
        S.save_identities(ids)
        ensure_appcred(ids, tenant, uid)
        S.save_identities(ids)

    for stype, name in (("block-storage", "cinder"), ("volumev3", "cinderv3")):
        sid = ks.ensure("services", "service", {"type": stype}, {"type": stype, "name": name, "enabled": True})
        have = {e["interface"] for e in ks.call("GET", "/endpoints", params={"service_id": sid})["endpoints"]}
        for iface in ("public", "internal", "admin"):
            if iface not in have:
                ks.call("POST", "/endpoints", json={"endpoint": {
                    "service_id": sid, "interface": iface, "region_id": S.REGION,
                    "url": "http://127.0.0.1:8776/v3/%(project_id)s"}})
                print(f"created {stype} {iface} endpoint")
    S.save_identities(ids)


def cinder():
    ids = S.load_identities()
    tok, body = S.admin_token(ids)
    h = {"X-Auth-Token": tok, "OpenStack-API-Version": "volume 3.50"}
    c = f"{S.CINDER}/{body['project']['id']}"
    want_pools = {f"@{b}#{b}" for b in S.BACKENDS}
    # The scheduler can place a volume once it holds each backend's capabilities (= its pools).
    deadline, last = time.time() + 60, "no answer"
    while True:
        try:
            svcs = requests.get(f"{c}/os-services", headers=h, timeout=5).json()["services"]
            pools = requests.get(f"{c}/scheduler-stats/get_pools", headers=h, timeout=5).json()["pools"]
            down = [f"{s['binary']} {s['host']}" for s in svcs if s["state"] != "up"]
            missing = [p for p in want_pools if not any(x["name"].endswith(p) for x in pools)]
            if not down and not missing and any(s["binary"] == "cinder-volume" for s in svcs):
                break
            last = f"services down: {down}, pools missing: {missing}"
        except (requests.RequestException, ValueError, KeyError) as e:
            last = repr(e)
        if time.time() > deadline:
            raise SystemExit(f"cinder not ready after 60 s: {last}; see {S.LOG}/cinder.log")
        time.sleep(0.3)

    have = {t["name"] for t in requests.get(f"{c}/types", headers=h, timeout=10).json()["volume_types"]}
    wanted = {b: (b, f"cinder backend {b}") for b in S.BACKENDS}
    wanted |= {t: (b, f"a second type on backend {b} (retype, ModifyVolume)") for t, b in S.EXTRA_TYPES.items()}
    for name, (backend, description) in wanted.items():
        if name not in have:
            r = requests.post(f"{c}/types", headers=h, timeout=10, json={"volume_type": {
                "name": name, "os-volume-type-access:is_public": True,
                "description": description, "extra_specs": {"volume_backend_name": backend}}})
            r.raise_for_status()
            print(f"created volume type {name}")
    # group types (3.11+) are admin-made; tenants create groups of a public one
    hg = {**h, "OpenStack-API-Version": "volume 3.11"}
    groups = requests.get(f"{c}/group_types", headers=hg, timeout=10).json()["group_types"]
    if not any(g["name"] == S.GROUP_TYPE for g in groups):
        r = requests.post(f"{c}/group_types", headers=hg, timeout=10, json={"group_type": {
            "name": S.GROUP_TYPE, "is_public": True,
            "description": "generic volume groups (volume group snapshots, cut member by member)"}})
        r.raise_for_status()
        print(f"created group type {S.GROUP_TYPE}")
    for tenant in S.TENANTS:
        pid = ids[tenant]["project_id"]
        cur = requests.get(f"{c}/os-quota-sets/{pid}", headers=h, timeout=10).json()["quota_set"]
        if any(cur.get(k) != v for k, v in QUOTAS.items()):
            r = requests.put(f"{c}/os-quota-sets/{pid}", headers=h, timeout=10, json={"quota_set": QUOTAS})
            r.raise_for_status()
            print(f"set quotas of {tenant}: {QUOTAS}")


def yaml_map(d, indent=0):
    """A flat or nested dict as YAML; strings as JSON strings (valid YAML, no escaping surprises)."""
    pad, out = " " * indent, []
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(f"{pad}{k}:")
            out.append(yaml_map(v, indent + 2))
        else:
            out.append(f"{pad}{k}: {json.dumps(v)}")
    return "\n".join(out)


def files():
    ids = S.load_identities()
    common = {"auth-url": S.KEYSTONE, "region": S.REGION}

    def pw_keys(user, pw, project):
        return {**common, "username": user, "password": pw, "user-domain-name": "Default",
                "project-name": project, "project-domain-name": "Default"}

    admin = pw_keys("admin", ids["admin"]["password"], "admin")
    tenants = {t: pw_keys(ids[t]["username"], ids[t]["password"], t) for t in S.TENANTS}
    head = "# Written by deploy/local/up; regenerated on every repair. Holds secrets.\n"

    for t in S.TENANTS:
        S.write_private(f"{S.SECRETS}/{t}.yaml", head + yaml_map({
            **common, "application-credential-id": ids[t]["appcred_id"],
            "application-credential-secret": ids[t]["appcred_secret"]}) + "\n")
        S.write_private(f"{S.SECRETS}/{t}-password.yaml", head + yaml_map(tenants[t]) + "\n")
    S.write_private(f"{S.SECRETS}/admin.yaml", head + yaml_map(admin) + "\n")

    a = tenants["tenant-a"]
    S.write_private(S.CLOUD_CONF, head.replace("#", ";") + "[Global]\n" + "".join(
        f"{k} = {a[k]}\n" for k in ("auth-url", "region", "username", "password",
                                    "user-domain-name", "project-name", "project-domain-name")) +
        "\n[BlockStorage]\nbs-version = v3\n")

    def cloud(auth, auth_type="password"):
        return {"auth_type": auth_type, "auth": {"auth_url": S.KEYSTONE, **auth},
                "region_name": S.REGION, "interface": "public", "identity_api_version": 3}
    clouds = {}
    for t in S.TENANTS:
        k = tenants[t]
        clouds[t] = cloud({"username": k["username"], "password": k["password"], "project_name": t,
                           "user_domain_name": "Default", "project_domain_name": "Default"})
        clouds[f"{t}-appcred"] = cloud({"application_credential_id": ids[t]["appcred_id"],
                                        "application_credential_secret": ids[t]["appcred_secret"]},
                                       "v3applicationcredential")
    clouds["admin"] = cloud({"username": "admin", "password": admin["password"], "project_name": "admin",
                             "user_domain_name": "Default", "project_domain_name": "Default"})
    S.write_private(S.CLOUDS_YAML, head + yaml_map({"clouds": clouds}) + "\n")
    os.chmod(S.SECRETS, 0o700)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "passwords":
        ids = S.load_identities()
        for name in ("admin", "cinder") + S.TENANTS:
            S.password(ids, name)
        S.save_identities(ids)
    elif cmd == "password" and len(sys.argv) == 3:
        print(S.load_identities()[sys.argv[2]]["password"])
    elif cmd in ("keystone", "cinder", "files"):
        globals()[cmd]()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
