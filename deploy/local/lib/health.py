#!/usr/bin/python3
"""Health of each part of the local stack, checked in parallel (well under 2 s when healthy).

usage: health.py           one line per part, exit 0 only when all are healthy
       health.py --shell   the same facts as shell assignments, for `up` to decide what to repair
       health.py --stamp   which deploy/local this is (what `up` writes into the ready record)"""
import json
import os
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor

try:
    import requests
    import stack as S
except ImportError as e:   # a fresh machine: `up` installs python3-requests with the rest
    print(f"{'stack':<13} unhealthy  not installed ({e}) (repair: deploy/local/up)")
    sys.exit(1)

CEPH_DAEMONS = ("mon.a", "mgr.x", "osd.0")


def pid_alive(name):
    """The process in NAME's pid file runs, is ours (its command line names our state dir), not a zombie."""
    try:
        with open(f"{S.RUN}/{name}.pid") as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f"{S.STATE}/".encode() not in f.read():
                return False
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, ValueError):
        return False


def half_created(part):
    """A part whose state exists but whose creation never finished (killed or failed `up`)."""
    return os.path.exists(f"{S.STATE}/{part}") and not S.created(part)


def check_ceph():
    r = {"exists": S.created("ceph") and os.path.exists(f"{S.STATE}/ceph/data/mon.a"), "healthy": False}
    for d in CEPH_DAEMONS:
        r[d.split(".")[0]] = pid_alive(d)
    dead = [d for d in CEPH_DAEMONS if not r[d.split(".")[0]]]
    if not r["exists"]:
        return r | {"detail": "half-created (its creation never finished)" if half_created("ceph") else "not created"}
    if dead:
        return r | {"detail": f"{', '.join(dead)} not running"}
    import rados
    cluster = rados.Rados(conffile=S.CEPH_ADMIN_CONF, name="client.admin")
    try:
        cluster.connect(timeout=3)
        _, out, _ = cluster.mon_command(json.dumps({"prefix": "osd stat", "format": "json"}), b"", timeout=3)
        if json.loads(out)["num_up_osds"] != 1:
            return r | {"detail": "osd.0 is not up"}
        if not cluster.pool_exists(S.POOL):
            return r | {"exists": False, "detail": f"the cluster has no pool {S.POOL}"}
        _, key, _ = cluster.mon_command(json.dumps(
            {"prefix": "auth get-key", "entity": "client.cinder", "format": "json"}), b"", timeout=3)
        r["cinder_key"] = json.loads(key)["key"] if key else ""
    except Exception as e:  # noqa: BLE001 - any failure is "unhealthy", with its reason
        return r | {"detail": f"cluster not answering: {e}"}
    finally:
        cluster.shutdown()
    return r | {"healthy": True, "detail": f"mon, mgr, osd up; pool {S.POOL} ready"}


def keystone_missing(ids):
    """Why Keystone's state is not a finished creation, or None."""
    state = f"{S.STATE}/keystone"
    if not os.path.exists(f"{state}/keystone.db"):
        return "half-created (no database)" if half_created("keystone") else "not created"
    if not S.created("keystone"):
        return "half-created (a database whose bootstrap never finished)"
    repos = [r for r in S.KS_KEY_REPOS if not os.path.isdir(f"{state}/{r}") or not os.listdir(f"{state}/{r}")]
    if repos:
        return f"half-created (key repositories missing: {', '.join(repos)})"
    if "admin" not in ids:
        return "half-created (the admin's password is not in identities.json)"
    return None


def check_keystone(ids):
    missing = keystone_missing(ids)
    r = {"exists": missing is None, "running": pid_alive("keystone"), "healthy": False}
    if missing:
        return r | {"detail": missing}
    if not r["running"]:
        return r | {"detail": "process not running"}
    try:
        r["token"], r["body"] = S.admin_token(ids, timeout=3)
    except requests.HTTPError as e:
        if e.response.status_code == 401:   # it answers, and knows no such admin: the database is not ours
            return r | {"exists": False, "detail": "its database refuses the admin (401)"}
        return r | {"detail": f"admin token failed: {e}"}
    except Exception as e:  # noqa: BLE001
        return r | {"detail": f"admin token failed: {e}"}
    return r | {"healthy": True, "detail": S.KEYSTONE}


def check_cinder(ks):
    r = {"exists": S.created("cinder") and os.path.exists(f"{S.STATE}/cinder/cinder.db"),
         "running": pid_alive("cinder"), "healthy": False}
    if not r["exists"]:
        return r | {"detail": "half-created (its creation never finished)" if half_created("cinder") else "not created"}
    if not r["running"]:
        return r | {"detail": "process not running"}
    try:
        requests.get("http://127.0.0.1:8776/", timeout=3)
        r["api"] = True
    except requests.RequestException:
        return r | {"api": False, "detail": "API not answering"}
    if not ks.get("healthy"):
        return r | {"detail": "API answers; services unknown while Keystone is unhealthy"}
    try:
        svcs = requests.get(f"{S.CINDER}/{ks['body']['project']['id']}/os-services", timeout=3,
                            headers={"X-Auth-Token": ks["token"]}).json()["services"]
    except Exception as e:  # noqa: BLE001
        return r | {"detail": f"os-services failed: {e}"}
    state = {s["binary"] + s["host"].partition("@")[1] + s["host"].partition("@")[2]: s["state"] for s in svcs}
    want = ["cinder-scheduler"] + [f"cinder-volume@{b}" for b in S.BACKENDS]
    bad = [w for w in want if state.get(w) != "up"]
    if bad:
        return r | {"detail": f"services not up: {', '.join(bad)}"}
    return r | {"healthy": True, "detail": f"API answers; {', '.join(want)} up"}


def check_appcreds(ks):
    """None when each secrets/<tenant>.yaml authenticates (as the driver will use it), else why not."""
    if not ks.get("healthy"):
        return None   # cannot tell without Keystone; its own line says so
    for tenant in S.TENANTS:
        try:
            sec = S.read_flat_yaml(f"{S.SECRETS}/{tenant}.yaml")
            S.token(S.appcred_auth(sec["application-credential-id"],
                                   sec["application-credential-secret"]), timeout=3)
        except Exception as e:  # noqa: BLE001
            return f"secrets/{tenant}.yaml does not authenticate: {e}"
    return None


def check_files(ceph, appcred_problem):
    r = {"healthy": False}
    if not os.path.exists(S.READY):
        return r | {"detail": "the last deploy/local/up did not finish provisioning"}
    with open(S.READY) as f:
        if f.read().split()[:1] != [S.stamp()]:
            return r | {"stale": True, "detail": "provisioned by another version of deploy/local"}
    missing = [p for p in S.DRIVER_FILES if not os.path.exists(p)]
    if missing:
        return r | {"detail": f"missing {', '.join(missing)}"}
    if ceph.get("healthy"):
        with open(S.CEPH_KEYRING) as f:
            if ceph.get("cinder_key", "?") not in f.read():
                return r | {"detail": f"{S.CEPH_KEYRING} does not hold client.cinder's current key"}
    if appcred_problem:
        return r | {"detail": appcred_problem}
    return r | {"healthy": True, "detail": S.BASE}


def main():
    if sys.argv[1:] == ["--stamp"]:
        print(S.stamp())
        return 0
    ids = S.load_identities()
    with ThreadPoolExecutor(3) as pool:
        ceph_f = pool.submit(check_ceph)
        ks = check_keystone(ids)
        cinder_f = pool.submit(check_cinder, ks)
        appcred_f = pool.submit(check_appcreds, ks)
        ceph, cinder = ceph_f.result(), cinder_f.result()
        files = check_files(ceph, appcred_f.result())
    parts = {"ceph": ceph, "keystone": ks, "cinder": cinder, "files": files}

    if sys.argv[1:] == ["--shell"]:
        for part, r in parts.items():
            for k, v in r.items():
                if isinstance(v, bool):
                    print(f"{part}_{k}={int(v)}")
            print(f"{part}_detail={shlex.quote(r['detail'])}")
        return 0
    logs = {"ceph": f"{S.LOG}/ceph/", "keystone": f"{S.LOG}/keystone.log",
            "cinder": f"{S.LOG}/cinder.log", "files": f"{S.LOG}/up.log"}
    for part, r in parts.items():
        name = "driver files" if part == "files" else part
        if r["healthy"]:
            print(f"{name:<13} healthy    {r['detail']}")
        else:
            print(f"{name:<13} unhealthy  {r['detail']} (repair: deploy/local/up; log: {logs[part]})")
    return 0 if all(r["healthy"] for r in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
