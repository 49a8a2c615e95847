/* audit.c — JSONL audit writer (see audit.h). */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct audit {
    int fd;
    int own;
    pthread_mutex_t lock;
};

int audit_open(const char *path, int fd, audit_t **out)
{
    audit_t *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    if (path) {
        a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (a->fd < 0) {
            int e = errno;
            free(a);
            return -e;
        }
        a->own = 1;
    } else {
        a->fd = fd;
    }
    pthread_mutex_init(&a->lock, NULL);
    *out = a;
    return 0;
}

void audit_close(audit_t *a)
{
    if (!a)
        return;
    if (a->own)
        close(a->fd);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

void audit_emit(audit_t *a, json_object *rec)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char buf[64];
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof buf - n, ".%03ldZ", ts.tv_nsec / 1000000);
    json_object_object_add(rec, "ts", json_object_new_string(buf));
    const char *s = json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t len = strlen(s);
    char *line = malloc(len + 2);
    if (line && a) {
        memcpy(line, s, len);
        line[len] = '\n';
        pthread_mutex_lock(&a->lock);
        size_t off = 0;
        while (off < len + 1) {
            ssize_t w = write(a->fd, line + off, len + 1 - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        pthread_mutex_unlock(&a->lock);
    }
    free(line);
    json_object_put(rec);
}
