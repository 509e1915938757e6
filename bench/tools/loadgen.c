/*
 * loadgen: the benchmark's own client for what wrk cannot do.
 *
 *   loadgen http --connect HOST:PORT [--host H] [--path P] [--rate R] [--conns C]
 *                [--duration S] [--warmup S]
 *     HTTP/1.1 keep-alive GETs. --rate 0 (default) is a closed loop: each connection sends
 *     its next request when the previous response is in. --rate R > 0 is an open loop in
 *     wrk2's way: connection j of C sends request k at start + (k*C + j)/R, and latency is
 *     measured from that scheduled time, not from the actual send, so a stall is charged to
 *     every request it delays (latency correction, no coordinated omission). When the target
 *     falls more than 1 s behind, sending stops at the end and the rest counts as "missed".
 *
 *   loadgen tls --connect HOST:PORT --cert F --key F --ca F [--sni N] [--alpn A]
 *               [--path P --host H] [--conns C] [--duration S]
 *     New connections in a closed loop: TCP connect, a full TLS 1.3 handshake (X25519,
 *     client certificate, no resumption, chain verified against --ca, no host name check),
 *     optionally one GET, then close. Counts handshakes.
 *
 * Both print one JSON object on stdout. Latencies are microseconds. Every loop is bounded
 * by --duration (at most 600 s) and each socket operation by a 5 s timeout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_CONNS 1024
#define IO_TIMEOUT_S 5
/* Open loop: stop sending this long after the end, when the target fell behind. */
#define LATE_LIMIT_NS 1000000000LL

static const char *opt_connect, *opt_host, *opt_path = "/", *opt_cert, *opt_key, *opt_ca,
                                           *opt_sni, *opt_alpn;
static double opt_rate = 0, opt_duration = 10, opt_warmup = 0;
static int opt_conns = 1;
static struct addrinfo *target;
static SSL_CTX *tls_ctx;
static char request[1024];
static size_t request_len;
static int64_t t_start, t_measure, t_end; /* ns, CLOCK_MONOTONIC */

struct worker {
    pthread_t thread;
    int index;
    int64_t *lat; /* microseconds, measured window only */
    size_t n_lat, cap_lat;
    uint64_t ok, non2xx, errors, connects, sent_total, done_total, missed;
};
static struct worker workers[MAX_CONNS];

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t ns) {
    struct timespec ts = {.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static void record(struct worker *w, int64_t lat_ns) {
    if (w->n_lat == w->cap_lat) {
        size_t cap = w->cap_lat ? w->cap_lat * 2 : 65536;
        int64_t *p = realloc(w->lat, cap * sizeof(int64_t));
        if (!p) die("out of memory for latency samples");
        w->lat = p;
        w->cap_lat = cap;
    }
    w->lat[w->n_lat++] = lat_ns / 1000;
}

static int dial(void) {
    int fd = socket(target->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, target->ai_addr, target->ai_addrlen) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads one HTTP/1.1 response (Content-Length or chunked). Returns the status code, or -1. */
typedef ssize_t (*read_fn)(void *io, char *buf, size_t len);

static ssize_t fd_read(void *io, char *buf, size_t len) {
    return recv(*(int *)io, buf, len, 0);
}

static ssize_t ssl_read(void *io, char *buf, size_t len) {
    int n = SSL_read((SSL *)io, buf, (int)len);
    return n > 0 ? n : -1;
}

static int read_response(void *io, read_fn rd) {
    char buf[16384];
    size_t have = 0;
    char *eoh = NULL;
    while (!eoh) {
        if (have == sizeof buf - 1) return -1;
        ssize_t n = rd(io, buf + have, sizeof buf - 1 - have);
        if (n <= 0) return -1;
        have += (size_t)n;
        buf[have] = 0;
        eoh = strstr(buf, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*c %d", &status) != 1) return -1;
    size_t head = (size_t)(eoh + 4 - buf);
    long clen = -1;
    int chunked = 0;
    for (char *line = strstr(buf, "\r\n"); line && line < eoh; line = strstr(line + 2, "\r\n")) {
        char *l = line + 2;
        if (strncasecmp(l, "content-length:", 15) == 0) clen = strtol(l + 15, NULL, 10);
        if (strncasecmp(l, "transfer-encoding:", 18) == 0 && strcasestr(l, "chunked") &&
            strcasestr(l, "chunked") < strstr(l, "\r\n"))
            chunked = 1;
    }
    size_t body = have - head;
    if (chunked) {
        /* Tiny bodies only: read until the terminating chunk. */
        while (!strstr(buf + head, "0\r\n\r\n")) {
            if (have == sizeof buf - 1) return -1;
            ssize_t n = rd(io, buf + have, sizeof buf - 1 - have);
            if (n <= 0) return -1;
            have += (size_t)n;
            buf[have] = 0;
        }
        return status;
    }
    if (clen < 0) clen = 0;
    while ((long)body < clen) {
        ssize_t n = rd(io, buf, sizeof buf - 1 < (size_t)(clen - (long)body)
                                    ? sizeof buf - 1
                                    : (size_t)(clen - (long)body));
        if (n <= 0) return -1;
        body += (size_t)n;
    }
    return status;
}

static int send_all(int fd, const char *p, size_t len) {
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *http_worker(void *arg) {
    struct worker *w = arg;
    prctl(PR_SET_TIMERSLACK, 1UL);
    int fd = -1;
    int64_t interval = opt_rate > 0 ? (int64_t)(1e9 / opt_rate) : 0;
    for (uint64_t k = 0;; k++) {
        int64_t sched;
        if (interval) {
            sched = t_start + (int64_t)(k * (uint64_t)opt_conns + (uint64_t)w->index) * interval;
            if (sched >= t_end) break;
            int64_t now = now_ns();
            if (now > t_end + LATE_LIMIT_NS) {
                /* The target cannot keep up: count what was scheduled but never sent. */
                w->missed += (uint64_t)((t_end - 1 - sched) / (interval * opt_conns)) + 1;
                break;
            }
            if (sched > now) sleep_until(sched);
        } else {
            sched = now_ns();
            if (sched >= t_end) break;
        }
        if (fd < 0) {
            fd = dial();
            w->connects++;
            if (fd < 0) {
                w->errors++;
                if (!interval) usleep(10000);
                continue;
            }
        }
        w->sent_total++;
        int status = send_all(fd, request, request_len) == 0 ? read_response(&fd, fd_read) : -1;
        int64_t done = now_ns();
        if (status < 0) {
            w->errors++;
            close(fd);
            fd = -1;
            continue;
        }
        w->done_total++;
        if (sched >= t_measure) {
            if (status >= 200 && status < 300) {
                w->ok++;
                record(w, done - sched);
            } else {
                w->non2xx++;
            }
        }
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static void *tls_worker(void *arg) {
    struct worker *w = arg;
    while (now_ns() < t_end) {
        int64_t t0 = now_ns();
        int fd = dial();
        w->connects++;
        if (fd < 0) {
            w->errors++;
            usleep(10000);
            continue;
        }
        SSL *ssl = SSL_new(tls_ctx);
        SSL_set_fd(ssl, fd);
        if (opt_sni) SSL_set_tlsext_host_name(ssl, opt_sni);
        int good = SSL_connect(ssl) == 1 && SSL_get_verify_result(ssl) == X509_V_OK;
        int64_t t1 = now_ns();
        if (good && opt_host) {
            w->sent_total++;
            good = SSL_write(ssl, request, (int)request_len) == (int)request_len;
            int status = good ? read_response(ssl, ssl_read) : -1;
            good = status >= 200 && status < 300;
            if (status >= 0 && !good) w->non2xx++;
        }
        if (good) {
            w->done_total++;
            if (t0 >= t_measure) {
                w->ok++;
                record(w, t1 - t0);
            }
            SSL_shutdown(ssl);
        } else {
            w->errors++;
            if (w->errors <= 3) ERR_print_errors_fp(stderr);
            ERR_clear_error();
        }
        SSL_free(ssl);
        close(fd);
    }
    return NULL;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen http --connect HOST:PORT [--host H] [--path P] [--rate R] [--conns C] "
            "[--duration S] [--warmup S]\n"
            "       loadgen tls --connect HOST:PORT --cert F --key F --ca F [--sni N] [--alpn A] "
            "[--host H --path P] [--conns C] [--duration S]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    int tls_mode = strcmp(argv[1], "tls") == 0;
    if (!tls_mode && strcmp(argv[1], "http") != 0) usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--connect")) opt_connect = v;
        else if (!strcmp(a, "--host")) opt_host = v;
        else if (!strcmp(a, "--path")) opt_path = v;
        else if (!strcmp(a, "--rate")) opt_rate = atof(v);
        else if (!strcmp(a, "--conns")) opt_conns = atoi(v);
        else if (!strcmp(a, "--duration")) opt_duration = atof(v);
        else if (!strcmp(a, "--warmup")) opt_warmup = atof(v);
        else if (!strcmp(a, "--cert")) opt_cert = v;
        else if (!strcmp(a, "--key")) opt_key = v;
        else if (!strcmp(a, "--ca")) opt_ca = v;
        else if (!strcmp(a, "--sni")) opt_sni = v;
        else if (!strcmp(a, "--alpn")) opt_alpn = v;
        else usage();
    }
    if (!opt_connect || opt_conns < 1 || opt_conns > MAX_CONNS || opt_duration <= 0 ||
        opt_duration > 600 || opt_warmup < 0 || opt_warmup > 60 || opt_rate < 0)
        usage();

    char hostpart[256];
    const char *colon = strrchr(opt_connect, ':');
    if (!colon || (size_t)(colon - opt_connect) >= sizeof hostpart) usage();
    memcpy(hostpart, opt_connect, (size_t)(colon - opt_connect));
    hostpart[colon - opt_connect] = 0;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(hostpart, colon + 1, &hints, &target);
    if (rc != 0) {
        fprintf(stderr, "loadgen: cannot resolve %s: %s\n", opt_connect, gai_strerror(rc));
        return 2;
    }
    if (!opt_host && !tls_mode) opt_host = hostpart;
    if (opt_host) {
        request_len = (size_t)snprintf(request, sizeof request,
                                       "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: weft-bench\r\n%s\r\n",
                                       opt_path, opt_host, tls_mode ? "Connection: close\r\n" : "");
        if (request_len >= sizeof request) usage();
    }

    if (tls_mode) {
        if (!opt_cert || !opt_key || !opt_ca) usage();
        tls_ctx = SSL_CTX_new(TLS_client_method());
        if (!tls_ctx || !SSL_CTX_set_min_proto_version(tls_ctx, TLS1_3_VERSION) ||
            !SSL_CTX_set1_groups_list(tls_ctx, "X25519") ||
            SSL_CTX_use_certificate_chain_file(tls_ctx, opt_cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(tls_ctx, opt_key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_load_verify_locations(tls_ctx, opt_ca, NULL) != 1) {
            ERR_print_errors_fp(stderr);
            die("cannot set up TLS (certificate, key or CA file)");
        }
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
        if (opt_alpn) {
            unsigned char proto[256];
            size_t l = strlen(opt_alpn);
            if (l == 0 || l > 255) usage();
            proto[0] = (unsigned char)l;
            memcpy(proto + 1, opt_alpn, l);
            if (SSL_CTX_set_alpn_protos(tls_ctx, proto, (unsigned)(l + 1)) != 0) die("bad ALPN");
        }
    }

    t_start = now_ns() + 20000000LL; /* 20 ms for the threads to start */
    t_measure = t_start + (int64_t)(opt_warmup * 1e9);
    t_end = t_measure + (int64_t)(opt_duration * 1e9);
    for (int i = 0; i < opt_conns; i++) {
        workers[i].index = i;
        if (pthread_create(&workers[i].thread, NULL, tls_mode ? tls_worker : http_worker,
                           &workers[i]) != 0)
            die("cannot start a thread");
    }
    struct worker sum = {0};
    for (int i = 0; i < opt_conns; i++) {
        pthread_join(workers[i].thread, NULL);
        sum.ok += workers[i].ok;
        sum.non2xx += workers[i].non2xx;
        sum.errors += workers[i].errors;
        sum.connects += workers[i].connects;
        sum.sent_total += workers[i].sent_total;
        sum.done_total += workers[i].done_total;
        sum.missed += workers[i].missed;
        sum.n_lat += workers[i].n_lat;
    }
    int64_t *all = malloc((sum.n_lat + 1) * sizeof(int64_t));
    if (!all) die("out of memory");
    size_t n = 0;
    for (int i = 0; i < opt_conns; i++) {
        memcpy(all + n, workers[i].lat, workers[i].n_lat * sizeof(int64_t));
        n += workers[i].n_lat;
        free(workers[i].lat);
    }
    qsort(all, n, sizeof(int64_t), cmp64);
#define PCT(p) (n ? all[(size_t)((double)(n - 1) * (p))] : -1)
    double sum_lat = 0;
    for (size_t i = 0; i < n; i++) sum_lat += (double)all[i];
    printf("{\"mode\": \"%s\", \"rate\": %.1f, \"conns\": %d, \"duration_s\": %.3f, "
           "\"ok\": %llu, \"non2xx\": %llu, \"errors\": %llu, \"connects\": %llu, "
           "\"sent_total\": %llu, \"done_total\": %llu, \"missed\": %llu, \"per_s\": %.1f, "
           "\"p50_us\": %lld, \"p90_us\": %lld, \"p99_us\": %lld, \"p999_us\": %lld, "
           "\"max_us\": %lld, \"mean_us\": %.1f}\n",
           tls_mode ? "tls" : "http", opt_rate, opt_conns, opt_duration,
           (unsigned long long)sum.ok, (unsigned long long)sum.non2xx,
           (unsigned long long)sum.errors, (unsigned long long)sum.connects,
           (unsigned long long)sum.sent_total, (unsigned long long)sum.done_total,
           (unsigned long long)sum.missed,
           (double)sum.ok / opt_duration, (long long)PCT(0.50), (long long)PCT(0.90),
           (long long)PCT(0.99), (long long)PCT(0.999), (long long)(n ? all[n - 1] : -1),
           n ? sum_lat / (double)n : -1.0);
    free(all);
    freeaddrinfo(target);
    if (tls_ctx) SSL_CTX_free(tls_ctx);
    return 0;
}
