/* table.h — human output for lanectl: aligned tables, ages, sizes. */
#ifndef LANES_LANECTL_TABLE_H
#define LANES_LANECTL_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

typedef struct {
    size_t ncols;
    size_t nrows;      /* including the header row */
    char **cells;      /* nrows * ncols, owned */
} table_t;

/* headers: ncols strings. 0 or -ENOMEM. */
int table_init(table_t *t, size_t ncols, const char *const *headers);
/* cells: ncols strings (NULL prints "-"). 0 or -ENOMEM. */
int table_add_row(table_t *t, const char *const *cells);
/* Left-aligned columns separated by three spaces; no trailing blanks. */
void table_print(const table_t *t, FILE *out);
void table_free(table_t *t);

/* "45s", "12m", "3h", "5d"; "-" for a missing or unparsable RFC 3339 time. */
void format_age(time_t now, const char *rfc3339, char *buf, size_t len);
/* "0 B", "512 KiB", "1.5 GiB". */
void format_size(uint64_t bytes, char *buf, size_t len);
/* Parse "2024-05-01T12:00:00Z" (UTC, optional fraction). -1 on failure. */
time_t parse_rfc3339(const char *s);

#endif
