// `npm run gen`: proto/csi.proto → proto/csi.json, the protobufjs JSON descriptor the driver loads with
// @grpc/proto-loader's fromJSON. Parsing the .proto at every start costs time and memory for nothing
// it serves: descriptor.proto (only there for the spec's field options, which nothing reads at run
// time) and the options themselves are left out.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const proto = new protobuf.Root();
// google/protobuf/{timestamp,wrappers}.proto are protobufjs's built-in common types; descriptor.proto is its file
proto.resolvePath = (_origin, target) =>
  target === 'google/protobuf/descriptor.proto'
    ? join(root, 'node_modules', 'protobufjs', target)
    : target.startsWith('google/protobuf/')
      ? target
      : join(root, 'proto', target);
proto.loadSync('csi.proto', { keepCase: true });
proto.resolveAll();

const json = proto.toJSON();
const google = json.nested.google.nested.protobuf.nested;
// what csi.proto uses of google.protobuf: Timestamp and the wrappers
for (const name of Object.keys(google)) if (name !== 'Timestamp' && !name.endsWith('Value')) delete google[name];
const v1 = json.nested.csi.nested.v1.nested;
const dropOptions = (node) => {
  if (!node || typeof node !== 'object') return;
  delete node.options;
  for (const v of Object.values(node)) dropOptions(v);
};
dropOptions(json.nested.csi);
// the spec's custom options are extensions of google.protobuf.*Options: gone with descriptor.proto
for (const [name, node] of Object.entries(v1)) if (node.extend) delete v1[name];
writeFileSync(join(root, 'proto', 'csi.json'), `${JSON.stringify(json)}\n`);
