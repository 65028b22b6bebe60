/*
 * randio: the guest's I/O probe (busybox has no fio). One run of one pattern on one file:
 *   randio seqwrite  FILE MIB        write MIB MiB in 1 MiB blocks, then fsync
 *   randio seqread   FILE MIB        read MIB MiB in 1 MiB blocks
 *   randio randread  FILE MIB OPS    OPS reads of 4 KiB at random 4 KiB-aligned offsets
 *   randio randwrite FILE MIB OPS    OPS writes of 4 KiB at random offsets, then fsync
 * O_DIRECT where the filesystem takes it (else buffered, reported as direct=0; the guest drops
 * its page cache before each read). Prints one line: mode=… direct=… bytes=… ops=… ns=…
 * Time is CLOCK_MONOTONIC around the I/O only, fsync included for writes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static unsigned long long rng = 88172645463325252ULL;
static unsigned long long next_rand(void) { /* xorshift64 */
  rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng;
}

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: randio seqwrite|seqread|randread|randwrite FILE MIB [OPS]\n"); return 2; }
  const char *mode = argv[1], *path = argv[2];
  long long mib = atoll(argv[3]), ops = argc > 4 ? atoll(argv[4]) : 0;
  int writing = !strcmp(mode, "seqwrite") || !strcmp(mode, "randwrite");
  int random_io = !strcmp(mode, "randread") || !strcmp(mode, "randwrite");
  size_t bs = random_io ? 4096 : 1 << 20;
  long long total = mib << 20, blocks = random_io ? total / 4096 : mib;
  if (!random_io) ops = mib;
  int flags = writing ? O_RDWR | O_CREAT : O_RDONLY;
  int direct = 1, fd = open(path, flags | O_DIRECT, 0644);
  if (fd < 0 && errno == EINVAL) { direct = 0; fd = open(path, flags, 0644); }
  if (fd < 0) { fprintf(stderr, "open %s: %s\n", path, strerror(errno)); return 1; }
  void *buf;
  if (posix_memalign(&buf, 4096, bs)) { fprintf(stderr, "no memory\n"); return 1; }
  memset(buf, 0xa5, bs);
  long long t0 = now_ns(), done = 0;
  for (long long i = 0; i < ops; i++) {
    off_t off = random_io ? (off_t)(next_rand() % blocks) * 4096 : (off_t)i * bs;
    ssize_t n = writing ? pwrite(fd, buf, bs, off) : pread(fd, buf, bs, off);
    if (n < 0 && errno == EINVAL && direct && i == 0) { /* O_DIRECT accepted at open, refused at I/O */
      close(fd); direct = 0; fd = open(path, flags, 0644);
      if (fd < 0) { fprintf(stderr, "reopen %s: %s\n", path, strerror(errno)); return 1; }
      t0 = now_ns(); i--; continue;
    }
    if (n != (ssize_t)bs) { fprintf(stderr, "%s at %lld: %s\n", writing ? "write" : "read", (long long)off, n < 0 ? strerror(errno) : "short"); return 1; }
    done += n;
  }
  if (writing && fsync(fd)) { fprintf(stderr, "fsync: %s\n", strerror(errno)); return 1; }
  long long ns = now_ns() - t0;
  close(fd);
  printf("mode=%s direct=%d bytes=%lld ops=%lld ns=%lld\n", mode, direct, done, ops, ns);
  return 0;
}
