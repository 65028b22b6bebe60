// deploy/local's all-in-one Cinder serialises librbd calls per image lineage (lib/cinder_aio.py LineageLocks):
// its rules, run in the stack's own Python with eventlet's green threads, as Cinder runs them.
import { execa } from 'execa';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../../src/package-info.js';

const SCRIPT = `
import sys, json
sys.path.insert(0, ${JSON.stringify(join(PACKAGE_ROOT, 'deploy', 'local', 'lib'))})
import cinder_aio  # monkey-patches: the locks below are green, as in Cinder
import eventlet
locks = cinder_aio.LineageLocks()
log = []
def call(name, key, nested=None):
    def body():
        log.append(name + '+')
        eventlet.sleep(0.05)
        if nested: locks.run(nested, lambda: log.append(name + ' nested'))
        log.append(name + '-')
    return lambda: locks.run(key, body)
scenarios = {
    'one lineage': [call('a1', 'A'), call('a2', 'A')],
    'two lineages': [call('a', 'A'), call('b', 'B')],
    'no volume waits for all': [call('a', 'A'), call('stats', None), call('b', 'B')],
    're-entrant': [call('a', 'A', nested='A'), call('x', None, nested=None)],
}
out = {}
for name, calls in scenarios.items():
    log = []
    pool = eventlet.GreenPool()
    for c in calls:
        pool.spawn(c)
        eventlet.sleep(0.001)
    pool.waitall()
    out[name] = log
print(json.dumps(out))
`;

test('one lineage at a time, lineages in parallel, a call naming no volume alone; re-entrant', async () => {
  const r = await execa('/usr/bin/python3', ['-c', SCRIPT]);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, string[]>;
  expect(out['one lineage']).toEqual(['a1+', 'a1-', 'a2+', 'a2-']);
  expect(out['two lineages']).toEqual(['a+', 'b+', 'a-', 'b-']);
  // the stats call waits for lineage A and holds B off until it is done
  expect(out['no volume waits for all']).toEqual(['a+', 'a-', 'stats+', 'stats-', 'b+', 'b-']);
  expect(out['re-entrant']).toEqual(['a+', 'a nested', 'a-', 'x+', 'x-']);
});
