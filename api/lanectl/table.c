/* table.c — aligned tables and human-friendly ages and sizes. */
#include "table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int table_init(table_t *t, size_t ncols, const char *const *headers)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    return table_add_row(t, headers);
}

int table_add_row(table_t *t, const char *const *cells)
{
    char **c = realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(*c));
    if (!c)
        return -ENOMEM;
    t->cells = c;
    for (size_t i = 0; i < t->ncols; i++) {
        c[t->nrows * t->ncols + i] = strdup(cells[i] ? cells[i] : "-");
        if (!c[t->nrows * t->ncols + i]) {
            while (i-- > 0)
                free(c[t->nrows * t->ncols + i]);
            return -ENOMEM;
        }
    }
    t->nrows++;
    return 0;
}

void table_print(const table_t *t, FILE *out)
{
    size_t *w = calloc(t->ncols, sizeof(*w));
    if (!w)
        return;
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t l = strlen(t->cells[r * t->ncols + c]);
            if (l > w[c])
                w[c] = l;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            if (c + 1 == t->ncols)
                fprintf(out, "%s\n", s);
            else
                fprintf(out, "%-*s   ", (int)w[c], s);
        }
    }
    free(w);
}

void table_free(table_t *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

time_t parse_rfc3339(const char *s)
{
    if (!s)
        return -1;
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return -1;
    if (*end == '.')
        for (end++; *end >= '0' && *end <= '9'; end++)
            ;
    if (*end != 'Z' && strcmp(end, "+00:00") != 0)
        return -1;
    return timegm(&tm);
}

void format_age(time_t now, const char *rfc3339, char *buf, size_t len)
{
    time_t t = parse_rfc3339(rfc3339);
    if (t < 0) {
        snprintf(buf, len, "-");
        return;
    }
    long long d = now > t ? (long long)(now - t) : 0;
    if (d < 60)
        snprintf(buf, len, "%llds", d);
    else if (d < 3600)
        snprintf(buf, len, "%lldm", d / 60);
    else if (d < 86400)
        snprintf(buf, len, "%lldh", d / 3600);
    else
        snprintf(buf, len, "%lldd", d / 86400);
}

void format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) {
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
        return;
    }
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (v < 10 && v != (double)(uint64_t)v)
        snprintf(buf, len, "%.1f %s", v, units[u]);
    else
        snprintf(buf, len, "%.0f %s", v, units[u]);
}
