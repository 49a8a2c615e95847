/* api_events.c — GET /v1/events: a long-lived NDJSON stream of lanesd's
 * events (lane state changes, boots, creates, removals, image builds).
 *
 *   GET /v1/events[?lane=NAME][&kind=state,boot][&since=ID]
 *
 * Every event db_event() stores is also handed to api_events_publish(),
 * which writes one line to each subscriber whose filters match:
 *   {"id":N,"ts":MS,"lane":"name"|null,"lane_id":"..."|null,"kind":"state",
 *    "detail":"booting -> running", "state":"running"}   ("state" for kind=state)
 * Kinds approval.pending / approval.decided (api_approvals.c) also carry
 * "approval_id"; policy.denied reports refused connections and requests.
 * "id" is the event's row id in the events table: a client that reconnects
 * with ?since=ID first gets the stored events after ID (at most
 * EVENTS_REPLAY_MAX), then live ones, without a gap (replay and
 * subscription happen in one loop turn).
 *
 * Bounded memory per client: a subscriber whose unsent output exceeds
 * EVENTS_MAX_PENDING is a slow reader; it gets a final
 * {"error":{"code":"too_slow",...}} line and its stream ends.
 *
 * Threading: the uv loop only. State lives in lanesd_t->events.
 */
#include "lanesd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVENTS_MAX_PENDING (256u * 1024)
#define EVENTS_REPLAY_MAX 10000

typedef struct subscriber {
    lanesd_t *d;
    http_req_t *req;
    char lane[64];          /* "" = all lanes */
    char kinds[128];        /* ",state,boot," or "" = all */
    struct subscriber *next;
} subscriber_t;

struct api_events {
    subscriber_t *subs;
    int nsubs;
    uint64_t published;
};

int api_events_subscribers(const lanesd_t *d)
{
    return d->events ? d->events->nsubs : 0;
}

static const char *lane_name_of(lanesd_t *d, const char *lane_id)
{
    if (!lane_id)
        return NULL;
    for (lane_rt_t *l = d->lanes; l; l = l->next)
        if (!strcmp(l->id, lane_id))
            return l->name;
    return NULL;
}

static json_object *event_json(lanesd_t *d, int64_t id, int64_t ts, const char *lane_id, const char *kind,
                               const char *detail)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_int64(id));
    json_object_object_add(o, "ts", json_object_new_int64(ts));
    const char *name = lane_name_of(d, lane_id);
    /* a "create"/"rm" event's detail is the lane's name */
    if (!name && lane_id && detail && (!strcmp(kind, "create") || !strcmp(kind, "rm")))
        name = detail;
    json_object_object_add(o, "lane", name ? json_object_new_string(name) : NULL);
    json_object_object_add(o, "lane_id", lane_id ? json_object_new_string(lane_id) : NULL);
    json_object_object_add(o, "kind", json_object_new_string(kind));
    json_object_object_add(o, "detail", detail ? json_object_new_string(detail) : NULL);
    if (!strncmp(kind, "approval.", 9) && detail) /* "ID ..." */
        json_object_object_add(o, "approval_id", json_object_new_string_len(detail, (int)strcspn(detail, " ")));
    if (!strcmp(kind, "state") && detail) {
        /* "from -> to[: reason]" */
        const char *arrow = strstr(detail, " -> ");
        if (arrow) {
            arrow += 4;
            size_t n = strcspn(arrow, ":");
            json_object_object_add(o, "state", json_object_new_string_len(arrow, (int)n));
        }
    }
    return o;
}

static int sub_matches(const subscriber_t *s, json_object *ev)
{
    json_object *v;
    if (s->lane[0]) {
        const char *n = json_object_object_get_ex(ev, "lane", &v) ? json_object_get_string(v) : NULL;
        if (!n || strcmp(n, s->lane) != 0)
            return 0;
    }
    if (s->kinds[0]) {
        char key[80];
        json_object_object_get_ex(ev, "kind", &v);
        snprintf(key, sizeof(key), ",%s,", json_object_get_string(v));
        if (!strstr(s->kinds, key))
            return 0;
    }
    return 1;
}

static void sub_remove(lanesd_t *d, subscriber_t *s)
{
    if (!d->events)
        return;
    for (subscriber_t **pp = &d->events->subs; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            d->events->nsubs--;
            break;
        }
    }
    free(s);
}

/* Write one event to a subscriber; drops it if it cannot keep up. */
static void sub_send(lanesd_t *d, subscriber_t *s, json_object *ev)
{
    if (http_req_stream_pending(s->req) > EVENTS_MAX_PENDING) {
        json_object *e = json_object_new_object(), *err = json_object_new_object();
        json_object_object_add(err, "code", json_object_new_string("too_slow"));
        json_object_object_add(err, "message",
                               json_object_new_string("event stream dropped: the client did not keep up"));
        json_object_object_add(e, "error", err);
        http_req_stream_json(s->req, e);
        http_req_stream_end(s->req);
        sub_remove(d, s);
        return;
    }
    http_req_stream_json(s->req, json_object_get(ev));
}

void api_events_publish(lanesd_t *d, int64_t id, const char *lane_id, const char *kind, const char *detail)
{
    api_metrics_observe_event(d, kind, detail);
    if (!d->events || !d->events->subs)
        return;
    d->events->published++;
    json_object *ev = event_json(d, id, util_now_ms(), lane_id, kind, detail);
    for (subscriber_t *s = d->events->subs, *next; s; s = next) {
        next = s->next;
        if (sub_matches(s, ev))
            sub_send(d, s, ev);
    }
    json_object_put(ev);
}

static void on_closed(http_req_t *req, void *ud)
{
    subscriber_t *s = ud;
    http_req_stream_end(req);
    sub_remove(s->d, s);
}

/* Replay stored events with id > since that match s (s->req is written). */
static void replay(lanesd_t *d, const subscriber_t *s, int64_t since)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "SELECT id, ts, lane, kind, detail FROM events WHERE id > ? ORDER BY id LIMIT ?",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return;
    }
    sqlite3_bind_int64(st, 1, since);
    sqlite3_bind_int(st, 2, EVENTS_REPLAY_MAX);
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_object *ev = event_json(d, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                                     (const char *)sqlite3_column_text(st, 2), (const char *)sqlite3_column_text(st, 3),
                                     (const char *)sqlite3_column_text(st, 4));
        int r = 0;
        if (sub_matches(s, ev))
            r = http_req_stream_json(s->req, ev);
        else
            json_object_put(ev);
        if (r < 0)
            break; /* the client left */
    }
    sqlite3_finalize(st);
}

static void h_events(http_req_t *req, void *ctx)
{
    lanesd_t *d = ctx;
    if (!d->events) {
        d->events = calloc(1, sizeof(*d->events));
        if (!d->events) {
            http_req_respond_error(req, 500, "internal", "out of memory");
            return;
        }
    }
    const char *lane = http_req_query(req, "lane"), *kind = http_req_query(req, "kind"),
               *since = http_req_query(req, "since");
    int64_t since_id = -1;
    if (since) {
        char *end;
        long long v = strtoll(since, &end, 10);
        if (*end || v < 0) {
            http_req_respond_error(req, 400, "invalid", "'since' must be an event id (a non-negative integer)");
            return;
        }
        since_id = v;
    }
    if ((lane && strlen(lane) >= 64) || (kind && strlen(kind) >= 120)) {
        http_req_respond_error(req, 400, "invalid", "'lane' or 'kind' filter too long");
        return;
    }
    subscriber_t filt;
    memset(&filt, 0, sizeof(filt));
    filt.d = d;
    filt.req = req;
    if (lane)
        snprintf(filt.lane, sizeof(filt.lane), "%s", lane);
    if (kind && *kind)
        snprintf(filt.kinds, sizeof(filt.kinds), ",%s,", kind);
    /* No on_close yet: if the client leaves during the replay, the writes
     * fail and the request is ended here. */
    http_req_stream_begin(req, 200, "application/x-ndjson", NULL);
    if (since_id >= 0)
        replay(d, &filt, since_id);
    subscriber_t *s = malloc(sizeof(*s));
    if (!s || http_req_stream_write(req, "", 0) < 0) {
        free(s);
        http_req_stream_end(req);
        return;
    }
    *s = filt;
    http_req_on_close(req, on_closed, s);
    s->next = d->events->subs;
    d->events->subs = s;
    d->events->nsubs++;
}

void api_events_register(lanesd_t *d)
{
    http_server_route(d->http, "GET", "/v1/events", 0, h_events, d);
}
