/* users.c — user and group lookup from /etc/passwd and /etc/group.
 *
 * lane-init is a static binary, so glibc's NSS (getpwnam) is off limits;
 * the guest image's own files are parsed directly. Lines that do not parse
 * are skipped. A numeric "uid[:gid]" works without any passwd entry (as in
 * Docker: unknown uid → home "/", gid 0 unless given).
 *
 * Threading: pure functions, no state.
 */
#include "lane_init.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[256];
    uid_t uid;
    gid_t gid;
    char home[1024];
} pw_entry_t;

static FILE *open_etc(const char *root_dir, const char *file)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/etc/%s", root_dir ? root_dir : "", file);
    return fopen(path, "re");
}

/* Parse a decimal id; returns 0 or -EINVAL. */
static int parse_id(const char *s, unsigned long *out)
{
    if (!*s || *s < '0' || *s > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > 0xfffffffeul)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Split a line on ':' into at most max fields. Returns the field count. */
static int split_fields(char *line, char **f, int max)
{
    int n = 0;
    line[strcspn(line, "\n")] = '\0';
    f[n++] = line;
    for (char *p = line; *p && n < max; p++) {
        if (*p == ':') {
            *p = '\0';
            f[n++] = p + 1;
        }
    }
    return n;
}

/* Find a passwd entry by name (name != NULL) or uid. Returns 1 if found. */
static int pw_find(const char *root_dir, const char *name, uid_t uid, pw_entry_t *out)
{
    FILE *fp = open_etc(root_dir, "passwd");
    if (!fp)
        return 0;
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    while (!found && getline(&line, &cap, fp) > 0) {
        char *f[7];
        unsigned long u, g;
        if (split_fields(line, f, 7) < 7 || parse_id(f[2], &u) < 0 || parse_id(f[3], &g) < 0)
            continue;
        if (name ? strcmp(f[0], name) != 0 : (uid_t)u != uid)
            continue;
        snprintf(out->name, sizeof(out->name), "%s", f[0]);
        snprintf(out->home, sizeof(out->home), "%s", f[5][0] ? f[5] : "/");
        out->uid = (uid_t)u;
        out->gid = (gid_t)g;
        found = 1;
    }
    free(line);
    fclose(fp);
    return found;
}

/* Append gid to the list unless present. */
static void groups_add(li_user_t *u, gid_t gid)
{
    for (int i = 0; i < u->ngroups; i++)
        if (u->groups[i] == gid)
            return;
    if (u->ngroups < (int)(sizeof(u->groups) / sizeof(u->groups[0])))
        u->groups[u->ngroups++] = gid;
}

/* Supplementary groups: every group listing name as a member. */
static void groups_collect(const char *root_dir, li_user_t *u)
{
    FILE *fp = open_etc(root_dir, "group");
    if (!fp)
        return;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, fp) > 0) {
        char *f[4];
        unsigned long g;
        if (split_fields(line, f, 4) < 4 || parse_id(f[2], &g) < 0)
            continue;
        char *save = NULL;
        for (char *m = strtok_r(f[3], ",", &save); m; m = strtok_r(NULL, ",", &save)) {
            if (strcmp(m, u->name) == 0) {
                groups_add(u, (gid_t)g);
                break;
            }
        }
    }
    free(line);
    fclose(fp);
}

int users_resolve(const char *root_dir, const char *spec, li_user_t *out, char *err, size_t errlen)
{
    li_user_t u;
    pw_entry_t pw;
    memset(&u, 0, sizeof(u));
    if (!spec || !spec[0])
        spec = "0";
    if (spec[0] >= '0' && spec[0] <= '9') {
        char buf[64];
        unsigned long uid, gid = 0;
        snprintf(buf, sizeof(buf), "%s", spec);
        char *colon = strchr(buf, ':');
        if (colon)
            *colon = '\0';
        if (strlen(spec) >= sizeof(buf) || parse_id(buf, &uid) < 0 || (colon && parse_id(colon + 1, &gid) < 0)) {
            snprintf(err, errlen, "bad user \"%s\"", spec);
            return -EINVAL;
        }
        u.uid = (uid_t)uid;
        if (pw_find(root_dir, NULL, u.uid, &pw)) {
            snprintf(u.name, sizeof(u.name), "%s", pw.name);
            snprintf(u.home, sizeof(u.home), "%s", pw.home);
            u.gid = colon ? (gid_t)gid : pw.gid;
        } else {
            snprintf(u.name, sizeof(u.name), "%lu", uid);
            snprintf(u.home, sizeof(u.home), "%s", uid == 0 ? "/root" : "/");
            u.gid = (gid_t)gid;
        }
    } else {
        if (!pw_find(root_dir, spec, 0, &pw)) {
            snprintf(err, errlen, "unknown user \"%s\"", spec);
            return -ENOENT;
        }
        snprintf(u.name, sizeof(u.name), "%s", pw.name);
        snprintf(u.home, sizeof(u.home), "%s", pw.home);
        u.uid = pw.uid;
        u.gid = pw.gid;
    }
    groups_add(&u, u.gid);
    groups_collect(root_dir, &u);
    *out = u;
    return 0;
}

long users_group_gid(const char *root_dir, const char *name)
{
    FILE *fp = open_etc(root_dir, "group");
    if (!fp)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    long gid = -1;
    while (gid < 0 && getline(&line, &cap, fp) > 0) {
        char *f[4];
        unsigned long g;
        if (split_fields(line, f, 4) >= 3 && strcmp(f[0], name) == 0 && parse_id(f[2], &g) == 0)
            gid = (long)g;
    }
    free(line);
    fclose(fp);
    return gid;
}
