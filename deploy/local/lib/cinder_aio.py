"""Cinder's api, scheduler and volume services (one per enabled backend) in ONE process.

Because they share a process, oslo.messaging's in-memory fake:// transport replaces RabbitMQ, and a single
writer keeps SQLite (WAL) free of "database is locked" — so the stack needs no broker and no MariaDB.
usage: /usr/bin/python3 cinder_aio.py --config-file cinder.conf [--log-file cinder.log]"""
import eventlet
eventlet.monkey_patch()

# Same fix-up as cinder's own cmd/ entry points: threads made before monkey patching stay known.
import __original_module_threading as orig_threading  # noqa: E402
import threading  # noqa: E402
orig_threading.current_thread.__globals__['_active'] = threading._active

import functools  # noqa: E402
import logging as python_logging  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402

from eventlet import greenthread  # noqa: E402
import os_brick  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_log import log as logging  # noqa: E402
from oslo_privsep import priv_context  # noqa: E402
from oslo_reports import guru_meditation_report as gmr  # noqa: E402
from oslo_reports import opts as gmr_opts  # noqa: E402
from oslo_service import service as os_service  # noqa: E402

from cinder.common import config  # noqa: E402
from cinder.common import constants  # noqa: E402
from cinder import i18n  # noqa: E402
i18n.enable_lazy()
from cinder import context, coordination, objects, rpc, service, utils, version  # noqa: E402

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


class InProcessService(service.Service):
    """cinder.service.Service keeps the service id in a CLASS attribute (Cinder runs one service per
    process), so with several in one process every heartbeat would update whichever service was created
    last and the others would turn "down" after service_down_time. Heartbeat by our own id instead, and
    keep the class attribute (which also tags cleanup records) on the volume service."""
    volume_service_id = None

    def report_state(self):
        if InProcessService.volume_service_id:
            service.Service.service_id = InProcessService.volume_service_id
        if not self.manager.is_working():
            return super().report_state()   # logs why and sends no heartbeat
        try:
            ref = objects.Service.get_by_id(context.get_admin_context(), self.origin_service_id)
            ref.report_count += 1
            if self.availability_zone != ref.availability_zone:
                ref.availability_zone = self.availability_zone
            ref.save()
        except Exception:  # noqa: BLE001 - a missed heartbeat must not kill the timer
            LOG.exception("heartbeat of %s %s failed", self.binary, self.host)


class LineageLocks:
    """Green-thread locks by RBD image lineage: a volume, its snapshots and every volume cloned from them share
    the lineage's root volume id; a call with no volume or snapshot holds all of them. Re-entrant per green
    thread (driver methods call each other)."""

    def __init__(self):
        self.keys = {}                       # root volume id -> [lock, holders]
        self.everything = threading.Condition()
        self.shared = 0                      # lineage calls running
        self.exclusive = None                # the green thread holding all lineages
        self.waiting = 0                     # calls waiting to hold all lineages
        self.held = {}                       # green thread -> set of keys it holds (re-entrancy)

    def _key_lock(self, key):
        entry = self.keys.setdefault(key, [threading.RLock(), 0])
        entry[1] += 1
        return entry

    def _release_key(self, key, entry):
        entry[0].release()
        entry[1] -= 1
        if not entry[1]:
            del self.keys[key]

    def run(self, key, fn):
        me = greenthread.getcurrent()
        mine = self.held.setdefault(me, set())
        if self.exclusive is me or key in mine or (key is None and mine):
            return fn()
        with self.everything:
            if key is None:
                self.waiting += 1   # lineage calls that come later wait behind it: no starving
                while self.shared or self.exclusive is not None:
                    self.everything.wait()
                self.waiting -= 1
                self.exclusive = me
            else:
                while self.exclusive is not None or self.waiting:
                    self.everything.wait()
                self.shared += 1
        entry = self._key_lock(key) if key is not None else None
        try:
            if entry:
                entry[0].acquire()
            mine.add(key)
            try:
                return fn()
            finally:
                mine.discard(key)
                if entry:
                    self._release_key(key, entry)
        finally:
            if not mine:
                self.held.pop(me, None)
            with self.everything:
                if key is None:
                    self.exclusive = None
                else:
                    self.shared -= 1
                self.everything.notify_all()


def lineage_root(args):
    """The root volume id of the RBD lineage a driver call works on (volumes cloned from a volume or from one of
    its snapshots share it), or None when the call names no volume or snapshot."""
    ctx = context.get_admin_context(read_deleted="yes")
    volume_id = None
    for a in args:
        if isinstance(a, objects.Volume):
            volume_id = a.id
            break
        if isinstance(a, objects.Snapshot):
            volume_id = a.volume_id
            break
    if volume_id is None:
        return None
    for _ in range(32):   # up the clone chain: a clone of a clone of ... of the root
        try:
            v = objects.Volume.get_by_id(ctx, volume_id)
        except Exception:  # noqa: BLE001 - a volume not in the database yet (being created) is its own root
            return volume_id
        parent = v.source_volid
        if not parent and v.snapshot_id:
            try:
                parent = objects.Snapshot.get_by_id(ctx, v.snapshot_id).volume_id
            except Exception:  # noqa: BLE001
                parent = None
        if not parent or parent == volume_id:
            return volume_id
        volume_id = parent
    return volume_id


def serialize_rbd_lineages():
    """One librbd operation at a time per image lineage in this process, every lineage in parallel.
    With every RBD call serialised instead, 40 concurrent volume lifecycles took 116 s instead of 30 s. Without
    any, librbd aborted this process (`ceph_assert(m_pending_ops == 0)` in an AsyncOpTracker's destructor) about
    once in three fresh-root CI runs, while volumes, their snapshots and their clones were deleted at once. An
    image context is destroyed with an operation pending when its watcher is still handling a notification as it
    closes, and the only other clients of an image Cinder touches, here, are Cinder's own contexts of the same
    lineage (a snapshot removed, a clone detached from its parent notify the parent's watchers). Unrelated images
    never notify each other, so only a lineage's calls wait for each other; calls that name no volume (stats,
    setup) wait for every lineage."""
    from cinder.volume.drivers import rbd
    locks = LineageLocks()

    def serialized(method):
        @functools.wraps(method)
        def run(*args, **kwargs):
            return locks.run(lineage_root(list(args[1:]) + list(kwargs.values())), lambda: method(*args, **kwargs))
        return run

    names = [n for n, v in vars(rbd.RBDDriver).items() if callable(v) and not n.startswith("_") and n != "RBDProxy"]
    for name in names + ["_update_volume_stats"]:
        setattr(rbd.RBDDriver, name, serialized(getattr(rbd.RBDDriver, name)))


def main():
    objects.register_all()
    serialize_rbd_lineages()
    gmr_opts.set_defaults(CONF)
    CONF(sys.argv[1:], project='cinder', version=version.version_string())
    config.set_middleware_defaults()
    logging.setup(CONF, "cinder")
    python_logging.captureWarnings(True)
    # `kill -USR2 <pid>` writes every green thread's stack to stderr (cinder.stdout.log)
    gmr.TextGuruMeditation.setup_autorun(version, conf=CONF)
    priv_context.init(root_helper=shlex.split(utils.get_root_helper()))
    utils.monkey_patch()
    os_brick.setup(CONF)
    coordination.COORDINATOR.start()
    rpc.init(CONF)

    launcher = os_service.ServiceLauncher(CONF)
    launcher.launch_service(InProcessService.create(binary='cinder-scheduler'))
    for backend in filter(None, CONF.enabled_backends):
        svc = InProcessService.create(host=f"{CONF.host}@{backend}", service_name=backend,
                                      binary=constants.VOLUME_BINARY, coordination=True)
        InProcessService.volume_service_id = InProcessService.volume_service_id or svc.origin_service_id
        launcher.launch_service(svc)
    launcher.launch_service(service.WSGIService('osapi_volume'), workers=1)
    launcher.wait()


if __name__ == '__main__':
    main()
