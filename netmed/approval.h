/* approval.h — human approval of connections that match an "ask" rule.
 *
 * A connection thread that meets an ask verdict calls approval_wait(): the
 * connection is held (the guest sees a connect that has succeeded but no
 * bytes yet) while a pending approval with a random id is listed here and
 * announced as an audit record {"ev":"approval","state":"pending",
 * "approval_id":ID,...}
 * (lanesd watches the audit file and turns it into an event). It ends when
 * the control socket decides it (approval_decide), when a policy change
 * answers it (approvals_recheck: a new allow or deny rule, or the ask rule
 * gone), when the guest gives up (its side of the connection closes), or at
 * the policy's approvalTimeoutSeconds (denied). The waiting thread writes
 * one {"ev":"approval","state":"allowed"|"denied"|"timeout"|"abandoned"}
 * record with who decided.
 *
 * Bounds: at most APPROVALS_MAX pending per netmed; more are denied at once.
 *
 * Threading: the list is guarded by approvals_t.lock. A waiter sleeps in
 * poll() on its own eventfd (written by the decider under the lock) and on
 * the guest socket; it unlinks and frees its entry itself. Lock order: the
 * approvals lock is never held while taking netmed's policy lock.
 */
#ifndef LANES_NETMED_APPROVAL_H
#define LANES_NETMED_APPROVAL_H

#include "addr.h"
#include "audit.h"
#include "policy.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define APPROVALS_MAX 64
#define APPROVAL_ID_LEN 12

typedef enum {
    APPROVAL_PENDING = 0,
    APPROVAL_ALLOWED,
    APPROVAL_DENIED,
    APPROVAL_TIMEOUT,
    APPROVAL_ABANDONED,  /* the guest closed the connection first */
    APPROVAL_FULL,       /* too many pending: denied without asking */
} approval_state_t;

typedef struct approval approval_t;

typedef struct {
    pthread_mutex_t lock;
    approval_t *pending;
    size_t n;
} approvals_t;

/* What is being asked about. host NULL: a literal address (CIDR rule). */
typedef struct {
    const char *host;
    netaddr_t addr, src;
    uint16_t port;
    int rule;
    bool intercept, allow_private;  /* the ask rule's, kept by --remember */
    int guest_fd;                   /* watched for the guest giving up; -1 none */
    int timeout_s;
} approval_req_t;

void approvals_init(approvals_t *a);

/* Hold the calling thread until the request is decided. Returns the final
 * state (never APPROVAL_PENDING); id (APPROVAL_ID_LEN + 1 bytes) gets the
 * approval's id ("" for APPROVAL_FULL). */
approval_state_t approval_wait(approvals_t *a, audit_t *au, const approval_req_t *r, char *id);

/* Decide a pending approval. by: who ("api", "policy", ...). On success 0
 * and, if info is not NULL, *info = the approval as JSON (new reference).
 * -ENOENT: no pending approval with that id (unknown, decided or gone). */
int approval_decide(approvals_t *a, const char *id, bool allow, bool remember, const char *by, json_object **info);

/* netmed is exiting: deny every pending approval and audit each one now
 * (by "netmed stop"), since the waiting threads may not run again. */
void approvals_stop(approvals_t *a, audit_t *au);

/* The pending approvals as a JSON array (new reference). */
json_object *approvals_json(approvals_t *a);

/* A policy changed: decide every pending approval the new policy answers
 * (allowed by an allow rule / open mode, denied when no ask rule matches
 * any more). Returns how many were decided. */
int approvals_recheck(approvals_t *a, const policy_t *p, const netaddr_t *host, size_t nhost);

/* The rule that remembers a decision about info (approval_decide's JSON):
 * {"host"|"cidr", "ports":[port], "action":"allow"|"deny", ...} as JSON
 * text (malloc'd), or NULL on bad input / out of memory. */
char *approval_rule_json(json_object *info, bool allow);

const char *approval_state_name(approval_state_t s);

#endif
