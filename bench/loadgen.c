/*
 * Load generator for the weather server's benchmark (bench/throughput.py).
 *
 * Like a station, each connection connects to 127.0.0.1:PORT, writes one
 * 189-byte reference packet (30 records of u16 lux, u16 humidity code, u16
 * temperature code, after the 9-byte header) and closes normally; it never
 * reads.  Many connections are in flight at once (non-blocking sockets,
 * epoll), from several loopback source addresses so that the kernel's
 * ephemeral ports (and TIME_WAIT) are no limit.
 *
 * Packet number `seq` (from --seq-start) comes from device
 * first_device + seq % devices; its last record carries the sequence number:
 * lux = seq & 0xffff, temperature code = (seq % 16383) << 2 (a code with its two
 * low bits cleared, as the SI7021 sends; never 0xfffc = 16383 << 2, its failure
 * code, which the server does not store).  The other records are constant.
 *
 * Modes: as fast as possible (--rate 0) or at a fixed rate, for --seconds
 * and/or --count packets.  At the end one JSON line on stdout: packets sent
 * (written in full and closed), connect and write errors, elapsed time, the
 * sender's own CPU time.  --times FILE writes "seq device t_ns" per packet sent,
 * t_ns the wall-clock time (CLOCK_REALTIME) at which its last byte was written.
 *
 * Build: cc -O2 -o loadgen bench/loadgen.c (Linux only: epoll).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define RECORDS 30
#define PACKET_SIZE (9 + RECORDS * 6)

enum { FREE = 0, CONNECTING, WRITING, DRAINING };

struct conn {
    int fd;
    int state;
    int written;
    uint64_t seq;
    unsigned char packet[PACKET_SIZE];
};

static volatile sig_atomic_t stop_now;

static void on_signal(int sig) {
    (void)sig;
    stop_now = stop_now + 1;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long long wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void put16(unsigned char *p, unsigned v) {
    p[0] = v & 0xff;
    p[1] = (v >> 8) & 0xff;
}

static void build_packet(unsigned char *p, uint64_t seq, int device) {
    put16(p, RECORDS * 6); /* bytesReady */
    put16(p + 2, 3600);    /* wakeEvery */
    put16(p + 4, 120);     /* measurementEvery */
    p[6] = 6;              /* bytesPerMeasurement */
    p[7] = (unsigned char)device;
    p[8] = 3; /* sensorCount */
    for (int i = 0; i < RECORDS; i++) {
        unsigned char *r = p + 9 + 6 * i;
        if (i == RECORDS - 1) {
            put16(r, (unsigned)(seq & 0xffff));
            put16(r + 2, 30000);
            put16(r + 4, (unsigned)((seq % 16383) << 2));
        } else {
            put16(r, 100 + i);
            put16(r + 2, 30000 + 4 * i);
            put16(r + 4, 25000 + 4 * i);
        }
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port P [--host 127.0.0.1] [--sources K] [--source-net 127.0.1]\n"
            "  [--concurrency C] [--seconds S] [--count N] [--rate R] [--devices D]\n"
            "  [--first-device 1] [--seq-start 0] [--times FILE] [--drain-timeout 30]\n"
            "  [--open-loop] [--progress]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int port = 0, sources = 64, concurrency = 64, devices = 250, first_device = 1;
    int progress = 0, open_loop = 0;
    double seconds = 0, rate = 0, drain_timeout = 30;
    long long count = 0;
    uint64_t seq_start = 0;
    const char *host = "127.0.0.1", *source_net = "127.0.1", *times_path = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--progress")) {
            progress = 1;
            continue;
        }
        if (!strcmp(a, "--open-loop")) {
            open_loop = 1;
            continue;
        }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--sources")) sources = atoi(v);
        else if (!strcmp(a, "--source-net")) source_net = v;
        else if (!strcmp(a, "--concurrency")) concurrency = atoi(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--count")) count = atoll(v);
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--devices")) devices = atoi(v);
        else if (!strcmp(a, "--first-device")) first_device = atoi(v);
        else if (!strcmp(a, "--seq-start")) seq_start = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--times")) times_path = v;
        else if (!strcmp(a, "--drain-timeout")) drain_timeout = atof(v);
        else usage();
    }
    if (port <= 0 || port > 65535 || sources < 1 || sources > 254 || concurrency < 1 ||
        devices < 1 || first_device < 0 || first_device + devices - 1 > 255 ||
        (seconds <= 0 && count <= 0) || rate < 0)
        usage();
    if (strncmp(host, "127.", 4) != 0 || strncmp(source_net, "127.", 4) != 0) {
        fprintf(stderr, "loadgen: loopback (127.0.0.0/8) addresses only\n");
        return 2;
    }

    /* Die with the benchmark script; stop early on SIGINT/SIGTERM. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct sockaddr_in target;
    memset(&target, 0, sizeof target);
    target.sin_family = AF_INET;
    target.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &target.sin_addr) != 1) usage();
    struct sockaddr_in *from = calloc(sources, sizeof *from);
    for (int i = 0; i < sources; i++) {
        char address[64];
        snprintf(address, sizeof address, "%s.%d", source_net, i + 1);
        from[i].sin_family = AF_INET;
        if (inet_pton(AF_INET, address, &from[i].sin_addr) != 1) {
            fprintf(stderr, "loadgen: bad source address %s\n", address);
            return 2;
        }
    }

    FILE *times = NULL;
    if (times_path) {
        times = fopen(times_path, "w");
        if (!times) {
            perror(times_path);
            return 1;
        }
        setvbuf(times, NULL, _IOFBF, 1 << 20);
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn *conns = calloc(concurrency, sizeof *conns);
    int *free_slots = malloc(concurrency * sizeof *free_slots);
    int nfree = concurrency;
    for (int i = 0; i < concurrency; i++) free_slots[i] = concurrency - 1 - i;
    struct epoll_event *events = malloc(concurrency * sizeof *events);

    long long started = 0, sent = 0, connect_errors = 0, write_errors = 0;
    long long late = 0; /* the most packets ever behind the schedule (--rate) */
    long long abandoned = 0, acks = 0, resets = 0;
    int inflight = 0, source = 0;
    double t0 = mono(), last_progress = t0, drain_deadline = 0;
    long long start_ns = wall_ns();
    int stopping = 0;

    for (;;) {
        double now = mono();
        if (!stopping && ((seconds > 0 && now - t0 >= seconds) ||
                          (count > 0 && started >= count) || stop_now)) {
            stopping = 1;
            drain_deadline = now + drain_timeout;
        }
        if (stopping && (inflight == 0 || now >= drain_deadline || stop_now > 1)) break;

        /* Start what is due. */
        if (!stopping) {
            long long due = rate > 0 ? (long long)((now - t0) * rate) + 1 : started + nfree;
            if (count > 0 && due > count) due = count;
            while (started < due && nfree > 0) {
                int slot = free_slots[--nfree];
                struct conn *c = &conns[slot];
                uint64_t seq = seq_start + started++;
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0) {
                    perror("socket");
                    return 1;
                }
                int one = 1;
                setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
                if (bind(fd, (struct sockaddr *)&from[source], sizeof from[source]) < 0) {
                    perror("bind");
                    return 1;
                }
                source = (source + 1) % sources;
                c->fd = fd;
                c->seq = seq;
                c->written = 0;
                build_packet(c->packet, seq, first_device + (int)(seq % devices));
                inflight++;
                int r = connect(fd, (struct sockaddr *)&target, sizeof target);
                if (r < 0 && errno != EINPROGRESS) {
                    connect_errors++;
                    close(fd);
                    inflight--;
                    free_slots[nfree++] = slot;
                    continue;
                }
                c->state = r == 0 ? WRITING : CONNECTING;
                struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)slot};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            }
            if (rate > 0 && due - started > late) late = due - started;
        }

        int timeout = 100;
        if (!stopping && rate > 0) {
            double next = t0 + (double)started / rate;
            double wait = next - mono();
            timeout = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
            if (nfree == 0) timeout = 1;
        } else if (!stopping && nfree > 0) {
            timeout = 0;
        }
        int n = epoll_wait(ep, events, concurrency, timeout);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int slot = (int)events[i].data.u32;
            struct conn *c = &conns[slot];
            int done = 0;
            if (c->state == CONNECTING) {
                int error = 0;
                socklen_t len = sizeof error;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
                if (error) {
                    connect_errors++;
                    done = 1;
                } else {
                    c->state = WRITING;
                }
            }
            if (!done && c->state == WRITING) {
                ssize_t w = send(c->fd, c->packet + c->written, PACKET_SIZE - c->written,
                                 MSG_NOSIGNAL);
                if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
                if (w < 0) {
                    write_errors++;
                    done = 1;
                } else {
                    c->written += (int)w;
                    if (c->written == PACKET_SIZE) {
                        long long t = wall_ns();
                        sent++;
                        if (times)
                            fprintf(times, "%llu %d %lld\n", (unsigned long long)c->seq,
                                    c->packet[7], t);
                        if (open_loop) {
                            done = 1;
                        } else {
                            /* FIN now; the slot is free once the server closed. */
                            shutdown(c->fd, SHUT_WR);
                            c->state = DRAINING;
                            struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                                     .data.u32 = (uint32_t)slot};
                            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                            continue;
                        }
                    }
                }
            }
            if (!done && c->state == DRAINING) {
                char buffer[256];
                ssize_t r = recv(c->fd, buffer, sizeof buffer, 0);
                if (r > 0) {
                    acks += r;
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
                if (r < 0) resets++;
                done = 1;
            }
            if (done) {
                close(c->fd); /* a normal close: FIN, as a station does */
                c->state = FREE;
                inflight--;
                free_slots[nfree++] = slot;
            }
        }
        if (progress && mono() - last_progress >= 1.0) {
            last_progress = mono();
            fprintf(stderr, "loadgen: %.0f s, %lld sent, %d in flight\n",
                    last_progress - t0, sent, inflight);
        }
    }
    /* Connections still in flight past the drain timeout are given up. */
    for (int i = 0; i < concurrency; i++) {
        if (conns[i].state != FREE) {
            close(conns[i].fd);
            abandoned++;
        }
    }
    double elapsed = mono() - t0;
    long long end_ns = wall_ns();
    if (times) fclose(times);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"sent\": %lld, \"started\": %lld, \"connect_errors\": %lld, "
           "\"write_errors\": %lld, \"abandoned\": %lld, \"max_behind\": %lld, "
           "\"ack_bytes\": %lld, \"resets\": %lld, "
           "\"elapsed\": %.6f, \"start_ns\": %lld, \"end_ns\": %lld, "
           "\"cpu_user\": %.6f, \"cpu_sys\": %.6f}\n",
           sent, started, connect_errors, write_errors, abandoned, late, acks, resets, elapsed, start_ns,
           end_ns, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    return 0;
}
