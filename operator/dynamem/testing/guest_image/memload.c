/* memload: the guest lab's workload. Holds a demand of memory that the host steers over a serial line.
 *
 * Reads commands, one per line, from the control tty (argv[1], e.g. /dev/ttyS1):
 *   demand <MiB> <rate MiB/s> <touch MiB/s>
 * and moves the memory it holds toward <MiB> at <rate> (allocating or releasing 1 MiB chunks, each written
 * on allocation so the guest really backs it), while it writes one byte in every page of <touch> MiB per
 * second, cycling through everything it holds: a working set as large as the demand, so a guest that cannot
 * hold it all must page it back in. Every second it prints "held <MiB> target <MiB>" on the control tty.
 * Prints "ready" once it listens. Static, no dependencies beyond libc.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1UL << 20)
#define PAGE 4096UL
#define MAX_CHUNKS 65536
#define TICK_NS 50000000L /* 50 ms */

static unsigned char *chunks[MAX_CHUNKS];
static long held;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void say(int fd, const char *line) {
    size_t left = strlen(line);
    while (left > 0) {
        ssize_t n = write(fd, line, left);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return;
        }
        line += n;
        left -= (size_t)n;
    }
}

static int grow(void) {
    if (held >= MAX_CHUNKS) return 0;
    unsigned char *chunk = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (chunk == MAP_FAILED) return 0;
    for (unsigned long off = 0; off < CHUNK; off += PAGE) chunk[off] = (unsigned char)(held | 1);
    chunks[held++] = chunk;
    return 1;
}

static void shrink(void) {
    if (held == 0) return;
    munmap(chunks[--held], CHUNK);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: memload <control tty>\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    struct termios tio;
    if (tcgetattr(fd, &tio) == 0) {
        cfmakeraw(&tio);
        cfsetspeed(&tio, B115200);
        tcsetattr(fd, TCSANOW, &tio);
    }
    char line[256];
    size_t used = 0;
    long target = 0;
    double rate = 64.0, touch = 0.0, budget = 0.0, touch_budget = 0.0;
    unsigned long cursor = 0; /* next page to touch, over all held chunks */
    double last = now_s(), last_report = last;
    say(fd, "ready\n");
    for (;;) {
        char buf[128];
        ssize_t n = read(fd, buf, sizeof buf);
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];
            if (c == '\r') continue;
            if (c != '\n') {
                if (used < sizeof line - 1) line[used++] = c;
                continue;
            }
            line[used] = 0;
            used = 0;
            long mib;
            double r, t;
            if (sscanf(line, "demand %ld %lf %lf", &mib, &r, &t) == 3 && mib >= 0 && r > 0 && t >= 0) {
                target = mib;
                rate = r;
                touch = t;
                say(fd, "ok\n");
            } else {
                say(fd, "error: expected 'demand <MiB> <rate MiB/s> <touch MiB/s>'\n");
            }
        }
        double t_now = now_s(), dt = t_now - last;
        last = t_now;
        if (held != target) {
            budget += rate * dt;
            if (budget > rate) budget = rate; /* a stalled guest (paging) does not catch up in one burst */
            while (budget >= 1.0 && held != target) {
                if (held < target) {
                    if (!grow()) break;
                } else {
                    shrink();
                }
                budget -= 1.0;
                if (now_s() - t_now > 0.25) break; /* keep reporting and touching while it allocates */
            }
        } else {
            budget = 0.0;
        }
        if (held > 0 && touch > 0) {
            touch_budget += touch * dt * (double)(CHUNK / PAGE);
            unsigned long pages = (unsigned long)held * (CHUNK / PAGE);
            while (touch_budget >= 1.0) {
                if (cursor >= pages) cursor = 0;
                chunks[cursor / (CHUNK / PAGE)][(cursor % (CHUNK / PAGE)) * PAGE] += 1;
                cursor++;
                touch_budget -= 1.0;
                if ((cursor & 255) == 0 && now_s() - t_now > 0.5) {
                    touch_budget = 0.0; /* paging: the rate cannot be met; do not pile it up */
                    break;
                }
            }
        }
        if (now_s() - last_report >= 1.0) {
            last_report = now_s();
            char report[64];
            snprintf(report, sizeof report, "held %ld target %ld\n", held, target);
            say(fd, report);
        }
        struct timespec pause = {0, TICK_NS};
        nanosleep(&pause, NULL);
    }
}
