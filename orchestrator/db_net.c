/* db_net.c — lanesd's SQLite state for lane networks: the policy (a column
 * of lanes), secrets (real values stay here and in netmed's 0600 file; no
 * API returns them) and the audit log ingested from netmed.
 * Same rules as db.c: loop thread only, statements prepared per call. */
#include "lanesd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int dbn_fail(lanesd_t *d, const char *what, sqlite3_stmt *st)
{
    util_log("db: %s: %s", what, sqlite3_errmsg(d->db));
    sqlite3_finalize(st);
    return -EIO;
}

static void dbn_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

int db_lane_policy_get(lanesd_t *d, const char *lane_id, char **out)
{
    *out = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "SELECT policy FROM lanes WHERE id=?", -1, &st, NULL) != SQLITE_OK)
        return dbn_fail(d, "prepare get policy", st);
    sqlite3_bind_text(st, 1, lane_id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        *out = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return 0;
}

int db_lane_policy_set(lanesd_t *d, const char *lane_id, const char *policy_json)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "UPDATE lanes SET policy=? WHERE id=?", -1, &st, NULL) != SQLITE_OK)
        return dbn_fail(d, "prepare set policy", st);
    dbn_text(st, 1, policy_json);
    sqlite3_bind_text(st, 2, lane_id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        return dbn_fail(d, "set policy", st);
    sqlite3_finalize(st);
    return 0;
}

int db_secret_put(lanesd_t *d, const char *lane_id, const char *name, const char *value, const char *hosts_json,
                  const char *placeholder)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "INSERT INTO secrets(lane_id,name,value,hosts,placeholder,updated_at) VALUES(?,?,?,?,?,?)"
                      " ON CONFLICT(lane_id,name) DO UPDATE SET value=excluded.value, hosts=excluded.hosts,"
                      " updated_at=excluded.updated_at";
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
        return dbn_fail(d, "prepare put secret", st);
    sqlite3_bind_text(st, 1, lane_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, value, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, hosts_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, placeholder, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 6, util_now_s());
    if (sqlite3_step(st) != SQLITE_DONE)
        return dbn_fail(d, "put secret", st);
    sqlite3_finalize(st);
    return 0;
}

int db_secret_delete(lanesd_t *d, const char *lane_id, const char *name)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "DELETE FROM secrets WHERE lane_id=? AND name=?", -1, &st, NULL) != SQLITE_OK)
        return dbn_fail(d, "prepare delete secret", st);
    sqlite3_bind_text(st, 1, lane_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        return dbn_fail(d, "delete secret", st);
    sqlite3_finalize(st);
    return sqlite3_changes(d->db) > 0;
}

json_object *db_secrets_json(lanesd_t *d, const char *lane_id, int with_values)
{
    json_object *arr = json_object_new_array();
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db,
                           "SELECT name,hosts,placeholder,value,updated_at FROM secrets WHERE lane_id=? ORDER BY name",
                           -1, &st, NULL) != SQLITE_OK) {
        dbn_fail(d, "prepare list secrets", st);
        return arr;
    }
    sqlite3_bind_text(st, 1, lane_id, -1, SQLITE_TRANSIENT);
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string((const char *)sqlite3_column_text(st, 0)));
        json_object *hosts = json_tokener_parse((const char *)sqlite3_column_text(st, 1));
        json_object_object_add(o, "hosts", hosts ? hosts : json_object_new_array());
        json_object_object_add(o, "placeholder", json_object_new_string((const char *)sqlite3_column_text(st, 2)));
        if (with_values)
            json_object_object_add(o, "value", json_object_new_string((const char *)sqlite3_column_text(st, 3)));
        else
            json_object_object_add(o, "updated_at", util_json_time(sqlite3_column_int64(st, 4)));
        json_object_array_add(arr, o);
    }
    sqlite3_finalize(st);
    return arr;
}

int db_audit_insert(lanesd_t *d, const char *lane_id, const char *jsonl)
{
    json_object *rec = json_tokener_parse(jsonl);
    if (!rec || !json_object_is_type(rec, json_type_object)) {
        json_object_put(rec);
        util_log("audit: skipping a malformed record for lane %s", lane_id);
        return -EINVAL;
    }
    json_object *v;
    const char *ev = json_object_object_get_ex(rec, "ev", &v) ? json_object_get_string(v) : NULL;
    const char *dec = json_object_object_get_ex(rec, "decision", &v) ? json_object_get_string(v) : NULL;
    const char *host = json_object_object_get_ex(rec, "host", &v) && json_object_is_type(v, json_type_string)
                           ? json_object_get_string(v)
                           : NULL;
    sqlite3_stmt *st = NULL;
    int r = 0;
    if (sqlite3_prepare_v2(d->db, "INSERT INTO audit(lane_id,ts,ev,decision,host,record) VALUES(?,?,?,?,?,?)", -1,
                           &st, NULL) != SQLITE_OK) {
        json_object_put(rec);
        return dbn_fail(d, "prepare audit", st);
    }
    sqlite3_bind_text(st, 1, lane_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, util_now_ms());
    dbn_text(st, 3, ev);
    dbn_text(st, 4, dec);
    dbn_text(st, 5, host);
    sqlite3_bind_text(st, 6, jsonl, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        r = dbn_fail(d, "insert audit", st);
    else
        sqlite3_finalize(st);
    int64_t up = json_object_object_get_ex(rec, "up", &v) ? json_object_get_int64(v) : 0;
    int64_t down = json_object_object_get_ex(rec, "down", &v) ? json_object_get_int64(v) : 0;
    if (r == 0 && ev && !strcmp(ev, "conn") && (up > 0 || down > 0)) {
        st = NULL;
        if (sqlite3_prepare_v2(d->db,
                               "INSERT INTO net_bytes(lane_id,up,down) VALUES(?1,?2,?3) ON CONFLICT(lane_id) DO "
                               "UPDATE SET up=up+excluded.up, down=down+excluded.down",
                               -1, &st, NULL) != SQLITE_OK) {
            r = dbn_fail(d, "prepare net bytes", st);
        } else {
            sqlite3_bind_text(st, 1, lane_id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(st, 2, up > 0 ? up : 0);
            sqlite3_bind_int64(st, 3, down > 0 ? down : 0);
            if (sqlite3_step(st) != SQLITE_DONE)
                r = dbn_fail(d, "update net bytes", st);
            else
                sqlite3_finalize(st);
        }
    }
    json_object_put(rec);
    return r;
}

int db_net_bytes_each(lanesd_t *d, void (*fn)(const char *lane_id, int64_t up, int64_t down, void *ud), void *ud)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "SELECT lane_id,up,down FROM net_bytes ORDER BY lane_id", -1, &st, NULL) !=
        SQLITE_OK)
        return dbn_fail(d, "prepare net bytes query", st);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn((const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2), ud);
    if (rc != SQLITE_DONE)
        return dbn_fail(d, "query net bytes", st);
    sqlite3_finalize(st);
    return 0;
}

json_object *db_audit_json(lanesd_t *d, const char *lane_id, const db_audit_query_t *q)
{
    json_object *arr = json_object_new_array();
    sqlite3_stmt *st = NULL;
    /* A NULL parameter disables its condition, so one statement serves
     * every combination of filters (and the (lane_id, id) index still
     * drives the scan). */
    if (sqlite3_prepare_v2(d->db,
                           "SELECT id,record FROM audit WHERE lane_id=?1 AND id>?2"
                           " AND (?4 IS NULL OR ev=?4) AND (?5 IS NULL OR decision=?5)"
                           " AND (?6 IS NULL OR host GLOB ?6)"
                           " AND (?7 IS NULL OR ts>=?7) AND (?8 IS NULL OR ts<?8)"
                           " ORDER BY id LIMIT ?3",
                           -1, &st, NULL) != SQLITE_OK) {
        dbn_fail(d, "prepare audit query", st);
        return arr;
    }
    sqlite3_bind_text(st, 1, lane_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, q->after_id);
    sqlite3_bind_int(st, 3, q->limit);
    dbn_text(st, 4, q->ev);
    dbn_text(st, 5, q->decision);
    dbn_text(st, 6, q->host_glob);
    if (q->since_ms > 0)
        sqlite3_bind_int64(st, 7, q->since_ms);
    if (q->until_ms > 0)
        sqlite3_bind_int64(st, 8, q->until_ms);
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_object *rec = json_tokener_parse((const char *)sqlite3_column_text(st, 1));
        if (!rec)
            continue;
        json_object_object_add(rec, "id", json_object_new_int64(sqlite3_column_int64(st, 0)));
        json_object_array_add(arr, rec);
    }
    sqlite3_finalize(st);
    return arr;
}

void db_lane_forget_network(lanesd_t *d, const char *lane_id)
{
    static const char *const sqls[] = {"DELETE FROM secrets WHERE lane_id=?", "DELETE FROM audit WHERE lane_id=?",
                                       "DELETE FROM net_bytes WHERE lane_id=?"};
    for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(d->db, sqls[i], -1, &st, NULL) != SQLITE_OK) {
            dbn_fail(d, "prepare forget network", st);
            continue;
        }
        sqlite3_bind_text(st, 1, lane_id, -1, SQLITE_TRANSIENT);
        sqlite3_step(st);
        sqlite3_finalize(st);
    }
}
