/* policy.c — policy JSON parsing (json-c) and evaluation. See policy.h.
 *
 * Parsing is strict: unknown keys, wrong types, bad ports or CIDRs with host
 * bits set are errors, so a typo can never silently widen or narrow a lane's
 * network. Evaluation is default deny; among the rules matching a connection
 * a deny rule beats an allow rule, which beats an ask rule (rule order does
 * not matter), so remembered approvals (appended allow/deny rules) override
 * the ask rule they answer.
 */
#include "policy.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define POLICY_MAX_RULES 4096
#define POLICY_MAX_BYTES (1 << 20)

__attribute__((format(printf, 3, 4)))
static int perr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static void policy_free(policy_t *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nrules; i++)
        free(p->rules[i].host);
    free(p->rules);
    free(p->json);
    free(p);
}

policy_t *policy_ref(policy_t *p)
{
    if (p)
        __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
    return p;
}

void policy_unref(policy_t *p)
{
    if (p && __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
        policy_free(p);
}

/* Host patterns: DNS names of letters, digits, '-' and '_' (some real names
 * use it), optionally prefixed by "*." meaning any subdomain (not the apex). */
static int host_pattern_check(const char *s)
{
    const char *p = s;
    if (strncmp(p, "*.", 2) == 0)
        p += 2;
    size_t n = strlen(p);
    if (n == 0 || n > 253)
        return -1;
    size_t label = 0;
    for (const char *c = p; *c; c++) {
        if (*c == '.') {
            if (label == 0)
                return -1;
            label = 0;
            continue;
        }
        if (!(isalnum((unsigned char)*c) || *c == '-' || *c == '_'))
            return -1;
        if (++label > 63)
            return -1;
    }
    return label == 0 ? -1 : 0;
}

static int parse_port_item(json_object *it, port_range_t *r)
{
    if (json_object_is_type(it, json_type_int)) {
        int64_t v = json_object_get_int64(it);
        if (v < 1 || v > 65535)
            return -1;
        r->lo = r->hi = (uint16_t)v;
        return 0;
    }
    if (json_object_is_type(it, json_type_string)) {
        const char *s = json_object_get_string(it);
        unsigned lo, hi;
        char tail;
        if (sscanf(s, "%5u-%5u%c", &lo, &hi, &tail) != 2 || lo < 1 || hi > 65535 || lo > hi)
            return -1;
        r->lo = (uint16_t)lo;
        r->hi = (uint16_t)hi;
        return 0;
    }
    return -1;
}

static int parse_rule(json_object *o, size_t idx, policy_rule_t *r, char *err, size_t errlen)
{
    if (!json_object_is_type(o, json_type_object))
        return perr(err, errlen, "allow[%zu]: not an object", idx);
    json_object_object_foreach(o, key, val) {
        if (strcmp(key, "host") == 0) {
            if (!json_object_is_type(val, json_type_string))
                return perr(err, errlen, "allow[%zu].host: not a string", idx);
            const char *h = json_object_get_string(val);
            size_t n = strlen(h);
            if (n > 0 && h[n - 1] == '.')
                n--;
            r->host = strndup(h, n);
            if (!r->host)
                return -ENOMEM;
            for (char *c = r->host; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            if (host_pattern_check(r->host) < 0)
                return perr(err, errlen, "allow[%zu].host: bad host pattern \"%s\"", idx, h);
        } else if (strcmp(key, "cidr") == 0) {
            if (!json_object_is_type(val, json_type_string) ||
                cidr_parse(json_object_get_string(val), &r->cidr) < 0)
                return perr(err, errlen, "allow[%zu].cidr: not a CIDR without host bits", idx);
            r->has_cidr = true;
        } else if (strcmp(key, "ports") == 0) {
            if (!json_object_is_type(val, json_type_array))
                return perr(err, errlen, "allow[%zu].ports: not an array", idx);
            size_t n = json_object_array_length(val);
            if (n == 0 || n > POLICY_MAX_PORTS)
                return perr(err, errlen, "allow[%zu].ports: 1..%d entries", idx, POLICY_MAX_PORTS);
            for (size_t i = 0; i < n; i++)
                if (parse_port_item(json_object_array_get_idx(val, i), &r->ports[i]) < 0)
                    return perr(err, errlen, "allow[%zu].ports[%zu]: a port 1..65535 or \"lo-hi\"", idx, i);
            r->nports = n;
        } else if (strcmp(key, "transport") == 0) {
            if (!json_object_is_type(val, json_type_string) ||
                strcmp(json_object_get_string(val), "tcp") != 0)
                return perr(err, errlen, "allow[%zu].transport: only \"tcp\" is supported", idx);
        } else if (strcmp(key, "intercept") == 0) {
            if (!json_object_is_type(val, json_type_boolean))
                return perr(err, errlen, "allow[%zu].intercept: not a boolean", idx);
            r->intercept = json_object_get_boolean(val);
        } else if (strcmp(key, "allowPrivate") == 0) {
            if (!json_object_is_type(val, json_type_boolean))
                return perr(err, errlen, "allow[%zu].allowPrivate: not a boolean", idx);
            r->allow_private = json_object_get_boolean(val);
        } else if (strcmp(key, "action") == 0) {
            const char *a = json_object_is_type(val, json_type_string) ? json_object_get_string(val) : "";
            if (strcmp(a, "allow") == 0)
                r->action = RULE_ALLOW;
            else if (strcmp(a, "ask") == 0)
                r->action = RULE_ASK;
            else if (strcmp(a, "deny") == 0)
                r->action = RULE_DENY;
            else
                return perr(err, errlen, "allow[%zu].action: one of allow, ask, deny", idx);
        } else if (strcmp(key, "comment") == 0) {
            /* free text for humans */
        } else {
            return perr(err, errlen, "allow[%zu]: unknown field \"%s\"", idx, key);
        }
    }
    if (!!r->host == r->has_cidr)
        return perr(err, errlen, "allow[%zu]: exactly one of host or cidr", idx);
    if (r->has_cidr && r->intercept)
        return perr(err, errlen, "allow[%zu]: intercept needs a host rule (names come from DNS)", idx);
    return 0;
}

static int parse_dns(json_object *o, policy_t *p, char *err, size_t errlen)
{
    if (!json_object_is_type(o, json_type_object))
        return perr(err, errlen, "dns: not an object");
    json_object_object_foreach(o, key, val) {
        if (strcmp(key, "mode") == 0) {
            const char *m = json_object_is_type(val, json_type_string) ? json_object_get_string(val) : "";
            if (strcmp(m, "synthetic") == 0)
                p->dns_mode = DNS_SYNTHETIC;
            else if (strcmp(m, "trusted") == 0)
                p->dns_mode = DNS_TRUSTED;
            else if (strcmp(m, "open") == 0)
                p->dns_mode = DNS_OPEN;
            else
                return perr(err, errlen, "dns.mode: one of synthetic, trusted, open");
        } else if (strcmp(key, "servers") == 0) {
            if (!json_object_is_type(val, json_type_array))
                return perr(err, errlen, "dns.servers: not an array");
            size_t n = json_object_array_length(val);
            if (n > POLICY_MAX_SERVERS)
                return perr(err, errlen, "dns.servers: at most %d", POLICY_MAX_SERVERS);
            for (size_t i = 0; i < n; i++) {
                json_object *s = json_object_array_get_idx(val, i);
                const char *str = json_object_is_type(s, json_type_string) ? json_object_get_string(s) : NULL;
                char buf[64];
                unsigned port = 53;
                if (!str || strlen(str) >= sizeof buf)
                    return perr(err, errlen, "dns.servers[%zu]: not an address", i);
                strcpy(buf, str);
                /* "addr" or "addr#port" (v6 addresses contain ':'). */
                char *hash = strchr(buf, '#');
                if (hash) {
                    *hash = '\0';
                    char *end;
                    unsigned long v = strtoul(hash + 1, &end, 10);
                    if (*end || v < 1 || v > 65535)
                        return perr(err, errlen, "dns.servers[%zu]: bad port", i);
                    port = (unsigned)v;
                }
                if (netaddr_parse(buf, &p->servers[i].addr) < 0)
                    return perr(err, errlen, "dns.servers[%zu]: not an IP address", i);
                p->servers[i].port = (uint16_t)port;
            }
            p->nservers = n;
        } else {
            return perr(err, errlen, "dns: unknown field \"%s\"", key);
        }
    }
    if (p->dns_mode == DNS_TRUSTED && p->nservers == 0)
        return perr(err, errlen, "dns: mode trusted needs servers");
    return 0;
}

int policy_parse(const char *json, size_t len, policy_t **out, char *err, size_t errlen)
{
    if (len > POLICY_MAX_BYTES)
        return perr(err, errlen, "policy larger than %d bytes", POLICY_MAX_BYTES);
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return -ENOMEM;
    json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = (size_t)json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success) {
        json_object_put(root);
        return perr(err, errlen, "policy: invalid JSON: %s", json_tokener_error_desc(jerr));
    }
    for (; used < len; used++)
        if (!isspace((unsigned char)json[used])) {
            json_object_put(root);
            return perr(err, errlen, "policy: trailing data after JSON");
        }
    int r;
    policy_t *p = calloc(1, sizeof *p);
    if (!p) {
        json_object_put(root);
        return -ENOMEM;
    }
    p->refs = 1;
    p->block_private = true;
    p->dns_mode = DNS_SYNTHETIC;
    p->approval_timeout_s = POLICY_APPROVAL_TIMEOUT_S;
    if (!json_object_is_type(root, json_type_object)) {
        r = perr(err, errlen, "policy: not a JSON object");
        goto out;
    }
    json_object_object_foreach(root, key, val) {
        if (strcmp(key, "mode") == 0) {
            const char *m = json_object_is_type(val, json_type_string) ? json_object_get_string(val) : "";
            if (strcmp(m, "open") == 0)
                p->open = true;
            else if (strcmp(m, "allowlist") != 0) {
                r = perr(err, errlen, "mode: one of allowlist, open");
                goto out;
            }
        } else if (strcmp(key, "blockPrivateRanges") == 0) {
            if (!json_object_is_type(val, json_type_boolean)) {
                r = perr(err, errlen, "blockPrivateRanges: not a boolean");
                goto out;
            }
            p->block_private = json_object_get_boolean(val);
        } else if (strcmp(key, "dns") == 0) {
            if ((r = parse_dns(val, p, err, errlen)) < 0)
                goto out;
        } else if (strcmp(key, "allow") == 0) {
            if (!json_object_is_type(val, json_type_array)) {
                r = perr(err, errlen, "allow: not an array");
                goto out;
            }
            size_t n = json_object_array_length(val);
            if (n > POLICY_MAX_RULES) {
                r = perr(err, errlen, "allow: at most %d rules", POLICY_MAX_RULES);
                goto out;
            }
            p->rules = calloc(n ? n : 1, sizeof *p->rules);
            if (!p->rules) {
                r = -ENOMEM;
                goto out;
            }
            for (size_t i = 0; i < n; i++) {
                p->nrules = i + 1;
                if ((r = parse_rule(json_object_array_get_idx(val, i), i, &p->rules[i], err, errlen)) < 0)
                    goto out;
            }
        } else if (strcmp(key, "onUnmatched") == 0) {
            const char *u = json_object_is_type(val, json_type_string) ? json_object_get_string(val) : "";
            if (strcmp(u, "ask") == 0)
                p->ask_unmatched = true;
            else if (strcmp(u, "deny") != 0) {
                r = perr(err, errlen, "onUnmatched: one of deny, ask");
                goto out;
            }
        } else if (strcmp(key, "approvalTimeoutSeconds") == 0) {
            int64_t t = json_object_is_type(val, json_type_int) ? json_object_get_int64(val) : 0;
            if (t < 1 || t > POLICY_APPROVAL_TIMEOUT_MAX_S) {
                r = perr(err, errlen, "approvalTimeoutSeconds: an integer 1..%d", POLICY_APPROVAL_TIMEOUT_MAX_S);
                goto out;
            }
            p->approval_timeout_s = (int)t;
        } else if (strcmp(key, "$schema") == 0 || strcmp(key, "comment") == 0) {
            /* annotations */
        } else {
            r = perr(err, errlen, "policy: unknown field \"%s\"", key);
            goto out;
        }
    }
    if (p->open && p->ask_unmatched) {
        r = perr(err, errlen, "onUnmatched: ask needs mode allowlist (open mode already allows what no rule covers)");
        goto out;
    }
    p->json = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    if (!p->json) {
        r = -ENOMEM;
        goto out;
    }
    r = 0;
    *out = p;
    p = NULL;
out:
    policy_free(p);
    json_object_put(root);
    return r;
}

int policy_add_rule(const policy_t *p, const char *rule_json, policy_t **out, char *err, size_t errlen)
{
    json_object *root = json_tokener_parse(p->json ? p->json : "{}");
    json_object *rule = json_tokener_parse(rule_json);
    json_object *allow = NULL;
    int r;
    if (!root || !rule || !json_object_is_type(rule, json_type_object)) {
        r = perr(err, errlen, "rule: not a JSON object");
        goto out;
    }
    if (!json_object_object_get_ex(root, "allow", &allow)) {
        allow = json_object_new_array();
        json_object_object_add(root, "allow", allow);
    }
    if (!json_object_is_type(allow, json_type_array)) {
        r = perr(err, errlen, "allow: not an array");
        goto out;
    }
    json_object_array_add(allow, rule);
    rule = NULL;
    const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    r = policy_parse(s, strlen(s), out, err, errlen);
out:
    json_object_put(rule);
    json_object_put(root);
    return r;
}

int policy_load_file(const char *path, policy_t **out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        perr(err, errlen, "open policy %s: %s", path, strerror(e));
        return -e;
    }
    char *buf = malloc(POLICY_MAX_BYTES + 1);
    size_t n = 0;
    int r = 0;
    while (buf && n <= POLICY_MAX_BYTES) {
        ssize_t k = read(fd, buf + n, POLICY_MAX_BYTES + 1 - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            r = -errno;
            perr(err, errlen, "read policy %s: %s", path, strerror(errno));
            break;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    if (!buf)
        return -ENOMEM;
    if (r == 0)
        r = policy_parse(buf, n, out, err, errlen);
    free(buf);
    return r;
}

bool policy_host_match(const char *pattern, const char *name)
{
    if (strncmp(pattern, "*.", 2) == 0) {
        const char *suffix = pattern + 1; /* ".pypi.org" */
        size_t ns = strlen(name), ss = strlen(suffix);
        return ns > ss && strcmp(name + ns - ss, suffix) == 0;
    }
    return strcmp(pattern, name) == 0;
}

bool policy_port_match(const policy_rule_t *r, uint16_t port)
{
    if (r->nports == 0)
        return true;
    for (size_t i = 0; i < r->nports; i++)
        if (port >= r->ports[i].lo && port <= r->ports[i].hi)
            return true;
    return false;
}

bool policy_name_allowed(const policy_t *p, const char *name)
{
    /* In synthetic mode an unmatched name resolves locally (no upstream
     * query, so no DNS exfiltration); the connection is what asks. */
    if (p->open || (p->ask_unmatched && p->dns_mode == DNS_SYNTHETIC))
        return true;
    for (size_t i = 0; i < p->nrules; i++)
        if (p->rules[i].host && p->rules[i].action != RULE_DENY && policy_host_match(p->rules[i].host, name))
            return true;
    return false;
}

verdict_t policy_check_name(const policy_t *p, const char *name, uint16_t port)
{
    verdict_t v = { .allow = false, .rule = -1, .reason = "no rule for host and port" };
    int deny = -1, ask = -1;
    /* Among allow rules the first match wins, except that an intercepting
     * rule for the same name and port is preferred so that secrets are never
     * silently not injected. */
    for (size_t i = 0; i < p->nrules; i++) {
        const policy_rule_t *r = &p->rules[i];
        if (!r->host || !policy_host_match(r->host, name) || !policy_port_match(r, port))
            continue;
        if (r->action == RULE_DENY) {
            if (deny < 0)
                deny = (int)i;
            continue;
        }
        if (r->action == RULE_ASK) {
            if (ask < 0)
                ask = (int)i;
            continue;
        }
        if (!v.allow || (r->intercept && !v.intercept)) {
            v.allow = true;
            v.rule = (int)i;
            v.intercept = r->intercept;
            v.allow_private = r->allow_private;
            v.reason = "host rule";
        }
    }
    if (deny >= 0)
        return (verdict_t){ .denied = true, .rule = deny, .reason = "deny rule" };
    if (!v.allow && ask >= 0) {
        v.ask = true;
        v.rule = ask;
        v.intercept = p->rules[ask].intercept;
        v.allow_private = p->rules[ask].allow_private;
        v.reason = "ask rule";
    }
    if (!v.allow && !v.ask && p->open) {
        v.allow = true;
        v.reason = "open mode";
    }
    if (!v.allow && !v.ask && p->ask_unmatched) {
        v.ask = true;
        v.reason = "no rule (onUnmatched: ask)";
    }
    return v;
}

verdict_t policy_check_addr(const policy_t *p, const netaddr_t *a, uint16_t port,
                            const netaddr_t *host, size_t nhost)
{
    verdict_t v = { .allow = false, .rule = -1, .reason = "no rule for address and port" };
    cidr_t block;
    addr_class_t cls = addr_classify(a, host, nhost, &block);
    bool blocked = p->block_private && cls != ADDR_PUBLIC;
    int ask = -1, allow = -1;
    for (size_t i = 0; i < p->nrules; i++) {
        const policy_rule_t *r = &p->rules[i];
        if (!r->has_cidr || !cidr_contains(&r->cidr, a) || !policy_port_match(r, port))
            continue;
        if (r->action == RULE_DENY)
            return (verdict_t){ .denied = true, .rule = (int)i, .reason = "deny rule" };
        /* A wide rule (0.0.0.0/0) never opens a private block; one that
         * names addresses inside the block (or says allowPrivate) does. */
        if (blocked && !r->allow_private && !cidr_within(&r->cidr, &block)) {
            v.reason = "private address (rule too wide to open it)";
            continue;
        }
        if (r->action == RULE_ASK && ask < 0)
            ask = (int)i;
        else if (r->action == RULE_ALLOW && allow < 0)
            allow = (int)i;
    }
    if (allow >= 0)
        return (verdict_t){ .allow = true, .rule = allow, .reason = "cidr rule" };
    if (ask >= 0)
        return (verdict_t){ .ask = true, .rule = ask, .allow_private = p->rules[ask].allow_private,
                            .reason = "ask rule" };
    if (p->open || p->ask_unmatched) {
        if (blocked) {
            v.reason = "private address";
            return v;
        }
        if (p->open)
            v.allow = true;
        else
            v.ask = true;
        v.reason = p->open ? "open mode" : "no rule (onUnmatched: ask)";
    }
    return v;
}

bool policy_check_dial(const policy_t *p, const verdict_t *v, const netaddr_t *a,
                       const netaddr_t *host, size_t nhost, const char **why)
{
    addr_class_t cls = addr_classify(a, host, nhost, NULL);
    if (cls == ADDR_PUBLIC || !p->block_private || v->allow_private) {
        /* Even allowPrivate never dials unspecified/multicast/broadcast. */
        if (cls == ADDR_UNSPECIFIED || cls == ADDR_MULTICAST || cls == ADDR_BROADCAST) {
            if (why)
                *why = addr_class_name(cls);
            return false;
        }
        return true;
    }
    if (why)
        *why = addr_class_name(cls);
    return false;
}
