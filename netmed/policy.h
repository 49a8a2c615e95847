/* policy.h — a lane's network policy: parsed from JSON (docs/policy.md,
 * api/policy.schema.json) and evaluated per DNS query and per connection.
 *
 * A policy_t is immutable once parsed; netmed swaps whole policies on a live
 * update, so readers hold a reference (policy_ref/policy_unref, atomic) and
 * never lock. Evaluation functions are pure.
 */
#ifndef LANES_NETMED_POLICY_H
#define LANES_NETMED_POLICY_H

#include "addr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { DNS_SYNTHETIC = 0, DNS_TRUSTED, DNS_OPEN } dns_mode_t;

typedef struct {
    uint16_t lo, hi;
} port_range_t;

#define POLICY_MAX_PORTS 64
#define POLICY_MAX_SERVERS 4

/* What a matching rule does. Precedence when several rules match one
 * connection: deny > allow > ask (independent of order), so a remembered
 * decision always overrides the ask rule it came from. */
typedef enum { RULE_ALLOW = 0, RULE_ASK, RULE_DENY } rule_action_t;

#define POLICY_APPROVAL_TIMEOUT_S 60
#define POLICY_APPROVAL_TIMEOUT_MAX_S 3600

typedef struct {
    char *host;              /* lowercase pattern ("*.pypi.org") or NULL */
    rule_action_t action;
    bool has_cidr;
    cidr_t cidr;
    port_range_t ports[POLICY_MAX_PORTS];
    size_t nports;           /* 0 = any port */
    bool intercept;
    bool allow_private;
} policy_rule_t;

typedef struct {
    netaddr_t addr;
    uint16_t port;
} dns_server_t;

typedef struct policy {
    int refs;
    bool open;               /* "mode": "open": public internet allowed */
    bool ask_unmatched;      /* "onUnmatched": "ask": what no rule covers asks */
    bool block_private;
    dns_mode_t dns_mode;
    dns_server_t servers[POLICY_MAX_SERVERS];
    size_t nservers;
    policy_rule_t *rules;
    size_t nrules;
    int approval_timeout_s;  /* how long an "ask" connection waits */
    char *json;              /* the parsed document, re-serialized */
} policy_t;

/* Parse a policy document. 0 and *out (refs = 1), or -EINVAL with a message
 * naming the offending field in err. Unknown fields are errors. */
int policy_parse(const char *json, size_t len, policy_t **out, char *err, size_t errlen);
int policy_load_file(const char *path, policy_t **out, char *err, size_t errlen);
policy_t *policy_ref(policy_t *p);
void policy_unref(policy_t *p);

/* Does name (lowercase, no trailing dot) match the host pattern? */
bool policy_host_match(const char *pattern, const char *name);
bool policy_port_match(const policy_rule_t *r, uint16_t port);

/* A new policy: p's document with rule (a JSON rule object) appended to
 * "allow". 0 and *out, or -EINVAL with a message. p is unchanged. */
int policy_add_rule(const policy_t *p, const char *rule_json, policy_t **out, char *err, size_t errlen);

/* May name be resolved for the guest at all (some allow or ask host rule
 * names it, open mode, or onUnmatched ask in synthetic DNS mode)? Deny
 * rules alone never make a name resolve. */
bool policy_name_allowed(const policy_t *p, const char *name);

typedef struct {
    bool allow;
    bool ask;                /* not allowed yet: an ask rule matched (rule) */
    bool denied;             /* a deny rule matched (rule) */
    int rule;                /* index into rules, -1 = none / open mode */
    bool intercept;
    bool allow_private;      /* the matched rule lets names resolve inward */
    const char *reason;      /* static string */
} verdict_t;

/* A connection to name:port (name from netmed's DNS). Only says whether a
 * rule grants it; the dialled address is checked with policy_check_dial. */
verdict_t policy_check_name(const policy_t *p, const char *name, uint16_t port);

/* A connection to a literal address (no name): CIDR rules, or open mode for
 * a public address. host/nhost: the host's own addresses. */
verdict_t policy_check_addr(const policy_t *p, const netaddr_t *a, uint16_t port,
                            const netaddr_t *host, size_t nhost);

/* May an address that a host rule's name resolved to be dialled? Refuses
 * non-public classes when blockPrivateRanges is on, unless the rule says
 * allowPrivate. */
bool policy_check_dial(const policy_t *p, const verdict_t *v, const netaddr_t *a,
                       const netaddr_t *host, size_t nhost, const char **why);

#endif
