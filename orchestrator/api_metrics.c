/* api_metrics.c — GET /metrics in the Prometheus text exposition format
 * (version 0.0.4).
 *
 *   lanes_lanes{state=...}               gauge: lanes by state
 *   lanes_boot_duration_seconds          histogram: boot request to agent
 *                                        ready, from the "boot" events
 *   lanes_exec_duration_seconds          histogram: exec start to exit
 *   lanes_execs_failed_total             counter: execs that could not run
 *                                        or lost their lane
 *   lanes_http_responses_total{code=...} counter: responses by status
 *   lanes_event_subscribers              gauge: open /v1/events streams
 *   lanes_netmed_bytes_total{lane=...,direction=up|down}
 *                                        counter: bytes netmed relayed for a
 *                                        lane (guest->internet is "up"), from
 *                                        its audited connections; persists
 *                                        across lanesd restarts
 *   lanes_store_*_bytes{store="local"}   gauges: logical, unique, physical and
 *                                        garbage bytes of the local block store
 *   lanes_store_dedup_ratio, lanes_store_stats_timestamp_seconds
 *                                        as last measured: a scrape returns
 *                                        the last stats and refreshes them in
 *                                        the background when older than 60 s
 *                                        (absent until the first run ends)
 *
 * Histograms count since lanesd started. State lives in lanesd_t->metrics,
 * created on first use. Threading: the uv loop only.
 */
#include "lanesd.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 12

typedef struct {
    const double *bounds;
    size_t nbounds;
    uint64_t counts[MAX_BUCKETS]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
} histogram_t;

static const double boot_bounds[] = {0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120};
static const double exec_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

struct api_metrics {
    histogram_t boot;
    histogram_t exec;
    uint64_t exec_failed;
};

static struct api_metrics *metrics_get(lanesd_t *d)
{
    if (!d->metrics) {
        d->metrics = calloc(1, sizeof(*d->metrics));
        if (!d->metrics)
            return NULL;
        d->metrics->boot.bounds = boot_bounds;
        d->metrics->boot.nbounds = sizeof(boot_bounds) / sizeof(boot_bounds[0]);
        d->metrics->exec.bounds = exec_bounds;
        d->metrics->exec.nbounds = sizeof(exec_bounds) / sizeof(exec_bounds[0]);
    }
    return d->metrics;
}

static void histogram_observe(histogram_t *h, double v)
{
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->counts[i]++; /* i == nbounds: only +Inf */
    h->count++;
    h->sum += v;
}

void api_metrics_observe_event(lanesd_t *d, const char *kind, const char *detail)
{
    long long ms;
    if (strcmp(kind, "boot") != 0 || !detail || sscanf(detail, "agent ready after %lld ms", &ms) != 1)
        return;
    struct api_metrics *m = metrics_get(d);
    if (m)
        histogram_observe(&m->boot, (double)ms / 1000.0);
}

void api_metrics_exec_done(lanesd_t *d, int64_t duration_ms, int failed)
{
    struct api_metrics *m = metrics_get(d);
    if (!m)
        return;
    if (failed)
        m->exec_failed++;
    else
        histogram_observe(&m->exec, (double)duration_ms / 1000.0);
}

typedef struct {
    char *s;
    size_t len;
    int oom;
} text_t;

static void emit(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(text_t *t, const char *fmt, ...)
{
    if (t->oom)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *add = NULL;
    int n = vasprintf(&add, fmt, ap);
    va_end(ap);
    char *ns = n >= 0 ? realloc(t->s, t->len + (size_t)n + 1) : NULL;
    if (!ns) {
        free(add);
        t->oom = 1;
        return;
    }
    memcpy(ns + t->len, add, (size_t)n + 1);
    t->len += (size_t)n;
    t->s = ns;
    free(add);
}

static void emit_histogram(text_t *t, const char *name, const char *help, const histogram_t *h)
{
    emit(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < h->nbounds; i++) {
        cum += h->counts[i];
        emit(t, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, h->bounds[i], cum);
    }
    emit(t, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.6f\n%s_count %" PRIu64 "\n", name, h->count, name, h->sum,
         name, h->count);
}

typedef struct {
    lanesd_t *d;
    text_t *t;
} net_bytes_emit_t;

static void emit_net_bytes(const char *lane_id, int64_t up, int64_t down, void *ud)
{
    net_bytes_emit_t *e = ud;
    const char *name = NULL;
    for (lane_rt_t *l = e->d->lanes; l && !name; l = l->next)
        if (!strcmp(l->id, lane_id))
            name = l->name;
    if (!name)
        return; /* lane removed since (its row is being forgotten) */
    /* Lane names are [a-z0-9-], safe inside a label value. */
    emit(e->t, "lanes_netmed_bytes_total{lane=\"%s\",direction=\"up\"} %" PRId64 "\n", name, up);
    emit(e->t, "lanes_netmed_bytes_total{lane=\"%s\",direction=\"down\"} %" PRId64 "\n", name, down);
}

static void h_metrics(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    struct api_metrics *m = metrics_get(d);
    if (!m) {
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    text_t t = {0};
    int by_state[LANE_STATE_COUNT] = {0};
    for (lane_rt_t *l = d->lanes; l; l = l->next)
        if (l->state >= 0 && l->state < LANE_STATE_COUNT)
            by_state[l->state]++;
    emit(&t, "# HELP lanes_lanes Lanes by state.\n# TYPE lanes_lanes gauge\n");
    for (int s = 0; s < LANE_STATE_COUNT; s++)
        emit(&t, "lanes_lanes{state=\"%s\"} %d\n", lane_state_name((lane_state_t)s), by_state[s]);
    emit_histogram(&t, "lanes_boot_duration_seconds", "Time from a boot request to the guest agent being ready.",
                   &m->boot);
    emit_histogram(&t, "lanes_exec_duration_seconds", "Time from an exec's start to its exit.", &m->exec);
    emit(&t, "# HELP lanes_execs_failed_total Execs that could not run or lost their lane.\n"
             "# TYPE lanes_execs_failed_total counter\nlanes_execs_failed_total %" PRIu64 "\n",
         m->exec_failed);
    int codes[64];
    uint64_t counts[64];
    size_t n = http_server_status_counts(d->http, codes, counts, 64);
    emit(&t, "# HELP lanes_http_responses_total HTTP responses sent, by status code.\n"
             "# TYPE lanes_http_responses_total counter\n");
    for (size_t i = 0; i < n; i++)
        emit(&t, "lanes_http_responses_total{code=\"%d\"} %" PRIu64 "\n", codes[i], counts[i]);
    emit(&t, "# HELP lanes_event_subscribers Open /v1/events streams.\n# TYPE lanes_event_subscribers gauge\n"
             "lanes_event_subscribers %d\n",
         api_events_subscribers(d));
    emit(&t, "# HELP lanes_netmed_bytes_total Bytes netmed relayed for a lane (up: guest to internet).\n"
             "# TYPE lanes_netmed_bytes_total counter\n");
    net_bytes_emit_t ne = {d, &t};
    db_net_bytes_each(d, emit_net_bytes, &ne);
    store_stats_t ss;
    int64_t ss_at;
    if (api_snapshots_store_stats_cached(d, &ss, &ss_at)) {
        static const char *const names[] = {"logical", "unique", "physical", "garbage"};
        static const char *const helps[] = {"non-zero bytes the store's refs address (before dedup)",
                                            "bytes of distinct reachable chunks",
                                            "bytes of all objects on disk",
                                            "bytes of objects nothing references (freed by GC)"};
        uint64_t vals[] = {ss.logical_bytes, ss.unique_bytes, ss.physical_bytes, ss.garbage_bytes};
        for (size_t i = 0; i < 4; i++)
            emit(&t, "# HELP lanes_store_%s_bytes Block store: %s.\n# TYPE lanes_store_%s_bytes gauge\n"
                     "lanes_store_%s_bytes{store=\"local\"} %" PRIu64 "\n",
                 names[i], helps[i], names[i], names[i], vals[i]);
        emit(&t, "# HELP lanes_store_dedup_ratio Block store: logical / unique bytes.\n"
                 "# TYPE lanes_store_dedup_ratio gauge\nlanes_store_dedup_ratio{store=\"local\"} %.4f\n"
                 "# HELP lanes_store_stats_timestamp_seconds When the store stats above were measured.\n"
                 "# TYPE lanes_store_stats_timestamp_seconds gauge\n"
                 "lanes_store_stats_timestamp_seconds{store=\"local\"} %.3f\n",
             ss.dedup_ratio, (double)ss_at / 1000.0);
    }
    if (t.oom) {
        free(t.s);
        http_req_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    http_req_respond_raw(req, 200, "text/plain; version=0.0.4; charset=utf-8", t.s, t.len);
    free(t.s);
}

void api_metrics_register(lanesd_t *d)
{
    http_server_route(d->http, "GET", "/metrics", 0, h_metrics, d);
}
