import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { PACKAGE_ROOT } from '../../../src/package-info.js';
import { LOCAL, localSecret } from '../../../harness/local-stack.js';

/**
 * deploy/local/up repairs what a failed or killed first run leaves behind: a Keystone database whose
 * bootstrap never finished, a database without its admin, an `up` killed in the middle of the Keystone
 * step, a Ceph without its pool. Each case breaks the shared stack for real and checks that one more `up`
 * says what it rebuilds, exits 0, and leaves a stack `status` calls healthy whose credentials work.
 */
const REPAIR_MS = 300_000;

const DEPLOY_LOCAL = join(PACKAGE_ROOT, 'deploy/local');
const KS_STATE = join(LOCAL, 'stack/keystone');
const KS_CONF = join(KS_STATE, 'keystone.conf');
const up = () => execa(join(DEPLOY_LOCAL, 'up'), { all: true, reject: false, timeout: 240_000 });
const down = (part: string) => execa(join(DEPLOY_LOCAL, 'down'), ['--only', part], { timeout: 60_000 });
const status = () => execa(join(DEPLOY_LOCAL, 'status'), { all: true, reject: false });

/** A database the way `keystone-manage db_sync` leaves it before bootstrap: tables, no admin. */
async function keystoneDatabaseWithoutAdmin(): Promise<void> {
  await down('keystone');
  for (const f of ['keystone.db', 'keystone.db-wal', 'keystone.db-shm']) rmSync(join(KS_STATE, f), { force: true });
  await execa('keystone-manage', ['--config-file', KS_CONF, 'db_sync']);
}

/** tenant-a's application credential from the freshly written secrets authenticates. */
async function tenantAAuthenticates(): Promise<void> {
  const sec = localSecret('tenant-a');
  const r = await fetch(`${sec['auth-url']}/auth/tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      auth: {
        identity: {
          methods: ['application_credential'],
          application_credential: {
            id: sec['application-credential-id'],
            secret: sec['application-credential-secret'],
          },
        },
      },
    }),
  });
  expect(r.status).toBe(201);
}

async function expectRepaired(said: RegExp): Promise<void> {
  const r = await up();
  expect(r.all).toMatch(said);
  expect({ exitCode: r.exitCode, tail: r.all?.split('\n').slice(-6).join('\n') }).toMatchObject({ exitCode: 0 });
  const s = await status();
  expect({ exitCode: s.exitCode, all: s.all }).toMatchObject({ exitCode: 0 });
  await tenantAAuthenticates();
}

afterAll(async () => {
  // whatever a failed case left, the next suites need a healthy stack
  if ((await status()).exitCode !== 0) await up();
}, REPAIR_MS);

test(
  'a database whose bootstrap never finished (no completion record) is rebuilt, not restarted',
  async () => {
    await keystoneDatabaseWithoutAdmin();
    rmSync(join(KS_STATE, 'created'), { force: true });
    expect((await status()).all).toMatch(
      /keystone\s+unhealthy\s+half-created \(a database whose bootstrap never finished\)/,
    );
    await expectRepaired(
      /keystone: half-created \(a database whose bootstrap never finished\); creating a new database/,
    );
  },
  REPAIR_MS,
);

test(
  'a database that refuses its admin is rebuilt, even with a completion record',
  async () => {
    await keystoneDatabaseWithoutAdmin();
    expect(existsSync(join(KS_STATE, 'created'))).toBe(true);
    await expectRepaired(/keystone: its database refuses the admin \(401\); creating a new database/);
  },
  REPAIR_MS,
);

test(
  'a missing key repository (the receipts one a fresh machine lacked) is rebuilt',
  async () => {
    expect(readFileSync(KS_CONF, 'utf8')).toMatch(
      /\[fernet_receipts\]\nkey_repository = .*\/stack\/keystone\/receipt-keys/,
    );
    await down('keystone');
    rmSync(join(KS_STATE, 'receipt-keys'), { recursive: true, force: true });
    await expectRepaired(/keystone: half-created \(key repositories missing: receipt-keys\)/);
  },
  REPAIR_MS,
);

test(
  'an `up` killed during the Keystone step is repaired by the next `up`',
  async () => {
    await down('keystone');
    rmSync(KS_STATE, { recursive: true, force: true });
    const log = join(LOCAL, 'log/keystone-setup.log');
    const before = existsSync(log) ? readFileSync(log, 'utf8').length : 0;
    const first = execa(join(DEPLOY_LOCAL, 'up'), { detached: true, reject: false, all: true });
    // kill the whole run (its steps and what they started) once db_sync has begun writing the database
    const deadline = Date.now() + 120_000;
    while (!(existsSync(join(KS_STATE, 'keystone.db')) && readFileSync(log, 'utf8').length > before)) {
      if (Date.now() > deadline) throw new Error('up never reached the Keystone step');
      await sleep(20);
    }
    process.kill(-first.pid!, 'SIGKILL');
    await first;
    expect(existsSync(join(KS_STATE, 'created'))).toBe(false);
    await expectRepaired(/keystone: half-created/);
  },
  REPAIR_MS,
);

test(
  'a Ceph without its pool is rebuilt (with a fresh Cinder database)',
  async () => {
    const admin = join(LOCAL, 'stack/ceph/ceph.conf');
    await execa('ceph', ['-c', admin, 'osd', 'pool', 'rm', 'volumes', 'volumes', '--yes-i-really-really-mean-it']);
    expect((await status()).all).toMatch(/ceph\s+unhealthy\s+the cluster has no pool volumes/);
    await expectRepaired(/ceph: the cluster has no pool volumes; creating a new cluster/);
  },
  REPAIR_MS,
);
