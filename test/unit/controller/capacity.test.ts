import { status } from '@grpc/grpc-js';
import { GiB, rangeHolds, sizeInGiB } from '../../../src/csi/controller/sizes.js';
import { type CsiError } from '../../../src/server/errors.js';

const codeOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as CsiError).code;
  }
  return status.OK;
};

describe('sizeInGiB', () => {
  test('rounds required_bytes up to whole GiB, at least the minimum', () => {
    expect(sizeInGiB(null, 1)).toBe(1);
    expect(sizeInGiB({ required_bytes: 1, limit_bytes: 0 }, 1)).toBe(1);
    expect(sizeInGiB({ required_bytes: GiB + 1, limit_bytes: 0 }, 1)).toBe(2);
    expect(sizeInGiB({ required_bytes: 5 * GiB, limit_bytes: 5 * GiB }, 1)).toBe(5);
    expect(sizeInGiB({ required_bytes: 0, limit_bytes: 0 }, 3)).toBe(3);
  });

  test('a limit below the smallest possible size is OUT_OF_RANGE', () => {
    expect(codeOf(() => sizeInGiB({ required_bytes: 0, limit_bytes: GiB - 1 }, 1))).toBe(status.OUT_OF_RANGE);
    expect(codeOf(() => sizeInGiB({ required_bytes: GiB + 1, limit_bytes: GiB + 2 }, 1))).toBe(status.OUT_OF_RANGE);
    expect(codeOf(() => sizeInGiB({ required_bytes: 0, limit_bytes: 2 * GiB }, 3))).toBe(status.OUT_OF_RANGE);
    expect(codeOf(() => sizeInGiB({ required_bytes: 3 * GiB, limit_bytes: 2 * GiB }, 1))).toBe(status.OUT_OF_RANGE);
  });

  test('negative sizes are INVALID_ARGUMENT', () => {
    expect(codeOf(() => sizeInGiB({ required_bytes: -1, limit_bytes: 0 }, 1))).toBe(status.INVALID_ARGUMENT);
  });
});

test('rangeHolds checks an existing size against the range', () => {
  expect(rangeHolds({ required_bytes: GiB, limit_bytes: 0 }, 1)).toBe(true);
  expect(rangeHolds({ required_bytes: 2 * GiB, limit_bytes: 0 }, 1)).toBe(false);
  expect(rangeHolds({ required_bytes: 0, limit_bytes: GiB }, 2)).toBe(false);
  expect(rangeHolds(null, 7)).toBe(true);
});
