/* Replay server for the S3 unit tests — a stand-in for S3 (named as such):
 * a loopback HTTP/1.1 server that answers each request with the next
 * recorded response from a script and records every request it got, so the
 * tests check both what the client sent and what it made of the answer.
 *
 * Fixtures (tests/unit/data/s3/NAME.http) are written by hand from the S3
 * API reference: a status line, headers, a blank line, the body.  Header
 * lines get CRLF endings; Content-Length is added when absent; the file's
 * final newline is not part of the body.  A header "X-Replay-Delay-Ms: N"
 * makes the server wait N ms before answering (to show parallelism).
 *
 * Threading: one thread per accepted connection; the script and the
 * recorded requests are under a mutex.
 */
#ifndef LANES_TEST_S3_REPLAY_H
#define LANES_TEST_S3_REPLAY_H

#include <stddef.h>

typedef struct replay replay_t;

replay_t *replay_start(void);
void replay_stop(replay_t *r);
int replay_port(replay_t *r);
/* Queue the response in fixture file NAME (under S3_TEST_DATA). */
void replay_push(replay_t *r, const char *name);
/* Queue a response given inline (same format as a fixture file). */
void replay_push_text(replay_t *r, const char *text);
/* Queue "close the connection with a TCP reset instead of answering". */
void replay_push_reset(replay_t *r);
/* Requests received so far, each as raw head + body. */
size_t replay_nrequests(replay_t *r);
const char *replay_request(replay_t *r, size_t i);
/* Connections accepted so far; responses still queued. */
unsigned replay_connections(replay_t *r);
size_t replay_pending(replay_t *r);

#endif
