/* Replay server for the S3 unit tests (see test_s3_replay.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_s3_replay.h"

#define MAX_ITEMS 256
#define MAX_CONNS 64

struct replay {
  int lfd;
  int port;
  int stop_pipe[2];
  pthread_t acceptor;
  pthread_mutex_t lock;
  char *script[MAX_ITEMS];       /* NULL entry = reset */
  size_t nscript, next;
  char *reqs[MAX_ITEMS];
  size_t nreqs;
  pthread_t conn_thr[MAX_CONNS];
  int conn_fd[MAX_CONNS];
  unsigned nconns;
};

static char *load_fixture_text(const char *text)
{
  /* head lines -> CRLF; Content-Length added unless present */
  const char *sep = strstr(text, "\n\n");
  const char *body = sep ? sep + 2 : "";
  size_t headlen = sep ? (size_t)(sep - text) : strlen(text);
  size_t bodylen = strlen(body);
  if (bodylen && body[bodylen - 1] == '\n')
    bodylen--;    /* the file's final newline is not part of the body */
  size_t cap = 2 * headlen + bodylen + 128;
  char *out = malloc(cap), *p = out;
  int have_cl = 0;
  for (size_t i = 0; i < headlen;) {
    size_t e = i;
    while (e < headlen && text[e] != '\n')
      e++;
    if (strncasecmp(text + i, "content-length:", 15) == 0)
      have_cl = 1;
    memcpy(p, text + i, e - i);
    p += e - i;
    *p++ = '\r';
    *p++ = '\n';
    i = e + 1;
  }
  if (!have_cl)
    p += sprintf(p, "Content-Length: %zu\r\n", bodylen);
  *p++ = '\r';
  *p++ = '\n';
  memcpy(p, body, bodylen);
  p[bodylen] = '\0';
  return out;
}

void replay_push_text(replay_t *r, const char *text)
{
  pthread_mutex_lock(&r->lock);
  if (r->nscript < MAX_ITEMS)
    r->script[r->nscript++] = load_fixture_text(text);
  pthread_mutex_unlock(&r->lock);
}

void replay_push(replay_t *r, const char *name)
{
  char path[512];
  snprintf(path, sizeof path, "%s/%s.http", S3_TEST_DATA, name);
  FILE *f = fopen(path, "re");
  if (!f) {
    fprintf(stderr, "replay: cannot open fixture %s\n", path);
    abort();
  }
  char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  replay_push_text(r, buf);
}

void replay_push_reset(replay_t *r)
{
  pthread_mutex_lock(&r->lock);
  if (r->nscript < MAX_ITEMS)
    r->script[r->nscript++] = NULL;
  pthread_mutex_unlock(&r->lock);
}

static int write_all(int fd, const char *p, size_t n)
{
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w == -1 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

struct conn_arg {
  replay_t *r;
  int fd;
};

static void *conn_main(void *p)
{
  struct conn_arg *a = p;
  replay_t *r = a->r;
  int fd = a->fd;
  free(a);
  char *buf = malloc(1 << 22);
  size_t len = 0;
  for (;;) {
    char *end;
    while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
      ssize_t n = read(fd, buf + len, (1 << 22) - len);
      if (n == -1 && errno == EINTR)
        continue;
      if (n <= 0)
        goto out;
      len += (size_t)n;
    }
    size_t head = (size_t)(end - buf) + 4, clen = 0;
    for (char *l = buf; l < buf + head; l = strstr(l, "\r\n") + 2)
      if (strncasecmp(l, "content-length:", 15) == 0)
        clen = strtoul(l + 15, NULL, 10);
    while (len < head + clen) {
      ssize_t n = read(fd, buf + len, (1 << 22) - len);
      if (n == -1 && errno == EINTR)
        continue;
      if (n <= 0)
        goto out;
      len += (size_t)n;
    }
    pthread_mutex_lock(&r->lock);
    if (r->nreqs < MAX_ITEMS)
      r->reqs[r->nreqs++] = strndup(buf, head + clen);
    int have = r->next < r->nscript;
    char *resp = have ? r->script[r->next++] : NULL;
    pthread_mutex_unlock(&r->lock);
    memmove(buf, buf + head + clen, len - head - clen);
    len -= head + clen;
    if (!have) {
      static const char exhausted[] =
        "HTTP/1.1 599 Replay Script Exhausted\r\nContent-Length: 0\r\n\r\n";
      write_all(fd, exhausted, sizeof exhausted - 1);
      continue;
    }
    if (!resp) {     /* reset */
      struct linger lg = {1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      break;
    }
    /* "X-Replay-Delay-Ms: N" in a fixture: answer after N ms */
    const char *dl = strcasestr(resp, "\r\nX-Replay-Delay-Ms:");
    if (dl && dl < strstr(resp, "\r\n\r\n"))
      usleep((useconds_t)strtoul(dl + 20, NULL, 10) * 1000);
    /* HEAD answers carry no body even when the fixture has one */
    int is_head = strncmp(r->reqs[r->nreqs - 1], "HEAD ", 5) == 0;
    size_t n = strlen(resp);
    if (is_head)
      n = (size_t)(strstr(resp, "\r\n\r\n") + 4 - resp);
    if (write_all(fd, resp, n) < 0)
      break;
  }
out:
  free(buf);
  shutdown(fd, SHUT_RDWR);
  return NULL;
}

static void *accept_main(void *p)
{
  replay_t *r = p;
  for (;;) {
    struct pollfd pf[2] = {{r->lfd, POLLIN, 0}, {r->stop_pipe[0], POLLIN, 0}};
    if (poll(pf, 2, -1) < 0 && errno == EINTR)
      continue;
    if (pf[1].revents)
      return NULL;
    int fd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    pthread_mutex_lock(&r->lock);
    if (r->nconns >= MAX_CONNS) {
      pthread_mutex_unlock(&r->lock);
      close(fd);
      continue;
    }
    struct conn_arg *a = malloc(sizeof *a);
    a->r = r;
    a->fd = fd;
    r->conn_fd[r->nconns] = fd;
    pthread_create(&r->conn_thr[r->nconns], NULL, conn_main, a);
    r->nconns++;
    pthread_mutex_unlock(&r->lock);
  }
}

replay_t *replay_start(void)
{
  replay_t *r = calloc(1, sizeof *r);
  pthread_mutex_init(&r->lock, NULL);
  r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (bind(r->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(r->lfd, 64) < 0 ||
      getsockname(r->lfd, (struct sockaddr *)&a, &al) < 0 ||
      pipe2(r->stop_pipe, O_CLOEXEC) < 0) {
    perror("replay_start");
    abort();
  }
  r->port = ntohs(a.sin_port);
  pthread_create(&r->acceptor, NULL, accept_main, r);
  return r;
}

void replay_stop(replay_t *r)
{
  if (!r)
    return;
  write_all(r->stop_pipe[1], "x", 1);
  pthread_join(r->acceptor, NULL);
  for (unsigned i = 0; i < r->nconns; i++) {
    shutdown(r->conn_fd[i], SHUT_RDWR);
    pthread_join(r->conn_thr[i], NULL);
    close(r->conn_fd[i]);
  }
  close(r->lfd);
  close(r->stop_pipe[0]);
  close(r->stop_pipe[1]);
  for (size_t i = 0; i < r->nscript; i++)
    free(r->script[i]);
  for (size_t i = 0; i < r->nreqs; i++)
    free(r->reqs[i]);
  pthread_mutex_destroy(&r->lock);
  free(r);
}

int replay_port(replay_t *r)
{
  return r->port;
}

size_t replay_nrequests(replay_t *r)
{
  pthread_mutex_lock(&r->lock);
  size_t n = r->nreqs;
  pthread_mutex_unlock(&r->lock);
  return n;
}

const char *replay_request(replay_t *r, size_t i)
{
  pthread_mutex_lock(&r->lock);
  const char *s = i < r->nreqs ? r->reqs[i] : NULL;
  pthread_mutex_unlock(&r->lock);
  return s;
}

unsigned replay_connections(replay_t *r)
{
  pthread_mutex_lock(&r->lock);
  unsigned n = r->nconns;
  pthread_mutex_unlock(&r->lock);
  return n;
}

size_t replay_pending(replay_t *r)
{
  pthread_mutex_lock(&r->lock);
  size_t n = r->nscript - r->next;
  pthread_mutex_unlock(&r->lock);
  return n;
}
