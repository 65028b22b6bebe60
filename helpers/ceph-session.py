"""The node plugin's Ceph session: librados and librbd held open for the plugin's small Ceph calls.

One `rbd` or `rados` command costs ~50 ms on a quiet machine, nearly all of it process start and monitor
authentication; the same call on an open connection costs 0.5-5 ms. The plugin starts this helper on demand
(src/node/ceph/session.ts), talks to it with one JSON object per line on stdin and stdout, and ends it when it
has been idle a while. The helper exits when its stdin closes, so a plugin killed with -9 leaves no helper.

A request names the Ceph identity it acts as (user, monitors, keyring file, conf file): connections are kept
per identity, the keyring's bytes included, so a request never acts with a connection authenticated by another
key. Keys are read from the keyring file by librados and never printed.
"""

import hashlib
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import rados
import rbd

TIMEOUT_S = "30"  # librados waits 300 s for monitors by default: a call must fail inside a CO's deadline
MAX_CONNECTIONS = 16
OMAP_PAGE = 1000
MAX_VALUE = 65536  # bytes of an omap value passed on: the plugin's records are a few KiB, a longer one is not ours

write_lock = threading.Lock()
connections_lock = threading.Lock()
connections = {}  # identity -> Connection, least recently used first


class Connection:
    def __init__(self, request):
        self.ready = threading.Event()
        self.users = 0
        self.cluster = None
        self.error = None
        self.request = request

    def open(self):
        r = self.request
        try:
            cluster = rados.Rados(
                rados_id=r["user"],
                conffile=r["conf"],
                conf={
                    "mon_host": ",".join(r["monitors"]),
                    "keyring": r["keyring"],
                    "client_mount_timeout": TIMEOUT_S,
                    "rados_mon_op_timeout": TIMEOUT_S,
                    "rados_osd_op_timeout": TIMEOUT_S,
                    "admin_socket": "",
                    "log_to_stderr": "false",
                    "err_to_stderr": "false",
                },
            )
            cluster.connect()
            self.cluster = cluster
        except Exception as e:  # every connect failure is the caller's to hear
            self.error = e
        finally:
            self.ready.set()


class KeyringUnreadable(Exception):
    """The keyring file a request names cannot be read: said as Ceph's tools say it (a refused identity)."""


def identity(r):
    try:
        with open(r["keyring"], "rb") as f:
            keyring = hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        raise KeyringUnreadable(f"failed to load keyring {r['keyring']}: {os.strerror(e.errno or 0)}") from None
    return json.dumps([r["user"], r["monitors"], r["conf"], keyring])


def acquire(r):
    key = identity(r)
    with connections_lock:
        c = connections.pop(key, None)
        if c is not None and c.ready.is_set() and c.error is not None:
            c = None  # a failed connect is not cached: the next request tries again
        fresh = c is None
        if fresh:
            c = Connection(r)
        c.users += 1
        connections[key] = c
        evict()
    if fresh:
        c.open()
    c.ready.wait()
    if c.error is not None:
        release(c)
        raise c.error
    return c


def release(c):
    with connections_lock:
        c.users -= 1
        evict()


def evict():
    """Shut the least recently used idle connections beyond the limit (connections_lock held)."""
    for key in list(connections):
        if len(connections) <= MAX_CONNECTIONS:
            return
        c = connections[key]
        if c.users == 0 and c.ready.is_set():
            del connections[key]
            if c.cluster is not None:
                c.cluster.shutdown()


def read_omap(io, obj, fn):
    with rados.ReadOpCtx() as op:
        it, _ = fn(op)
        io.operate_read_op(op, obj)
        return list(it)


def watchers(io, r):
    # a read-only open registers no watch of its own
    with rbd.Image(io, r["image"], read_only=True) as image:
        return {"watchers": [w["addr"] for w in image.watchers_list()]}


def ends_zero(io, r):
    # a read-only open takes no lock and no watch: the mapper's client is not disturbed
    with rbd.Image(io, r["image"], read_only=True) as image:
        size = image.size()
        length = min(int(r["bytes"]), size)
        if length <= 0:
            return {"blank": False}
        zeros = bytes(length)
        return {"blank": all(image.read(at, length) == zeros for at in (0, size - length))}


def omap_set(io, r):
    with rados.WriteOpCtx() as op:
        io.set_omap(op, (r["key"],), (r["value"].encode(),))
        io.operate_write_op(op, r["object"])
    return {}


def omap_get(io, r):
    try:
        pairs = read_omap(io, r["object"], lambda op: io.get_omap_vals_by_keys(op, (r["key"],)))
    except rados.ObjectNotFound:
        return {"value": None}
    return {"value": pairs[0][1][:MAX_VALUE].decode(errors="replace") if pairs else None}


def omap_remove(io, r):
    try:
        with rados.WriteOpCtx() as op:
            io.remove_omap_keys(op, (r["key"],))
            io.operate_write_op(op, r["object"])
    except rados.ObjectNotFound:
        pass
    return {}


def omap_keys(io, r):
    keys, after = [], ""
    while True:
        try:
            page = read_omap(io, r["object"], lambda op: io.get_omap_keys(op, after, OMAP_PAGE))
        except rados.ObjectNotFound:
            return {"keys": []}
        keys += [k for k, _ in page]
        if len(page) < OMAP_PAGE:
            return {"keys": keys}
        after = page[-1][0]


OPS = {
    "watchers": watchers,
    "ends-zero": ends_zero,
    "omap-set": omap_set,
    "omap-get": omap_get,
    "omap-remove": omap_remove,
    "omap-keys": omap_keys,
}


def errno_of(e):
    n = getattr(e, "errno", None)
    return abs(n) if isinstance(n, int) else None


def answer(r):
    reply = {"id": r.get("id")}
    try:
        op = OPS[r["op"]]
        c = acquire(r)
        try:
            with c.cluster.open_ioctx(r["pool"]) as io:
                reply["result"] = op(io, r)
        finally:
            release(c)
    except Exception as e:
        n = errno_of(e)
        said = f"({n}) {os.strerror(n)}" if n else type(e).__name__
        reply["error"] = {"errno": n, "message": f"{said}: {str(e)[:300]}"}
    line = json.dumps(reply) + "\n"
    with write_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def main():
    # calls run at once (librados releases the GIL): one that waits on an unreachable cluster holds only its own
    # thread, up to the 30 s op timeout
    pool = ThreadPoolExecutor(max_workers=32)
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        pool.submit(answer, request)
    # stdin closed: the plugin is gone or done with us; calls still under way are abandoned with the process
    os._exit(0)


if __name__ == "__main__":
    main()
