#!/usr/bin/env bash
# `npm run stress -- [RUNS]`: the concurrency benchmark (bench/lifecycles.ts at 40 at once:
# controller-only and full lifecycles, driver and raw) RUNS times back to back (10 by default) against
# deploy/local. Every run must finish every lifecycle, leave nothing behind, and find deploy/local healthy
# after it (a Cinder that crashed under the load is not running). Prints one JSON line per run and a summary;
# exits 1 at the first run that falls short. `npm run test:fresh` runs it after `npm test` when
# STACKUBE_FRESH_STRESS=RUNS is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"   # Node 24 (the node@24 devDependency), as npm scripts have it
RUNS=${1:-10}
[ -f dist/bench/lifecycles.js ] || npm run --silent compile
deploy/local/status >/dev/null 2>&1 || deploy/local/up
for i in $(seq 1 "$RUNS"); do
  started=$SECONDS
  line=$(BENCH_LIFECYCLES=40 node dist/bench/lifecycles.js 2>/dev/null | tail -1)
  echo "$line"
  verdict=$(node -e '
    const r = JSON.parse(process.argv[1]);
    const short = r.lifecycles.flatMap((l) => [["driver", l.driver], ["raw", l.raw]]
      .filter(([, b]) => b.ok !== l.concurrent)
      .map(([who, b]) => `${l.kind} ${who} ${b.ok}/${l.concurrent} (${b.failed.join("; ")})`));
    if (r.leftovers.length) short.push(`leftovers: ${r.leftovers.slice(0, 3).join(", ")}`);
    console.log(short.join(" | "));' "$line")
  status=$(deploy/local/status 2>&1) || verdict="$verdict | deploy/local unhealthy after the run: $(echo "$status" | grep -v healthy | head -3 | tr '\n' ' ')"
  if [ -n "$verdict" ]; then
    echo "{\"stress\":\"lifecycles\",\"run\":$i,\"of\":$RUNS,\"ok\":false,\"why\":$(node -p 'JSON.stringify(process.argv[1])' "$verdict")}"
    exit 1
  fi
  echo "stress: run $i of $RUNS ok in $((SECONDS - started)) s" >&2
done
echo "{\"stress\":\"lifecycles\",\"runs\":$RUNS,\"ok\":true}"
