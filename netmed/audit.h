/* audit.h — netmed's audit log: one JSON object per line (JSONL), appended
 * with a single write(2) per record under a mutex, so lines never
 * interleave. Every record has "ts" (RFC 3339 UTC, ms) and "ev".
 * Callers must never put a secret value in a record.
 */
#ifndef LANES_NETMED_AUDIT_H
#define LANES_NETMED_AUDIT_H

#include <json-c/json.h>

typedef struct audit audit_t;

/* path: file appended to (created 0600), or NULL with fd >= 0 (not closed). */
int audit_open(const char *path, int fd, audit_t **out);
void audit_close(audit_t *a);
/* Adds ts, writes, and drops the caller's reference to rec. */
void audit_emit(audit_t *a, json_object *rec);

#endif
