/* db.c — lanesd's durable state in SQLite (WAL): lanes, images, events.
 *
 * All writes happen on the uv loop thread through this module; statements
 * are prepared per call (the rate is tiny) so there is no statement cache to
 * keep coherent. synchronous=FULL: a state change the API reported survives
 * a crash of lanesd or the host.
 */
#include "lanesd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "PRAGMA foreign_keys=ON;"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE IF NOT EXISTS images("
    "  name TEXT PRIMARY KEY, size_bytes INTEGER NOT NULL, created_at INTEGER NOT NULL,"
    "  source TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE IF NOT EXISTS lanes("
    "  id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, image TEXT NOT NULL,"
    "  cpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL, disk_gib INTEGER NOT NULL,"
    "  state TEXT NOT NULL, reason TEXT, accel TEXT, created_at INTEGER NOT NULL,"
    "  booted_at INTEGER, qemu_pid INTEGER, qemu_start INTEGER,"
    "  nbdkit_pid INTEGER, nbdkit_start INTEGER);"
    "CREATE TABLE IF NOT EXISTS events("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, lane TEXT,"
    "  kind TEXT NOT NULL, detail TEXT);"
    "CREATE TABLE IF NOT EXISTS secrets("
    "  lane_id TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, hosts TEXT NOT NULL,"
    "  placeholder TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY(lane_id, name));"
    "CREATE TABLE IF NOT EXISTS audit("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, lane_id TEXT NOT NULL, ts INTEGER NOT NULL,"
    "  ev TEXT, decision TEXT, host TEXT, record TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS audit_lane ON audit(lane_id, id);"
    /* Bytes netmed relayed per lane, summed from audited connections as
     * they are ingested (so /metrics never scans the audit table). */
    "CREATE TABLE IF NOT EXISTS net_bytes("
    "  lane_id TEXT PRIMARY KEY, up INTEGER NOT NULL DEFAULT 0, down INTEGER NOT NULL DEFAULT 0);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', '1');";

/* Columns added after schema 1, applied idempotently to older databases. */
static const char *const migrations[] = {
    "ALTER TABLE lanes ADD COLUMN ttl_s INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE lanes ADD COLUMN idle_timeout_s INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE lanes ADD COLUMN network INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE lanes ADD COLUMN policy TEXT",
    "ALTER TABLE lanes ADD COLUMN audit_offset INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE lanes ADD COLUMN netmed_pid INTEGER",
    "ALTER TABLE lanes ADD COLUMN netmed_start INTEGER",
    "ALTER TABLE lanes ADD COLUMN degraded INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE lanes ADD COLUMN degraded_reason TEXT",
};

int db_open(lanesd_t *d, char *err, size_t errlen)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/lanesd.db", d->state_dir);
    int rc = sqlite3_open_v2(path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "open %s: %s", path, d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
        sqlite3_close(d->db);
        d->db = NULL;
        return -EIO;
    }
    sqlite3_busy_timeout(d->db, 5000);
    char *msg = NULL;
    rc = sqlite3_exec(d->db, schema, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "initialise %s: %s", path, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        sqlite3_close(d->db);
        d->db = NULL;
        return -EIO;
    }
    for (size_t i = 0; i < sizeof(migrations) / sizeof(migrations[0]); i++) {
        rc = sqlite3_exec(d->db, migrations[i], NULL, NULL, &msg);
        if (rc != SQLITE_OK && !(msg && strstr(msg, "duplicate column"))) {
            snprintf(err, errlen, "migrate %s: %s", path, msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            sqlite3_close(d->db);
            d->db = NULL;
            return -EIO;
        }
        sqlite3_free(msg);
        msg = NULL;
    }
    return 0;
}

void db_close(lanesd_t *d)
{
    if (d->db)
        sqlite3_close(d->db);
    d->db = NULL;
}

static int db_fail(lanesd_t *d, const char *what, sqlite3_stmt *st)
{
    util_log("db: %s: %s", what, sqlite3_errmsg(d->db));
    sqlite3_finalize(st);
    return -EIO;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s && *s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static void bind_lane(sqlite3_stmt *st, const lane_rt_t *l)
{
    sqlite3_bind_text(st, 1, l->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, l->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, l->image, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 4, l->cpus);
    sqlite3_bind_int(st, 5, l->memory_mib);
    sqlite3_bind_int(st, 6, l->disk_gib);
    sqlite3_bind_text(st, 7, lane_state_name(l->state), -1, SQLITE_STATIC);
    bind_text_or_null(st, 8, l->reason);
    bind_text_or_null(st, 9, l->accel);
    sqlite3_bind_int64(st, 10, l->created_at);
    if (l->booted_at)
        sqlite3_bind_int64(st, 11, l->booted_at);
    else
        sqlite3_bind_null(st, 11);
    sqlite3_bind_int64(st, 12, l->qemu.pid);
    sqlite3_bind_int64(st, 13, (sqlite3_int64)l->qemu.start_time);
    sqlite3_bind_int64(st, 14, l->nbdkit.pid);
    sqlite3_bind_int64(st, 15, (sqlite3_int64)l->nbdkit.start_time);
    sqlite3_bind_int(st, 16, l->ttl_s);
    sqlite3_bind_int(st, 17, l->idle_timeout_s);
    sqlite3_bind_int(st, 18, l->degraded);
    bind_text_or_null(st, 19, l->degraded_reason);
    sqlite3_bind_int(st, 20, l->network);
    sqlite3_bind_int64(st, 21, l->audit_offset);
    sqlite3_bind_int64(st, 22, l->netmed.pid);
    sqlite3_bind_int64(st, 23, (sqlite3_int64)l->netmed.start_time);
}

int db_lane_insert(lanesd_t *d, const lane_rt_t *l)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "INSERT INTO lanes(id,name,image,cpus,memory_mib,disk_gib,state,reason,accel,"
                      "created_at,booted_at,qemu_pid,qemu_start,nbdkit_pid,nbdkit_start,ttl_s,idle_timeout_s,"
                      "degraded,degraded_reason,network,audit_offset,netmed_pid,netmed_start)"
                      " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(d, "prepare insert lane", st);
    bind_lane(st, l);
    if (sqlite3_step(st) != SQLITE_DONE)
        return db_fail(d, "insert lane", st);
    sqlite3_finalize(st);
    return 0;
}

int db_lane_update(lanesd_t *d, const lane_rt_t *l)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "UPDATE lanes SET id=?1,name=?2,image=?3,cpus=?4,memory_mib=?5,disk_gib=?6,state=?7,"
                      "reason=?8,accel=?9,created_at=?10,booted_at=?11,qemu_pid=?12,qemu_start=?13,"
                      "nbdkit_pid=?14,nbdkit_start=?15,ttl_s=?16,idle_timeout_s=?17,"
                      "degraded=?18,degraded_reason=?19,network=?20,audit_offset=?21,netmed_pid=?22,"
                      "netmed_start=?23 WHERE id=?1";
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(d, "prepare update lane", st);
    bind_lane(st, l);
    if (sqlite3_step(st) != SQLITE_DONE)
        return db_fail(d, "update lane", st);
    sqlite3_finalize(st);
    return 0;
}

int db_lane_delete(lanesd_t *d, const char *id)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "DELETE FROM lanes WHERE id=?", -1, &st, NULL) != SQLITE_OK)
        return db_fail(d, "prepare delete lane", st);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        return db_fail(d, "delete lane", st);
    sqlite3_finalize(st);
    return 0;
}

static void copy_col(char *dst, size_t cap, sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    snprintf(dst, cap, "%s", s ? (const char *)s : "");
}

int db_lanes_load(lanesd_t *d)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "SELECT id,name,image,cpus,memory_mib,disk_gib,state,reason,accel,created_at,"
                      "booted_at,qemu_pid,qemu_start,nbdkit_pid,nbdkit_start,ttl_s,idle_timeout_s,"
                      "degraded,degraded_reason,network,audit_offset,netmed_pid,netmed_start FROM lanes ORDER BY created_at";
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(d, "prepare load lanes", st);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        lane_rt_t *l = vm_lane_new(d);
        if (!l) {
            sqlite3_finalize(st);
            return -ENOMEM;
        }
        copy_col(l->id, sizeof(l->id), st, 0);
        copy_col(l->name, sizeof(l->name), st, 1);
        copy_col(l->image, sizeof(l->image), st, 2);
        l->cpus = sqlite3_column_int(st, 3);
        l->memory_mib = sqlite3_column_int(st, 4);
        l->disk_gib = sqlite3_column_int(st, 5);
        char state[32];
        copy_col(state, sizeof(state), st, 6);
        if (lane_state_parse(state, &l->state) < 0) {
            l->state = LANE_FAILED;
            snprintf(l->reason, sizeof(l->reason), "unknown stored state '%s'", state);
        } else {
            copy_col(l->reason, sizeof(l->reason), st, 7);
        }
        copy_col(l->accel, sizeof(l->accel), st, 8);
        l->created_at = sqlite3_column_int64(st, 9);
        l->booted_at = sqlite3_column_int64(st, 10);
        l->qemu.pid = (pid_t)sqlite3_column_int64(st, 11);
        l->qemu.start_time = (uint64_t)sqlite3_column_int64(st, 12);
        l->nbdkit.pid = (pid_t)sqlite3_column_int64(st, 13);
        l->nbdkit.start_time = (uint64_t)sqlite3_column_int64(st, 14);
        l->ttl_s = sqlite3_column_int(st, 15);
        l->idle_timeout_s = sqlite3_column_int(st, 16);
        l->degraded = sqlite3_column_int(st, 17);
        copy_col(l->degraded_reason, sizeof(l->degraded_reason), st, 18);
        l->network = sqlite3_column_int(st, 19);
        l->audit_offset = sqlite3_column_int64(st, 20);
        l->netmed.pid = (pid_t)sqlite3_column_int64(st, 21);
        l->netmed.start_time = (uint64_t)sqlite3_column_int64(st, 22);
        snprintf(l->dir, sizeof(l->dir), "%s/lanes/%s", d->state_dir, l->id);
    }
    if (rc != SQLITE_DONE)
        return db_fail(d, "load lanes", st);
    sqlite3_finalize(st);
    return 0;
}

int db_image_put(lanesd_t *d, const char *name, uint64_t size, const char *source)
{
    sqlite3_stmt *st = NULL;
    const char *sql = "INSERT INTO images(name,size_bytes,created_at,source) VALUES(?,?,?,?)"
                      " ON CONFLICT(name) DO UPDATE SET size_bytes=excluded.size_bytes,"
                      " created_at=excluded.created_at, source=excluded.source";
    if (sqlite3_prepare_v2(d->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(d, "prepare put image", st);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)size);
    sqlite3_bind_int64(st, 3, util_now_s());
    sqlite3_bind_text(st, 4, source ? source : "", -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        return db_fail(d, "put image", st);
    sqlite3_finalize(st);
    return 0;
}

int db_image_delete(lanesd_t *d, const char *name)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "DELETE FROM images WHERE name=?", -1, &st, NULL) != SQLITE_OK)
        return db_fail(d, "prepare delete image", st);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE)
        return db_fail(d, "delete image", st);
    sqlite3_finalize(st);
    return 0;
}

int db_image_get(lanesd_t *d, const char *name, uint64_t *size, int64_t *created, char *source,
                 size_t srclen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "SELECT size_bytes,created_at,source FROM images WHERE name=?", -1, &st,
                           NULL) != SQLITE_OK)
        return db_fail(d, "prepare get image", st);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_finalize(st);
        return 0;
    }
    if (rc != SQLITE_ROW)
        return db_fail(d, "get image", st);
    if (size)
        *size = (uint64_t)sqlite3_column_int64(st, 0);
    if (created)
        *created = sqlite3_column_int64(st, 1);
    if (source)
        copy_col(source, srclen, st, 2);
    sqlite3_finalize(st);
    return 1;
}

json_object *db_images_json(lanesd_t *d)
{
    json_object *arr = json_object_new_array();
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "SELECT name,size_bytes,created_at,source FROM images ORDER BY name", -1,
                           &st, NULL) != SQLITE_OK) {
        db_fail(d, "prepare list images", st);
        return arr;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string((const char *)sqlite3_column_text(st, 0)));
        json_object_object_add(o, "size_bytes", json_object_new_int64(sqlite3_column_int64(st, 1)));
        json_object_object_add(o, "created_at", util_json_time(sqlite3_column_int64(st, 2)));
        const unsigned char *src = sqlite3_column_text(st, 3);
        json_object_object_add(o, "source", json_object_new_string(src ? (const char *)src : ""));
        json_object_array_add(arr, o);
    }
    sqlite3_finalize(st);
    return arr;
}

int db_event(lanesd_t *d, const char *lane, const char *kind, const char *detail)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(d->db, "INSERT INTO events(ts,lane,kind,detail) VALUES(?,?,?,?)", -1, &st,
                           NULL) != SQLITE_OK)
        return db_fail(d, "prepare event", st);
    sqlite3_bind_int64(st, 1, util_now_ms());
    bind_text_or_null(st, 2, lane);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 4, detail);
    if (sqlite3_step(st) != SQLITE_DONE)
        return db_fail(d, "insert event", st);
    sqlite3_finalize(st);
    api_events_publish(d, sqlite3_last_insert_rowid(d->db), lane, kind, detail); /* live /v1/events + metrics */
    return 0;
}
