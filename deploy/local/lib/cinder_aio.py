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


def serialize_rbd_driver():
    """One librbd operation at a time in this process. The volume manager runs each request in its own
    green thread, and the RBD driver opens, closes and removes images partly in eventlet's native tpool
    threads and partly in the hub's thread, so concurrent requests interleave librbd image contexts and
    rados connections inside the one process that here hosts every Cinder service. In fresh-root CI runs
    that ended, about once in three, in librbd's `ceph_assert(m_pending_ops == 0)` (an AsyncOpTracker
    destroyed with an operation in flight) while volumes were deleted, taking every service down.
    Serialising the driver's entry points removes the interleaving; each operation takes tens of
    milliseconds here, so the test stack loses little. Re-entrant: driver methods call each other."""
    from cinder.volume.drivers import rbd
    lock = threading.RLock()   # green after monkey_patch: owned by a green thread

    def serialized(method):
        @functools.wraps(method)
        def run(*args, **kwargs):
            with lock:
                return method(*args, **kwargs)
        return run

    names = [n for n, v in vars(rbd.RBDDriver).items() if callable(v) and not n.startswith("_") and n != "RBDProxy"]
    for name in names + ["_update_volume_stats"]:
        setattr(rbd.RBDDriver, name, serialized(getattr(rbd.RBDDriver, name)))


def main():
    objects.register_all()
    serialize_rbd_driver()
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
