#!/usr/bin/python3
"""End-to-end check of the local stack with only the files `up` wrote, the way the driver works:
tenant-a's application credential creates a 1 GiB volume, attaches it through Cinder's attachments API
(no instance_uuid, no Nova), the "node" maps the RBD image with rbd-fuse as client.cinder, formats and
mounts it, then everything is undone as tenant-a alone; tenant-b must not see the volume."""
import os
import subprocess
import sys
import time
import uuid

import requests

import stack as S

CONNECTOR = {"host": "node-1", "platform": "x86_64", "os_type": "linux", "multipath": False,
             "initiator": "iqn.test:node-1", "ip": "127.0.0.1"}
T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:5.2f}s] {msg}", flush=True)


def check(cond, what):
    if not cond:
        raise SystemExit(f"smoke: FAILED: {what}")
    log(f"ok: {what}")


class Tenant:
    """A Cinder client authenticated with the tenant's application credential from secrets/<tenant>.yaml."""

    def __init__(self, tenant):
        sec = S.read_flat_yaml(f"{S.SECRETS}/{tenant}.yaml")
        r = requests.post(f"{sec['auth-url']}/auth/tokens", timeout=10, json={"auth": S.appcred_auth(
            sec["application-credential-id"], sec["application-credential-secret"])})
        r.raise_for_status()
        catalog = r.json()["token"]["catalog"]
        self.url = next(e["url"] for s in catalog if s["type"] == "block-storage" for e in s["endpoints"]
                        if e["interface"] == "public" and e["region_id"] == sec["region"])
        self.s = requests.Session()
        self.s.headers.update({"X-Auth-Token": r.headers["X-Subject-Token"],
                               "OpenStack-API-Version": "volume 3.54"})

    def call(self, method, path, body=None):
        return self.s.request(method, self.url + path, json=body, timeout=30)

    def ok(self, method, path, body=None):
        r = self.call(method, path, body)
        if r.status_code >= 400:
            raise SystemExit(f"smoke: FAILED: {method} {path} -> {r.status_code} {r.text[:400]}")
        return r.json() if r.text else None

    def wait_volume(self, vid, want, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.call("GET", f"/volumes/{vid}")
            st = "<gone>" if r.status_code == 404 else r.json()["volume"]["status"]
            if st == want:
                return
            if st.startswith("error"):
                raise SystemExit(f"smoke: FAILED: volume {vid} went {st}")
            time.sleep(0.1)
        raise SystemExit(f"smoke: FAILED: volume {vid} not {want} after {timeout} s")


def sh(*cmd):
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def node_roundtrip(pool, image):
    """What the driver's fuse mapper does: rbd-fuse exposes the image as a file, losetup makes it a
    block device; then mkfs, mount, write, unmount, and take it all down again."""
    work = f"{S.BASE}/smoke"
    fuse, mnt = f"{work}/fuse", f"{work}/mnt"
    os.makedirs(fuse, exist_ok=True)
    os.makedirs(mnt, exist_ok=True)
    loop = None
    try:
        sh("rbd-fuse", "-c", S.CEPH_CONF, "--id", "cinder", "--keyring", S.CEPH_KEYRING,
           "-p", pool, "-r", image, fuse)
        loop = sh("losetup", "--find", "--show", f"{fuse}/{image}")
        sh("mkfs.ext4", "-q", loop)
        sh("mount", loop, mnt)
        with open(f"{mnt}/hello", "w") as f:
            f.write("stackube\n")
        sh("umount", mnt)
        check(sh("blkid", "-o", "value", "-s", "TYPE", loop) == "ext4", f"{image} holds ext4 via rbd-fuse + {loop}")
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
        if loop:
            subprocess.run(["losetup", "-d", loop], capture_output=True)
        subprocess.run(["umount", fuse], capture_output=True)
        subprocess.run(["rm", "-rf", work])


def main():
    a, b = Tenant("tenant-a"), Tenant("tenant-b")
    log(f"tenant-a authenticated with its application credential; block-storage at {a.url}")
    vol = a.ok("POST", "/volumes", {"volume": {"size": 1, "name": f"smoke-{uuid.uuid4().hex[:8]}"}})["volume"]
    vid, att = vol["id"], None
    try:
        a.wait_volume(vid, "available")
        v = a.ok("GET", f"/volumes/{vid}")["volume"]
        check(v["volume_type"] == "ceph" and v["size"] == 1, f"volume {vid} available, 1 GiB, type ceph")

        att = a.ok("POST", "/attachments", {"attachment": {
            "volume_uuid": vid, "connector": CONNECTOR, "mode": "rw"}})["attachment"]
        ci = att["connection_info"]
        check(not att.get("instance"), "attachment created without instance_uuid")
        check(ci.get("driver_volume_type") == "rbd", "connection_info driver_volume_type rbd")
        check(ci.get("name") == f"volumes/volume-{vid}", f"connection_info name {ci.get('name')}")
        check(ci.get("hosts") and ci.get("ports"), f"connection_info hosts {ci.get('hosts')} ports {ci.get('ports')}")
        check(ci.get("auth_username") == "cinder", "connection_info auth_username cinder")
        check("key" not in ci, "connection_info carries no Ceph key")
        a.ok("POST", f"/attachments/{att['id']}/action", {"os-complete": None})
        check(a.ok("GET", f"/volumes/{vid}")["volume"]["status"] == "in-use", "os-complete -> volume in-use")

        pool, image = ci["name"].split("/", 1)
        node_roundtrip(pool, image)

        check(b.call("GET", f"/volumes/{vid}").status_code == 404, "tenant-b gets 404 for tenant-a's volume")
        code = b.call("DELETE", f"/attachments/{att['id']}").status_code
        check(code in (403, 404), f"tenant-b cannot delete tenant-a's attachment (HTTP {code})")
        code = b.call("GET", f"/attachments/{att['id']}").status_code
        log(f"note: tenant-b GET of tenant-a's attachment by id -> HTTP {code}"
            + (" (Cinder shows it: its attachment policy has no project to check)" if code == 200 else ""))

        r = a.call("DELETE", f"/attachments/{att['id']}")
        check(r.status_code == 200, f"tenant-a deletes its attachment with no service token (HTTP {r.status_code})")
        att = None
        a.wait_volume(vid, "available")
        log("volume back to available")
    finally:
        if att:   # a check failed while attached: detach first, or the volume cannot be deleted
            a.call("DELETE", f"/attachments/{att['id']}")
            a.wait_volume(vid, "available")
        r = a.call("DELETE", f"/volumes/{vid}")
        if r.status_code not in (202, 404):
            print(f"cleanup: DELETE volume {vid} -> {r.status_code} {r.text[:200]}", file=sys.stderr)
    a.wait_volume(vid, "<gone>")
    images = sh("rbd", "-c", S.CEPH_CONF, "--id", "cinder", "ls", "volumes").split()
    check(f"volume-{vid}" not in images, "volume deleted, its RBD image gone")
    print(f"smoke: OK in {time.time() - T0:.1f}s")


if __name__ == "__main__":
    main()
