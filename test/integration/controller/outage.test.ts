import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { status } from '@grpc/grpc-js';
import { execa } from 'execa';
import { PACKAGE_ROOT } from '../../../src/package-info.js';
import { controllerEnv, mount } from './fixtures.js';

/**
 * Cinder stops (deploy/local/down --only cinder) in the middle of CreateVolume's wait, while a
 * ControllerPublishVolume is sent, and comes back (deploy/local/up). The shared stack is down for
 * everyone meanwhile, so the outage is kept short and always repaired.
 */
const DEPLOY_LOCAL = process.env.STACKUBE_DEPLOY_LOCAL ?? join(PACKAGE_ROOT, 'deploy/local');

let postSeen: () => void = () => undefined;
const posted = new Promise<void>((resolve) => (postSeen = resolve));
const env = controllerEnv('outage', {
  hooks: { onHttpRequest: (method, url) => method === 'POST' && /\/volumes$/.test(url) && postSeen() },
});

/** A call's outcome, without throwing: the value, or its gRPC code and message. */
const settle = <T>(p: Promise<T>) =>
  p.then(
    (value) => ({ ok: true as const, value }),
    (e: { code: number; details: string }) => ({ ok: false as const, code: e.code, details: e.details }),
  );

const run = (script: string, ...args: string[]) => execa(join(DEPLOY_LOCAL, script), args, { timeout: 120_000 });

test('a Cinder outage mid-call ends in a retried success or a clear UNAVAILABLE, leaving no orphan', async () => {
  expect(existsSync(join(DEPLOY_LOCAL, 'down'))).toBe(true);
  const published = await env.create();
  const name = env.name();

  const creating = settle(env.ctl.CreateVolume({ name, volume_capabilities: [mount()] }, { deadlineMs: 120_000 }));
  await posted;
  const t0 = Date.now();
  let publishing: ReturnType<typeof settle> | undefined;
  try {
    await run('down', '--only', 'cinder');
    // Sent while Cinder is away, and Cinder is brought back at once: the HTTP client retries a refused
    // connection with backoff, so this either gets through once Cinder is back or says UNAVAILABLE.
    publishing = settle(
      env.ctl.ControllerPublishVolume({
        volume_id: published.volume_id,
        node_id: 'node-o',
        volume_capability: mount(),
      }),
    );
  } finally {
    await run('up');
  }
  console.log(`Cinder was down for ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const publish = await publishing;
  // down, or up again but still finding its feet (its token middleware answers 503 until Keystone is reached)
  if (!publish.ok)
    expect(publish.details).toMatch(/Cinder at http:\/\/127\.0\.0\.1:8776 is unreachable|^Cinder: .*\(HTTP 503 on /);
  if (!publish.ok) expect(publish.code).toBe(status.UNAVAILABLE);

  // CreateVolume rode out the outage, or said UNAVAILABLE; either way a retry (as the CO would) succeeds.
  const first = await creating;
  console.log(
    `CreateVolume across the outage: ${first.ok ? 'OK' : first.details}; publish during it: ${publish.ok ? 'OK' : publish.details}`,
  );
  if (!first.ok) expect(first.code).toBe(status.UNAVAILABLE);
  let id = first.ok ? first.value.volume.volume_id : undefined;
  for (let attempt = 0; !id && attempt < 10; attempt++) {
    try {
      id = (await env.ctl.CreateVolume({ name, volume_capabilities: [mount()] })).volume.volume_id;
    } catch (e) {
      expect((e as { code: number }).code).toBe(status.UNAVAILABLE); // Cinder's services still coming back
      await sleep(2000);
    }
  }
  const live = (await env.direct.cinder.volumesNamed(name)).filter((v) => v.status !== 'deleting');
  expect(live.map((v) => [v.id, v.status])).toEqual([[id, 'available']]);

  // A publish that failed left no attachment; one that succeeded left exactly one; the retry adds none.
  expect(await env.direct.cinder.volumeAttachments(published.volume_id)).toHaveLength(publish.ok ? 1 : 0);
  await env.ctl.ControllerPublishVolume({
    volume_id: published.volume_id,
    node_id: 'node-o',
    volume_capability: mount(),
  });
  expect(await env.direct.cinder.volumeAttachments(published.volume_id)).toHaveLength(1);
  await env.ctl.ControllerUnpublishVolume({ volume_id: published.volume_id, node_id: 'node-o' });
  expect(await env.direct.cinder.volumeAttachments(published.volume_id)).toHaveLength(0);
}, 180_000);
